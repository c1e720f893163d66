"""Checkpoints: torch.distributed.checkpoint (DCP) for resume, Hugging Face export for use.

    runs/<name>/checkpoints/<phase>-step<NNNNNNN>/
        .metadata, __0_0.distcp ...     DCP: {"model": ..., "optim": ...} (sharded under FSDP2)
        rng-rank<R>.pt                   each rank's torch / numpy / python RNG states
        meta.json                        phase, step, tokens, model config, scheduler, data position

Atomic: everything is written into `checkpoints/.tmp-<name>/`; `meta.json` is written last and the
folder is renamed into place by rank 0 after every rank has finished. A crash mid-write leaves only a
hidden `.tmp-*` folder, which `list_checkpoints` ignores and the next save removes.
The same code saves a plain, DDP, FSDP2 or compiled model: `get_state_dict` gives canonical names.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from ettin.io import atomic_dir, atomic_write_json, read_json

META = "meta.json"
_SINGLE = "torch.distributed is disabled, unavailable or uninitialized"  # DCP's note on single-process use


def checkpoint_name(phase: str, step: int) -> str:
    return f"{phase}-step{step:07d}"


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: str | Path,
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
    keep: int = 0,
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint folder."""
    root = Path(run_dir) / "checkpoints"
    final, tmp = root / name, root / f".tmp-{name}"
    rank = _rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    _barrier()
    state = _state(model, optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SINGLE)
        dcp.save(state, checkpoint_id=str(tmp), no_dist=not _distributed())
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    _barrier()
    if rank == 0:
        atomic_write_json(tmp / META, meta)
        if final.exists():  # re-saving the same step (e.g. after a resume): replace the old one
            old = root / f".old-{name}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            shutil.rmtree(old)
        os.replace(tmp, final)
        _fsync_dir(root)
        if keep > 0:
            for stale in list_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    if optimizer is None:
        model_sd, _ = get_state_dict(model, [])
        return {"model": model_sd}
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def read_meta(ckpt_dir: str | Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / META
    if not path.is_file():
        raise FileNotFoundError(f"{ckpt_dir}: not a complete checkpoint (no {META})")
    return read_json(path)


def load_checkpoint(
    ckpt_dir: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = False,
) -> dict[str, Any]:
    """Load model (and optimizer) state in place, on any number of ranks; returns meta.json."""
    ckpt_dir = Path(ckpt_dir)
    meta = read_meta(ckpt_dir)
    state = _state(model, optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SINGLE)
        dcp.load(state, checkpoint_id=str(ckpt_dir), no_dist=not _distributed())
    options = StateDictOptions(strict=True)
    if optimizer is None:
        set_state_dict(model, [], model_state_dict=state["model"], optim_state_dict={}, options=options)
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=options)
    if restore_rng:
        path = ckpt_dir / f"rng-rank{_rank()}.pt"
        if path.is_file():
            set_rng_state(torch.load(path, weights_only=False))
    return meta


def load_initial_weights(path: str | Path, model: torch.nn.Module) -> None:
    """model.init_from: the weights of a DCP checkpoint folder or a Hugging Face folder (from `export-hf` or
    `convert-objective`) into a model that may already be sharded (FSDP2): a full state dict goes through DCP's
    `set_model_state_dict`, which keeps each rank's shard of it (a plain `load_state_dict` mixes tensors and
    DTensors there). Raises ValueError naming the keys when the weights do not fit the model."""
    path = Path(path)
    if (path / META).is_file():
        load_checkpoint(path, model)
        return
    from ettin.hf import from_pretrained

    source = from_pretrained(str(path)).state_dict()
    try:
        result = set_model_state_dict(model, source, options=StateDictOptions(full_state_dict=True, strict=False))
    except RuntimeError as e:  # shapes that differ (another size, vocabulary or head)
        raise ValueError(f"model.init_from {path}: weights do not fit this model: {str(e).strip()[:600]}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"model.init_from {path}: weights do not match (missing {result.missing_keys}, unexpected "
                         f"{result.unexpected_keys})")


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, in training order (phase, then step)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.name.startswith(".") or not (path / META).is_file():
            continue
        meta = read_meta(path)
        found.append(((meta.get("phase_index", 0), meta.get("step", 0)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def resolve_checkpoint(path: str | Path) -> Path:
    """What a command line names: a checkpoint folder (meta.json) as it is, or a run folder: its newest
    complete checkpoint. Anything else is a FileNotFoundError saying what was expected."""
    p = Path(path).expanduser()
    if (p / META).is_file():
        return p
    if (p / "checkpoints").is_dir():
        latest = latest_checkpoint(p)
        if latest is None:
            raise FileNotFoundError(f"{p}: a run folder without a complete checkpoint (in {p / 'checkpoints'})")
        return latest
    sides = [p / side for side in ("encoder", "decoder") if (p / side / "checkpoints").is_dir()]
    if sides:
        raise FileNotFoundError(f"{p}: a pair folder; name one of its runs: {' or '.join(map(str, sides))}")
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such checkpoint or run folder")
    raise FileNotFoundError(f"{p}: not a checkpoint (no {META}) or a run folder (no checkpoints/)")


def load_model(ckpt_dir: str | Path, objective: str | None = None):
    """An EttinModel with a checkpoint's weights (single process, CPU). `objective` switches mlm/clm."""
    from ettin.config import ModelConfig
    from ettin.model import EttinModel

    meta = read_meta(ckpt_dir)
    config = ModelConfig.from_dict(meta["model_config"])
    if objective is not None:
        config = config.replace(objective=objective)
    model = EttinModel(config)
    state = {"model": model.state_dict()}
    # no_dist: a single reader even inside a torchrun job (rank 0 exporting after training)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SINGLE)
        dcp.load(state, checkpoint_id=str(ckpt_dir), no_dist=True)
    model.load_state_dict(state["model"])
    model.eval()
    return model


def describe_start(path: str | Path | None) -> dict[str, Any] | None:
    """Where a run's starting weights came from (`model.init_from`), as its history and every checkpoint's meta
    record it: the absolute path, its kind, and what the source says of itself (run, phase, step, tokens)."""
    if not path:
        return None
    p = Path(path).expanduser().resolve()
    if (p / META).is_file():
        meta = read_meta(p)
        return {"path": str(p), "kind": "checkpoint", **{k: meta.get(k) for k in ("run", "phase", "step", "tokens")}}
    marker = p / "ettin_checkpoint.json"  # an export of an ettin checkpoint (export_hf)
    info = read_json(marker) if marker.is_file() else {}
    return {"path": str(p), "kind": "hf", **{k: info.get(k) for k in ("run", "phase", "step", "tokens") if k in info}}


def run_dir_of(ckpt_dir: str | Path) -> Path:
    """checkpoints/<name> -> the run folder (which holds tokenizer.json and recipe.yaml)."""
    return Path(ckpt_dir).resolve().parent.parent


def find_tokenizer(ckpt_dir: str | Path) -> Path | None:
    for candidate in (Path(ckpt_dir) / "tokenizer.json", run_dir_of(ckpt_dir) / "tokenizer.json"):
        if candidate.is_file():
            return candidate
    return None


def export_hf(ckpt_dir: str | Path, out_dir: str | Path, objective: str | None = None) -> Path:
    """Write a Hugging Face folder (config.json + model.safetensors + tokenizer) for a checkpoint."""
    from ettin.hf import save_pretrained

    model = load_model(ckpt_dir, objective=objective)
    tokenizer = find_tokenizer(ckpt_dir)
    out_dir = Path(out_dir)
    meta = read_meta(ckpt_dir)
    with atomic_dir(out_dir, replace=True) as tmp:
        save_pretrained(model, tmp, tokenizer=tokenizer, weights_only=tokenizer is None)  # no tokenizer: synthetic
        atomic_write_json(tmp / "ettin_checkpoint.json",  # which checkpoint this is (the report merges the two)
                          {**{k: meta.get(k) for k in ("run", "phase", "step", "tokens", "init_from")},
                           "seed": meta.get("data_position", {}).get("seed")})
    return out_dir
