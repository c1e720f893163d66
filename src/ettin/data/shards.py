"""Tokenized shards: the on-disk format between `ettin data prepare` and the batching code.

A prepared dataset is a folder:

    manifest.json                 # see `Manifest` below; "complete": true only once every source is done
    shard-00000.tokens.npy        # 1-D uint16 (vocab < 65536) or uint32 token ids, documents back to back
    shard-00000.offsets.npy       # 1-D int64, documents + 1 offsets into the tokens file (starts at 0)
    ...

Documents are stored WITHOUT special tokens; the instance builder adds [CLS]/[SEP] per objective.
Every file is written to a temporary name and moved into place (`ettin.io`), and the manifest is
rewritten (atomically) after each shard, so an interrupted run leaves only whole, recorded shards.

Reading memory-maps the token files, so opening a multi-GB dataset costs only the offsets.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ettin.io import atomic_path, atomic_write_json, read_json

MANIFEST = "manifest.json"
FORMAT = "ettin-token-shards"
VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of a vocabulary."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, fsync=False) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class ShardRecord:
    """One shard as the manifest records it."""

    index: int
    source: str  # name of the source its documents came from (a shard never mixes sources)
    documents: int
    num_tokens: int
    tokens_sha256: str
    offsets_sha256: str

    @property
    def tokens_file(self) -> str:
        return f"{shard_name(self.index)}.tokens.npy"

    @property
    def offsets_file(self) -> str:
        return f"{shard_name(self.index)}.offsets.npy"

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "source": self.source,
            "documents": self.documents,
            "num_tokens": self.num_tokens,
            "tokens_file": self.tokens_file,
            "offsets_file": self.offsets_file,
            "tokens_sha256": self.tokens_sha256,
            "offsets_sha256": self.offsets_sha256,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ShardRecord:
        return cls(
            d["index"], d["source"], d["documents"], d["num_tokens"], d["tokens_sha256"], d["offsets_sha256"]
        )


def write_shard(
    folder: Path, index: int, source: str, docs: list[np.ndarray], dtype: np.dtype
) -> ShardRecord:
    """Write one shard (tokens + offsets) atomically and return its manifest record."""
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(docs).astype(dtype, copy=False) if docs else np.zeros(0, dtype=dtype)
    record = ShardRecord(index, source, len(docs), int(offsets[-1]), "", "")
    _save_npy(folder / record.tokens_file, tokens)
    _save_npy(folder / record.offsets_file, offsets)
    record.tokens_sha256 = file_sha256(folder / record.tokens_file)
    record.offsets_sha256 = file_sha256(folder / record.offsets_file)
    return record


def new_manifest(dtype: np.dtype, tokenizer: dict, sources: list[dict]) -> dict:
    """An empty, incomplete manifest; `prepare` fills `sources` and `shards` as it goes."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "complete": False,
        "dtype": np.dtype(dtype).name,
        "tokenizer": tokenizer,
        "sources": sources,
        "documents": 0,
        "num_tokens": 0,
        "shards": [],
    }


def write_token_dataset(
    folder: str | Path, docs_by_source: dict[str, list], vocab_size: int, tokenizer: dict | None = None
) -> Path:
    """Write lists of token-id documents as a complete dataset (one shard per source): for tests and small tools."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    tokenizer = tokenizer or {"sha256": "", "vocab_size": vocab_size}
    sources = []
    manifest = new_manifest(dtype, tokenizer, sources)
    for index, (name, docs) in enumerate(docs_by_source.items()):
        arrays = [np.asarray(d, dtype=np.int64) for d in docs]
        record = write_shard(folder, index, name, arrays, dtype)
        manifest["shards"].append(record.to_dict())
        sources.append(
            {
                "name": name,
                "documents": record.documents,
                "num_tokens": record.num_tokens,
                "skipped": 0,
                "complete": True,
            }
        )
        manifest["documents"] += record.documents
        manifest["num_tokens"] += record.num_tokens
    manifest["complete"] = True
    atomic_write_json(folder / MANIFEST, manifest)
    return folder


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    file = path / MANIFEST if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(
            f"{path}: not a prepared token dataset (no {MANIFEST}); run `ettin data prepare`"
        )
    manifest = read_json(file)  # bad JSON: a ValueError naming the file
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{file}: not an {FORMAT} manifest (format={manifest.get('format')!r})")
    return manifest


class TokenDataset:
    """Random access to the documents of a prepared dataset.

    ds = TokenDataset(path); len(ds) documents; ds[i] -> 1-D np.ndarray of ids (the stored dtype, a
    zero-copy view of the memory map; cast before arithmetic); ds.num_tokens; ds.manifest;
    ds.doc_lengths (int64, one per document); ds.source_ranges {source: (first_doc, end_doc)}.
    """

    def __init__(self, path: str | Path, allow_incomplete: bool = False):
        self._allow_incomplete = allow_incomplete
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if not self.manifest.get("complete") and not allow_incomplete:
            raise ValueError(
                f"{self.path}: preparation did not finish (manifest 'complete' is false); "
                "re-run `ettin data prepare` with the same arguments to finish it"
            )
        self.dtype = np.dtype(self.manifest["dtype"])
        self.shards = [ShardRecord.from_dict(s) for s in self.manifest["shards"]]
        self._tokens: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        for shard in self.shards:
            # A plain ndarray view of the memory map: the same pages, without np.memmap's per-slice overhead
            # (a third of a batch's reads); the view keeps the map open.
            tokens = np.load(self.path / shard.tokens_file, mmap_mode="r").view(np.ndarray)
            offsets = np.load(self.path / shard.offsets_file)
            if len(offsets) != shard.documents + 1 or not int(offsets[-1]) == len(tokens) == shard.num_tokens:
                raise ValueError(f"{self.path / shard.tokens_file}: size does not match the manifest")
            self._tokens.append(tokens)
            self._offsets.append(offsets)
        counts = np.array([s.documents for s in self.shards], dtype=np.int64)
        self._first_doc = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # (shards + 1,)
        self.doc_lengths = (
            np.concatenate([np.diff(o) for o in self._offsets]) if self._offsets else np.zeros(0, np.int64)
        )  # (documents,)
        self.num_tokens = int(self.doc_lengths.sum())
        self.source_ranges: dict[str, tuple[int, int]] = {}
        for i, shard in enumerate(self.shards):
            start, end = self.source_ranges.get(shard.source, (int(self._first_doc[i]), 0))
            self.source_ranges[shard.source] = (start, int(self._first_doc[i + 1]))

    def __reduce__(self):
        # Pickle (e.g. to spawned data-loader workers) by path: the worker re-opens the memory maps
        # instead of receiving a copy of every token.
        return (type(self), (self.path, self._allow_incomplete))

    def __len__(self) -> int:
        return int(self._first_doc[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"document {i} out of range for {n} documents")
        s = int(np.searchsorted(self._first_doc, i, side="right")) - 1
        local = i - int(self._first_doc[s])
        offsets = self._offsets[s]
        return self._tokens[s][offsets[local] : offsets[local + 1]]

    def __iter__(self):
        for tokens, offsets in zip(self._tokens, self._offsets):
            for j in range(len(offsets) - 1):
                yield tokens[offsets[j] : offsets[j + 1]]

    @property
    def tokenizer_sha256(self) -> str:
        return self.manifest["tokenizer"]["sha256"]

    def verify(self) -> None:
        """Recompute every shard file's sha256 and compare with the manifest (raises ValueError)."""
        for shard in self.shards:
            for name, expected in (
                (shard.tokens_file, shard.tokens_sha256),
                (shard.offsets_file, shard.offsets_sha256),
            ):
                if file_sha256(self.path / name) != expected:
                    raise ValueError(f"{self.path / name}: checksum does not match the manifest")

    def __repr__(self) -> str:
        return f"TokenDataset({str(self.path)!r}, documents={len(self)}, tokens={self.num_tokens}, dtype={self.dtype})"
