"""Fused linear + cross-entropy: the vocabulary head and the loss, chunk by chunk.

For a 50k vocabulary the logits of a training batch are the largest tensor of the step (8k tokens x 50k x 4 B
= 1.6 GB in fp32) and most of the memory traffic. Here the gradient of each chunk is computed in the forward pass
(softmax - onehot), folded into grad_input and grad_weight, and the chunk's logits are dropped: the full logits
are never held. Backward only scales the stored gradients. Same matmul count as the unfused head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, targets, chunk_size: int, ignore_index: int):
        # x: (N, H) ; weight: (V, H) ; bias: (V,) or None ; targets: (N,)
        valid = targets != ignore_index
        n_valid = valid.sum().clamp(min=1)
        compute_dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):
            compute_dtype = torch.get_autocast_dtype(x.device.type)
        xw = x.to(compute_dtype)
        w = weight.to(compute_dtype)
        b = bias.to(compute_dtype) if bias is not None else None
        ctx.dtype_x = x.dtype
        needs_grad = any(ctx.needs_input_grad[:3])
        grad_x = torch.zeros_like(x, dtype=torch.float32) if needs_grad else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if needs_grad else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if (needs_grad and bias is not None) else None
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        with torch.autocast(x.device.type, enabled=False):
            for s in range(0, x.shape[0], chunk_size):
                xc, tc = xw[s : s + chunk_size], targets[s : s + chunk_size]
                logits = xc @ w.t()
                if b is not None:
                    logits = logits + b
                logits = logits.float()
                lse = torch.logsumexp(logits, dim=-1)
                vc = tc != ignore_index
                tsafe = tc.clamp(min=0)
                tgt_logit = logits.gather(1, tsafe[:, None]).squeeze(1)
                loss += ((lse - tgt_logit) * vc).sum()
                if needs_grad:
                    g = torch.softmax(logits, dim=-1)  # reuse as grad buffer
                    g[torch.arange(len(tc), device=x.device), tsafe] -= 1.0
                    g *= vc[:, None].float() / n_valid
                    gc = g.to(compute_dtype)
                    grad_x[s : s + chunk_size] = (gc @ w).float()
                    grad_w += (gc.t() @ xc).float()
                    if grad_b is not None:
                        grad_b += g.sum(0)
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.has_bias = bias is not None
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        gx = (grad_x * grad_out).to(ctx.dtype_x) if grad_x is not None else None
        gw = grad_w * grad_out if grad_w is not None else None
        gb = grad_b * grad_out if grad_b is not None else None
        return gx, gw, gb, None, None, None


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int = 4096,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Mean cross-entropy of softmax(x @ weight.T + bias) against targets, never holding all logits.

    Falls back to the plain computation when no gradient is needed and the input is small.
    """
    if x.shape[0] == 0:
        return x.sum() * 0.0
    if not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad):
        if x.shape[0] <= chunk_size:
            logits = F.linear(x, weight, bias).float()
            return F.cross_entropy(logits, targets, ignore_index=ignore_index)
    return FusedLinearCE.apply(x, weight, bias, targets, chunk_size, ignore_index)
