"""Rotary embeddings and the one attention function the model calls (`attend`), with its portable backends.

Two token layouts reach attention:
- dense:  (B, T, heads, D), every row a full sequence (no padding): the fast path for fixed-length training;
- varlen: (N, heads, D), the real tokens of several documents back to back, with `cu_seqlens` boundaries
          (unpadded / packed input). Attention never crosses a document boundary.
Cached decoding passes a `KVCache`: each layer writes its new keys and values into the cache's preallocated
buffers and its queries attend over the slots written so far (KVCache.window).

Backends (a setting of the run or the call, not of the architecture: `EttinModel.attn_backend`, `train.attn_backend`;
`attend` resolves "auto" by the tensors' device and dtype, `resolve_backend`):
- "sdpa":  torch.nn.functional.scaled_dot_product_attention, and nothing else. Varlen input is grouped into buckets
           of documents of similar length and re-padded per bucket, so little compute goes to padding.
- "cpu":   the same layouts, with the CPU kernels of ettin.attention_cpu where they beat SDPA (blocked local
           attention on sequences of several windows; in bf16/fp16 attention that keeps its probabilities for
           backward); SDPA everywhere else. What "auto" picks on a CPU device.
- "flex":  FlexAttention, compiled, with a BlockMask built once per forward for each reach (`FlexMasks`) from the
           document ids, the causal flag and the window. No dropout (an error when asked for).
- "flash": flash-attn's varlen kernel (CUDA, fp16/bf16, when installed), window passed as (left, right). What
           "auto" picks for fp16/bf16 CUDA tensors when flash-attn is installed ("sdpa" otherwise).
With a cache, the prompt (the first forward into an empty cache) runs as a dense batch, on SDPA or, for "cpu", its
kernels; every later step is one SDPA call over the cached slots in reach, masked only where a slot is not visible
(a compiled step's `step_view`: over every slot, masked).
A local ("sliding_attention") layer reaches `window = (left, right)` tokens; see ModelConfig.window.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ettin import attention_cpu

BACKENDS = ("sdpa", "cpu", "flex", "flash")
_BUCKET = 64  # varlen SDPA pads each document to a multiple of this


@functools.lru_cache(maxsize=1)
def flash_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """The backend `name` ("auto" or one of BACKENDS) means for tensors of `dtype` on `device`. "auto": the CPU
    kernels on a CPU; on CUDA flash-attn for fp16/bf16 tensors when it is installed (it takes no other dtype), SDPA
    otherwise (fp32 evaluation, no flash-attn). An explicit choice that cannot run here is an error."""
    half = dtype in (torch.float16, torch.bfloat16)
    if name == "auto":
        if device.type == "cpu":
            return "cpu"
        return "flash" if device.type == "cuda" and half and flash_available() else "sdpa"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; expected auto or one of {BACKENDS}")
    if name == "flash" and not flash_available():
        raise RuntimeError("attn_backend='flash' needs flash-attn on a CUDA device (pip install 'ettin[flash]')")
    if name == "flash" and dtype is not None and not half:
        raise ValueError(f"attn_backend='flash' takes fp16/bf16 tensors only, not {dtype}; use auto or sdpa (or "
                         "train.precision=bf16)")
    if name == "cpu" and device.type != "cpu":
        raise ValueError(f"attn_backend='cpu' runs on CPU tensors only, not {device.type}; use auto, sdpa or flex")
    return name


# ----------------------------------------------------------------------------------------------- RoPE
@functools.lru_cache(maxsize=16)
def _inv_freq(head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=device) / head_dim))


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape positions.shape + (head_dim,), float32, non-interleaved (as transformers)."""
    inv_freq = _inv_freq.__wrapped__ if torch.compiler.is_compiling() else _inv_freq  # (a compiled step folds it)
    freqs = positions[..., None].float() * inv_freq(head_dim, theta, positions.device)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _rotate(x: torch.Tensor, c: torch.Tensor, s: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., 2, half) -> (x1 c - x2 s, x2 c + x1 s) in a fresh tensor (or `out`), four passes, no temporaries."""
    x1, x2 = x.unbind(-2)
    if out is None and torch.compiler.is_compiling():  # compiled: the same arithmetic, fused, without out=
        return torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), -2)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if out is None else out
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
        return _rope_qkv(qkv, c, s)

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


def _rope_qkv(qkv, c, s):
    half = qkv.shape[-1] // 2
    q, k = _rotate(qkv[..., :2, :, :].unflatten(-1, (2, half)), c, s).flatten(-2).unbind(-3)
    return q, k, qkv[..., 2, :, :]


def rope_halves(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (..., D) -> their first halves as (..., 1, 1, D/2), to broadcast over [q|k] and heads (the second
    halves repeat them). Made once per forward and shared by the layers of one theta."""
    half = cos.shape[-1] // 2
    return cos[..., None, None, :half], sin[..., None, None, :half]


def rope_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, halves: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k (rotary embedding applied) and v of a fused projection qkv: (..., 3, heads, D); cos, sin: (..., D), or
    with `halves` already passed through `rope_halves`. Non-interleaved halves, as transformers (x * cos +
    rotate_half(x) * sin; tests), computed on the halves in one pass for q and k together; one autograd node whose
    backward assembles the projection's gradient in place."""
    c, s = (cos, sin) if halves else rope_halves(cos, sin)
    if c.dtype != qkv.dtype:
        c, s = c.to(qkv.dtype), s.to(qkv.dtype)
    if qkv.requires_grad and torch.is_grad_enabled():
        return _RopeQKV.apply(qkv, c, s)
    return _rope_qkv(qkv, c, s)  # no graph to record (inference, decoding): the same kernel, no autograd node


# ------------------------------------------------------------------------------------------ masks
@functools.lru_cache(maxsize=64)
def band_mask(t_q: int, t_k: int, left: int, right: int, device: torch.device) -> torch.Tensor:
    """Bool (t_q, t_k): query i may see key j iff -right <= i - j <= left."""
    i = torch.arange(t_q, device=device)[:, None]
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


# ------------------------------------------------------------------------------------------ cache
class KVCache:
    """Keys and values of every layer for cached decoding, in buffers of `max_len` slots allocated once.

    Slot s of row b holds the s-th token fed for that row, left padding included; `visible` (B, max_len) marks the
    slots written with real tokens (not padding, nor the tokens of a row that already stopped). The caller takes
    each forward's slots with `advance`, before the model's layers; each layer's `attend` then writes its keys and
    values into them (`write`) and reads the slots `window` names. Unwritten slots are zeros and never visible.

    A forward reads the slots written so far, from the first one its window reaches, with a mask only where one is
    needed (several queries, or a slot that is not visible): on CPU, SDPA under a mask takes a slower kernel. A cache
    made by `step_view` is read whole instead: the one-token step compiled for decoding (ettin.inference.Decoder),
    whose shapes must not grow, receives the cache's tensors as inputs and reads every slot under the mask."""

    def __init__(self, num_layers: int, batch: int, max_len: int, *, device: torch.device | str | None = None):
        self.num_layers, self.batch, self.max_len = num_layers, batch, max_len
        self.start = self.length = 0  # this forward's slots are [start, length)
        self.prompt = True  # this forward is the first (its queries attend over its own tokens)
        self.whole = False  # a step view: every forward reads all max_len slots, under a mask
        self.padded = False  # some slot so far is not visible (the prompt's self-attention then needs a key mask)
        self.slots = torch.arange(max_len, device=device)
        self.slot = torch.zeros((), dtype=torch.long, device=device)  # `start`, as a tensor (a compiled step's input)
        self.visible = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer (keys, values), (B, h, max_len, D)
        self._masks: dict = {}

    @classmethod
    def step_view(cls, slot: torch.Tensor, visible: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]
                  ) -> KVCache:
        """A cache's one-token step rebuilt from its tensors, reading all of its slots: what a compiled step receives
        as inputs (a cache object's tensors reached through its attributes would be compiled in as constants)."""
        view = cls.__new__(cls)
        view.num_layers, view.batch, view.max_len = len(layers), visible.shape[0], visible.shape[1]
        view.prompt, view.whole, view.start, view.length = False, True, None, view.max_len
        view.slot, view.visible, view.layers, view._masks = slot, visible, layers, {}
        view.slots = torch.arange(view.max_len, device=visible.device)
        return view

    def advance(self, n: int, valid: torch.Tensor | None = None) -> None:
        """Take the next `n` slots for this forward; `valid` (B, n) bool says which hold real tokens (None: all)."""
        if self.length + n > self.max_len:
            raise ValueError(f"KVCache of {self.max_len} slots is full: {self.length} used, {n} more asked")
        self.start, self.length = self.length, self.length + n
        self.prompt = self.start == 0
        self.visible[:, self.start : self.length] = True if valid is None else valid
        self.padded = self.padded or (valid is not None and not bool(valid.all()))
        self.slot.fill_(self.start)
        self._masks = {}

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this forward's k, v (B, T, h, D) in `layer`'s slots; returns the layer's keys and values of every
        slot up to `length`, (B, h, length, D) views of the buffers."""
        if not self.layers:  # one buffer per layer, written in place (by a compiled step too)
            B, _, h, D = k.shape
            # zeros: a masked slot's weight of 0 times the NaN of uninitialised memory would be NaN
            self.layers = [(k.new_zeros((B, h, self.max_len, D)), k.new_zeros((B, h, self.max_len, D)))
                           for _ in range(self.num_layers)]
        kb, vb = self.layers[layer]
        kt, vt = k.transpose(1, 2), v.transpose(1, 2)
        if self.whole:  # the slot is a tensor
            index = self.slot + self.slots[: k.shape[1]]
            kb.index_copy_(2, index, kt)
            vb.index_copy_(2, index, vt)
        else:
            kb[:, :, self.start : self.length].copy_(kt)
            vb[:, :, self.start : self.length].copy_(vt)
        return kb[:, :, : self.length], vb[:, :, : self.length]

    def window(self, reach: tuple[int, int], T: int) -> tuple[int, torch.Tensor | None]:
        """(lo, mask): this forward's T queries see slots lo..length-1 under `reach` (left, right) where the bool
        mask (B, 1, T, length - lo) says so, everywhere when it is None. Built once per forward and reach."""
        got = self._masks.get(reach)
        if got is None:
            left, right = reach
            lo = 0 if self.whole else max(0, self.start - left)
            mask = None
            if self.whole or self.padded or T > 1:
                d = (self.slot + self.slots[:T])[:, None] - self.slots[None, lo : self.length]  # query - key slot
                mask = ((d <= left) & (d >= -right))[None, None] & self.visible[:, None, None, lo : self.length]
            got = self._masks[reach] = (lo, mask)
        return got


# ------------------------------------------------------------------------------------------ attend
def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    reach: tuple[int, int],
    backend: str = "auto",
    varlen: Varlen | None = None,
    dropout: float = 0.0,
    cache: KVCache | None = None,
    layer: int = 0,
    flex_masks: FlexMasks | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention over dense (B, T, h, D) or varlen (N, h, D) q/k/v; returns q's shape.

    `reach` = (left, right) from `layer_reach`; for full layers it is unbounded (causal sets right = 0). `backend`:
    "auto" or one of BACKENDS, resolved here for q's device and dtype. With `cache`, q/k/v are dense, the new tokens
    of this forward: k and v go into the cache's slots for `layer` and q attends over every slot so far. `flex_masks`:
    the forward's block masks for the flex backend (one per reach, built on first use; None: built for this call).
    """
    if backend == "auto" or not torch.compiler.is_compiling():  # a compiled block gets the name its forward resolved
        backend = resolve_backend(backend, q.device, q.dtype)
    if cache is not None:
        return _attend_cached(q, k, v, causal, reach, backend, cache, layer)
    if backend == "flash":
        return _attend_flash(q, k, v, causal, reach, varlen, dropout)
    if backend == "flex":
        if dropout:
            raise ValueError("the flex attention backend has no dropout on the attention probabilities "
                             f"(attention_dropout={dropout}); use sdpa or auto")
        return _attend_flex(q, k, v, reach, varlen, flex_masks or FlexMasks())
    if varlen is not None:
        return _attend_varlen(q, k, v, causal, reach, varlen, dropout, backend)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    return _self_attention(qt, kt, vt, causal, reach, None, dropout, backend).transpose(1, 2)


def _self_attention(q, k, v, causal: bool, reach: tuple[int, int], key_valid: torch.Tensor | None, dropout: float,
                    backend: str) -> torch.Tensor:
    """Self-attention over (B, h, T, D), `key_valid` (B, T) bool marking padded keys (None: none): SDPA, or on the
    "cpu" backend its kernels where they pay (ettin.attention_cpu). Padded queries' outputs are to be discarded."""
    T = q.shape[-2]
    left, right = reach
    cpu = backend == "cpu"
    if cpu and attention_cpu.use_blocked(T, left, right):
        return attention_cpu.local_attention_blocked(q, k, v, left, right, key_valid=key_valid, dropout=dropout)
    bites = left < T - 1 or (not causal and right < T - 1)  # a window that bites at this length
    mask = None
    if bites or key_valid is not None:
        mask = band_mask(T, T, min(left, T), min(right, T), q.device)
        if key_valid is not None:
            mask = mask[None, None] & key_valid[:, None, None, :]
    if cpu and attention_cpu.use_held_scores(q, dropout):
        if causal:
            mask = band_mask(T, T, T, 0, q.device) if mask is None else mask
            return attention_cpu.attention_bmm_causal(q, k, v, mask)
        return attention_cpu.attention_bmm(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                          dropout_p=dropout)


def _attend_varlen(q, k, v, causal, reach, varlen: Varlen, dropout: float, backend: str) -> torch.Tensor:
    """Each bucket of documents re-padded to its length L, one self-attention call per bucket."""
    parts = []
    for gather, valid, L, keep in varlen.buckets():
        n = gather.shape[0]
        idx = gather.flatten()
        qb, kb, vb = (x.index_select(0, idx).view(n, L, *x.shape[1:]).transpose(1, 2) for x in (q, k, v))
        ob = _self_attention(qb, kb, vb, causal, reach, valid, dropout, backend)
        parts.append(ob.transpose(1, 2).reshape(n * L, *q.shape[1:]).index_select(0, keep))  # real tokens only
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out.index_select(0, varlen.order())


def _attend_cached(q, k, v, causal, reach, backend: str, cache: KVCache, layer: int) -> torch.Tensor:
    qt = q.transpose(1, 2)
    keys, values = cache.write(layer, k, v)  # (B, h, S, D)
    if cache.prompt:  # self-attention over the prompt's own tokens, as a dense batch
        valid = cache.visible[:, : cache.length] if cache.padded else None
        own = "cpu" if backend == "cpu" else "sdpa"
        return _self_attention(qt, k.transpose(1, 2), v.transpose(1, 2), causal, reach, valid, 0.0, own).transpose(1, 2)
    lo, mask = cache.window(reach, q.shape[1])
    if lo:
        keys, values = keys[:, :, lo:], values[:, :, lo:]
    return F.scaled_dot_product_attention(qt, keys, values, attn_mask=mask).transpose(1, 2)


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


_FLEX_BLOCK = 128  # FlexAttention's block; on CPU, sequence lengths are padded to a multiple of it


class FlexMasks:
    """The flex backend's BlockMasks of one forward, one per attention reach: built by the first layer of that reach,
    reused by the others (building one is a pass over the (T, T) block grid; the layers share the layout). Positions
    past the documents (padding up to `T`) form a document of their own, whose outputs are dropped."""

    def __init__(self) -> None:
        self._masks: dict[tuple, object] = {}

    def get(self, reach: tuple[int, int], B: int, T: int, doc: torch.Tensor | None, device: torch.device):
        key = (reach, B, T, None if doc is None else doc.data_ptr())
        if key not in self._masks:
            from torch.nn.attention.flex_attention import create_block_mask

            left, right = reach
            if doc is not None and len(doc) < T:
                doc = torch.cat([doc, doc.new_full((T - len(doc),), -1)])

            def mask_mod(b, h, qi, ki):
                d = qi - ki
                m = (d <= left) & (d >= -right)
                if doc is not None:
                    m = m & (doc[qi] == doc[ki])
                return m

            # compiled, so the (T, T) grid of the mask is never materialised (PyTorch: `_compile=True`)
            self._masks[key] = create_block_mask(mask_mod, B, None, T, T, device=device, _compile=True)
        return self._masks[key]


@functools.lru_cache(maxsize=2)
def _flex_attention(dynamic: bool | None):
    """flex_attention compiled (PyTorch's documented use: eager flex materialises the whole score matrix). On CUDA
    with dynamic shapes after the first recompile (the packed length changes with every batch); on CPU with static
    shapes (torch 2.13's CPU kernel does not compile with dynamic ones), the lengths padded to a multiple of the block
    so that few shapes occur."""
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(flex_attention, dynamic=dynamic)


def _attend_flex(q, k, v, reach, varlen, masks: FlexMasks):
    cpu = q.device.type == "cpu"
    if varlen is None:  # dense batch: every row its own document
        B, T = q.shape[:2]
        doc = None
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, h, T, D)
    else:
        B, n = 1, q.shape[0]
        T = -(-n // _FLEX_BLOCK) * _FLEX_BLOCK if cpu else n
        doc = varlen.doc_ids()
        qt, kt, vt = (F.pad(x, (0, 0, 0, 0, 0, T - n)).transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # (1, h, T, D)
    block = masks.get(reach, B, T, doc, q.device)
    out = _flex_attention(False if cpu else None)(qt, kt, vt, block_mask=block)
    if varlen is None:
        return out.transpose(1, 2)
    return out.squeeze(0).transpose(0, 1)[:n]
