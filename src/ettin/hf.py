"""Hugging Face interop through one name map, used in both directions.

Encoder  <-> transformers `ModernBertForMaskedLM`        (model_type "modernbert")
Decoder  <-> transformers `ModernBertDecoderForCausalLM` (model_type "modernbert-decoder")

Our parameter names are ModernBERT's without the "model." prefix; the decoder class in transformers keeps
separate q/k/v projections where we keep the fused Wqkv, so the map splits and joins those rows. The decoder
weight is tied to the token embeddings and is not written (transformers ties it on load).

`save_pretrained(model, path, tokenizer=...)` / `from_pretrained(path_or_id)`: this module owns Hugging Face
I/O; ettin.model does not import it. The exported tokenizer frames text as training did (`export_tokenizer`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ettin.config import GLOBAL_EVERY, RUNTIME_KEYS, ModelConfig, global_every, periodic_layer_types
from ettin.io import atomic_dir, is_hub_id, read_json, read_tokenizer
from ettin.model import EttinModel

HF_MODEL_TYPE = {"mlm": "modernbert", "clm": "modernbert-decoder"}
HF_ARCH = {"mlm": "ModernBertForMaskedLM", "clm": "ModernBertDecoderForCausalLM"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_UNSUPPORTED = {  # HF config values this architecture does not implement
    "norm_bias": False, "attention_bias": False, "mlp_bias": False, "decoder_bias": True,
    "hidden_activation": "gelu", "classifier_activation": "gelu", "classifier_bias": False,
}


# ------------------------------------------------------------------------------------------ names
def _head_prefix(objective: str) -> str:
    return "head" if objective == "mlm" else "lm_head"


def to_hf_state_dict(model: EttinModel) -> dict[str, torch.Tensor]:
    cfg = model.config
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        t = t.detach().contiguous()
        if name == "decoder_bias":
            out["decoder.bias"] = t
        elif name.startswith("head."):
            out[_head_prefix(cfg.objective) + name[len("head"):]] = t
        elif cfg.objective == "clm" and name.endswith("attn.Wqkv.weight"):
            base = "model." + name[: -len("Wqkv.weight")]
            for part, w in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0)):
                out[f"{base}{part}.weight"] = w.contiguous()
        else:
            out["model." + name] = t
    return out


def from_hf_state_dict(sd: dict[str, torch.Tensor], objective: str) -> dict[str, torch.Tensor]:
    sd = {re.sub(r"^_orig_mod\.", "", k): v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    head = _head_prefix(objective) + "."
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k == "decoder.weight":
            continue  # tied to the embeddings
        if k == "decoder.bias":
            out["decoder_bias"] = v
        elif k.startswith(head):
            out["head." + k[len(head):]] = v
        elif k.startswith("model."):
            name = k[len("model."):]
            m = re.match(r"(layers\.\d+\.attn\.)(q_proj|k_proj|v_proj)\.weight$", name)
            if m:
                qkv.setdefault(m.group(1), {})[m.group(2)] = v
            else:
                out[name] = v
        else:
            raise KeyError(f"unexpected weight {k!r} in a {HF_MODEL_TYPE[objective]} checkpoint")
    for base, parts in qkv.items():
        missing = {"q_proj", "k_proj", "v_proj"} - set(parts)
        if missing:
            raise KeyError(f"{base}: missing {sorted(missing)}")
        out[base + "Wqkv.weight"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    if "decoder_bias" not in out and "decoder.weight" in sd:
        raise KeyError("checkpoint has no decoder.bias")
    return out


# ----------------------------------------------------------------------------------------- config
# ModelConfig field -> HF key of the fields that travel unchanged, both ways. Required on import:
_REQUIRED = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "intermediate_size": "intermediate_size",
             "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads"}
# the same name on both sides; ModelConfig's default when a config lacks them:
_OPTIONAL = ("norm_eps", "max_position_embeddings", "initializer_range", "initializer_cutoff_factor",
             "attention_dropout")
# what else export writes (config_to_hf) and import reads; any other key travels through `ModelConfig.extra`
_KNOWN = {*_REQUIRED.values(), *_OPTIONAL, *_UNSUPPORTED, "model_type", "architectures", "transformers_version",
          "layer_types", "global_attn_every_n_layers", "rope_parameters", "global_rope_theta", "local_rope_theta",
          "local_attention", "sliding_window", "pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id",
          "sep_token_id", "tie_word_embeddings", "torch_dtype", "use_cache", *RUNTIME_KEYS}  # runtime: dropped


def config_from_hf(d: dict[str, Any], mask_token_id: int | None = None) -> ModelConfig:
    mtype = d.get("model_type")
    objectives = {v: k for k, v in HF_MODEL_TYPE.items()}
    if mtype not in objectives:
        raise ValueError(f"model_type {mtype!r} is not supported (expected 'modernbert' or 'modernbert-decoder')")
    for key, expected in _UNSUPPORTED.items():
        if key in d and d[key] != expected:
            raise ValueError(f"config.json: {key}={d[key]!r} is not supported (this architecture uses {expected!r})")
    missing = [k for k in _REQUIRED.values() if k not in d]
    if missing:
        raise ValueError(f"config.json: missing {', '.join(missing)}")
    layer_types = d.get("layer_types")  # transformers 5; 4.x configs carry the every-N form alone
    if layer_types is None:
        layer_types = periodic_layer_types(d["num_hidden_layers"], d.get("global_attn_every_n_layers", GLOBAL_EVERY))
    rope = d.get("rope_parameters") or {}
    global_theta = (rope.get("full_attention") or {}).get("rope_theta", d.get("global_rope_theta", 160_000.0))
    local_theta = (rope.get("sliding_attention") or {}).get("rope_theta")
    if local_theta is None:
        local_theta = d.get("local_rope_theta")
        if local_theta is None or local_theta == -1:
            local_theta = 10_000.0 if mtype == "modernbert" else global_theta
    local_attention = d.get("local_attention")
    if local_attention is None and d.get("sliding_window"):
        local_attention = 2 * d["sliding_window"]
    if mask_token_id is None:
        mask_token_id = 50284 if d["vocab_size"] > 50284 else None
    return ModelConfig(
        objective=objectives[mtype],
        **{name: d[key] for name, key in _REQUIRED.items()},
        **{name: d[name] for name in _OPTIONAL if name in d},
        layer_types=list(layer_types),
        local_attention=local_attention or 128,
        global_rope_theta=float(global_theta),
        local_rope_theta=float(local_theta),
        pad_token_id=d.get("pad_token_id"),
        bos_token_id=d.get("bos_token_id", d.get("cls_token_id")),
        eos_token_id=_first(d.get("eos_token_id", d.get("sep_token_id"))),
        mask_token_id=mask_token_id,
        extra={k: v for k, v in d.items() if k not in _KNOWN},
    )


def _first(x):
    return x[0] if isinstance(x, list) else x


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    d: dict[str, Any] = {k: v for k, v in cfg.extra.items() if k not in _KNOWN}
    d.update(
        architectures=[HF_ARCH[cfg.objective]],
        model_type=HF_MODEL_TYPE[cfg.objective],
        **{key: getattr(cfg, name) for name, key in _REQUIRED.items()},
        **{name: getattr(cfg, name) for name in _OPTIONAL},
        layer_types=list(cfg.layer_types),
        local_attention=cfg.local_attention,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": cfg.global_rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": cfg.local_rope_theta},
        },
        # older transformers (4.x) read these
        global_rope_theta=cfg.global_rope_theta,
        local_rope_theta=cfg.local_rope_theta,
        pad_token_id=cfg.pad_token_id,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        cls_token_id=cfg.bos_token_id,
        sep_token_id=cfg.eos_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
        **_UNSUPPORTED,
    )
    every = global_every(cfg.layer_types)
    if every is not None:  # 4.x's only form of the pattern; a pattern of no period travels as layer_types alone
        d["global_attn_every_n_layers"] = every
    if cfg.objective == "clm":
        d["sliding_window"] = cfg.local_attention // 2
        d["use_cache"] = True
    return d


# ------------------------------------------------------------------------------------- load/save
def resolve_path(path_or_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder, or a hub id fetched with huggingface_hub (online users; tests use local folders)."""
    p = Path(path_or_id)
    if p.exists():
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: expected a folder with config.json and model.safetensors")
        return p
    if not is_hub_id(str(path_or_id)):
        raise FileNotFoundError(f"{path_or_id}: no such folder (and not a hub id, owner/name)")
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "*.safetensors", "*.bin", *TOKENIZER_FILES]
    return Path(snapshot_download(str(path_or_id), revision=revision, allow_patterns=patterns))


def _load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if files:
        sd: dict[str, torch.Tensor] = {}
        for f in files:
            sd.update(load_file(str(f)))
        return sd
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if not bins:
        raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")
    sd = {}
    for f in bins:
        sd.update(torch.load(f, map_location="cpu", weights_only=True))
    return sd


def _mask_id_from_tokenizer(folder: Path) -> int | None:
    tok = folder / "tokenizer.json"
    if not tok.exists():
        return None
    for t in read_json(tok).get("added_tokens", []):
        if t.get("content") == "[MASK]":
            return int(t["id"])
    return None


def from_pretrained(path_or_id: str | os.PathLike, revision: str | None = None, **runtime: Any) -> EttinModel:
    """Our model from a Hugging Face folder or hub id (model_type modernbert -> mlm, modernbert-decoder -> clm).

    `runtime`: how the model runs, `EttinModel`'s keywords (e.g. attn_backend="flex", loss_chunk_size=2048)."""
    folder = resolve_path(path_or_id, revision)
    cfg = config_from_hf(read_json(folder / "config.json"), mask_token_id=_mask_id_from_tokenizer(folder))
    model = EttinModel(cfg, init=False, **runtime)
    sd = from_hf_state_dict(_load_state_dict(folder), cfg.objective)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise KeyError(f"{folder}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    return model


def save_pretrained(model: EttinModel, path: str | os.PathLike, tokenizer: Any = None, *,
                    weights_only: bool = False) -> Path:
    """Write config.json + model.safetensors + the tokenizer into `path` (replaced whole, atomically).

    `tokenizer`: the one the model was trained with (a tokenizer.json or its folder, a `tokenizers.Tokenizer`,
    a transformers fast tokenizer, or an `ettin.data.tokenizer.TokenizerInfo`). The folder then loads in
    transformers' AutoModel*, AutoTokenizer and pipelines. A folder without a tokenizer loads in AutoModel*
    only, so it is written only when asked for with `weights_only=True`. Modes follow the umask."""
    from safetensors.torch import save_file

    if tokenizer is None and not weights_only:
        raise ValueError("save_pretrained: no tokenizer given. Pass tokenizer= (the tokenizer the model was trained "
                         "with: a tokenizer.json or its folder, a tokenizers.Tokenizer or a transformers tokenizer) "
                         "so that transformers' AutoTokenizer and pipelines can use the folder, or weights_only=True "
                         "to write config.json and model.safetensors alone")
    if tokenizer is not None and weights_only:
        raise ValueError("save_pretrained: tokenizer= and weights_only=True exclude each other")
    hf_tokenizer = None if tokenizer is None else export_tokenizer(tokenizer, model.config)  # checked before writing
    path = Path(path)
    with atomic_dir(path, replace=True) as tmp:
        sd = {k: v.to("cpu") for k, v in to_hf_state_dict(model).items()}
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config_to_hf(model.config), indent=2) + "\n")
        shutil.copymode(tmp / "config.json", tmp / "model.safetensors")  # safetensors writes 0600
        if hf_tokenizer is not None:
            _save_tokenizer(hf_tokenizer, tmp)
    return path


# -------------------------------------------------------------------------------------- tokenizer
def export_tokenizer(tokenizer: Any, cfg: ModelConfig):
    """A transformers fast tokenizer that frames text as training did for `cfg.objective` (see
    ettin.data.collate): encoders `[CLS] A [SEP]` (pairs `[CLS] A [SEP] B [SEP]`); decoders `[CLS] A`, the BOS
    only (pairs `[CLS] A [CLS] B`, transformers' add_bos_token layout), since [SEP] ends a document and a
    prompt does not. The special tokens are the model config's ids; model_max_length is its context."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend, unk = _backend_of(tokenizer)
    backend = Tokenizer.from_str(backend.to_str())  # a copy: the caller's tokenizer is not changed

    def name(role: str, token_id: int | None) -> str | None:
        if token_id is None:
            return None
        token = backend.id_to_token(token_id)
        if token is None:
            raise ValueError(f"tokenizer has no id {token_id} (the model config's {role}_token_id)")
        return token

    bos, eos = name("bos", cfg.bos_token_id), name("eos", cfg.eos_token_id)
    if bos is None or eos is None:
        raise ValueError("the model config has no bos_token_id/eos_token_id: the tokenizer cannot frame text")
    if cfg.objective == "clm":
        single, pair, specials = f"{bos} $A", f"{bos} $A {bos} $B", [(bos, cfg.bos_token_id)]
    else:
        single, pair = f"{bos} $A {eos}", f"{bos} $A {eos} $B {eos}"
        specials = [(bos, cfg.bos_token_id), (eos, cfg.eos_token_id)]
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        pad_token=name("pad", cfg.pad_token_id), mask_token=name("mask", cfg.mask_token_id), unk_token=unk,
        model_max_length=cfg.max_position_embeddings, clean_up_tokenization_spaces=False,
        padding_side="left" if cfg.objective == "clm" else "right",  # batched prompts end at the last column
    )


def _backend_of(tokenizer: Any):
    """(tokenizers.Tokenizer, unk token text or None) from any of the accepted tokenizer kinds."""
    from tokenizers import Tokenizer

    unk = None
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer, _ = read_tokenizer(tokenizer)
    elif hasattr(tokenizer, "backend_tokenizer"):  # a transformers fast tokenizer
        unk = tokenizer.unk_token
        tokenizer = tokenizer.backend_tokenizer
    elif isinstance(getattr(tokenizer, "tokenizer", None), Tokenizer):  # ettin.data.tokenizer.TokenizerInfo
        tokenizer = tokenizer.tokenizer
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer: expected a tokenizer.json path or folder, a tokenizers.Tokenizer or a "
                        f"transformers fast tokenizer, got {type(tokenizer).__name__}")
    if unk is None:
        unk = getattr(tokenizer.model, "unk_token", None)
        if unk is None and tokenizer.token_to_id("[UNK]") is not None:
            unk = "[UNK]"
    return tokenizer, unk


def _save_tokenizer(tokenizer: Any, folder: Path) -> None:
    tokenizer.save_pretrained(str(folder))
    # transformers 5 names its own class (TokenizersBackend), which 4.x cannot load; both load this alias
    cfg_file = folder / "tokenizer_config.json"
    config = read_json(cfg_file)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
