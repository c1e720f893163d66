"""What a run folder says it trained: the recipe check on `--resume`, and the run's history.

A run folder's `recipe.yaml` must describe the training its checkpoints hold. On a resume the recipe given
now is compared with the stored one, key by key:

  how a run is executed    logging, checkpoint cadence, threads, compile, precision (autocast), attention
                           kernels, the parallel layout and micro-batches (`OPERATIONAL`): free to change
                           (a run moves between machines); the change is recorded
  phases not started yet   anything (their length, data, schedule; phases added or removed after the
                           current one): applied and recorded
  the current phase        `tokens` (and its warmup / decay / schedule factors) when the learning rates of the
                           steps already trained stay the same, bitwise, and the new length is not shorter
                           than what was trained: an extension, applied and recorded. A 1-sqrt decay spans
                           its whole phase, so lengthening it would change the steps already trained: refused.
  everything else          the model, the seed, the objective, the peak LR, the tokenizer, finished phases,
                           the current phase's data, context, masking or batch: refused, naming each key
                           (start another run folder, or continue this one's checkpoint with model.init_from)

Every start and resume appends one line to `history.jsonl`: the time, the event (start / resume /
extend), the checkpoint it continued from (a resume: the run's own; a start: `model.init_from`, else null), the
starting weights (`init_from`: path, kind and what the source says of itself, or null) and each changed key with
its old and new value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ettin.train import checkpoint as ckpt
from ettin.train.recipe import Recipe, RecipeError, usable
from ettin.train.schedule import PhaseSchedule

if TYPE_CHECKING:
    from ettin.train.plan import PhasePlan, Plan

HISTORY = "history.jsonl"
# keys (dotted, `phases.*` for any phase) that say how training is executed, not what is trained
OPERATIONAL = {
    "name", "out_dir", "seeds", "data.vars", "data.prepare", "data.tokenizer",  # the tokenizer is compared by content
    "train.cpu_threads", "train.compile", "train.distributed", "train.meta_init", "train.activation_checkpointing", "train.micro_batch_size",
    "train.save_every_tokens", "train.keep_checkpoints", "train.log_every", "train.peak_flops",
    "train.tensorboard", "train.wandb", "train.progress", "train.batch_size_warmup_tokens", "train.data_workers",
    "train.precision",  # bf16 autocast or fp32 matmuls: weights and optimizer stay fp32 either way
    "train.attn_backend", "train.loss_chunk_size",  # kernels, not the model
    "train.nan_policy", "train.spike_guard", "train.spike_window", "train.spike_sigmas",  # guards of steps to come
    "model.overrides.attn_backend", "model.overrides.loss_chunk_size",  # where runs before the move kept them
    # the tokenizer's ids, which `ettin continue` once wrote here and Recipe.model_config always set from the data
    "model.overrides.pad_token_id", "model.overrides.bos_token_id", "model.overrides.eos_token_id",
    "model.overrides.mask_token_id",
    "phases.*.micro_batch_size",
}
# keys of the phase being trained that may change when the steps already trained keep their learning rates
EXTENDABLE = {"tokens", "warmup_tokens", "decay_tokens", "decay_shape", "token_unit", "schedule", "lr_start", "lr_end"}


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}; lists by index (phases.0.tokens)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        out = {}
        for i, value in enumerate(node):
            out.update(flatten(value, f"{prefix}.{i}"))
        return out
    return {prefix: list(node) if isinstance(node, tuple) else node}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _pattern(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "phases" and len(parts) > 1:
        parts[1] = "*"
    return ".".join(parts)


def _operational(key: str) -> bool:
    pattern = _pattern(key)
    return any(pattern == k or pattern.startswith(k + ".") for k in OPERATIONAL)


def _same_file(a: str | None, b: str | None) -> bool:
    """Two paths (relative to the working directory) naming files with the same bytes."""
    if a == b:
        return True
    pa, pb = Path(str(a)), Path(str(b))
    return pa.is_file() and pb.is_file() and _sha(pa) == _sha(pb)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _phase_label(recipe_dict: dict, index: int) -> str:
    phases = recipe_dict.get("phases") or []
    name = phases[index].get("name") if index < len(phases) and isinstance(phases[index], dict) else None
    return f"phases.{index} ({name})" if name else f"phases.{index}"


def classify(old: dict[str, Any], recipe: Recipe, meta: dict[str, Any] | None) -> tuple[dict, dict]:
    """(accepted, refused) changes between the stored recipe `old` and `recipe`, given the newest
    checkpoint's meta.json (None: nothing trained yet, every change is accepted). Each maps a dotted key to
    (old, new) (refused: to (old, new, why))."""
    new = usable(recipe.to_dict())  # both without what the objective does not read (older recipe.yaml files
    changes = changed_keys(usable(old), new)  # hold a decoder's masking rates)
    for key in [k for k in changes if k.startswith("data.mixtures.")]:  # the same file named differently
        if _same_file(*changes[key]):
            del changes[key]
    if meta is None:
        return changes, {}
    current, done = int(meta["phase_index"]), int(meta["step"])
    used = {p.get("mixture") for p in (old.get("phases") or [])[: current + 1] if isinstance(p, dict)}
    accepted, refused = {}, {}
    for key, (a, b) in changes.items():
        parts = key.split(".")
        if _operational(key):
            accepted[key] = (a, b)
        elif parts[0] == "data" and parts[1:2] == ["mixtures"] and len(parts) > 2:
            if parts[2] in used:
                refused[key] = (a, b, "a mixture of a phase already trained")
            else:
                accepted[key] = (a, b)
        elif parts[0] == "phases" and len(parts) > 1 and parts[1].isdigit():
            index = int(parts[1])
            if index > current:
                accepted[key] = (a, b)
            elif index == current and len(parts) == 3 and parts[2] in EXTENDABLE:
                accepted[key] = (a, b)  # checked as a whole below
            else:
                refused[key] = (a, b, "already trained" if index < current else
                                f"the phase being trained ({done} steps done)")
        else:
            refused[key] = (a, b, "shapes everything already trained")
    extension = {k: v for k, v in accepted.items() if k.startswith(f"phases.{current}.")}
    if extension:
        why = _extension_problem(recipe, current, done, meta)
        if why:
            for key in extension:
                refused[key] = (*accepted.pop(key), why)
    return accepted, refused


def _extension_problem(recipe: Recipe, index: int, done: int, meta: dict[str, Any]) -> str | None:
    """Why changing the current phase's length or schedule would rewrite the steps already trained (or None)."""
    from ettin.train.plan import make_plan

    if index >= len(recipe.phases):
        return "the recipe no longer has this phase"
    phase = make_plan(recipe, recipe.objective, int(meta.get("world_size", 1))).phases[index]
    position = meta.get("phase_tokens")
    stored = dict(meta.get("scheduler") or {})
    stored.pop("position", None)
    try:
        old = PhaseSchedule(**stored)
    except TypeError:
        return "the checkpoint does not record its schedule (it predates real-token budgets)"
    if position is None:
        return "the checkpoint does not record its phase's token count"
    if meta.get("token_unit", phase.token_unit) != phase.token_unit:
        return f"the phase counted {meta.get('token_unit')} tokens; the recipe now counts {phase.token_unit}"
    if phase.tokens < position:
        return f"{position:,} tokens are already trained; the new budget is {phase.tokens:,}"
    if not old.agrees_until(phase.schedule, position):
        return (f"the learning rates of the {done} steps already trained ({position:,} tokens) would change "
                f"({old.kind} -> {phase.schedule.kind})")
    return None


def refusal_message(run_dir: Path, refused: dict, latest: Path, old: dict) -> str:
    lines = [f"{run_dir}: --resume with a recipe that differs from what this run folder trained "
             f"(its recipe.yaml; newest checkpoint {latest.name}):"]
    for key, (a, b, why) in refused.items():
        parts = key.split(".")
        label = key
        if parts[0] == "phases" and len(parts) > 1 and parts[1].isdigit():
            label = ".".join([_phase_label(old, int(parts[1])), *parts[2:]])
        lines.append(f"  {label}: {a!r} -> {b!r} ({why})")
    lines.append("Run it with the recipe as stored, train into another --out, or start a new run from this "
                 f"one's checkpoint with model.init_from={latest}")
    return "\n".join(lines)


def has_checkpoint(run_dir: str | Path) -> bool:
    return ckpt.latest_checkpoint(run_dir) is not None


def prepare_run_dir(run_dir: Path, recipe: Recipe, objective: str, tokenizer, resume: bool) -> None:
    """Check the run folder against the recipe, then write recipe.yaml, tokenizer.json and a history line.
    Main rank only. Raises RecipeError when a resume would make the folder describe training it does not hold."""
    latest = ckpt.latest_checkpoint(run_dir)
    if not resume and latest is not None:
        raise RecipeError(f"{run_dir} already holds checkpoints: pass --resume to continue, or another --out")
    recipe = dataclasses.replace(recipe, objective=objective)
    stored = run_dir / "recipe.yaml"
    meta = ckpt.read_meta(latest) if latest is not None else None
    accepted, refused = {}, {}
    if meta is not None and stored.is_file():
        old = yaml.safe_load(stored.read_text()) or {}
        accepted, refused = classify(old, recipe, meta)
        tok = run_dir / "tokenizer.json"
        if tokenizer is not None and tok.is_file() and _sha(tok) != _sha(Path(tokenizer.path)):
            refused["data.tokenizer"] = (str(tok), str(tokenizer.path), "a different tokenizer than the one trained")
        if refused:
            raise RecipeError(refusal_message(run_dir, refused, latest, old))
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(stored, recipe.to_yaml())
    if tokenizer is not None and Path(tokenizer.path).is_file():
        tmp = run_dir / ".tokenizer.json.tmp"
        shutil.copyfile(tokenizer.path, tmp)
        tmp.replace(run_dir / "tokenizer.json")
    current = int(meta["phase_index"]) if meta else -1
    event = "start" if latest is None else (
        "extend" if any(k.startswith(f"phases.{current}.") for k in accepted) else "resume")
    start = ckpt.describe_start(recipe.model.init_from)  # the weights the run started from (model.init_from)
    append_history(run_dir, {
        "event": event, "objective": objective,
        "from_checkpoint": latest.name if latest else start["path"] if start else None, "init_from": start,
        "changes": {k: {"old": a, "new": b} for k, (a, b) in accepted.items()} if latest else {},
    })


def append_history(run_dir: Path, entry: dict[str, Any]) -> None:
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry, "argv": sys.argv[1:]}
    with open(run_dir / HISTORY, "a") as f:
        f.write(json.dumps(entry, default=str) + "\n")


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / HISTORY
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ---- where a resumed run starts ------------------------------------------------------------------


def resume_point(plan: Plan, run_dir: Path) -> tuple[int, Path | None, bool]:
    """(phase index to run next, checkpoint to start from, whether it is a mid-phase resume)."""
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        return 0, None, False
    meta = ckpt.read_meta(latest)
    index = meta["phase_index"]
    if index >= len(plan.phases) or plan.phases[index].name != meta["phase"]:
        raise RecipeError(f"{latest}: phase {meta['phase']!r} does not match the recipe's phases")
    if phase_done(meta, plan.phases[index]):
        return index + 1, latest, False
    return index, latest, True


def phase_done(meta: dict, phase: PhasePlan) -> bool:
    """Whether a checkpoint's phase has reached its budget (checkpoints from before real-token budgets record
    only their step and the phase's step count)."""
    if "phase_tokens" in meta:
        return meta["phase_tokens"] >= phase.tokens
    return meta["step"] >= meta.get("phase_steps", math.inf)
