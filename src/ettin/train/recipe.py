"""Training recipes: typed dataclasses, YAML loading, dotted overrides and validation.

A recipe is one YAML file: the model size, the data, the optimiser settings and a list of phases.
Everything is validated before any work starts (`ettin.train.recipe_checks`); a bad value raises `RecipeError` naming
the file and the field (``recipes/tiny.yaml: train.lr: expected a number, got 'fast'``).

Token counts accept suffixes: ``1.7T``, ``250B``, ``3M``, ``64k`` (powers of ten), or plain integers.
Inheritance: ``extends: 150m.yaml`` deep-merges this file onto that one (mappings merge; lists such as
``phases`` are replaced, not merged); ``extends: [150m.yaml, cross/base.yaml]`` merges the bases in order,
then this file. Overrides use dotted paths: ``train.lr=1e-3``, ``phases.1.tokens=2M``, ``--model.size=17m``;
a dotted key in a recipe file (``phases.cross.tokens: 2M``) is such an override of what it extends.
A key the recipe's objective cannot use (a decoder's ``mlm_probability``) is an error.

Per-objective values: where the published recipe differs by objective (the decay phase's local RoPE theta of
some sizes), a value may be a mapping from objective to value, ``local_rope_theta: {mlm: 160000, clm: 10000}``:
each model takes its objective's (`Recipe.for_objective`; `ettin pair` resolves the encoder's and the decoder's), from
the typed recipe, so that a change made to it in Python stays. Any mapping whose keys are objectives is such a value;
the resolved recipe (run folders' recipe.yaml) holds plain values.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ettin.config import LOSS_CHUNK_SIZE, OBJECTIVES, ModelConfig
from ettin.data.holdout import HOLDOUT_FRACTION
from ettin.data.ready import unusable_keys
from ettin.train.recipe_checks import RecipeError, validate

_SUFFIX = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def parse_tokens(value: Any) -> int:
    """``"1.7T"`` -> 1_700_000_000_000; ints pass through; ``"2_000"`` works too."""
    if isinstance(value, bool):
        raise ValueError(f"expected a token count, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "").removesuffix("tok")
        scale = _SUFFIX.get(text[-1:], None)
        try:
            number = float(text[:-1]) * scale if scale else float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number) and number >= 0:
            return int(round(number))
    raise ValueError(f"expected a token count such as 250B, 4M or 65536, got {value!r}")


@dataclass
class ModelSection:
    size: str = "tiny"  # a preset name from ettin.config (17m ... 1b, tiny, demo)
    # ModelConfig fields, e.g. attention_output_dropout; not those the recipe sets elsewhere (the objective, the phase's
    # RoPE thetas, the tokenizer's vocabulary and ids: recipe_checks.SET_ELSEWHERE)
    overrides: dict[str, Any] = field(default_factory=dict)
    # a local checkpoint folder (meta.json) or Hugging Face folder (config.json) to start phase 1 from
    # (cross-objective); checked to exist before training (ettin.train.preflight), never fetched from the hub
    init_from: str | None = None


@dataclass
class PrepareSection:
    """Make the data a recipe needs when it is missing (idempotent): a tokenizer, then token shards."""

    out: str  # the prepared folder (`ettin data prepare --out`)
    sources: list[str] = field(default_factory=list)  # source specs, as `ettin data prepare --source`
    tokenizer_vocab_size: int | None = None  # train data.tokenizer on the training side when it is missing
    workers: int = 1


@dataclass
class DataSection:
    source: str = "prepared"  # prepared (token shards via ettin.data) | synthetic (random ids, speed checks)
    tokenizer: str | None = None  # tokenizer.json path (or a folder holding one)
    vocab_size: int | None = None  # synthetic data / when no tokenizer is given
    mixtures: dict[str, Any] = field(default_factory=dict)  # phase mixture name -> YAML path or mapping
    holdout_fraction: float = HOLDOUT_FRACTION  # the last ceil(fraction x docs) of each source are never trained on
    vars: dict[str, str] = field(default_factory=dict)  # environment for ${VAR} in mixture paths
    prepare: PrepareSection | None = None


@dataclass
class TrainSection:
    lr: float = 3e-3  # peak learning rate of phase 1; phases scale it with lr_start / lr_end
    weight_decay: float = 3e-4  # fully decoupled (optimi decouple_lr=True, max_lr = lr)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    global_batch_size: int = 8  # sequences per optimizer step, all ranks together
    micro_batch_size: int = 8  # sequences per forward on one rank (gradient accumulation fills the rest)
    batch_size_warmup_tokens: int = 0  # published value, recorded; see docs/training.md (not applied)
    cpu_threads: int = 0  # torch intra-op threads on CPU (0: torch's default); 1 is fastest on a busy machine
    # how the model runs, not what it is (never stored in checkpoints): the attention kernel, auto | sdpa | cpu |
    # flex | flash (auto: by device and dtype, ettin.attention.resolve_backend), and the fused loss's chunk
    attn_backend: str = "auto"
    loss_chunk_size: int = LOSS_CHUNK_SIZE
    # background processes that build batches ahead (None: 1 on a CPU, up to 4 a rank on a GPU host; 0: none)
    data_workers: int | None = None
    precision: str = "fp32"  # fp32 | bf16 (autocast; weights and optimizer stay fp32)
    compile: bool = False
    distributed: str = "auto"  # auto (ddp when world > 1) | none | ddp | fsdp
    meta_init: bool = False  # fsdp: build on meta, shard, then init (large models)
    activation_checkpointing: bool = False  # per block: keep block inputs only, recompute in backward (memory)
    save_every_tokens: int = 0  # 0: only at the end of each phase; counted as the phase counts its budget
    # how phase budgets, warmup, decay and the save cadence count tokens: real (attention_mask = 1, as the
    # published count_padding_tokens: false) | slots (rows x seq_len, padding included); ettin.train.plan
    token_unit: str = "real"
    keep_checkpoints: int = 0  # 0: keep all (the suite releases its intermediate checkpoints)
    log_every: int = 1
    nan_policy: str = "stop"  # stop | skip
    # loss-spike guard, off | skip | stop: a step whose loss is over the mean of the last spike_window steps' by
    # spike_sigmas standard deviations (ettin.train.guard); off in the presets, as in the published runs
    spike_guard: str = "off"
    spike_window: int = 128
    spike_sigmas: float = 6.0
    peak_flops: float | None = None  # per device, for MFU; None: a guess from the device
    tensorboard: bool = True
    wandb: bool = False
    progress: bool = True
    mntp: bool = False  # encoder-from-decoder: masked next-token prediction (LLM2Vec) instead of MLM


@dataclass
class PhaseSection:
    name: str = "pretrain"
    tokens: int = 0  # the phase's budget: it ends at the first step whose cumulative tokens reach it
    token_unit: str | None = None  # real | slots (default: train.token_unit)
    seq_len: int = 1024
    global_rope_theta: float = 10_000.0
    local_rope_theta: float = 10_000.0
    mlm_probability: float = 0.3
    mixture: str = "pretrain"  # key into data.mixtures (or a preset name ettin.data knows)
    schedule: str = "warmup_stable"
    warmup_tokens: int = 0
    decay_tokens: int = 0  # the final decay's length (warmup_stable_decay; one_minus_sqrt: 0 = the whole phase)
    decay_shape: str | None = None  # "1-sqrt" | "linear" (default: 1-sqrt for one_minus_sqrt, linear for
    #                                 warmup_stable_decay, as the published trainer's schedulers)
    lr_start: float = 1.0  # factor of train.lr at the peak / start of the phase
    lr_end: float | None = None  # factor at the end (None: same as lr_start)
    reset_optimizer: bool = False  # False: moments carry over from the previous phase (as Composer loads)
    global_batch_size: int | None = None  # this phase's batch (default: train.global_batch_size)
    micro_batch_size: int | None = None  # this phase's micro-batch (default: train.micro_batch_size)

    @property
    def end_factor(self) -> float:
        return self.lr_start if self.lr_end is None else self.lr_end


@dataclass
class Recipe:
    name: str = "run"
    objective: str = "mlm"  # the model `ettin train` builds; `ettin pair` trains both
    seed: int = 0
    seeds: int = 1  # pre-training seeds `ettin pair` trains: seed .. seed+seeds-1 (OUT/seed-<s>/...); one run: 1
    out_dir: str = "runs"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    phases: list[PhaseSection] = field(default_factory=list)
    source_file: str = "<recipe>"  # where it came from (for messages); not a setting
    # the file's per-objective values, {key path: {objective: value}} (phases by name), which for_objective resolves
    # on this recipe itself; not a setting
    per_objective: dict[tuple, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    # ---- derived numbers -------------------------------------------------------------------------
    def batch_size(self, phase: PhaseSection) -> int:
        return phase.global_batch_size or self.train.global_batch_size

    def micro_batch_size(self, phase: PhaseSection) -> int:
        return phase.micro_batch_size or self.train.micro_batch_size

    def for_objective(self, objective: str) -> Recipe:
        """This recipe as it trains `objective`, a function of the recipe alone: every change made to it after loading
        stays, and each per-objective value takes `objective`'s unless it was changed (then it is both's)."""
        if objective == self.objective:
            return self
        d = self.to_dict()
        for path, values in self.per_objective.items():
            found = _at(d, path)
            if found and objective in values and found[0][found[1]] == values[self.objective]:
                found[0][found[1]] = values[objective]
        d["objective"] = objective
        resolved = recipe_from_dict(d, self.source_file)
        resolved.per_objective = self.per_objective
        return resolved

    def model_config(
        self, phase: PhaseSection, vocab_size: int, objective: str | None = None, special: dict | None = None
    ) -> ModelConfig:
        """The phase's model: size preset + overrides, the tokenizer's vocabulary and special ids, the
        phase's RoPE thetas and context."""
        from ettin.config import preset

        kw = dict(self.model.overrides)
        kw.update(special or {})
        kw.update(
            vocab_size=vocab_size,
            global_rope_theta=float(phase.global_rope_theta),
            local_rope_theta=float(phase.local_rope_theta),
            max_position_embeddings=max(phase.seq_len, int(kw.get("max_position_embeddings", 0))),
        )
        return preset(self.model.size, objective or self.objective, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source_file")
        d.pop("per_objective")
        d["train"]["betas"] = list(d["train"]["betas"])
        return d

    def to_yaml(self) -> str:
        """The recipe as a file load_recipe takes back (a run's recipe.yaml): without the settings its objective
        does not read (a decoder's masking rates), which a recipe file may not set."""
        return yaml.safe_dump(usable(self.to_dict()), sort_keys=False)


def usable(raw: dict) -> dict:
    """A copy of a recipe mapping without what its objective cannot use (ettin.data.ready.unusable_keys)."""
    raw = copy.deepcopy(raw)
    for text in unusable_keys(raw):
        *path, last = text.split(":", 1)[0].split(".")
        node = raw
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node.pop(last, None)
    return raw


# ---- loading -------------------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file, apply dotted overrides, validate; raises RecipeError naming file and field."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    raw = _read_with_extends(path, seen=())
    unusable = unusable_keys(raw)  # what the file says, before the command line's overrides
    if unusable:
        raise RecipeError(f"{path}: {unusable[0]}; remove it")
    for text in overrides or []:
        apply_override(raw, text, "command line")
    try:
        return recipe_from_dict(raw, str(path))
    except RecipeError as e:  # a bad value the command line gave is the command line's, not the file's
        for text in overrides or []:
            key = text.removeprefix("--").split("=", 1)[0]
            if str(e).startswith(f"{path}: {key}:"):
                raise RecipeError(f"the command line ({text}, on {path}): {str(e)[len(str(path)) + 2:]}") from None
        raise


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    return data


def _read_with_extends(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    data = _read_yaml(path)
    _anchor_mixture_paths(data, path)
    bases = data.pop("extends", None)
    dotted = {k: data.pop(k) for k in [k for k in data if "." in str(k)]}
    merged: dict[str, Any] = {}
    for base in [] if bases is None else bases if isinstance(bases, list) else [bases]:
        base_path = (path.parent / str(base)).resolve()
        if base_path in seen or len(seen) > 4:
            raise RecipeError(f"{path}: extends: circular or too deep ({base})")
        if not base_path.is_file():
            raise RecipeError(f"{path}: extends: {base} not found")
        merged = _deep_merge(merged, _read_with_extends(base_path, (*seen, base_path)))
    merged = _deep_merge(merged, data)
    for key, value in dotted.items():
        set_path(merged, str(key), value, str(path))
    return merged


def _anchor_mixture_paths(data: dict[str, Any], path: Path) -> None:
    """Mixture files are named relative to the recipe that names them (which may be an `extends` base):
    rewrite them relative to the working directory so they stay valid after merging."""
    mixtures = (data.get("data") or {}).get("mixtures") if isinstance(data.get("data"), dict) else None
    if not isinstance(mixtures, dict):
        return
    for key, spec in mixtures.items():
        if isinstance(spec, str) and not Path(spec).is_absolute() and (path.parent / spec).exists():
            mixtures[key] = os.path.relpath(path.parent / spec)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(raw: dict[str, Any], text: str, source: str = "<override>") -> None:
    """``train.lr=1e-3`` (a leading ``--`` is allowed); the value is parsed as YAML."""
    body = text.removeprefix("--")
    if "=" not in body:
        raise RecipeError(f"{source}: override {text!r}: expected key.path=value")
    key, value_text = body.split("=", 1)
    from ettin.train.recipe_keys import unknown_key

    problem = unknown_key(key, raw)
    if problem:
        raise RecipeError(f"{source}: override {text}: {problem}")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError:
        value = value_text
    set_path(raw, key, value, source)


def set_path(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    """raw[key] = value for a dotted key (``train.lr``, ``phases.1.tokens``, ``phases.decay.tokens``)."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, key, source)
        else:
            if not isinstance(node.get(part, {}), (dict, list)):
                raise RecipeError(f"{source}: override {key}: {'.'.join(parts[: i + 1])} is not a section")
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        index = int(last) if last.isdigit() else -1
        if not 0 <= index < len(node):
            raise RecipeError(f"{source}: override {key}: no item {last} (the list has {len(node)})")
        node[index] = value
    else:
        node[last] = value


def _list_item(items: list, part: str, key: str, source: str) -> Any:
    if part.isdigit() and int(part) < len(items):
        return items[int(part)]
    for item in items:  # phases may be addressed by name: phases.decay.tokens=1M
        if isinstance(item, dict) and item.get("name") == part:
            return item
    raise RecipeError(f"{source}: override {key}: no list item {part!r}")


# ---- typed conversion + validation ---------------------------------------------------------------

_TOKEN_FIELDS = {"tokens", "warmup_tokens", "decay_tokens", "save_every_tokens", "batch_size_warmup_tokens"}


def _convert(cls: type, data: Any, where: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: {where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - {"source_file", "per_objective"}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecipeError(f"{source}: {where}: unknown field(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}".lstrip("."), source)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _coerce(hint, value, where, source)
    if where.split(".")[-1] in _TOKEN_FIELDS:
        try:
            return parse_tokens(value)
        except ValueError as e:
            raise RecipeError(f"{source}: {where}: {e}") from None
    if dataclasses.is_dataclass(hint):
        return _convert(hint, value, where, source)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{source}: {where}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}.{i}", source) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise RecipeError(f"{source}: {where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{where}.{i}", source) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or hint is Any:
        if origin is dict and not isinstance(value, dict):
            raise RecipeError(f"{source}: {where}: expected a mapping, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{source}: {where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{source}: {where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{source}: {where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RecipeError(f"{source}: {where}: expected a string, got {value!r}")
        return str(value)
    return value


def recipe_from_dict(raw: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """The typed recipe of a mapping (a file's, overrides applied) for its objective, validated; one with per-objective
    values is validated for each objective, and keeps them (as each objective's typed value) for for_objective."""
    recipe = _typed(raw, raw.get("objective", Recipe.objective), source)
    paths = [p for p in _per_objective_paths(raw) if p]
    if paths:  # each objective's variant is a valid recipe too
        variants = {o: (recipe if o == recipe.objective else _typed(raw, o, source)).to_dict() for o in OBJECTIVES}
        names = [p.name for p in recipe.phases]
        for path in paths:  # phases by name, so that they are found when some are dropped
            key = ("phases", names[path[1]], *path[2:]) if path[0] == "phases" and len(path) > 1 else path
            recipe.per_objective[key] = {o: _value(d, path) for o, d in variants.items()}
    return recipe


# path settings that expand ${VAR} and ${VAR:-default} from the environment, as mixture paths do (ETTIN_RUNS in the
# cross-objective recipes' init_from, docs/real-sizes.md)
PATH_SETTINGS = (("model", "init_from"), ("data", "tokenizer"))


def _typed(raw: dict[str, Any], objective: str, source: str) -> Recipe:
    from ettin.data.mixture import expand_vars

    recipe = _convert(Recipe, resolve_objective({**raw, "objective": objective}, objective, source), "", source)
    recipe.source_file = source
    for section, key in PATH_SETTINGS:
        value = getattr(getattr(recipe, section), key)
        if isinstance(value, str) and "${" in value:
            setattr(getattr(recipe, section), key, expand_vars(value, f"{source}: {section}.{key}"))
    validate(recipe)
    return recipe


def _is_per_objective(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= set(OBJECTIVES)


def _per_objective_paths(node: Any, path: tuple = ()) -> list[tuple]:
    """The key paths of the per-objective values in a recipe mapping (list items by index)."""
    if _is_per_objective(node):
        return [path]
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return [p for k, v in items for p in _per_objective_paths(v, (*path, k))]


def _at(node: Any, path: tuple) -> tuple[Any, Any] | None:
    """(container, key) of a key path in a recipe mapping (list items by index, phases also by name); None: gone."""
    for i, step in enumerate(path):
        if isinstance(node, list) and isinstance(step, str):
            step = next((j for j, item in enumerate(node) if isinstance(item, dict) and item.get("name") == step), -1)
        if not (0 <= step < len(node) if isinstance(node, list) else isinstance(node, dict) and step in node):
            return None
        if i == len(path) - 1:
            return node, step
        node = node[step]
    return None


def _value(node: Any, path: tuple) -> Any:
    container, key = _at(node, path)
    return container[key]


def resolve_objective(node: Any, objective: str, source: str, where: str = "") -> Any:
    """`node` with every per-objective value ({mlm: a, clm: b}) replaced by `objective`'s."""
    if _is_per_objective(node):
        if objective not in node:
            raise RecipeError(f"{source}: {where}: a per-objective value without one for {objective!r} "
                              f"(it has {sorted(node)})")
        return node[objective]
    if isinstance(node, dict):
        return {k: resolve_objective(v, objective, source, f"{where}.{k}".lstrip(".")) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_objective(v, objective, source, f"{where}.{i}") for i, v in enumerate(node)]
    return node
