"""Rotary embeddings and one attention function with a small backend switch.

Two token layouts reach attention:
- dense:  (B, T, heads, D), every row a full sequence (no padding): the fast path for fixed-length training;
- varlen: (N, heads, D), the real tokens of several documents back to back, with `cu_seqlens` boundaries
          (unpadded / packed input). Attention never crosses a document boundary.

Backends:
- "sdpa":  torch.nn.functional.scaled_dot_product_attention. Varlen input is grouped into buckets of documents
           of similar length and re-padded per bucket, so little compute goes to padding (CPU default).
           On CPU, local layers on sequences longer than a few windows run blocked (`local_attention_blocked`): each
           block of queries meets only the key blocks its window reaches, instead of a (T, T) band mask.
           On CPU in bf16/fp16, short and medium sequences take `attention_bmm`, which keeps the probabilities for
           backward (PyTorch's CPU flash kernel recomputes them, and its backward is the slow half); the blocks of
           the blocked path use it too. Causal layers run it in query blocks (`attention_bmm_causal`), each
           against the keys up to its end, so most of the masked half of the scores is never formed.
- "flex":  FlexAttention with a BlockMask built from document ids, the causal flag and the window.
- "flash": flash-attn's varlen kernel (CUDA, when installed), window passed as (left, right).
A local ("sliding_attention") layer reaches `window = (left, right)` tokens; see ModelConfig.window.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ettin.cpu import scratch

BACKENDS = ("sdpa", "flex", "flash")
_BUCKET = 64  # varlen SDPA pads each document to a multiple of this


def flash_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_backend(name: str, device: torch.device) -> str:
    if name == "auto":
        return "flash" if device.type == "cuda" and flash_available() else "sdpa"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; expected auto or one of {BACKENDS}")
    if name == "flash" and not flash_available():
        raise RuntimeError("attn_backend='flash' needs flash-attn on a CUDA device (pip install 'ettin[flash]')")
    return name


# ----------------------------------------------------------------------------------------------- RoPE
def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape positions.shape + (head_dim,), float32, non-interleaved (as transformers)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim))
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _rotate(x: torch.Tensor, c: torch.Tensor, s: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., 2, half) -> (x1 c - x2 s, x2 c + x1 s) in a fresh tensor (or `out`), four passes, no temporaries."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
    x1, x2 = x.unbind(-2)
    o1, o2 = out.unbind(-2)
    torch.mul(x1, c, out=o1)
    o1.addcmul_(x2, s, value=-1)
    torch.mul(x2, c, out=o2)
    o2.addcmul_(x1, s)
    return out


class _RopeQKV(torch.autograd.Function):
    """A fused (..., 3, heads, D) projection -> rotated q, rotated k, and v. The rotation is orthogonal, so backward
    is the same kernel with -sin (nothing but cos and sin is saved); it writes the three gradients straight into one
    fresh (..., 3, heads, D) tensor: no zero-filled copies of the projection per slice, no sum of them, no stack of
    q's and k's gradients."""

    @staticmethod
    def forward(ctx, qkv, c, s):
        ctx.save_for_backward(c, s)
        half = qkv.shape[-1] // 2
        q, k = _rotate(qkv[..., :2, :, :].unflatten(-1, (2, half)), c, s).flatten(-2).unbind(-3)
        return q, k, qkv[..., 2, :, :]

    @staticmethod
    def backward(ctx, gq, gk, gv):
        c, s = ctx.saved_tensors
        c1, s1 = c[..., 0, :, :], -s[..., 0, :, :]  # (..., 1, half): broadcast over heads
        # (autograd materialises an unused output's gradient as zeros, so all three are tensors)
        grad = torch.empty((*gv.shape[:-2], 3, *gv.shape[-2:]), dtype=gv.dtype, device=gv.device)
        half = grad.shape[-1] // 2
        for i, g in enumerate((gq, gk)):
            _rotate(g.unflatten(-1, (2, half)), c1, s1, out=grad[..., i, :, :].unflatten(-1, (2, half)))
        grad[..., 2, :, :].copy_(gv)
        return grad, None, None


def rope_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k (rotary embedding applied) and v of a fused projection qkv: (..., 3, heads, D); cos, sin: (..., D).
    Non-interleaved halves, as transformers (x * cos + rotate_half(x) * sin; tests), computed on the halves in one
    pass for q and k together; one autograd node whose backward assembles the projection's gradient in place."""
    half = qkv.shape[-1] // 2
    c = cos[..., None, None, :half].to(qkv.dtype)  # (..., 1, 1, half): broadcast over [q|k] and heads
    s = sin[..., None, None, :half].to(qkv.dtype)
    return _RopeQKV.apply(qkv, c, s)


# ------------------------------------------------------------------------------------------ masks
@functools.lru_cache(maxsize=64)
def band_mask(t_q: int, t_k: int, left: int, right: int, device: torch.device, offset: int = 0) -> torch.Tensor:
    """Bool (t_q, t_k): query i (at absolute slot i + offset) may see key j iff -right <= (i+offset) - j <= left."""
    i = torch.arange(t_q, device=device)[:, None] + offset
    j = torch.arange(t_k, device=device)[None, :]
    d = i - j
    return (d <= left) & (d >= -right)


def layer_reach(causal: bool, local: bool, window: tuple[int, int]) -> tuple[int, int]:
    """(left, right) reach of a layer; a huge number stands for 'unbounded'."""
    big = 1 << 30
    left, right = window if local else (big, big)
    return left, 0 if causal else right


# ---------------------------------------------------------------------------------------- layouts
@dataclass
class Varlen:
    """Real tokens of several documents back to back. cu_seqlens: (docs + 1,) int32."""

    cu_seqlens: torch.Tensor
    max_seqlen: int
    _buckets: list | None = field(default=None, repr=False)
    _order: torch.Tensor | None = field(default=None, repr=False)
    _doc_ids: torch.Tensor | None = field(default=None, repr=False)

    @property
    def lengths(self) -> torch.Tensor:
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    def doc_ids(self) -> torch.Tensor:
        if self._doc_ids is None:
            self._doc_ids = torch.repeat_interleave(
                torch.arange(len(self.lengths), device=self.cu_seqlens.device), self.lengths.long()
            )
        return self._doc_ids

    def buckets(self) -> list[tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]]:
        """Documents grouped by padded length L (a multiple of _BUCKET, capped at max_seqlen).

        Each bucket: (gather (n, L) token indices, valid (n, L) bool, L, keep (m,) positions of the real tokens in
        the flattened (n * L) bucket). Padding slots point at a real token (so no zero row has to be appended to
        q, k, v); `valid` masks them as keys, and their query outputs are dropped. Built once per forward and
        shared by every layer, with `order()`.
        """
        if self._buckets is not None:
            return self._buckets
        lengths = self.lengths.tolist()
        starts = self.cu_seqlens[:-1].tolist()
        groups: dict[int, list[int]] = {}
        for d, n in enumerate(lengths):
            if n > 0:
                groups.setdefault(min(math.ceil(n / _BUCKET) * _BUCKET, self.max_seqlen), []).append(d)
        device = self.cu_seqlens.device
        out, dest = [], []
        for L, docs in sorted(groups.items()):
            st = torch.tensor([starts[d] for d in docs], device=device)[:, None]
            ln = torch.tensor([lengths[d] for d in docs], device=device)[:, None]
            ar = torch.arange(L, device=device)[None, :]
            valid = ar < ln
            gather = torch.where(valid, st + ar, st)  # padding slots repeat the first token; masked as keys
            keep = valid.flatten().nonzero().squeeze(1)
            out.append((gather, valid, L, keep))
            dest.append(gather.flatten()[keep])
        self._buckets = out
        # the buckets' real tokens, concatenated, are a permutation of 0..N-1: `order` undoes it in one gather
        self._order = torch.argsort(torch.cat(dest)) if dest else torch.zeros(0, dtype=torch.long, device=device)
        return out

    def order(self) -> torch.Tensor:
        self.buckets()
        return self._order


# ------------------------------------------------------------------------------------------ attend
def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    reach: tuple[int, int],
    backend: str = "sdpa",
    varlen: Varlen | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention over dense (B, T, h, D) or varlen (N, h, D) q/k/v; returns q's shape.

    `reach` = (left, right) from `layer_reach`; for full layers it is unbounded (causal sets right = 0).
    """
    left, right = reach
    if backend == "flash":
        return _attend_flash(q, k, v, causal, reach, varlen, dropout)
    if backend == "flex":
        return _attend_flex(q, k, v, causal, reach, varlen)
    if varlen is None:  # dense: (B, T, h, D)
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
        T = q.shape[1]
        if _use_blocked(T, left, right, q.device):
            return local_attention_blocked(qt, kt, vt, left, right, dropout=dropout).transpose(1, 2)
        needs_band = (left < T - 1) or (not causal and right < T - 1)  # a window that bites at this length
        if _use_bmm(qt, dropout):
            mask = band_mask(T, T, min(left, T), min(right, T), q.device) if needs_band or causal else None
            out = attention_bmm_causal(qt, kt, vt, mask) if causal else attention_bmm(qt, kt, vt, mask)
        elif needs_band:
            mask = band_mask(T, T, left, right, q.device)
            out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, dropout_p=dropout)
        else:
            out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, dropout_p=dropout)
        return out.transpose(1, 2)
    return _attend_sdpa_varlen(q, k, v, reach, varlen, dropout)


def _attend_sdpa_varlen(q, k, v, reach, varlen: Varlen, dropout: float) -> torch.Tensor:
    left, right = reach
    parts = []
    for gather, valid, L, keep in varlen.buckets():
        n = gather.shape[0]
        idx = gather.flatten()
        qb, kb, vb = (x.index_select(0, idx).view(n, L, *x.shape[1:]).transpose(1, 2) for x in (q, k, v))
        if _use_blocked(L, left, right, q.device):
            ob = local_attention_blocked(qb, kb, vb, left, right, key_valid=valid, dropout=dropout)
        else:
            mask = band_mask(L, L, min(left, L), min(right, L), q.device)[None, None] & valid[:, None, None, :]
            if _use_bmm(qb, dropout):
                ob = attention_bmm_causal(qb, kb, vb, mask) if right == 0 else attention_bmm(qb, kb, vb, mask)
            else:
                ob = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout)
        parts.append(ob.transpose(1, 2).reshape(n * L, *q.shape[1:]).index_select(0, keep))  # real tokens only
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out.index_select(0, varlen.order())


def _block_size(left: int, right: int) -> int:
    """Queries per block: the window's reach rounded up to a multiple of 16 (64 for Ettin's 128 window)."""
    return -(-max(left, right) // 16) * 16


def _use_blocked(T: int, left: int, right: int, device: torch.device | None = None) -> bool:
    """Blocked local attention pays off once the sequence spans several blocks. Measured on CPU only; on CUDA
    the flash-attn and FlexAttention backends skip masked blocks themselves, and SDPA keeps its band mask."""
    if device is not None and device.type != "cpu":
        return False
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


# --------------------------------------------------------------------------- scores held (CPU, low precision)
_BMM_MAX_SCORES = 1 << 20  # per (batch, head): up to 1024 x 1024 scores
_BMM_MAX_BYTES = 256 << 20  # the probabilities kept for backward, per call


def _use_bmm(q: torch.Tensor, dropout: float) -> bool:
    """For self-attention over q (..., T, D): attention with its probabilities held (`attention_bmm`) beats
    PyTorch's CPU flash kernel in bf16/fp16 at these sizes (bench/README.md); in fp32 it is level or slower, and on
    GPU the fused kernels win."""
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16) or dropout:
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


def _attend_flash(q, k, v, causal, reach, varlen, dropout):
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    left, right = reach
    window = (-1 if left >= (1 << 29) else left, -1 if right >= (1 << 29) else right)
    if causal:
        window = (window[0], 0)
    if varlen is None:
        return flash_attn_func(q, k, v, dropout_p=dropout, causal=causal, window_size=window)
    cu = varlen.cu_seqlens.to(torch.int32)
    return flash_attn_varlen_func(
        q, k, v, cu, cu, varlen.max_seqlen, varlen.max_seqlen, dropout_p=dropout, causal=causal, window_size=window
    )


def _attend_flex(q, k, v, causal, reach, varlen):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    left, right = reach
    if varlen is None:  # dense batch: every row its own document
        B, T = q.shape[:2]
        doc = None
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, h, T, D)
    else:
        B, T = 1, q.shape[0]
        doc = varlen.doc_ids()
        qt, kt, vt = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # (1, h, N, D)

    def mask_mod(b, h, qi, ki):
        d = qi - ki
        m = (d <= left) & (d >= -right)
        if doc is not None:
            m = m & (doc[qi] == doc[ki])
        return m

    block = create_block_mask(mask_mod, B, None, T, T, device=q.device)
    out = flex_attention(qt, kt, vt, block_mask=block)
    if varlen is None:
        return out.transpose(1, 2)
    return out.squeeze(0).transpose(0, 1)
