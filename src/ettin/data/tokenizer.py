"""Tokenizers: load any Hugging Face `tokenizer.json`, and train a small ModernBERT-style byte-level BPE.

`load_tokenizer(path)` returns a `TokenizerInfo`: the `tokenizers.Tokenizer` plus the special ids the data
pipeline needs ([CLS] doubles as BOS and [SEP] as EOS, as in ModernBERT and Ettin), the vocabulary size
padded to a multiple of 64 (the embedding size a model should use), and a sha256 that identifies the
tokenizer in shard manifests.

`train_tokenizer(texts, vocab_size)` trains a byte-level BPE with the ModernBERT special tokens
([UNK] [CLS] [SEP] [PAD] [MASK]) and post-processor ([CLS] A [SEP] / [CLS] A [SEP] B [SEP]); the
vocabulary is padded with [unusedK] tokens to a multiple of 64. `save_tokenizer` writes tokenizer.json,
tokenizer_config.json and special_tokens_map.json, which `transformers.AutoTokenizer` loads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from ettin.config import special_token_ids
from ettin.io import atomic_write_bytes, atomic_write_json, hub_offline, is_hub_id, read_tokenizer

_SHARED_DATA = Path(
    os.environ.get("ETTIN_SHARED_DATA", Path(__file__).resolve().parents[4] / "shared" / "data")
)
DEFAULT_TOKENIZER = _SHARED_DATA / "modernbert_tokenizer"  # the ModernBERT / Ettin tokenizer, where a copy is at hand
# The same tokenizer on the hub (../shared/data/SOURCES.md: the copy is ModernBERT-large's, "the same tokenizer as
# ModernBERT-base and the Ettin models"; the published YAMLs name bclavie/olmo_bert_template, line 5 of every
# pretraining/configs/standard/*/*.yaml, for the same vocabulary): the default where no copy is at hand.
DEFAULT_TOKENIZER_HUB = "answerdotai/ModernBERT-base"
SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
PAD_MULTIPLE = 64

# Fallback names per role when a folder carries no special_tokens_map.json (first match wins).
_ROLE_CANDIDATES = {
    "cls": ("[CLS]", "<s>", "<|endoftext|>"),
    "sep": ("[SEP]", "</s>", "<|endoftext|>"),
    "pad": ("[PAD]", "<pad>", "<|padding|>"),
    "mask": ("[MASK]", "<mask>"),
    "unk": ("[UNK]", "<unk>"),
}


def pad_to_multiple(n: int, multiple: int = PAD_MULTIPLE) -> int:
    return -(-n // multiple) * multiple


def canonical_sha256(tokenizer_json: str) -> str:
    """sha256 of the tokenizer's JSON with sorted keys: independent of whitespace and key order."""
    canonical = json.dumps(
        json.loads(tokenizer_json), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# the parts of a tokenizer.json that decide which ids a text gets; left out: the post-processor (how a sequence is
# framed, which ettin sets per objective on export), padding, truncation and the decoder
ENCODING_FIELDS = ("normalizer", "pre_tokenizer", "model", "added_tokens")


def encoding_sha256(tokenizer: str | Path | Tokenizer) -> str:
    """sha256 of what maps text to ids (`ENCODING_FIELDS`), from a tokenizer.json, its folder or a Tokenizer: equal
    for a run's tokenizer and its Hugging Face export (whose post-processor frames text for the objective), different
    for two tokenizers that give a text different ids, whatever their vocabulary sizes."""
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = load_tokenizer(tokenizer).tokenizer
    data = json.loads(tokenizer.to_str())  # as this library writes it: the same tokenizer, the same text
    return canonical_sha256(json.dumps({k: data.get(k) for k in ENCODING_FIELDS}))


@dataclass
class TokenizerInfo:
    """A tokenizer and the ids the data pipeline needs. `bos_id` is [CLS] and `eos_id` is [SEP] (ModernBERT)."""

    tokenizer: Tokenizer
    path: str
    sha256: str
    vocab_size: int  # padded to a multiple of 64: the model's embedding rows
    cls_id: int | None
    sep_id: int | None
    pad_id: int | None
    mask_id: int | None
    unk_id: int | None

    @property
    def bos_id(self) -> int | None:
        return self.cls_id

    @property
    def eos_id(self) -> int | None:
        return self.sep_id

    @property
    def model_special_ids(self) -> dict[str, int | None]:
        """The model config's special-token fields (pad, bos = [CLS], eos = [SEP], mask)."""
        return special_token_ids(self.pad_id, self.cls_id, self.sep_id, self.mask_id)

    @property
    def special_ids(self) -> list[int]:
        """Ids of every special added token (never masked, never predicted as content)."""
        return sorted(i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Bare documents (no special tokens), one int64 array each; uses the library's thread pool."""
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def describe(self) -> dict:
        """What a shard manifest records about the tokenizer."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "cls_id": self.cls_id,
            "sep_id": self.sep_id,
            "pad_id": self.pad_id,
            "mask_id": self.mask_id,
            "unk_id": self.unk_id,
        }


def _special_names(folder: Path) -> dict[str, str]:
    """Role -> token text from special_tokens_map.json / tokenizer_config.json when present."""
    names: dict[str, str] = {}
    for file in ("tokenizer_config.json", "special_tokens_map.json"):  # the map wins
        if not (folder / file).exists():
            continue
        config = json.loads((folder / file).read_text())
        for role in _ROLE_CANDIDATES:
            value = config.get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                names[role] = value
    return names


def tokenizer_info(
    tokenizer: Tokenizer, path: str = "", names: dict[str, str] | None = None, sha256: str | None = None
) -> TokenizerInfo:
    """Wrap a `tokenizers.Tokenizer`, resolving special ids by name (explicit names first, then defaults)."""
    names = names or {}
    ids: dict[str, int | None] = {}
    for role, candidates in _ROLE_CANDIDATES.items():
        wanted = (names[role],) if role in names else candidates
        ids[role] = next((i for c in wanted if (i := tokenizer.token_to_id(c)) is not None), None)
    return TokenizerInfo(
        tokenizer=tokenizer,
        path=path,
        sha256=sha256 or canonical_sha256(tokenizer.to_str()),
        vocab_size=pad_to_multiple(tokenizer.get_vocab_size(with_added_tokens=True)),
        cls_id=ids["cls"],
        sep_id=ids["sep"],
        pad_id=ids["pad"],
        mask_id=ids["mask"],
        unk_id=ids["unk"],
    )


# what a hub id's tokenizer is made of (tokenizer.json is required, the other two optional)
HUB_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def fetch_tokenizer(spec: str | Path) -> Path:
    """`data.tokenizer` (or `--tokenizer`) as a local path: the path itself when it exists or is no hub id
    (`ettin.io.is_hub_id`); for a hub id such as `answerdotai/ModernBERT-base`, the folder of its tokenizer files in
    the Hugging Face cache, downloaded there first when the hub is online (`hf_hub_download`; on a cluster the main
    rank downloads it in `ensure_data`, and the other ranks read the cache). Offline, the cache alone is asked, and a
    hub id not in it is an error that says how to bring the files in."""
    path = Path(str(spec)).expanduser()
    if path.exists() or not is_hub_id(str(spec)):
        return path
    from huggingface_hub import hf_hub_download

    offline = hub_offline()
    try:
        file = Path(hf_hub_download(str(spec), HUB_TOKENIZER_FILES[0], local_files_only=offline))
    except Exception as e:  # offline and not cached, no such repository, no tokenizer.json, no access
        state = "the hub is offline here (HF_HUB_OFFLINE) and it is not in the Hugging Face cache" if offline else \
            f"it could not be downloaded ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})"
        raise FileNotFoundError(
            f"{spec}: no such local path, and as a Hugging Face hub id {state}. Where the hub is reachable: "
            f"`hf download {spec} {' '.join(HUB_TOKENIZER_FILES)} --local-dir DIR`, then use DIR") from None
    for name in HUB_TOKENIZER_FILES[1:]:  # the special-token roles; a repository without them still loads
        try:
            hf_hub_download(str(spec), name, local_files_only=offline)
        except Exception:
            pass
    return file.parent


def load_tokenizer(path: str | Path | None = None) -> TokenizerInfo:
    """Load a tokenizer.json (a file, or a folder holding one; a GPT-2 style vocab.json + merges.txt folder too;
    a Hugging Face hub id, through `fetch_tokenizer`).

    Default: the ModernBERT tokenizer, from shared/data/modernbert_tokenizer where that copy exists, else from the
    hub (`DEFAULT_TOKENIZER_HUB`).
    """
    if path is None:
        path = DEFAULT_TOKENIZER if DEFAULT_TOKENIZER.exists() else DEFAULT_TOKENIZER_HUB
    path = fetch_tokenizer(path)
    folder = path if path.is_dir() else path.parent
    if path.is_dir() and not (path / "tokenizer.json").exists():
        if not ((path / "vocab.json").exists() and (path / "merges.txt").exists()):
            raise FileNotFoundError(f"{path}: no tokenizer.json (or vocab.json + merges.txt) there")
        return tokenizer_info(_byte_level_bpe(path), str(path), _special_names(folder))
    tokenizer, file = read_tokenizer(path)
    sha256 = canonical_sha256(file.read_text(encoding="utf-8"))  # of the file: stable across library versions
    return tokenizer_info(tokenizer, str(file), _special_names(folder), sha256)


def _byte_level_bpe(folder: Path) -> Tokenizer:
    """A GPT-2 style folder (vocab.json + merges.txt) as `tokenizers.ByteLevelBPETokenizer` builds it (its defaults:
    no prefix space, no normalizer), through the library's public classes."""
    tokenizer = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                               continuing_subword_prefix="", end_of_word_suffix=""))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a ModernBERT-style byte-level BPE. The result's size is a multiple of 64 ([unusedK] padding)."""
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab size {vocab_size} is too small: a byte-level BPE needs at least 261 ids")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[
            AddedToken(t, special=True, lstrip=(t == "[MASK]"), normalized=False) for t in SPECIAL_TOKENS
        ],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_nonempty(texts), trainer=trainer)
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    unused = [
        AddedToken(f"[unused{k}]", special=True, normalized=False)
        for k in range(pad_to_multiple(size) - size)
    ]
    if unused:
        tokenizer.add_special_tokens(unused)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        if text:
            yield text


def save_tokenizer(tokenizer: Tokenizer | TokenizerInfo, out: str | Path) -> Path:
    """Write tokenizer.json + tokenizer_config.json + special_tokens_map.json (transformers-loadable)."""
    if isinstance(tokenizer, TokenizerInfo):
        tokenizer = tokenizer.tokenizer
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "tokenizer.json", tokenizer.to_str(pretty=True).encode())
    info = tokenizer_info(tokenizer, sha256="-")
    roles = {
        "cls": info.cls_id,
        "sep": info.sep_id,
        "pad": info.pad_id,
        "mask": info.mask_id,
        "unk": info.unk_id,
    }
    special_map = {}
    for role, token_id in roles.items():
        if token_id is not None:
            special_map[f"{role}_token"] = {
                "content": tokenizer.id_to_token(token_id),
                "lstrip": role == "mask",
                "normalized": False,
                "rstrip": False,
                "single_word": False,
            }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        # no model yet, so no context: transformers' own "no limit" (VERY_LARGE_INTEGER); ettin.hf's exports write
        # the model's context
        "model_max_length": 1000000000000000019884624838656,
        **{key: value["content"] for key, value in special_map.items()},
    }
    atomic_write_json(out / "special_tokens_map.json", special_map)
    atomic_write_json(out / "tokenizer_config.json", config)
    return out
