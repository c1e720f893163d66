"""The paired Ettin Transformer: one ModernBERT-style model, `objective` = "mlm" (encoder) or "clm" (decoder).

Design choices
- Nothing but the attention mask (bidirectional vs causal), the local window's shape and the loss target depends
  on the objective. Parameter names follow transformers' ModernBERT so that export is a rename (ettin.hf).
- Pre-norm blocks with bias-free LayerNorm (no attention norm in layer 0), fused QKV, RoPE with a global and a
  local theta, sliding-window attention on local layers, GeGLU MLP, final norm, prediction head
  dense -> GELU -> norm -> decoder tied to the token embeddings (+ bias).
- Input is unpadded whenever it has padding or packed documents: the linear layers then run on real tokens only
  and attention on documents (ettin.attention.Varlen); a full (B, T) batch takes the dense fast path.
- Losses use *aligned* labels (labels[t] is the target of position t, -100 to ignore) for both objectives: the
  CLM collator shifts. The head runs only on positions with a label (sparse prediction) through a fused,
  chunked linear + cross-entropy (ettin.losses), so the (N, V) logits are never held in training.
- Cached decoding is the same blocks over a KV cache (`forward_cached`); what decoding keeps between steps (the
  cache, weight copies laid out for it, a compiled step) belongs to ettin.inference.Decoder, not to the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ettin.attention import (
    FlexMasks,
    KVCache,
    Varlen,
    attend,
    layer_reach,
    rope_cos_sin,
    rope_halves,
    rope_qkv,
)
from ettin.config import IGNORE_INDEX, LOSS_CHUNK_SIZE, ModelConfig
from ettin.dropout import keyed_dropout, token_keys
from ettin.losses import linear_cross_entropy
from ettin.runtime import Runtime, compile_blocks


@dataclass
class ModelOutput:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, T, V)
    hidden_states: torch.Tensor | None = None  # (B, T, H), after the final norm
    num_targets: int = 0  # positions that contributed to the loss


def _norm(cfg: ModelConfig) -> nn.LayerNorm:
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps, bias=False)


class Embeddings(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.norm = _norm(cfg)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.tok_embeddings(input_ids))


class MLP(nn.Module):
    """GeGLU: Wo(gelu(a) * g) with [a, g] = Wi(x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.Wi = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.Wo = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, ctx: _Context | None = None) -> torch.Tensor:
        a, g = (self.Wi(x) if ctx is None else ctx.linear(self.Wi, x)).chunk(2, dim=-1)
        return self.Wo(F.gelu(a) * g)


class _Context:
    """Per-forward state shared by all layers: layout, rotary tables, backend; for cached decoding the KV cache and
    the (in, out) copies of projections the caller made (`EttinModel.forward_cached`)."""

    def __init__(self, cfg: ModelConfig, positions: torch.Tensor, varlen: Varlen | None, backend: str,
                 cache: KVCache | None = None, weights_t: dict | None = None):
        self.cfg, self.varlen, self.backend, self.cache, self.weights_t = cfg, varlen, backend, cache, weights_t
        self.flex_masks = FlexMasks() if backend == "flex" else None  # one block mask per reach, this forward
        theta = {"full_attention": cfg.global_rope_theta, "sliding_attention": cfg.local_rope_theta}
        tables = {t: rope_halves(*rope_cos_sin(positions, cfg.head_dim, t))
                  for t in {theta[k] for k in set(cfg.layer_types)}}
        self.rope = {kind: tables[theta[kind]] for kind in set(cfg.layer_types)}  # equal thetas share a table
        self.drop_keys: torch.Tensor | None = None  # each token's dropout key (ettin.dropout), laid out as x

    def cos_sin(self, kind: str):
        """The layer kind's rotary tables, as `rope_halves` shapes them."""
        return self.rope[kind]

    def linear(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """`layer(x)`, through the layer's (in, out) copy when this forward has one."""
        wt = None if self.weights_t is None else self.weights_t.get(layer)
        return layer(x) if wt is None else x @ wt


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.cfg, self.layer_idx = cfg, layer_idx
        self.kind = cfg.layer_types[layer_idx]
        self.reach = layer_reach(cfg.causal, self.kind == "sliding_attention", cfg.window)
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=False)
        self.Wo = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        # bert24 src/bert_layers/attention.py line 761: nn.Dropout(attn_out_dropout_prob) after Wo
        p = cfg.attention_output_dropout
        self.out_drop = nn.Dropout(p) if p > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, ctx: _Context) -> torch.Tensor:
        cfg = self.cfg
        lead = x.shape[:-1]  # (B, T) dense or (N,) varlen
        qkv = ctx.linear(self.Wqkv, x).view(*lead, 3, cfg.num_heads, cfg.head_dim)
        cos, sin = ctx.cos_sin(self.kind)
        q, k, v = rope_qkv(qkv, cos, sin, halves=True)  # each (*lead, h, D)
        drop = cfg.attention_dropout if self.training else 0.0
        out = attend(q, k, v, causal=cfg.causal, reach=self.reach, backend=ctx.backend, varlen=ctx.varlen,
                     dropout=drop, cache=ctx.cache, layer=self.layer_idx, flex_masks=ctx.flex_masks)
        y = self.Wo(out.reshape(*lead, cfg.hidden_size))
        if self.training and ctx.drop_keys is not None and cfg.attention_output_dropout > 0:
            return keyed_dropout(y, ctx.drop_keys, self.layer_idx, cfg.attention_output_dropout)
        return self.out_drop(y)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = nn.Identity() if layer_idx == 0 else _norm(cfg)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = _norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, ctx: _Context) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), ctx)
        return x + self.mlp(self.mlp_norm(x), ctx)


class PredictionHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.norm = _norm(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(x)))


def _runtime_field(name: str) -> property:
    """`model.<name>`: the model's runtime's field, read and written there."""
    return property(lambda self: getattr(self.runtime, name), lambda self, value: setattr(self.runtime, name, value),
                    doc=f"ettin.runtime.Runtime.{name} of this model")


class EttinModel(nn.Module):
    def __init__(self, config: ModelConfig, init: bool = True, *, runtime: Runtime | None = None,
                 attn_backend: str = "auto", loss_chunk_size: int = LOSS_CHUNK_SIZE):
        """`runtime` (ettin.runtime.Runtime; or its fields, `attn_backend` and `loss_chunk_size`) says how this
        instance runs, not what it is: held by the instance (change it at any time), never part of `config`, a
        checkpoint or an export. "auto" picks the attention kernel by the tensors' device and dtype."""
        super().__init__()
        self.config = config
        self.runtime = runtime if runtime is not None else Runtime(attn_backend, loss_chunk_size)
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.final_norm = _norm(config)
        self.head = PredictionHead(config)
        self.decoder_bias = nn.Parameter(torch.zeros(config.vocab_size))
        if init and not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    # -------------------------------------------------------------------------------- init
    @torch.no_grad()
    def init_weights(self) -> None:
        """The published trainer's init (bert24 `init_method: full_megatron`, src/bert_layers/initialization.py
        lines 107-134): truncated normal (cutoff 2 std), std 0.02 for embeddings and in-projections (Wqkv, Wi,
        the head's dense), 0.02 / sqrt(2 L) for out-projections (Wo of attention and MLP)."""
        cfg = self.config
        std_in = cfg.initializer_range
        std_out = cfg.initializer_range / math.sqrt(2.0 * cfg.num_layers)
        cut = cfg.initializer_cutoff_factor

        def tn(w: torch.Tensor, std: float) -> None:
            nn.init.trunc_normal_(w, mean=0.0, std=std, a=-cut * std, b=cut * std)

        tn(self.embeddings.tok_embeddings.weight, std_in)
        for block in self.layers:
            tn(block.attn.Wqkv.weight, std_in)
            tn(block.attn.Wo.weight, std_out)
            tn(block.mlp.Wi.weight, std_in)
            tn(block.mlp.Wo.weight, std_out)
        # The published trainer's full_megatron init gives the head's dense layer the "in" std (bert24
        # src/bert_layers/model.py line 740: type_of_module=ModuleType.in_module), not transformers' "out" std.
        tn(self.head.dense.weight, std_in)
        self.decoder_bias.zero_()
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)

    @property
    def decoder_weight(self) -> torch.Tensor:
        return self.embeddings.tok_embeddings.weight  # tied

    attn_backend = _runtime_field("attn_backend")
    loss_chunk_size = _runtime_field("loss_chunk_size")

    def num_parameters(self) -> int:
        """The parameter count, from the config's shapes (ettin.config.ModelConfig.num_parameters: tied embeddings
        counted once); a test checks it against the module's tensors."""
        return self.config.num_parameters()

    # ------------------------------------------------------------------------------ layout
    def _layout(self, input_ids, attention_mask, position_ids):
        """Decide dense vs varlen. Returns (indices or None, positions, varlen or None)."""
        B, T = input_ids.shape
        device = input_ids.device
        packed = position_ids is not None and bool((position_ids[:, 1:] == 0).any())
        padded = attention_mask is not None and not bool(attention_mask.all())
        if not packed and not padded:
            pos = position_ids if position_ids is not None else torch.arange(T, device=device)[None].expand(B, T)
            return None, pos, None
        mask = attention_mask.bool() if attention_mask is not None else torch.ones(B, T, dtype=torch.bool,
                                                                                    device=device)
        indices = mask.flatten().nonzero().squeeze(1)  # (N,)
        if packed:
            pos = position_ids.flatten()[indices]
            row = indices // T
            starts = (pos == 0) | torch.cat([torch.ones(1, dtype=torch.bool, device=device), row[1:] != row[:-1]])
        else:  # padded rows, left or right: one document per row
            pos = (mask.long().cumsum(1) - 1).flatten()[indices]
            starts = pos == 0
        start_idx = starts.nonzero().squeeze(1)
        cu = torch.cat([start_idx, torch.tensor([len(indices)], device=device)]).to(torch.int32)
        max_len = int((cu[1:] - cu[:-1]).max()) if len(cu) > 1 else 0
        return indices, pos, Varlen(cu_seqlens=cu, max_seqlen=max_len)

    # ----------------------------------------------------------------------------- forward
    def hidden_states(self, input_ids, attention_mask=None, position_ids=None, *, dropout_keys=None,
                      _unpadded=False):
        """Final-norm hidden states (B, T, H); padding positions are zeros. `dropout_keys` (B, 2) int64, one pair a
        row (ettin.dropout.row_keys): in training, the dropout masks are a function of them, not of a random
        stream, so they do not depend on the ranks or the micro-batches (without them: nn.Dropout)."""
        cfg = self.config
        indices, pos, varlen = self._layout(input_ids, attention_mask, position_ids)
        if varlen is not None:
            x = self.embeddings(input_ids.flatten()[indices])  # (N, H)
        else:
            x = self.embeddings(input_ids)  # (B, T, H)
        ctx = _Context(cfg, pos, varlen, self.runtime.backend(x.device, x.dtype))
        if dropout_keys is not None and self.training:
            keys = token_keys(dropout_keys, input_ids.shape[1])
            ctx.drop_keys = keys.flatten()[indices] if varlen is not None else keys
        for block in self.layers:
            x = block(x, ctx)
        x = self.final_norm(x)
        if _unpadded:
            return x, indices
        if varlen is not None:
            B, T = input_ids.shape
            full = x.new_zeros(B * T, x.shape[-1])
            full[indices] = x
            x = full.view(B, T, -1)
        return x

    def logits_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.head(h), self.decoder_weight, self.decoder_bias)

    def forward(self, input_ids, attention_mask=None, position_ids=None, labels=None, return_logits=None,
                dropout_keys=None):
        if labels is None or return_logits:
            h = self.hidden_states(input_ids, attention_mask, position_ids, dropout_keys=dropout_keys)
            logits = self.logits_from_hidden(h)
            loss, n = None, 0
            if labels is not None:
                tgt = labels.masked_fill(attention_mask == 0, IGNORE_INDEX) if attention_mask is not None else labels
                n = int((tgt != IGNORE_INDEX).sum())
                loss = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), ignore_index=IGNORE_INDEX)
            return ModelOutput(loss=loss, logits=logits, hidden_states=h, num_targets=n)
        h, indices = self.hidden_states(input_ids, attention_mask, position_ids, dropout_keys=dropout_keys,
                                        _unpadded=True)
        flat_labels = labels.flatten() if indices is None else labels.flatten()[indices]
        h = h.reshape(-1, h.shape[-1])
        keep = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)  # sparse prediction: only positions with a target
        hk, tk = h[keep], flat_labels[keep]
        loss = linear_cross_entropy(self.head(hk), self.decoder_weight, self.decoder_bias, tk,
                                    chunk_size=self.runtime.loss_chunk_size)
        return ModelOutput(loss=loss, num_targets=int(keep.numel()))

    # -------------------------------------------------------------------- cached decoding
    def forward_cached(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: KVCache, *,
                       backend: str | None = None, weights: dict | None = None) -> torch.Tensor:
        """The decoder's forward with a KV cache (ettin.inference.Decoder drives it): input_ids (B, T) at
        `positions` (B, T) go into the slots `cache.advance` took; returns the last position's logits (B, V).
        Attention is the same `attend` as training's, with the cache. `weights`: (in, out) copies of projections,
        keyed by module (the tied decoder weight by "decoder"), which the matmuls then read instead."""
        ctx = _Context(self.config, positions, None, backend or self.runtime.attn_backend, cache=cache, weights_t=weights)
        x = self.embeddings(input_ids)
        for block in self.layers:
            x = block(x, ctx)
        h = self.head(self.final_norm(x[:, -1]))
        if weights is None:
            return F.linear(h, self.decoder_weight, self.decoder_bias)
        return (h @ weights["decoder"]).add_(self.decoder_bias)

    def compile_blocks(self, **kwargs) -> EttinModel:
        """torch.compile each block in place (ettin.runtime.compile_blocks: the dynamo settings it needs)."""
        compile_blocks(self.layers, **kwargs)
        return self

