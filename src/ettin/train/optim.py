"""StableAdamW (torch-optimi) with Ettin's parameter groups.

Published settings (reference section 3.3): betas (0.9, 0.98), eps 1e-6, `decoupled_stableadamw`, i.e.
optimi's `decouple_lr=True`: weight decay is *fully* decoupled from the learning rate and applied as
``p -= weight_decay * (lr / max_lr) * p``. `max_lr` is the recipe's peak LR, so the decay shrinks with the
schedule, and the small published coefficients (1e-5 to 3e-4) are per step, not multiplied by the LR.
No weight decay on norms and biases (`filter_bias_norm_wd: true`); embeddings are decayed.
StableAdamW clips each update (Adafactor style), so there is no gradient clipping.
"""

from __future__ import annotations

import torch
from optimi import StableAdamW


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Norm weights and biases get no weight decay."""
    lowered = name.lower()
    return param.ndim < 2 or lowered.endswith(".bias") or "norm" in lowered


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, train) -> StableAdamW:
    """`train` is the recipe's TrainSection. foreach is off so CPU runs are bitwise reproducible."""
    return StableAdamW(
        param_groups(model, train.weight_decay),
        lr=train.lr,
        betas=tuple(train.betas),
        eps=train.eps,
        weight_decay=train.weight_decay,
        decouple_lr=True,
        max_lr=train.lr,
        foreach=False if not torch.cuda.is_available() else None,
        triton=False,
    )
