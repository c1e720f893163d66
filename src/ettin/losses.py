"""Fused linear + cross-entropy: the vocabulary head and the loss, chunk by chunk.

For a 50k vocabulary the logits of a training batch are the largest tensor of the step (8k tokens x 50k x 4 B
= 1.6 GB in fp32) and most of the memory traffic. Here the gradient of each chunk is computed in the forward pass
(softmax - onehot, in place over the chunk's logits), folded into grad_input and grad_weight, and the chunk is
dropped: the full logits are never held. Backward only scales the stored gradients. Same matmul count as the
unfused head; under autocast the matmuls run in the autocast dtype and the softmax in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ettin.config import IGNORE_INDEX
from ettin.cpu import scratch as _scratch

_TINY = torch.finfo(torch.float32).tiny  # p_t below this (a loss over 87 nats) is clamped


class FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, targets, chunk_size: int):
        # x: (N, H) rows that all have a target; weight: (V, H); bias: (V,) or None; targets: (N,)
        ctx.dtype_x = x.dtype
        n = x.shape[0]
        dev = x.device.type
        compute_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        needs_grad = any(ctx.needs_input_grad[:3])
        with torch.autocast(x.device.type, enabled=False):
            xw = x.to(compute_dtype)
            H = weight.shape[1]
            if bias is not None:
                # the bias rides in the matmul as one more input column: addmm(out=) would first broadcast-copy
                # it over the whole (c, V) chunk. One (V, H + 1) cast copy serves both matmuls.
                w_fwd = _scratch("w_fwd", (weight.shape[0], H + 1), compute_dtype, weight.device)
                w_fwd[:, :H].copy_(weight)
                w_fwd[:, H].copy_(bias)
                w = w_fwd[:, :H]
                x_fwd = torch.cat([xw, xw.new_ones(n, 1)], dim=1)
            else:
                w = w_fwd = weight.to(compute_dtype)
                x_fwd = xw
            grad_x = torch.empty_like(x, dtype=torch.float32) if needs_grad else None
            grad_w = torch.empty_like(weight, dtype=torch.float32) if needs_grad else None
            acc = None  # (V, H) fp32 staging buffer for chunk 2 onwards (low precision only)
            grad_b = torch.zeros_like(bias, dtype=torch.float32) if needs_grad and bias is not None else None
            loss = torch.zeros((), dtype=torch.float32, device=x.device)
            # chunk_size counts fp32 rows: a 2-byte compute dtype fits twice the rows in the same memory (and the
            # 30% masked positions of an 8 x 512 MLM batch then make one chunk, with no fp32 staging copy)
            c = min(chunk_size * max(1, 4 // compute_dtype.itemsize), n)
            # One (c, V) buffer, reused for every chunk and (on CPU) between steps: fresh multi-hundred-MB
            # allocations cost a page fault per page.
            buf = _scratch("logits", (c, weight.shape[0]), compute_dtype, x.device)
            fp32_bias_grad = grad_b is not None and compute_dtype == torch.float32
            ones = xw.new_ones(1, c) if fp32_bias_grad else None  # column sums of g as a matmul
            for s in range(0, n, c):
                xc, tc = xw[s : s + c], targets[s : s + c]
                logits = torch.mm(x_fwd[s : s + c], w_fwd.t(), out=buf[: len(tc)])  # (c, V)
                rows = torch.arange(len(tc), device=x.device)
                if compute_dtype == torch.float32:
                    lsm = torch.ops.aten._log_softmax.out(logits, -1, False, out=logits)  # in place
                    loss -= lsm[rows, tc].sum()
                    if needs_grad:
                        g = lsm.exp_()  # softmax, in place
                        g[rows, tc] -= 1.0
                else:
                    # Low precision: never materialise an fp32 (c, V) tensor (its memory traffic would be most of
                    # the head's non-matmul time). One softmax pass, written over the logits, accumulates in fp32
                    # and rounds p once. The target entries are re-formed without cancellation from
                    # q_t = sum_{j != t} p_j = 1 - p_t: the gradient entry is -q_t (each row of the gradient sums
                    # to zero), and log p_t is log(p_t) or, for confident targets, log1p(-q_t).
                    g = torch.ops.aten._softmax.out(logits, -1, False, out=logits)  # in place
                    pt = g[rows, tc].float()
                    g[rows, tc] = 0.0
                    qt = g.sum(-1).float()  # fp32 accumulation; rounding a small q_t keeps its relative precision
                    lpt = torch.where(pt > 0.5, torch.log1p(-qt), torch.log(pt.clamp_min(_TINY)))
                    loss -= lpt.sum()
                    g[rows, tc] = (-qt).to(compute_dtype)
                if needs_grad:
                    if compute_dtype == torch.float32:
                        if fp32_bias_grad:
                            grad_b += (ones[:, : len(tc)] @ g)[0]
                        torch.mm(g, w, out=grad_x[s : s + c])
                        if s == 0:
                            torch.mm(g.t(), xc, out=grad_w)
                        else:
                            grad_w.addmm_(g.t(), xc)
                    else:
                        grad_x[s : s + c] = g @ w
                        # x_c^T @ g (a contiguous x_c^T) is the fastest layout: (H, V), copied transposed into fp32.
                        # With a bias, x_fwd's ones column makes the last row the bias gradient (column sums of g).
                        gwt = x_fwd[s : s + c].t().contiguous() @ g
                        if grad_b is not None:
                            grad_b += gwt[H].float()
                        if s == 0:
                            grad_w.copy_(gwt[:H].t())
                        else:
                            acc = _scratch("acc", grad_w.shape, grad_w.dtype, grad_w.device) if acc is None else acc
                            grad_w += acc.copy_(gwt[:H].t())
        ctx.save_for_backward(grad_x, grad_w, grad_b)
        ctx.n = max(n, 1)
        return loss / ctx.n

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w, grad_b = ctx.saved_tensors
        scale = grad_out / ctx.n
        gx = (grad_x * scale).to(ctx.dtype_x) if grad_x is not None else None
        gw = grad_w.mul_(scale) if grad_w is not None else None  # in place: a second backward raises
        gb = grad_b * scale if grad_b is not None else None
        return gx, gw, gb, None, None


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean cross-entropy of softmax(x @ weight.T + bias) against targets, never holding all logits."""
    keep = targets != ignore_index
    if not bool(keep.all()):
        x, targets = x[keep], targets[keep]
    if x.shape[0] == 0:
        return x.sum() * 0.0 + weight.sum() * 0.0
    if not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad):
        if x.shape[0] <= chunk_size:
            return F.cross_entropy(F.linear(x, weight, bias).float(), targets)
    return FusedLinearCE.apply(x, weight, bias, targets, chunk_size)
