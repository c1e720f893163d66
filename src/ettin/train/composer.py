"""`ettin import-composer`: a published run's raw Composer checkpoint as a native ettin run folder.

The published runs (jhu-clsp/ettin-checkpoints) were trained with MosaicML Composer 0.24.1 through orionw/bert24
(environment.yaml), DDP on 4 GPUs. Each save is one file written by rank 0, `ep{epoch}-ba{batch}-rank0.pt`:
``{"state": state.state_dict(), "rng": [...]}`` (composer/utils/checkpoint.py lines 726-735 @ v0.24.1), where
`state` holds (composer/core/state.py @ v0.24.1, `state_dict`, lines 1041-1102):
  model         `get_model_state_dict` (lines 960-997): the HuggingFaceModel wrapper's names, `model.bert. ...`
  optimizers    {"StableAdamW": get_optimizer_state_dict(...)} (lines 1000-1029): under torch >= 2.4 keyed by
                parameter name (older torch: `optimizer.state_dict()`, keyed by index: both are read here)
  schedulers    {"LambdaLR": ...}; the schedule itself is a function of the timestamp, not stored
  timestamp     {"Timestamp": {"batch", "token", "sample", ... }} (composer/core/time.py lines 579-595): `token` is
                the real tokens of every rank (`count_padding_tokens: false`), since the last `reset_time`
  rank_zero_seed, integrations {"huggingface": {"model": {"config": {"content": config.json, "class": ...}}}}
                (composer/models/huggingface.py `get_metadata`), metadata
bert24's names (src/bert_layers/model.py: FlexBertForMaskedLM lines 1003-1013 `bert`, `head`, `decoder`;
FlexBertForCausalLM lines 1504-1520 `lm_head`; FlexBertModel lines 881-932 `embeddings`, `encoder`, `final_norm`;
layers.py lines 286-293 `attn_norm` (an Identity in layer 0), `attn`, `mlp_norm`, `mlp`) are transformers'
ModernBERT names under another prefix, which is how they map onto ettin's (`ettin.hf` holds the ModernBERT side).

What is written: OUT/checkpoints/<phase>-step<batch>/ (DCP + meta.json, as `ettin.train.checkpoint` saves) with
the weights, the optimizer state in ettin's StableAdamW (the same update rule: `ettin.train.optim`), the phase
position in real tokens, and `imported` (where it came from, what was not carried); OUT/imported.json the same
record; OUT/history.jsonl an `import` line. `ettin train RECIPE --out OUT --resume` then continues it.

Not carried (`NOT_CARRIED`, also written into the record): the RNG states (Composer's per-rank torch / numpy /
python / CUDA states, and the dataloader workers' state: ettin draws its masks from its own seed, so the
continued masks differ from the ones the published run would have drawn); the data position within the
published order (ettin's loader continues its own order at the same step, unless the recipe replays the
published order: `ettin.data.order`); the scheduler object (ettin recomputes the LR from the recipe's schedule at
the imported token position); training metrics and callbacks' state; the gradient-scaler (unused under bf16).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ettin.config import MODERNBERT_SPECIAL, ModelConfig, periodic_layer_types
from ettin.io import UserError, atomic_write_json, hub_offline
from ettin.model import EttinModel
from ettin.train import checkpoint as ckpt
from ettin.train.optim import build_optimizer, no_decay
from ettin.train.recipe import TrainSection
from ettin.train.resume import append_history

OPTIMIZER = "StableAdamW"  # `type(optimizer).__qualname__` of bert24's optimizer (src/optimizer.py line 30)
PUBLISHED_PHASES = ("pretrain", "extension", "decay")  # the presets' phases (recipes/_ettin.yaml), in order
EMBEDDINGS, TIED = "model.bert.embeddings.tok_embeddings.weight", "model.decoder.weight"
ARCHITECTURES = {"FlexBertForMaskedLM": "mlm", "FlexBertForCausalLM": "clm"}
HEADS = {"mlm": "head", "clm": "lm_head"}
NOT_CARRIED = {
    "rng": "Composer's per-rank torch/numpy/python/CUDA RNG states and the dataloader workers' state: ettin draws "
           "its masks (and dropout) from its own seed, so the continued masks differ from the published run's",
    "data_position": "where the published run was in its data order: ettin continues its own loader at the same "
                     "step, or the published order when the recipe replays it (ettin.data.order)",
    "schedulers": "the scheduler object: ettin computes each step's LR from the recipe's schedule at the "
                  "imported real-token position",
    "metrics_callbacks": "train/eval metrics, callbacks' state and the gradient scaler (unused in bf16)",
}
# Settings of bert24's FlexBertConfig that ettin's architecture fixes, with the value it implements. A checkpoint's
# config.json holds only what differs from the class defaults (transformers writes `to_diff_dict`), so a missing
# key takes FlexBertConfig's default (src/bert_layers/configuration_bert.py lines 43-100) or, for the keys it
# inherits, transformers' BertConfig default.
FIXED = {
    "attention_layer": ("rope", "base"), "bert_layer": ("prenorm", "prenorm"),
    "embedding_layer": ("sans_pos", "absolute_pos"), "encoder_layer": ("base", "base"),
    "mlp_layer": ("glu", "mlp"), "normalization": ("layernorm", "rmsnorm"), "hidden_act": ("gelu", "gelu"),
    "head_pred_act": ("gelu", "silu"), "embed_norm": (True, True), "final_norm": (True, False),
    "skip_first_prenorm": (True, False), "head_pred_norm": (True, True), "attn_qkv_bias": (False, False),
    "attn_out_bias": (False, False), "mlp_in_bias": (False, False), "mlp_out_bias": (False, False),
    "head_pred_bias": (False, False), "decoder_bias": (True, True), "rotary_emb_dim": (None, None),
    "rotary_emb_interleaved": (False, False), "rotary_emb_scale_base": (None, None),
    "embed_dropout_prob": (0.0, 0.0), "mlp_dropout_prob": (0.0, 0.0), "head_pred_dropout": (0.0, 0.0),
    "initial_attention_layer": (None, None), "initial_bert_layer": (None, None), "initial_mlp_layer": (None, None),
    "local_attn_rotary_emb_dim": (None, None), "tie_word_embeddings": (True, True),
}  # key: (what ettin implements, the default when the config omits it)


@dataclass(frozen=True)
class ComposerCheckpoint:
    source: str  # the file read (or hub repo:path@revision)
    state: dict[str, Any]
    rng_ranks: int

    def field(self, *keys: str) -> Any:
        node: Any = self.state
        for i, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(("state", *keys[:i + 1]))
                raise UserError(f"{self.source}: not a Composer checkpoint of the published runs: no {where}")
            node = node[key]
        return node


def read_checkpoint(path: str | Path, source: str | None = None) -> ComposerCheckpoint:
    """A Composer checkpoint file. It is a pickle (Composer writes Python objects: timedeltas, numpy RNG states),
    so it is read with `weights_only=False`: import only files you trust, such as the published ones."""
    path = Path(path)
    source = source or str(path)
    if not path.is_file():
        raise UserError(f"{source}: no such file (a Composer checkpoint, ep<E>-ba<B>-rank0.pt)")
    try:
        try:  # memory-mapped: a 1B checkpoint (about 12 GB) is not held twice
            raw = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # a file in torch's legacy format cannot be mapped
            raw = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: say which
        raise UserError(f"{source}: not readable as a torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("state"), dict):
        raise UserError(f"{source}: not a Composer checkpoint (expected a dict with a 'state' dict, found "
                        f"{type(raw).__name__}{' keys ' + str(sorted(raw)[:6]) if isinstance(raw, dict) else ''})")
    rng = raw.get("rng")
    return ComposerCheckpoint(source, raw["state"], len(rng) if isinstance(rng, list) else 0)


def download(spec: str, revision: str | None = None, repo_type: str = "dataset") -> Path:
    """`owner/name/path/in/repo.pt` on the hub (jhu-clsp/ettin-checkpoints is a dataset repo): its local copy."""
    parts = spec.split("/")
    if len(parts) < 3:
        raise UserError(f"{spec}: not a file here, nor a hub file owner/name/path/to/ep<E>-ba<B>-rank0.pt")
    if hub_offline():
        raise UserError(f"{spec}: not a file here, and the hub is switched off (HF_HUB_OFFLINE)")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), revision=revision, repo_type=repo_type))


# ------------------------------------------------------------------------------------------ config
def hf_config(ck: ComposerCheckpoint) -> tuple[dict[str, Any], str | None]:
    """(config.json of the checkpoint's model, its class name) from `integrations`."""
    model = ck.field("integrations", "huggingface", "model")
    config = (model.get("config") or {}) if isinstance(model, dict) else {}
    content = config.get("content")
    if not isinstance(content, dict):
        raise UserError(f"{ck.source}: state.integrations.huggingface.model.config.content (the model's "
                        "config.json) is missing")
    arch = config.get("class") or (content.get("architectures") or [None])[0]
    return content, arch.rsplit(".", 1)[-1] if arch else None


def model_config(content: dict[str, Any], objective: str, source: str) -> ModelConfig:
    """ettin's ModelConfig from a FlexBertConfig's config.json; a setting ettin does not implement is an error."""
    where = f"{source}: state.integrations.huggingface.model.config.content"
    for key, (implemented, default) in FIXED.items():
        value = content.get(key, default)
        if value != implemented:
            raise UserError(f"{where}.{key} = {value!r}: ettin's architecture implements {implemented!r} only")
    norm = {"eps": 1e-5, **(content.get("norm_kwargs") or {})}
    if norm.get("bias", False):
        raise UserError(f"{where}.norm_kwargs.bias = True: ettin's LayerNorms have no bias")
    if bool(content.get("causal_mask", False)) != (objective == "clm"):
        raise UserError(f"{where}.causal_mask = {content.get('causal_mask', False)!r} does not fit objective "
                        f"{objective} (a decoder is causal, an encoder is not)")
    window, every = int(content.get("sliding_window", -1)), int(content.get("global_attn_every_n_layers", -1))
    layers = int(content.get("num_hidden_layers", 12))
    if window <= 0 and every > 0:
        raise UserError(f"{where}: global_attn_every_n_layers without sliding_window")
    # bert24 attention.py lines 314-322: layer i is global iff i % every == 0; window (w // 2, w // 2)
    types = periodic_layer_types(layers, every) if every > 0 else (
        ["sliding_attention"] * layers if window > 0 else ["full_attention"] * layers)
    theta = float(content.get("rotary_emb_base", 10000.0))
    local = float(content.get("local_attn_rotary_emb_base", -1))
    vocab = int(content.get("vocab_size", 30522))
    special = dict(MODERNBERT_SPECIAL)
    if max(special.values()) >= vocab:  # not the ModernBERT vocabulary: the config's own ids
        special = {k: content.get(k, content.get(alt)) for k, alt in (
            ("pad_token_id", None), ("bos_token_id", "cls_token_id"), ("eos_token_id", "sep_token_id"),
            ("mask_token_id", None))}
        missing = [k for k, v in special.items() if v is None]
        if missing:
            raise UserError(f"{where}: vocabulary of {vocab} is not ModernBERT's and the config names no "
                            f"{', '.join(missing)}")
    return ModelConfig(
        objective=objective, vocab_size=vocab, hidden_size=int(content.get("hidden_size", 768)),
        intermediate_size=int(content.get("intermediate_size", 3072)), num_layers=layers,
        num_heads=int(content.get("num_attention_heads", 12)), layer_types=types,
        local_attention=window if window > 0 else 128, global_rope_theta=theta,
        local_rope_theta=theta if local == -1 else local, norm_eps=float(norm["eps"]),
        max_position_embeddings=max(8192, int(content.get("max_position_embeddings", 0))),
        initializer_range=float(content.get("init_std", 0.02)),
        initializer_cutoff_factor=float(content.get("init_cutoff_factor", 2.0)),
        attention_dropout=float(content.get("attention_probs_dropout_prob", 0.0)),
        attention_output_dropout=float(content.get("attn_out_dropout_prob", 0.0)), **special)


# ------------------------------------------------------------------------------------------ names
def ettin_name(name: str, objective: str) -> str | None:
    """The ettin parameter a published name holds (None: the decoder weight, tied to the embeddings)."""
    head = HEADS[objective]
    if name == "model.decoder.weight":
        return None
    if name == "model.decoder.bias":
        return "decoder_bias"
    for prefix, new in (("model.bert.encoder.layers.", "layers."), ("model.bert.", ""), (f"model.{head}.", "head.")):
        if name.startswith(prefix):
            return new + name[len(prefix):]
    raise UserError(f"unexpected weight {name!r} in a published {objective} checkpoint")


def objective_of(ck: ComposerCheckpoint, arch: str | None, requested: str | None) -> str:
    weights = ck.field("model")
    found = {o for o, h in HEADS.items() if any(k.startswith(f"model.{h}.") for k in weights)}
    by_arch = ARCHITECTURES.get(arch or "")
    seen = by_arch or (found.pop() if len(found) == 1 else None)
    if requested and seen and requested != seen:
        raise UserError(f"{ck.source}: --objective {requested}, but the checkpoint holds a {seen} model "
                        f"({arch or 'its head weights'})")
    if not (requested or seen):
        raise UserError(f"{ck.source}: cannot tell the objective (class {arch!r}); pass --objective mlm|clm")
    return requested or seen


def load_weights(ck: ComposerCheckpoint, model: EttinModel, objective: str) -> dict[str, str]:
    """The published weights into `model`, exactly; returns ettin name -> published name."""
    weights = ck.field("model")
    names, sd = {}, {}
    for name, tensor in weights.items():
        target = ettin_name(name, objective)
        if target is not None:
            names[target], sd[target] = name, tensor
    tied = weights.get("model.decoder.weight")
    if tied is not None and not torch.equal(tied, sd.get("embeddings.tok_embeddings.weight", tied)):
        raise UserError(f"{ck.source}: model.decoder.weight differs from the token embeddings (ettin ties them)")
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or extra:
        raise UserError(f"{ck.source}: weights do not fit the config's model: missing "
                        f"{[n for n in missing][:6]}, unexpected {[names[n] for n in extra][:6]}")
    for key, tensor in sd.items():
        if tensor.shape != own[key].shape:
            raise UserError(f"{ck.source}: state.model.{names[key]} has shape {tuple(tensor.shape)}, the config "
                            f"says {tuple(own[key].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()})
    return names


# ------------------------------------------------------------------------------------------ optimizer
def _published_order(weights: dict[str, torch.Tensor]) -> list[list[str]]:
    """Index-keyed optimizer state (Composer under torch < 2.4): the published groups' parameter names in their
    order: [no decay, decay] (bert24 main.py lines 93-106) over named_parameters (the tied weight once)."""
    names = [n for n in weights if n != "model.decoder.weight"]
    plain = [n for n in names if no_decay(n, weights[n])]
    return [plain, [n for n in names if n not in plain]]


def load_optimizer(ck: ComposerCheckpoint, model: EttinModel, names: dict[str, str], train) -> tuple[Any, dict]:
    """ettin's StableAdamW holding the published state; returns it and the published hyperparameters."""
    optimizers = ck.field("optimizers")
    if OPTIMIZER not in optimizers:
        raise UserError(f"{ck.source}: state.optimizers holds {sorted(optimizers)}, not bert24's {OPTIMIZER}")
    sd = optimizers[OPTIMIZER]
    groups, state = sd.get("param_groups"), sd.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict):
        raise UserError(f"{ck.source}: state.optimizers.{OPTIMIZER} has no param_groups/state")
    if groups and groups[0]["params"] and not isinstance(groups[0]["params"][0], str):
        order = _published_order(ck.field("model"))
        if [len(g["params"]) for g in groups] != [len(o) for o in order]:
            raise UserError(f"{ck.source}: state.optimizers.{OPTIMIZER} numbers its parameters, and its groups "
                            f"({[len(g['params']) for g in groups]}) are not the published [no decay, decay] "
                            f"({[len(o) for o in order]})")
        ids = {i: n for g, ns in zip(groups, order) for i, n in zip(g["params"], ns)}
        groups = [{**g, "params": [ids[i] for i in g["params"]]} for g in groups]
        state = {ids[i]: s for i, s in state.items()}
    # torch's get_optimizer_state_dict names a parameter by model.named_parameters(), which gives a tied weight its
    # first name (the embeddings: `bert` is registered before `decoder`); the decoder's name is read too
    state = {EMBEDDINGS if n == TIED else n: s for n, s in state.items()}
    group_of = {(EMBEDDINGS if n == TIED else n): g for g in groups for n in g["params"]}
    max_lrs = {g.get("max_lr") for g in groups}
    if len(max_lrs) != 1 or None in max_lrs or not all(g.get("decouple_lr") for g in groups):
        raise UserError(f"{ck.source}: state.optimizers.{OPTIMIZER}.param_groups: expected decouple_lr with one "
                        f"max_lr (the published decoupled_stableadamw), found max_lr {sorted(map(str, max_lrs))}")
    first = groups[0]
    hyper = {"lr": first["lr"], "max_lr": max_lrs.pop(), "betas": (first["beta1"], first["beta2"]),
             "eps": first["eps"], "weight_decay": max(g["weight_decay"] for g in groups)}
    train = dataclasses.replace(train, lr=hyper["lr"], betas=hyper["betas"], eps=hyper["eps"],
                                weight_decay=hyper["weight_decay"])
    optimizer = build_optimizer(model, train, max_lr=hyper["max_lr"])
    by_param = {p: n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        published = {id(group_of.get(names[by_param[p]], None)) for p in group["params"]}
        source = group_of.get(names[by_param[group["params"][0]]]) if group["params"] else None
        if len(published) != 1 or source is None:
            raise UserError(f"{ck.source}: the published parameter groups do not match ettin's (no decay for "
                            "tensors of one dimension and biases)")
        if source["weight_decay"] != group["weight_decay"]:
            raise UserError(f"{ck.source}: a published group has weight_decay {source['weight_decay']}, ettin's "
                            f"{group['weight_decay']}")
        group.update(lr=source["lr"], max_lr=source["max_lr"], setup=True,
                     step=torch.tensor(int(source["step"]), dtype=torch.int32))
        for p in group["params"]:
            name = names[by_param[p]]
            s = state.get(name)
            if s is None:
                raise UserError(f"{ck.source}: state.optimizers.{OPTIMIZER}.state has no entry for {name}")
            if s.get("kahan_comp") is not None:
                raise UserError(f"{ck.source}: {name} has a Kahan compensation (low-precision parameters); "
                                "ettin keeps fp32 parameters")
            for key in ("exp_avg", "exp_avg_sq"):
                if s[key].shape != p.shape:
                    raise UserError(f"{ck.source}: optimizer {key} of {name} has shape {tuple(s[key].shape)}")
            optimizer.state[p] = {"exp_avg": s["exp_avg"].to(p.dtype), "exp_avg_sq": s["exp_avg_sq"].to(p.dtype),
                                  "eps_sq": torch.as_tensor(s["eps_sq"], dtype=p.dtype), "kahan_comp": None}
    return optimizer, hyper


# ------------------------------------------------------------------------------------------ import
def import_composer(checkpoint: str | Path, out: str | Path, objective: str | None = None,
                    phase: str = "pretrain", start_batch: int = 0, start_tokens: int = 0,
                    revision: str | None = None, log=print) -> Path:
    """Write OUT (an ettin run folder) from a Composer checkpoint; returns the checkpoint folder written.
    `phase`: which of the recipe's phases the checkpoint is in; `start_batch` / `start_tokens`: the timestamp at
    that phase's start, for runs that did not `reset_time` (0: the timestamp restarted with the phase)."""
    if phase not in PUBLISHED_PHASES:
        raise UserError(f"--phase {phase!r}: one of {', '.join(PUBLISHED_PHASES)} (the published phases)")
    local = Path(checkpoint)
    source = str(checkpoint)
    if not local.exists():
        local = download(str(checkpoint), revision)
        source = f"{checkpoint}@{revision or 'main'}"
    out = Path(out)
    if ckpt.latest_checkpoint(out) is not None:
        raise UserError(f"{out} already holds checkpoints: import into a new folder")
    ck = read_checkpoint(local, source)
    content, arch = hf_config(ck)
    objective = objective_of(ck, arch, objective)
    config = model_config(content, objective, source)
    stamp = ck.field("timestamp", "Timestamp")
    batch, tokens = int(stamp["batch"]), int(stamp["token"])
    if batch < start_batch or tokens < start_tokens:
        raise UserError(f"{source}: timestamp batch {batch} / token {tokens} is before --start-batch "
                        f"{start_batch} / --start-tokens {start_tokens}")
    model = EttinModel(config)
    names = load_weights(ck, model, objective)
    optimizer, hyper = load_optimizer(ck, model, names, TrainSection())
    step, position = batch - start_batch, tokens - start_tokens
    record = {
        "source": source, "format": "composer", "class": arch, "objective": objective, "phase": phase,
        "timestamp": {k: (v.total_seconds() if isinstance(v, datetime.timedelta) else v) for k, v in stamp.items()},
        "phase_start": {"batch": start_batch, "tokens": start_tokens},
        "rank_zero_seed": ck.state.get("rank_zero_seed"), "published_world_size": ck.rng_ranks,
        "optimizer": {**hyper, "betas": list(hyper["betas"]),
                      "steps": [int(g["step"]) for g in optimizer.param_groups]},
        "scheduler_last_lr": _last_lr(ck), "model_config": content, "not_carried": NOT_CARRIED,
    }
    meta = {"run": out.name, "run_objective": objective, "phase": phase, "phase_index": PUBLISHED_PHASES.index(phase),
            "step": step, "phase_tokens": position, "token_unit": "real", "tokens": tokens,
            "model_config": config.to_dict(), "init_from": None,
            "data_position": {"phase": phase, "next_step": step, "seed": ck.state.get("rank_zero_seed"),
                              "fingerprint": None},
            "world_size": 1, "has_optimizer": True, "time": time.time(), "imported": record}
    out.mkdir(parents=True, exist_ok=True)
    written = ckpt.save_checkpoint(out, ckpt.checkpoint_name(phase, step), model, optimizer, meta)
    atomic_write_json(out / "imported.json", record)
    append_history(out, {"event": "import", "objective": objective, "from_checkpoint": source, "init_from": None,
                         "changes": {}})
    log(f"imported {source}: {objective} {config.num_parameters() / 1e6:.1f}M params, phase {phase} step {step} "
        f"at {position:,} real tokens (max_lr {hyper['max_lr']:g}, optimizer step {record['optimizer']['steps']}) "
        f"-> {written}\nnot carried: " + "; ".join(NOT_CARRIED))
    return written


def _last_lr(ck: ComposerCheckpoint) -> list[float] | None:
    schedulers = ck.state.get("schedulers") or {}
    for value in schedulers.values() if isinstance(schedulers, dict) else ():
        if isinstance(value, dict) and "_last_lr" in value:
            return [float(x) for x in value["_last_lr"]]
    return None


def composer_name(ettin: str, objective: str) -> str:
    """The published name of an ettin parameter (the inverse of `ettin_name`; fixtures and checks use it)."""
    if ettin == "decoder_bias":
        return "model.decoder.bias"
    if ettin.startswith("head."):
        return f"model.{HEADS[objective]}." + ettin[len("head."):]
    if re.match(r"layers\.\d+\.", ettin):
        return "model.bert.encoder." + ettin
    return "model.bert." + ettin


# ------------------------------------------------------------------------------------------ command
def register(subparsers) -> None:
    text = "a published run's raw Composer checkpoint (jhu-clsp/ettin-checkpoints) as an ettin run folder"
    p = subparsers.add_parser("import-composer", help=text, description=text + ", which `ettin train RECIPE --out "
                              "OUT --resume` continues", allow_abbrev=False)
    p.add_argument("checkpoint", help="an ep<E>-ba<B>-rank0.pt file, or owner/name/path/to/it.pt on the hub (online)")
    p.add_argument("out", help="the run folder to write (must hold no checkpoint)")
    p.add_argument("--objective", choices=tuple(HEADS), help="mlm or clm (default: what the checkpoint holds)")
    p.add_argument("--phase", choices=PUBLISHED_PHASES, default="pretrain",
                   help="the recipe phase the checkpoint is in (default: pretrain)")
    p.add_argument("--start-batch", type=int, default=0, metavar="B",
                   help="the timestamp's batch at the phase's start, for a phase run without reset_time (default 0)")
    p.add_argument("--start-tokens", type=int, default=0, metavar="T",
                   help="the timestamp's token count at the phase's start (default 0)")
    p.add_argument("--revision", help="hub revision of a hub checkpoint")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    import_composer(args.checkpoint, args.out, args.objective, args.phase, args.start_batch, args.start_tokens,
                    args.revision)
    return 0
