"""Process groups and parallel wrappers, applied from outside the model.

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; without them the run is one process and
nothing here starts a process group. Backend: nccl on CUDA, gloo on CPU.

  ddp   torch.nn.parallel.DistributedDataParallel (replicated weights, all-reduced gradients)
  fsdp  FSDP2: `fully_shard` on every transformer block, then on the root (embeddings, head, norms)

Gradients are averaged over ranks by both wrappers; the loop scales each micro-batch loss so that the
result is the mean over the *global* batch's predicted tokens (the same as one process would compute).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def setup(device: str | None = None) -> DistInfo:
    """Initialise from torchrun's environment: a process group whenever torchrun started the process, one rank
    included (so `train.distributed=fsdp` under `torchrun --nproc_per_node 1` shards, over a group of one); none
    for a plain single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if (world > 1 or launched_by_torchrun()) and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30)
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


@contextlib.contextmanager
def session(device: str | None = None):
    """`setup()` ... `teardown()`: the closing barrier runs only after a clean exit (after an error the other ranks
    may never arrive)."""
    info = setup(device)
    clean = False
    try:
        yield info
        clean = True
    finally:
        teardown(barrier=clean)


def teardown(barrier: bool = True) -> None:
    """End the process group; no barrier after an error (the other ranks may never arrive)."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def strategy(requested: str, world_size: int) -> str:
    if requested == "auto":
        return "ddp" if world_size > 1 else "none"
    if requested in ("ddp", "fsdp") and world_size == 1 and not dist.is_initialized():
        return "none"
    return requested


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks, by name: `EttinModel.layers` (through DDP / compile wrappers)."""
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(inner).__name__} has no `layers` ModuleList of transformer blocks")
    return layers


def apply_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Per-block activation checkpointing (train.activation_checkpointing): each block keeps only its input
    and recomputes its activations in the backward pass (non-reentrant, the RNG state preserved, so dropout draws
    the same mask again). Apply before sharding, as torchtitan does; state-dict keys are unchanged (DCP's
    state-dict helpers drop the wrapper's prefix)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    layers = blocks_of(model)
    for i, block in enumerate(layers):
        layers[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT, preserve_rng_state=True)
    return model


def apply_fsdp(model: nn.Module, mixed_bf16: bool = False) -> nn.Module:
    """FSDP2: shard each block, then the root. Works on meta-device models (materialise afterwards). With
    `mixed_bf16` (a bf16 run), parameters are all-gathered in bf16 and gradients reduce-scattered in fp32
    (torchtitan's MixedPrecisionPolicy); the sharded weights and the optimizer stay fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs = {}
    if mixed_bf16:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in blocks_of(model):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def wrap(model: nn.Module, mode: str, info: DistInfo, precision: str = "fp32") -> nn.Module:
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if mode == "fsdp":
        return apply_fsdp(model, mixed_bf16=precision == "bf16")
    return model


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value
