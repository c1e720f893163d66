"""Inference: decoder generation with a KV cache (`generate`, driven by a `Decoder`), encoder fill-mask, pooled
embeddings."""

from __future__ import annotations

import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from ettin.attention import KVCache, resolve_backend
from ettin.model import EttinModel

POOLINGS = ("cls", "mean", "last")


@torch.no_grad()
def embed(model: EttinModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
          pooling: str = "cls") -> torch.Tensor:
    """Pooled embeddings (B, H): "cls" (first real token), "mean" (real tokens) or "last" (last real token)."""
    h = model.hidden_states(input_ids, attention_mask)
    return pool(h, attention_mask, pooling)


def pool(h: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """Differentiable pooling of hidden states (B, T, H) -> (B, H); works with left or right padding."""
    B, T, _ = h.shape
    mask = torch.ones(B, T, dtype=torch.bool, device=h.device) if attention_mask is None else attention_mask.bool()
    rows = torch.arange(B, device=h.device)
    if pooling == "cls":
        return h[rows, mask.int().argmax(1)]
    if pooling == "last":
        last = T - 1 - mask.flip(1).int().argmax(1)
        return h[rows, last]
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator | None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


COPY_MIN_TOKENS = 16  # tokens still to come that repay the weight copies of an eager Decoder
STATIC_ROUND = 128  # a compiled Decoder's cache lengths are multiples of this


class Decoder:
    """Cached decoding with one decoder model, and what decoding keeps between steps, for this object's lifetime.
    The model is left as it was found: nothing is stored on it, and a copy of it costs what its parameters cost.

    Eager (the default), on CPU: each cache's prompt copies the tied decoder weight and every projection wider than
    its input (Wqkv, Wi) into (in, out) layouts, which the steps' matmuls read. On a few rows a projection reads its
    whole weight per step, and laid out (in, out) the wide ones stream through the matmul faster (the head 1.5-2.5x
    at batch 1-8, Wqkv and Wi about 1.6x at batch 1; bench/README.md). The copies cost about ten decoding steps, so
    a cache makes them only when at least COPY_MIN_TOKENS more tokens can come; they are re-made from the weights
    for every cache (never stale) into buffers this object keeps (a fresh 50-MB buffer pays its page faults).

    `compile=True`: the one-token step goes through `torch.compile` (inductor's `max_autotune` and `freezing`: each
    projection's weight is packed for the step's few rows, elementwise work fuses, Python drops out of the step;
    `options` go to inductor). Caches' lengths are rounded up to a multiple of STATIC_ROUND and each step reads all
    of their slots under a mask (KVCache.step_view), so one compiled step serves every position and most prompt
    lengths; each new batch size or rounded length compiles once more (tens of seconds on CPU; bench/README.md).
    Freezing bakes the weights into the step: after they change, call `recompile()`. Until then `new_cache`
    refuses a change it can see (a parameter's version counter, bumped by optimizer steps, `load_state_dict` and
    in-place ops, or its storage); a write through `.data` it cannot. The compiled graphs belong to this object (a
    code object and globals of its own, where dynamo keeps them), so recompiling or dropping it leaves every other
    compiled graph of the process, the training blocks' included, as it was."""

    def __init__(self, model: EttinModel, *, compile: bool = False, **options):
        if model.config.objective != "clm":
            raise ValueError("decoding needs a decoder (objective 'clm'); this model is an encoder")
        self.model = model
        self._buffers: dict[str, torch.Tensor] = {}  # the copies' storage, kept across caches
        self._weights: dict | None = None  # the current cache's copies, keyed as EttinModel.forward_cached reads them
        self._step = _CompiledStep(model, options) if compile else None

    @property
    def compiled(self) -> bool:
        return self._step is not None

    def recompile(self) -> Decoder:
        """Compile the step again, from the weights as they are now."""
        if self._step is None:
            raise ValueError("this Decoder is not compiled (Decoder(model, compile=True))")
        self._step = _CompiledStep(self.model, self._step.options)
        return self

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty KV cache for `batch_size` rows of up to `max_len` tokens (prompt and generated)."""
        if self._step is not None:
            self._step.check()
            max_len = -(-max_len // STATIC_ROUND) * STATIC_ROUND
        device = next(self.model.parameters()).device
        return KVCache(len(self.model.layers), batch_size, max_len, device=device)

    def forward(self, input_ids: torch.Tensor, cache: KVCache, positions: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) take the cache's next T slots; positions (B, T); attention_mask (B, T) marks the real
        tokens among them (None: all). Returns the last position's logits (B, V)."""
        n = input_ids.shape[1]
        cache.advance(n, None if attention_mask is None else attention_mask.bool())
        if self._step is not None and n == 1 and not cache.prompt:
            return self._step(input_ids, positions, cache)
        if cache.prompt:
            wanted = (self._step is None and input_ids.device.type == "cpu"  # measured on CPU only
                      and cache.max_len - cache.length >= COPY_MIN_TOKENS)
            self._weights = self._copies() if wanted else None
        return self.model.forward_cached(input_ids, positions, cache, weights=self._weights)

    __call__ = forward

    def _copies(self) -> dict:
        """(in, out) copies of the decoder weight ("decoder") and of every bias-free projection wider than its input
        (keyed by its module), written into the kept buffers."""
        wanted = {"decoder": ("decoder", self.model.decoder_weight)}
        for name, m in self.model.layers.named_modules():
            if isinstance(m, nn.Linear) and m.bias is None and m.out_features > m.in_features:
                wanted[m] = (name, m.weight)
        out = {}
        for key, (name, w) in wanted.items():
            w = w.detach()
            buf = self._buffers.get(name)
            if buf is None or (buf.shape, buf.dtype, buf.device) != (w.shape[::-1], w.dtype, w.device):
                buf = self._buffers[name] = torch.empty(w.shape[::-1], dtype=w.dtype, device=w.device)
            out[key] = buf.copy_(w.t())
        return out


def _decode_step(model, input_ids, positions, slot, visible, layers, backend: str) -> torch.Tensor:
    """What a compiled Decoder compiles: one step, the cache's tensors as inputs (a cache object's tensors reached
    through its attributes would be compiled in as constants)."""
    return model.forward_cached(input_ids, positions, KVCache.step_view(slot, visible, layers), backend=backend)


class _CompiledStep:
    """A compiled Decoder's step, and a stamp of the weights it froze."""

    def __init__(self, model: EttinModel, options: dict):
        self.model, self.options = model, {"max_autotune": True, **options}
        # a function with a code object and globals of its own: dynamo keeps the compiled graphs (and the weights
        # frozen into them) on the code object and in the globals, so they live exactly as long as this step
        fn = types.FunctionType(_decode_step.__code__.replace(), dict(_decode_step.__globals__), "_decode_step")
        self.fn = torch.compile(fn, dynamic=False, fullgraph=True, options=self.options)
        self.stamp = self._stamp()

    def _stamp(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    def check(self) -> None:
        if self._stamp() != self.stamp:
            raise RuntimeError("the model's weights changed since its decoding step was compiled (the step holds "
                               "them frozen): call Decoder.recompile() first")

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        import torch._inductor.config

        # resolved here, outside the compiled step, for the weights' dtype (the step then sees a plain name)
        backend = resolve_backend(self.model.runtime.attn_backend, input_ids.device, self.model.decoder_weight.dtype)
        with torch._inductor.config.patch(freezing=True):  # read when a graph compiles, not from `options`
            # contiguous: a view's strides would count as a new shape and compile again
            return self.fn(self.model, input_ids.contiguous(), positions.contiguous(), cache.slot, cache.visible,
                           cache.layers, backend)


@torch.no_grad()
def generate(model: EttinModel | Decoder, input_ids: torch.Tensor, max_new_tokens: int = 32,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             eos_token_id: int | None = None, attention_mask: torch.Tensor | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue each prompt (left-padded when lengths differ) by up to `max_new_tokens` tokens.

    Greedy when temperature == 0; otherwise temperature / top-k / top-p sampling. A row stops at EOS (later
    positions are filled with the pad id). Returns (B, T + generated). With `use_cache`, the prompt fills a KV cache
    allocated once for all T + max_new_tokens slots and each step feeds one token per row; without it, every step
    runs the model over the whole sequence so far (the reference the cache is tested against). `model`: a decoder,
    decoded by a `Decoder` made for this call, or a `Decoder` (kept for many calls: its weight copies' buffers, or
    its compiled step)."""
    decoder, model = (model, model.model) if isinstance(model, Decoder) else (None, model)
    if model.config.objective != "clm":
        raise ValueError("generate() needs a decoder (objective 'clm'); this model is an encoder")
    if use_cache and decoder is None:
        decoder = Decoder(model)
    B, T = input_ids.shape
    device = input_ids.device
    if attention_mask is not None and bool((attention_mask[:, -1] == 0).any()):
        raise ValueError("generate() expects left padding (the last column must be real tokens)")
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    total = T + max_new_tokens
    out = input_ids.new_full((B, total), pad)
    out[:, :T] = input_ids
    valid = torch.ones(B, total, dtype=torch.bool, device=device)  # real tokens: the prompt's, then unstopped rows'
    if attention_mask is not None:
        valid[:, :T] = attention_mask.bool()
    prompt_pos = (valid[:, :T].long().cumsum(1) - 1).clamp(min=0)
    new_pos = prompt_pos[:, -1:] + torch.arange(1, max_new_tokens + 1, device=device)  # (B, max_new_tokens)
    cache = decoder.new_cache(B, total) if use_cache else None
    done = torch.zeros(B, dtype=torch.bool, device=device) if eos_token_id is not None else None
    step_ids, step_pos, step_valid = input_ids, prompt_pos, valid[:, :T]
    n = T  # tokens so far
    for i in range(max_new_tokens):
        if cache is not None:
            logits = decoder(step_ids, cache, step_pos, step_valid)
        else:
            logits = model.logits_from_hidden(model.hidden_states(out[:, :n], valid[:, :n].long())[:, -1])
        nxt = _sample(logits, temperature, top_k, top_p, generator)
        step_valid = None
        if done is not None:  # rows finished before this step get padding, which no later token sees
            nxt = nxt.masked_fill(done, pad)
            valid[:, n] = ~done
            step_valid = valid[:, n : n + 1]
            done = done | (nxt == eos_token_id)
        out[:, n] = nxt
        n += 1
        step_ids, step_pos = out[:, n - 1 : n], new_pos[:, i : i + 1]
        if done is not None and bool(done.all()):
            break
    return out[:, :n]


@torch.no_grad()
def fill_mask(model: EttinModel, tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k predictions for each [MASK] in `text` (encoder). `tokenizer`: a `tokenizers.Tokenizer`."""
    if model.config.objective != "mlm":
        raise ValueError("fill_mask() needs an encoder (objective 'mlm')")
    ids = torch.tensor([tokenizer.encode(text).ids])
    where = (ids[0] == model.config.mask_token_id).nonzero().squeeze(1)
    if where.numel() == 0:
        raise ValueError(f"no [MASK] token in {text!r}")
    probs = F.softmax(model(ids).logits[0, where].float(), dim=-1)
    top = probs.topk(top_k, dim=-1)
    return [[(tokenizer.decode([i]), p) for i, p in zip(ix.tolist(), pv.tolist())]
            for ix, pv in zip(top.indices, top.values)]
