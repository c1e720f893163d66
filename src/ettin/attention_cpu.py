"""Hand-written attention kernels for the CPU, behind the "cpu" backend (ettin.attention; `auto` picks it on CPU).

PyTorch's SDPA on the CPU is right everywhere but not fastest everywhere. Measured on the development box
(bench/README.md, bench/bench_attention.py), two kernels beat it where `attend` uses them:
- `local_attention_blocked`: local layers on sequences longer than a few windows run in blocks of queries, each
  against the key blocks its window reaches, instead of one (T, T) band mask: the work grows with T, not T^2.
- `attention_bmm`: in bf16/fp16 on short and medium sequences, attention that keeps its probabilities for backward
  (PyTorch's CPU flash kernel recomputes them, and its backward is the slow half); the blocked path's blocks use it
  too. Causal layers run it in query blocks (`attention_bmm_causal`), each against the keys up to its end, so most
  of the masked half of the scores is never formed.
Each equals SDPA with the same mask, forward and backward (tests/test_attention.py). `use_blocked` and
`use_held_scores` say where each pays; everywhere else the "cpu" backend calls SDPA (ettin.attention._self_attention).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ettin.cpu import scratch


# ------------------------------------------------------------------------------------ blocked local
def _block_size(left: int, right: int) -> int:
    """Queries per block: the window's reach rounded up to a multiple of 16 (64 for Ettin's 128 window)."""
    return -(-max(left, right) // 16) * 16


def use_blocked(T: int, left: int, right: int) -> bool:
    """Blocked local attention pays off once the sequence spans several blocks (never for global layers, whose
    reach is unbounded)."""
    return 0 < max(left, right) < (1 << 29) and T >= 4 * _block_size(left, right)


@functools.lru_cache(maxsize=32)
def _block_mask(nb: int, W: int, nl: int, nr: int, left: int, right: int, T: int, device: torch.device):
    """Bool (nb, W, span): query slot i of block b may see key slot j of its span (band and inside [0, T))."""
    span = (nl + 1 + nr) * W
    i = torch.arange(W, device=device)[:, None] + nl * W
    j = torch.arange(span, device=device)[None, :]
    band = ((i - j) <= left) & ((i - j) >= -right)
    key_pos = torch.arange(nb, device=device)[:, None] * W - nl * W + j  # (nb, span)
    return band[None] & ((key_pos >= 0) & (key_pos < T))[:, None, :]


def local_attention_blocked(q, k, v, left: int, right: int, key_valid: torch.Tensor | None = None,
                            dropout: float = 0.0) -> torch.Tensor:
    """Sliding-window attention on (B, h, T, D) in blocks of W >= max(left, right) queries.

    Block b's queries can only reach keys in blocks b-1 .. b+1 (b-1 .. b when causal), so scores are
    (W, 2W or 3W) per block instead of (T, T): the work grows with T, not T^2. Equal to SDPA with the band
    mask (tests). `key_valid` (B, T) bool masks padding keys. Rows with no visible key (padding queries)
    get a finite fill, so they stay finite in both passes; their outputs are meant to be discarded.
    """
    B, h, T, D = q.shape
    W = _block_size(left, right)
    nl, nr = int(left > 0), int(right > 0)
    nb = -(-T // W)
    Tp = nb * W
    span = (nl + 1 + nr) * W
    pad_q = Tp - T
    if pad_q:
        q = F.pad(q, (0, 0, 0, pad_q))

    def spans(x):  # (B, h, T, D) -> (B, h, nb, span, D): each block's keys, its neighbours' included
        xb = F.pad(x, (0, 0, nl * W, nr * W + pad_q)).view(B, h, nb + nl + nr, W, D)
        # shifted views joined on the key axis (cheaper in backward than unfold's overlapping windows)
        return torch.cat([xb[:, :, i : i + nb] for i in range(nl + 1 + nr)], dim=3)

    kb, vb = spans(k), spans(v)  # (B, h, nb, span, D)
    qb = q.reshape(B, h, nb, W, D)
    mask = _block_mask(nb, W, nl, nr, left, right, T, q.device)  # (nb, W, span)
    if key_valid is not None:
        kv = F.pad(key_valid, (nl * W, nr * W + pad_q)).unfold(1, span, W)  # (B, nb, span)
        mask = mask[None] & kv[:, :, None, :]  # (B, nb, W, span)
        mask = mask[:, None]  # broadcast over heads
    if not dropout:
        out = attention_bmm(qb, kb, vb, mask)  # (B, h, nb, W, D)
    else:
        scores = (qb * D**-0.5) @ kb.transpose(-1, -2)  # (B, h, nb, W, span)
        scores = scores.masked_fill(mask.logical_not(), torch.finfo(scores.dtype).min)
        out = F.dropout(torch.softmax(scores, dim=-1), dropout) @ vb
    out = out.reshape(B, h, Tp, D)
    return out[:, :, :T] if pad_q else out


# ------------------------------------------------------------------------- scores held (low precision)
_BMM_MAX_SCORES = 1 << 20  # per (batch, head): up to 1024 x 1024 scores
_BMM_MAX_BYTES = 256 << 20  # the probabilities kept for backward, per call


def use_held_scores(q: torch.Tensor, dropout: float) -> bool:
    """For self-attention over q (..., T, D): attention with its probabilities held (`attention_bmm`) beats
    PyTorch's CPU flash kernel in bf16/fp16 at these sizes (bench/README.md); in fp32 it is level or slower."""
    if q.dtype not in (torch.bfloat16, torch.float16) or dropout:
        return False
    T = q.shape[-2]
    per_head = T * T
    heads = q.numel() // (T * q.shape[-1])
    if heads * per_head * q.element_size() > _BMM_MAX_BYTES:
        return False
    # (causal self-attention goes in query blocks, `attention_bmm_causal`, which skip most of the masked half: held
    # over the whole square, causal 1024 x 1024 lost to the flash kernel)
    return per_head <= _BMM_MAX_SCORES


class _AttentionBMM(torch.autograd.Function):
    """softmax(q k^T / sqrt(D), masked) v with the probabilities P kept for backward.

    Forward is two batched matmuls and one in-place softmax; backward is four matmuls and one in-place
    softmax-backward (dS = P * (dP - rowsum(dP * P))), with no recomputation. Masked entries get P = 0, so they
    receive no gradient. Rows must have at least one visible key (every caller guarantees it; a row without one
    gets a finite, uniform fill instead of NaN)."""

    @staticmethod
    def forward(ctx, q, k, v, mask):
        *lead, T, D = q.shape
        S = k.shape[-2]
        q3 = (q * D**-0.5).reshape(-1, T, D)
        k3, v3 = k.reshape(-1, S, D), v.reshape(-1, S, D)
        # Scores and softmax in fp32, as PyTorch's CPU flash kernel forms them: bf16 scores (an eager attention's)
        # measured 5-7x the error of SDPA against float64 on sharp attention, and a visibly worse tiny-recipe loss.
        if q.dtype in (torch.bfloat16, torch.float16):
            # the fp32 scores die once P is formed (in q's dtype): a kept buffer
            s = scratch("attn_scores", (q3.shape[0], T, S), torch.float32, q.device)
            torch.bmm(q3.float(), k3.float().transpose(1, 2), out=s)
        else:
            s = torch.bmm(q3, k3.transpose(1, 2))
        if mask is not None:
            s.view(*lead, T, S).masked_fill_(mask.logical_not(), torch.finfo(s.dtype).min)
        p = torch.ops.aten._softmax.out(s, -1, False, out=s).to(q.dtype)  # in place over the scores; P v in q's dtype
        ctx.save_for_backward(q3, k3, v3, p)
        ctx.lead = lead
        return torch.bmm(p, v3).view(*lead, T, D)

    @staticmethod
    def backward(ctx, grad):
        q3, k3, v3, p = ctx.saved_tensors
        D = q3.shape[-1]
        g3 = grad.reshape(p.shape[0], p.shape[1], D)
        dv = torch.bmm(p.transpose(1, 2), g3)
        dp = torch.bmm(g3, v3.transpose(1, 2))
        ds = torch.ops.aten._softmax_backward_data.out(dp, p, -1, p.dtype, grad_input=dp)  # in place
        dq = torch.bmm(ds, k3).mul_(D**-0.5)
        dk = torch.bmm(ds.transpose(1, 2), q3)  # q3 carries the scale already
        S = k3.shape[1]
        return dq.view(*ctx.lead, -1, D), dk.view(*ctx.lead, S, D), dv.view(*ctx.lead, S, D), None


def attention_bmm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention over q (..., T, D), k and v (..., S, D); `mask` bool, broadcastable to (..., T, S), True = visible.
    Equal to `F.scaled_dot_product_attention(q, k, v, attn_mask=mask)` (tests); scores and softmax in fp32, the
    probabilities kept (and multiplied with v) in q's dtype."""
    return _AttentionBMM.apply(q, k, v, mask)


_CAUSAL_BLOCKS = 4  # query blocks of a causal `attention_bmm_causal` call: 5/8 of the square formed
_CAUSAL_MIN_BLOCK = 64  # shorter blocks cost more in per-call overhead than they save


def _causal_block(T: int) -> int:
    """Query rows per block of `attention_bmm_causal`: a quarter of T rounded up to a multiple of 16, or T itself
    (one block) when the quarter would be under 64 rows."""
    b = -(-T // _CAUSAL_BLOCKS)
    b = -(-b // 16) * 16
    return T if b < _CAUSAL_MIN_BLOCK else b


def attention_bmm_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`attention_bmm` for self-attention whose `mask` (broadcastable to (..., T, T)) hides every key after its
    query (a causal mask, possibly with a window or padded keys on top). The queries go in blocks; block [s, e)
    meets keys [0, e) only, so the scores above the diagonal's blocks are never formed: with four blocks 5/8 of the
    (T, T) square, in every matmul of forward and backward. Each row sees exactly the keys it sees in one call, so
    the result is the same (tests)."""
    T = q.shape[-2]
    b = _causal_block(T)
    if b >= T:
        return attention_bmm(q, k, v, mask)
    outs = [attention_bmm(q[..., s : s + b, :], k[..., : s + b, :], v[..., : s + b, :], mask[..., s : s + b, : s + b])
            for s in range(0, T, b)]
    return torch.cat(outs, dim=-2)

