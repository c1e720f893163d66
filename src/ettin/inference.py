"""Inference: decoder generation with a KV cache, encoder fill-mask, pooled embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


@torch.no_grad()
def generate(model: EttinModel, input_ids: torch.Tensor, max_new_tokens: int = 32, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_token_id: int | None = None,
             attention_mask: torch.Tensor | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue each prompt (left-padded when lengths differ) by up to `max_new_tokens` tokens.

    Greedy when temperature == 0; otherwise temperature / top-k / top-p sampling. A row stops at EOS (later
    positions are filled with the pad id). Returns (B, T + generated). With `use_cache`, the prompt fills a KV cache
    allocated once for all T + max_new_tokens slots and each step feeds one token per row; without it, every step
    runs the model over the whole sequence so far (the reference the cache is tested against). After
    `model.compile_decoding()`, each one-token step runs compiled on a static cache (EttinModel.compile_decoding)."""
    if model.config.objective != "clm":
        raise ValueError("generate() needs a decoder (objective 'clm'); this model is an encoder")
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
    cache = model.new_cache(B, total) if use_cache else None
    done = torch.zeros(B, dtype=torch.bool, device=device) if eos_token_id is not None else None
    step_ids, step_pos, step_valid = input_ids, prompt_pos, valid[:, :T]
    n = T  # tokens so far
    for i in range(max_new_tokens):
        if cache is not None:
            logits = model.forward_cached(step_ids, cache, step_pos, step_valid)
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
