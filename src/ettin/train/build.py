"""What a run builds before its first step: the model (seeded alike on every rank, wrapped or sharded as the recipe
says), the data workers a rank starts, and the line that says how the run executes."""

from __future__ import annotations

import os

import torch

from ettin.runtime import Runtime
from ettin.train import distributed as D
from ettin.train.recipe import Recipe


def build_model(config, info: D.DistInfo, mode: str, meta_init: bool, seed: int, precision: str = "fp32",
                activation_checkpointing: bool = False, runtime: Runtime | None = None):
    """Same seed on every rank, so every rank starts from identical weights (or shards of them). `runtime`: how the
    model runs (ettin.runtime.Runtime: the recipe's train.attn_backend and train.loss_chunk_size)."""
    from ettin.model import EttinModel

    torch.manual_seed(seed)
    if mode == "fsdp" and meta_init:
        with torch.device("meta"):
            model = EttinModel(config, runtime=runtime)
        if activation_checkpointing:
            D.apply_activation_checkpointing(model)
        D.apply_fsdp(model, mixed_bf16=precision == "bf16")
        model.to_empty(device=info.device)
        model.init_weights()
        return model, model
    model = EttinModel(config, runtime=runtime).to(info.device)
    if activation_checkpointing:
        D.apply_activation_checkpointing(model)
    return model, D.wrap(model, mode, info, precision)


def data_workers(requested: int | None, info: D.DistInfo) -> int:
    """Background processes that build batches (train.data_workers; None: 1 on a CPU, where the cores train, and
    up to 4 a rank on a GPU host, within the host's cores)."""
    if requested is not None:
        return requested
    if info.device.type != "cuda":
        return 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 0)) or max(1, torch.cuda.device_count())  # ranks on this host
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(4, cores // local - 1))


def runtime_line(recipe: Recipe, info: D.DistInfo) -> str:
    """How this run executes (docs/distributed.md's first check when a run is slow): the attention kernel that
    train.attn_backend resolves to here, precision, parallelism, data workers, compilation, CPU threads."""
    t = recipe.train
    dtype = torch.bfloat16 if t.precision == "bf16" and info.device.type == "cuda" else torch.float32
    backend = Runtime(t.attn_backend).backend(info.device, dtype)
    threads = f", {torch.get_num_threads()} CPU thread(s) a rank" if info.device.type == "cpu" else ""
    return (f"runtime: attention {backend} (train.attn_backend={t.attn_backend}), precision {t.precision}, "
            f"parallelism {D.strategy(t.distributed, info.world_size)} on {info.world_size} rank(s), "
            f"{data_workers(t.data_workers, info)} data worker(s) a rank, compile {'on' if t.compile else 'off'}"
            f"{threads}")
