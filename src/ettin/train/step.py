"""One optimizer step's arithmetic, as the loop (`ettin.train.loop`) runs it: forward and backward over a rank's
micro-batches with the loss weighted by each one's share of the global predicted tokens (so accumulation and the
number of ranks do not change the numbers), the gradient norm, the learning rate set on the optimizer, and the
window of device values read back once a log step."""

from __future__ import annotations

import contextlib
import math

import torch

from ettin.config import IGNORE_INDEX
from ettin.train import distributed as D


def grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """The L2 norm of all gradients as one vector (FSDP2's shards reduced over the ranks: a collective, no host
    read), a device scalar; 0 when no parameter has a gradient. The published runs logged it (log_grad_norm in
    every Ettin YAML)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(model.parameters()).device)
    norm = torch.nn.utils.get_total_norm(grads)
    full = getattr(norm, "full_tensor", None)  # a DTensor under FSDP2
    return (full() if full is not None else norm).float()


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class StepWindow:
    """What the steps since the last log hold on the device, read back in one go."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.losses: list[torch.Tensor] = []
        self.predicted: list[torch.Tensor] = []
        self.norms: list[torch.Tensor] = []
        self.tokens = 0
        self.wait = 0.0  # seconds spent waiting for batches

    def add(self, step: int, loss: torch.Tensor, predicted: torch.Tensor, tokens: int, norm: torch.Tensor) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self.predicted.append(predicted)
        self.norms.append(norm)
        self.tokens += tokens

    def read(self) -> tuple[list[float], int, list[float]]:
        """(losses, predicted tokens, gradient norms) of the window's steps: one read-back."""
        values = torch.stack([torch.stack(self.losses).double(), torch.stack(self.norms).double()]).tolist()
        return values[0], int(torch.stack(self.predicted).sum()), values[1]


def micro_counts(labels: torch.Tensor, mask: torch.Tensor | None, micro_batch_size: int) -> list[int]:
    """Predicted positions of each micro-batch of this rank's rows, counted on the host before the copy."""
    valid = labels != IGNORE_INDEX if mask is None else (labels != IGNORE_INDEX) & mask.bool()
    return [int(v.sum()) for v in valid.split(micro_batch_size)]


def train_step(model, batch: dict[str, torch.Tensor], counts: list[int], micro_batch_size: int, precision: str,
               mode: str, info: D.DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward + backward over this rank's slice in micro-batches (`counts`: each one's predicted positions);
    returns the global-batch loss and the global count of predicted tokens, as device scalars, not read back (the
    model's unpadding still reads the layout's sizes)."""
    device = batch["labels"].device
    # a fill, not a copy from the host: torch.tensor(value, device=cuda) would wait for the stream
    n_global = D.all_reduce_sum(torch.full((), float(sum(counts)), dtype=torch.float64, device=device))
    denominator = n_global.clamp_min(1.0)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for i, n_micro in enumerate(counts):
        lo = i * micro_batch_size
        micro = {k: v[lo : lo + micro_batch_size] for k, v in batch.items()}
        last = i == len(counts) - 1
        with sync_context(model, mode, last), autocast:
            out = model(**micro)
        weight = (n_micro * info.world_size / denominator).to(out.loss.dtype)
        term = out.loss * weight if n_micro else out.loss.nan_to_num(0.0) * 0.0
        term.backward()
        if n_micro:
            loss_sum += out.loss.detach().to(torch.float64) * n_micro
    loss_sum = D.all_reduce_sum(loss_sum)
    loss = torch.where(n_global > 0, loss_sum / denominator, torch.full_like(loss_sum, math.nan))
    return loss, n_global


def sync_context(model, mode: str, last: bool):
    """Gradient sync only on the last micro-batch (DDP no_sync; FSDP2 requires_gradient_sync)."""
    if mode == "ddp" and not last:
        return model.no_sync()
    if mode == "fsdp":
        inner = getattr(model, "_orig_mod", model)
        inner.set_requires_gradient_sync(last)
    return contextlib.nullcontext()
