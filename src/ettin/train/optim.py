"""StableAdamW (torch-optimi) with Ettin's parameter groups: the published update rule.

Published settings (reference section 3.3): betas (0.9, 0.98), eps 1e-6, `decoupled_stableadamw`, i.e.
optimi's `decouple_lr=True`: weight decay is *fully* decoupled from the learning rate and applied as
``p *= 1 - weight_decay * (lr_t / max_lr)`` with lr_t the step's RMS-clipped LR. `max_lr` is the recipe's peak LR
(the published trainer passes none, so optimi sets it to the optimizer's lr: optimi 0.2.1 optimi/optimizer.py
lines 21-22; a phase started from a checkpoint keeps the value stored with the optimizer state), so the decay
shrinks with the schedule, and the small published coefficients (1e-5 to 3e-4) are per step, not times the LR.
StableAdamW clips each update (Adafactor style), so there is no gradient clipping.

The runs used bert24's copy of this optimizer (orionw/bert24 src/optimizer.py, chosen by `log_grad_norm`: main.py
lines 223-239), which differs from optimi's only in also returning the gradient norms: the same per-group `step`
(lines 129-131), per-parameter `exp_avg`, `exp_avg_sq`, `eps_sq` = eps**2 and `kahan_comp` (None for fp32
parameters: lines 89-99), debiased betas (223-226), RMS clip and decay (297-310), Adam step (312-330).
tests/test_optim_published.py writes that rule out and checks this optimizer against it, parameter for parameter.

Parameter groups: `filter_bias_norm_wd: true` selects timm's rule (bert24 main.py lines 93-106): no weight decay
for tensors of one dimension or fewer (norm weights, biases) and names ending in `.bias`; embeddings are decayed.
The published list is [no-decay, decay]; ettin's is [decay, no-decay] (the order its checkpoints store): groups are
stepped independently, so the order changes no number (`ettin.train.composer` maps the published state by name).
"""

from __future__ import annotations

import torch
from optimi import StableAdamW


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """timm's `param_groups_weight_decay` rule, as the published runs used it (bert24 main.py line 101)."""
    return param.ndim <= 1 or name.endswith(".bias")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, train, max_lr: float | None = None) -> StableAdamW:
    """`train` is the recipe's TrainSection; `max_lr` defaults to its (peak) lr. foreach is off on CPU so CPU
    runs are bitwise reproducible (the per-tensor and foreach kernels compute the same rule)."""
    return StableAdamW(
        param_groups(model, train.weight_decay),
        lr=train.lr,
        betas=tuple(train.betas),
        eps=train.eps,
        weight_decay=train.weight_decay,
        decouple_lr=True,
        max_lr=train.lr if max_lr is None else max_lr,
        foreach=False if not torch.cuda.is_available() else None,
        triton=False,
    )
