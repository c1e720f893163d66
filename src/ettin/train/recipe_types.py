"""The types of a training recipe, frozen once loaded: `Recipe` and its sections (`ModelSection`, `DataSection`,
`TrainSection`, `PhaseSection`), with the numbers derived from them, and `recipe_from_dict` (a mapping, typed,
validated). A loaded recipe is a value: change one with `dataclasses.replace`. Reading files, `extends` and
overrides: `ettin.train.recipe`; how values are read: `ettin.train.recipe_values`; the checks:
`ettin.train.recipe_checks`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from ettin.config import LOSS_CHUNK_SIZE, OBJECTIVES, ModelConfig
from ettin.data.holdout import HOLDOUT_FRACTION
from ettin.data.ready import unusable_keys
from ettin.train.recipe_checks import RecipeError, validate
from ettin.train.recipe_values import convert, find, per_objective_paths, resolve_objective


class FrozenDict(dict):
    """A mapping of a loaded recipe (`model.overrides`, `data.mixtures`, `data.vars`, and the mappings inside them):
    a dict to every reader (isinstance, json, ** unpacking), refusing changes, as the frozen dataclasses refuse
    assignment. A changed recipe is made with `dataclasses.replace` and a new mapping."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a loaded recipe is a value: make a changed one with dataclasses.replace")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):  # copy, deepcopy and pickle build a new one instead of filling it item by item
        return (type(self), (dict(self),))


class FrozenList(list):
    """A list of a loaded recipe (`data.prepare.sources`, the lists inside its mappings), refusing changes."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a loaded recipe is a value: make a changed one with dataclasses.replace")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = clear = extend = insert = pop = remove = _refuse
    reverse = sort = _refuse

    def __reduce__(self):
        return (type(self), (list(self),))


def freeze(value: Any) -> Any:
    """Mappings and lists, at any depth, as FrozenDict and FrozenList (other values as they are)."""
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain dicts and lists of `freeze`'s result (for YAML, and for mappings a caller goes on to change)."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelSection:
    size: str = "tiny"  # a preset name from ettin.config (17m ... 1b, tiny, demo)
    # ModelConfig fields, e.g. attention_output_dropout; not those the recipe sets elsewhere (the objective, the phase's
    # RoPE thetas, the tokenizer's vocabulary and ids: recipe_checks.SET_ELSEWHERE)
    overrides: dict[str, Any] = field(default_factory=dict)
    # a local checkpoint folder (meta.json) or Hugging Face folder (config.json) to start phase 1 from
    # (cross-objective); checked to exist before training (ettin.train.preflight), never fetched from the hub
    init_from: str | None = None


@dataclass(frozen=True)
class PrepareSection:
    """Make the data a recipe needs when it is missing (idempotent): a tokenizer, then token shards."""

    out: str  # the prepared folder (`ettin data prepare --out`)
    sources: list[str] = field(default_factory=list)  # source specs, as `ettin data prepare --source`
    tokenizer_vocab_size: int | None = None  # train data.tokenizer on the training side when it is missing
    workers: int = 1


@dataclass(frozen=True)
class DataSection:
    source: str = "prepared"  # prepared (token shards via ettin.data) | synthetic (random ids, speed checks)
    tokenizer: str | None = None  # tokenizer.json path (or a folder holding one)
    vocab_size: int | None = None  # synthetic data / when no tokenizer is given
    mixtures: dict[str, Any] = field(default_factory=dict)  # phase mixture name -> YAML path or mapping
    holdout_fraction: float = HOLDOUT_FRACTION  # the last ceil(fraction x docs) of each source are never trained on
    vars: dict[str, str] = field(default_factory=dict)  # environment for ${VAR} in mixture paths
    prepare: PrepareSection | None = None


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Recipe:
    name: str = "run"
    objective: str = "mlm"  # the model `ettin train` builds; `ettin pair` trains both
    seed: int = 0
    seeds: int = 1  # pre-training seeds `ettin pair` trains: seed .. seed+seeds-1 (OUT/seed-<s>/...); one run: 1
    out_dir: str = "runs"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    phases: tuple[PhaseSection, ...] = ()
    source_file: str = field(default="<recipe>", metadata={"setting": False})  # where it came from (for messages)
    # the file's per-objective values, {key path: {objective: value}} (phases by name), which for_objective resolves
    # on this recipe itself
    per_objective: dict[tuple, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False,
                                                       metadata={"setting": False})

    # ---- derived numbers -------------------------------------------------------------------------
    def batch_size(self, phase: PhaseSection) -> int:
        return phase.global_batch_size or self.train.global_batch_size

    def micro_batch_size(self, phase: PhaseSection) -> int:
        return phase.micro_batch_size or self.train.micro_batch_size

    def for_objective(self, objective: str) -> Recipe:
        """This recipe as it trains `objective`, a function of the recipe alone: every change made to it after loading
        (`dataclasses.replace`) stays, and each per-objective value takes `objective`'s unless it was changed (then it
        is both's)."""
        if objective == self.objective:
            return self
        _check_mntp(self.train.mntp, objective, self.source_file)
        d = self.to_dict()
        for path, values in self.per_objective.items():
            found = find(d, path)
            if found and objective in values and found[0][found[1]] == values[self.objective]:
                found[0][found[1]] = values[objective]
        d["objective"] = objective
        return dataclasses.replace(typed(d, objective, self.source_file), per_objective=self.per_objective)

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
        d = thaw(dataclasses.asdict(self))
        d.pop("source_file")
        d.pop("per_objective")
        d["train"]["betas"] = list(d["train"]["betas"])
        d["phases"] = list(d["phases"])
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


# ---- typed conversion + validation ---------------------------------------------------------------


def recipe_from_dict(raw: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """The typed recipe of a mapping (a file's, overrides applied) for its objective, validated; one with per-objective
    values is validated for each objective, and keeps them (as each objective's typed value) for for_objective."""
    recipe = typed(raw, raw.get("objective", Recipe.objective), source)
    _check_mntp(recipe.train.mntp, recipe.objective, source)
    paths = [p for p in per_objective_paths(raw) if p]
    if not paths:
        return recipe
    # each objective's variant is a valid recipe too
    variants = {o: (recipe if o == recipe.objective else typed(raw, o, source)).to_dict() for o in OBJECTIVES}
    names = [p.name for p in recipe.phases]
    per_objective = {}
    for path in paths:  # phases by name, so that they are found when some are dropped
        key = ("phases", names[path[1]], *path[2:]) if path[0] == "phases" and len(path) > 1 else path
        per_objective[key] = {o: _value(d, path) for o, d in variants.items()}
    return dataclasses.replace(recipe, per_objective=per_objective)


# path settings that expand ${VAR} and ${VAR:-default} from the environment, as mixture paths do (ETTIN_RUNS in the
# cross-objective recipes' init_from, docs/real-sizes.md)
PATH_SETTINGS = (("model", "init_from"), ("data", "tokenizer"))


def typed(raw: dict[str, Any], objective: str, source: str) -> Recipe:
    """The validated recipe of a mapping trained as `objective` (its per-objective values resolved, path settings'
    ${VAR} expanded)."""
    from ettin.data.mixture import expand_vars

    recipe = convert(Recipe, resolve_objective({**raw, "objective": objective}, objective, source), "", source)
    recipe = dataclasses.replace(recipe, source_file=source)
    for section, key in PATH_SETTINGS:
        value = getattr(getattr(recipe, section), key)
        if isinstance(value, str) and "${" in value:
            expanded = expand_vars(value, f"{source}: {section}.{key}")
            recipe = dataclasses.replace(recipe, **{section: dataclasses.replace(getattr(recipe, section),
                                                                                 **{key: expanded})})
    recipe = _frozen(recipe)
    validate(recipe)
    return recipe


def _frozen(recipe: Recipe) -> Recipe:
    """The recipe with its mappings and lists frozen too (the dataclasses already refuse assignment)."""
    data = recipe.data
    prepare = data.prepare and dataclasses.replace(data.prepare, sources=freeze(list(data.prepare.sources)))
    return dataclasses.replace(
        recipe, model=dataclasses.replace(recipe.model, overrides=freeze(dict(recipe.model.overrides))),
        data=dataclasses.replace(data, mixtures=freeze(dict(data.mixtures)), vars=freeze(dict(data.vars)),
                                 prepare=prepare))


def _check_mntp(mntp: bool, objective: str, source: str) -> None:
    """train.mntp is an encoder's (ettin.data.collate.collation_objective): refused for a decoder, never ignored."""
    if mntp and objective != "mlm":
        raise RecipeError(f"{source}: train.mntp: masked next-token prediction trains an encoder (mlm); a "
                          f"{objective} model cannot use it: remove it, or train only the encoder")


def _value(node: Any, path: tuple) -> Any:
    container, key = find(node, path)
    return container[key]
