"""Model configuration: one dataclass, one `objective` switch, and the size presets.

The encoder and the decoder share every field but `objective`. Attention (bidirectional or causal),
the sliding-window shape, the loss and the Hugging Face class all follow from it; nobody flips flags in sync.
The objective facts every layer shares live here, once: `OBJECTIVES`, their display names (`ROLES`: also the
run folders of `ettin pair`), the special-token fields of a model config (`SPECIAL_TOKEN_FIELDS`) and the label of
a position without a target (`IGNORE_INDEX`).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

Objective = Literal["mlm", "clm"]
OBJECTIVES: tuple[str, ...] = typing.get_args(Objective)  # ("mlm", "clm"): masked / causal language modelling
ROLES = {"mlm": "encoder", "clm": "decoder"}  # an objective's display name (a model's native role)
IGNORE_INDEX = -100  # the label of a position without a target (both objectives; as transformers and torch)
# Settings of a run or a call, not of the architecture: a model config never holds them, and configs written before
# they moved out (checkpoint metas, exports) load with them ignored (`ModelConfig.from_dict`).
RUNTIME_KEYS = ("attn_backend", "loss_chunk_size")
LOSS_CHUNK_SIZE = 1024  # tokens per chunk of the fused head + cross-entropy (fp32; twice as many in bf16)
LAYER_TYPES = ("full_attention", "sliding_attention")
GLOBAL_EVERY = 3  # the published layer pattern: layer i is global iff i % 3 == 0 (0, 3, 6, ...)
# The special ids a model config carries; [CLS] doubles as BOS and [SEP] as EOS (ModernBERT, Ettin).
SPECIAL_TOKEN_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "mask_token_id")


def special_token_ids(pad: int | None, cls: int | None, sep: int | None, mask: int | None) -> dict[str, int | None]:
    """The model config's special-token fields from a tokenizer's [PAD], [CLS], [SEP] and [MASK] ids."""
    return dict(zip(SPECIAL_TOKEN_FIELDS, (pad, cls, sep, mask)))


def periodic_layer_types(num_layers: int, every: int = GLOBAL_EVERY) -> list[str]:
    """The layer pattern with a global layer every `every` layers, from layer 0 on; the others local."""
    if every < 1:
        raise ValueError(f"a global layer every {every} layers: expected a whole number >= 1")
    return [LAYER_TYPES[0] if i % every == 0 else LAYER_TYPES[1] for i in range(num_layers)]


def global_every(layer_types: list[str]) -> int | None:
    """N where `layer_types` is `periodic_layer_types(len, N)` (the smallest such N), None for any other pattern."""
    n = len(layer_types)
    full = [i for i, t in enumerate(layer_types) if t == LAYER_TYPES[0]]
    every = full[1] if len(full) > 1 else max(n, 1)
    return every if full[:1] == [0] and periodic_layer_types(n, every) == list(layer_types) else None


# ModernBERT tokenizer special ids (../shared/data/modernbert_tokenizer)
MODERNBERT_SPECIAL = special_token_ids(pad=50283, cls=50281, sep=50282, mask=50284)


@dataclass
class ModelConfig:
    objective: Objective = "mlm"
    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152  # GeGLU: per branch (Wi produces 2x this)
    num_layers: int = 22
    num_heads: int = 12
    layer_types: list[str] | None = None  # per layer: full_attention | sliding_attention; None: periodic_layer_types
    local_attention: int = 128  # total window of local layers, as transformers' `local_attention`
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    norm_eps: float = 1e-5
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    attention_dropout: float = 0.0  # on the attention probabilities (0.0 in every published run)
    # after the attention's output projection Wo, in training only: the published recipe's attn_out_dropout_prob
    # (0.1 in all 48 YAMLs). Not exported: transformers' `attention_dropout` means both dropouts at once.
    attention_output_dropout: float = 0.0
    pad_token_id: int = MODERNBERT_SPECIAL["pad_token_id"]
    bos_token_id: int = MODERNBERT_SPECIAL["bos_token_id"]  # [CLS]; decoders use it as BOS
    eos_token_id: int = MODERNBERT_SPECIAL["eos_token_id"]  # [SEP]
    mask_token_id: int = MODERNBERT_SPECIAL["mask_token_id"]
    extra: dict[str, Any] = field(default_factory=dict)  # unknown HF config keys travel through export

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be 'mlm' or 'clm', got {self.objective!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.layer_types is None:
            self.layer_types = periodic_layer_types(self.num_layers)
        self.layer_types = list(self.layer_types)
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
        bad = [t for t in self.layer_types if t not in LAYER_TYPES]
        if bad:
            raise ValueError(f"unknown layer type(s) {bad}; expected one of {LAYER_TYPES}")
        for name in SPECIAL_TOKEN_FIELDS:
            tok = getattr(self, name)
            if tok is not None and not 0 <= tok < self.vocab_size:
                raise ValueError(f"{name}={tok} is outside the vocabulary (size {self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def causal(self) -> bool:
        return self.objective == "clm"

    @property
    def window(self) -> tuple[int, int]:
        """(left, right) reach of a local layer, exactly as transformers applies it.

        Encoder (ModernBertModel): |i - j| <= local_attention // 2  -> (64, 64) for 128.
        Decoder (ModernBertDecoderModel): i - sliding_window < j <= i, sliding_window = local_attention // 2
        -> (63, 0) for 128. The parity tests pin both.
        """
        half = self.local_attention // 2
        return (half - 1, 0) if self.causal else (half, half)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        every = d.pop("global_every", None)  # configs saved before `layer_types` was the pattern's one source
        if every is not None and d.get("layer_types") is None:
            d["layer_types"] = periodic_layer_types(d.get("num_layers", cls.num_layers), every)
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in RUNTIME_KEYS}  # how an older run ran, not what it is
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model config field(s): {unknown}")
        return cls(**d)

    def num_parameters(self, with_head: bool = True) -> int:
        """Parameter count from the shapes (tied embeddings), as in the reference table."""
        H, inter, L, V = self.hidden_size, self.intermediate_size, self.num_layers, self.vocab_size
        per_layer = 3 * H * H + H * H + H * 2 * inter + inter * H + 2 * H  # qkv, o, Wi, Wo, attn+mlp norm
        n = V * H + H + L * per_layer - H + H  # embeddings + emb norm + layers (layer 0 no attn norm) + final
        if with_head:
            n += H * H + H + V  # dense, norm, decoder bias
        return n

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# name: (layers, hidden, intermediate, heads). Reference ettin.md section 1.
_SIZES: dict[str, tuple[int, int, int, int]] = {
    "17m": (7, 256, 384, 4),
    "32m": (10, 384, 576, 6),
    "68m": (19, 512, 768, 8),
    "150m": (22, 768, 1152, 12),
    "400m": (28, 1024, 2624, 16),
    "1b": (28, 1792, 3840, 28),
    # Tiny shapes for tests and the CPU demo (small vocabularies come from `ettin tokenizer train`).
    "tiny": (4, 64, 96, 2),
    "demo": (4, 64, 96, 1),  # the CPU demo's shape, from a measured sweep (docs/demo-sweep.md)
}
SIZES = tuple(_SIZES)


def preset(name: str, objective: Objective = "mlm", **overrides: Any) -> ModelConfig:
    """A size preset, e.g. ``preset("17m", "clm")``; keyword overrides win (``vocab_size=4096``)."""
    key = name.lower().removeprefix("ettin-").removesuffix("-encoder").removesuffix("-decoder")
    if key not in _SIZES:
        raise KeyError(f"unknown model size {name!r}; known: {', '.join(SIZES)}")
    layers, hidden, inter, heads = _SIZES[key]
    kw: dict[str, Any] = dict(
        objective=objective, num_layers=layers, hidden_size=hidden, intermediate_size=inter, num_heads=heads
    )
    kw.update(overrides)
    return ModelConfig(**kw)
