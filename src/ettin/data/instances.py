"""Documents -> training instances: Ettin fixed-length chunking, or packing of whole documents.

An instance is a list of *spans* `(doc, start, end)` of a `TokenDataset` (bare ids, no special tokens).
Each span becomes one *segment* of the row: the collator frames it with [CLS] ... [SEP] (see
`ettin.data.collate`), so every segment costs `end - start + 2` positions, and a row never exceeds
`seq_len`. The index is objective-free: the encoder and the decoder read the same spans in the same
order; only the framing differs (encoder `[CLS] span [SEP]`; decoder `[CLS] span` plus `[SEP]` only
where the span ends its document, a real end of text; both reserve the two slots).

Modes (`InstanceConfig.mode`):

* ``"chunk"`` -- the reference's `split_dataset_into_chunks.py -c L -m M -a A --backfill
  --backfill_no_duplicates`, one span per instance. A document of n tokens is cut into pieces of
  C = seq_len - 2 tokens (the last one shorter). Then, piece by piece:
    - a piece after the first that is shorter than `skip_below` (-a) is dropped;
    - a piece shorter than `min_len` (-m) is kept if it is the first one (a short document is kept
      whole; with `enforce_min_first` a first piece under `skip_below` is dropped as well);
      otherwise it is dropped, or, with `backfill`, grows backwards into the previous piece:
        `backfill_duplicates=False` (the reference's --backfill_no_duplicates): the boundary
        between the two moves back by r tokens, r drawn uniformly from [0, C - len) by a hash of
        (seed, doc): no token is duplicated or lost, the tail is no longer tiny;
        `backfill_duplicates=True`: the tail is prefixed with the last C - len tokens of the
        previous piece (a full-length instance; those tokens appear twice, counted in stats).
  Every other token appears in exactly one instance. `stats` counts kept, skipped, duplicated tokens.
* ``"pack"`` -- whole documents packed greedily into rows of `seq_len` (first fit over the
  `open_rows` most recent rows, in document order); a document longer than seq_len - 2 is cut into
  pieces of seq_len - 2 first. No token is lost or duplicated; the collator restarts position_ids at
  every segment so attention stays inside a document.

The index is built once per (dataset content, document range, seq_len, config) and cached as .npy
files in a folder (written under a temporary name, then renamed): by default `<dataset>/instances/`,
or the user cache (`$ETTIN_CACHE` or ~/.cache/ettin) when the dataset folder is read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ettin.data.keyed import GOLDEN, splitmix64
from ettin.io import atomic_dir, read_json

INDEX_VERSION = 1
MODES = ("chunk", "pack")
SPECIAL_SLOTS = 2  # [CLS] and [SEP], reserved in every segment for both objectives


@dataclass(frozen=True)
class InstanceConfig:
    """How documents become instances. None = a default that scales with seq_len."""

    mode: str = "chunk"
    min_len: int | None = None  # chunk: -m; default seq_len // 2 (512 at 1024, as the reference)
    skip_below: int | None = None  # chunk: -a; default seq_len // 8 (128 at 1024, as the reference)
    backfill: bool = True
    backfill_duplicates: bool = False  # False = the reference's --backfill_no_duplicates
    enforce_min_first: bool = False
    open_rows: int = 16  # pack: rows kept open for first-fit
    seed: int = 0  # backfill draws (fixed per dataset, not the training seed)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"instances.mode: must be one of {MODES}, got {self.mode!r}")
        if self.open_rows < 1:
            raise ValueError(f"instances.open_rows: must be >= 1, got {self.open_rows}")

    def resolved(self, seq_len: int) -> InstanceConfig:
        if seq_len <= SPECIAL_SLOTS:
            raise ValueError(f"seq_len must be > {SPECIAL_SLOTS} (room for [CLS] and [SEP]), got {seq_len}")
        min_len = seq_len // 2 if self.min_len is None else self.min_len
        skip = seq_len // 8 if self.skip_below is None else self.skip_below
        return InstanceConfig(
            self.mode,
            min_len,
            skip,
            self.backfill,
            self.backfill_duplicates,
            self.enforce_min_first,
            self.open_rows,
            self.seed,
        )


class InstanceIndex:
    """Instances of one dataset: `spans` (S, 3) int64 rows (doc, start, end); instance i owns
    spans[offsets[i]:offsets[i + 1]]. `lengths[i]` = positions it fills (content + 2 per segment)."""

    def __init__(
        self,
        spans: np.ndarray,
        offsets: np.ndarray,
        seq_len: int,
        config: InstanceConfig,
        stats: dict | None = None,
        key: str = "",
    ):
        self.spans = spans  # (S, 3)
        self.offsets = offsets  # (N + 1,)
        self.seq_len = seq_len
        self.config = config
        self.stats = stats or {}
        self.key = key
        content = (spans[:, 2] - spans[:, 1]).astype(np.int64)
        segments = np.diff(offsets)
        per_instance = (
            np.add.reduceat(content, offsets[:-1]) if len(offsets) > 1 and len(spans) else np.zeros(0)
        )
        self.lengths = (per_instance + SPECIAL_SLOTS * segments).astype(np.int64)  # (N,)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def spans_of(self, i: int) -> np.ndarray:
        return self.spans[self.offsets[i] : self.offsets[i + 1]]

    @property
    def num_tokens(self) -> int:
        """Positions filled by all instances (content + special tokens), i.e. tokens trained on."""
        return int(self.lengths.sum())

    def __repr__(self) -> str:
        return f"InstanceIndex(mode={self.config.mode!r}, seq_len={self.seq_len}, instances={len(self)})"


# ---------------------------------------------------------------------------------------------- build


def _hash_u64(seed: int, values: np.ndarray) -> np.ndarray:
    """splitmix64 of (seed, value): a cheap deterministic per-document random number."""
    with np.errstate(over="ignore"):
        return splitmix64(values.astype(np.uint64) + np.uint64((seed * int(GOLDEN)) & 0xFFFFFFFFFFFFFFFF))


def chunk_document(n: int, doc: int, seq_len: int, cfg: InstanceConfig) -> tuple[list[tuple[int, int]], dict]:
    """Ettin chunking of one document of n tokens: list of (start, end) and token accounting."""
    cap = seq_len - SPECIAL_SLOTS
    chunks: list[tuple[int, int]] = []
    skipped = duplicated = 0
    for i, start in enumerate(range(0, n, cap)):
        end = min(start + cap, n)
        size = end - start
        if size < cfg.skip_below and (i > 0 or cfg.enforce_min_first):
            skipped += size
            continue
        if size >= cfg.min_len or i == 0:
            chunks.append((start, end))
        elif cfg.backfill and chunks:
            prev_start, prev_end = chunks[-1]
            if cfg.backfill_duplicates:
                extra = cap - size
                chunks.append((start - extra, end))
                duplicated += extra
            else:
                r = int(_hash_u64(cfg.seed, np.array([doc]))[0] % np.uint64(cap - size))
                chunks[-1] = (prev_start, prev_end - r)
                chunks.append((start - r, end))
        else:
            skipped += size
    return chunks, {"skipped": skipped, "duplicated": duplicated}


def _build_chunks(lengths: np.ndarray, first_doc: int, seq_len: int, cfg: InstanceConfig):
    cap = seq_len - SPECIAL_SLOTS
    docs = first_doc + np.arange(len(lengths), dtype=np.int64)
    # the common case, vectorised: a document of at most one piece is kept whole (or dropped, when
    # empty, or under skip_below with enforce_min_first)
    short = lengths <= cap
    keep = short & (lengths > 0)
    if cfg.enforce_min_first:
        keep &= lengths >= cfg.skip_below
    skipped = int(lengths[short & ~keep].sum())
    parts = [np.stack([docs[keep], np.zeros(int(keep.sum()), np.int64), lengths[keep]], axis=1)]
    duplicated = 0
    long_spans: list[tuple[int, int, int]] = []
    for doc, n in zip(docs[~short].tolist(), lengths[~short].tolist()):
        chunks, acc = chunk_document(n, doc, seq_len, cfg)
        long_spans.extend((doc, a, b) for a, b in chunks)
        skipped += acc["skipped"]
        duplicated += acc["duplicated"]
    parts.append(np.array(long_spans, dtype=np.int64).reshape(-1, 3))
    spans = np.concatenate(parts)
    spans = spans[np.lexsort((spans[:, 1], spans[:, 0]))]  # document order, pieces in order
    stats = {"skipped_tokens": skipped, "duplicated_tokens": duplicated}
    return spans, np.arange(len(spans) + 1, dtype=np.int64), stats


def _build_packs(lengths: np.ndarray, first_doc: int, seq_len: int, cfg: InstanceConfig):
    cap = seq_len - SPECIAL_SLOTS
    rows: list[list[tuple[int, int, int]]] = []  # closed rows, in closing order
    open_rows: list[list] = []  # [remaining, spans]
    for j, n in enumerate(lengths.tolist()):
        doc = first_doc + j
        for start in range(0, n, cap):
            end = min(start + cap, n)
            need = end - start + SPECIAL_SLOTS
            for row in open_rows:
                if row[0] >= need:
                    break
            else:
                if len(open_rows) == cfg.open_rows:
                    rows.append(open_rows.pop(0)[1])
                row = [seq_len, []]
                open_rows.append(row)
            row[0] -= need
            row[1].append((doc, start, end))
            if row[0] <= SPECIAL_SLOTS:  # nothing else fits: close it now
                open_rows = [r for r in open_rows if r is not row]
                rows.append(row[1])
    rows.extend(r[1] for r in open_rows)
    spans = np.array([s for r in rows for s in r], dtype=np.int64).reshape(-1, 3)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    return spans, offsets, {"skipped_tokens": 0, "duplicated_tokens": 0}


def build_index(
    doc_lengths: np.ndarray, seq_len: int, config: InstanceConfig, first_doc: int = 0
) -> InstanceIndex:
    """Instances over documents first_doc .. first_doc + len(doc_lengths) - 1 (no caching)."""
    cfg = config.resolved(seq_len)
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    build = _build_chunks if cfg.mode == "chunk" else _build_packs
    spans, offsets, stats = build(lengths, first_doc, seq_len, cfg)
    stats.update(
        documents=int(len(lengths)),
        source_tokens=int(lengths.sum()),
        instances=int(len(offsets) - 1),
        content_tokens=int((spans[:, 2] - spans[:, 1]).sum()),
    )
    return InstanceIndex(spans, offsets, seq_len, cfg, stats)


# ---------------------------------------------------------------------------------------------- cache


def dataset_fingerprint(ds) -> str:
    """sha256 identifying a dataset's content: the shard checksums of its manifest when it has them
    (cheap at any size), else its document lengths."""
    h = hashlib.sha256()
    manifest = getattr(ds, "manifest", None) or {}
    shards = [(s.get("tokens_sha256"), s.get("offsets_sha256")) for s in manifest.get("shards", [])]
    h.update(json.dumps([len(ds), shards]).encode())
    if not shards or not all(a and b for a, b in shards):
        h.update(np.ascontiguousarray(np.asarray(ds.doc_lengths, dtype=np.int64)).tobytes())
    return h.hexdigest()


def _default_cache_root(ds) -> Path:
    path = getattr(ds, "path", None)
    # a folder without its owner's write bit counts as read-only even for root (e.g. ../shared)
    if path is not None and os.access(path, os.W_OK) and os.stat(path).st_mode & stat.S_IWUSR:
        return Path(path) / "instances"
    root = os.environ.get("ETTIN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ettin")
    return Path(root) / "instances"


def index_key(ds, seq_len: int, config: InstanceConfig, doc_range: tuple[int, int]) -> str:
    cfg = config.resolved(seq_len)
    desc = json.dumps(
        {
            "v": INDEX_VERSION,
            "data": dataset_fingerprint(ds),
            "range": list(doc_range),
            "seq_len": seq_len,
            "config": asdict(cfg),
        },
        sort_keys=True,
    )
    return f"{cfg.mode}-{seq_len}-{hashlib.sha256(desc.encode()).hexdigest()[:16]}"


def load_or_build_index(
    ds,
    seq_len: int,
    config: InstanceConfig,
    doc_range: tuple[int, int] | None = None,
    cache_dir: str | Path | None = None,
) -> InstanceIndex:
    """The instance index of documents doc_range (default: all) of `ds`, from the cache or built and cached."""
    lo, hi = doc_range if doc_range is not None else (0, len(ds))
    key = index_key(ds, seq_len, config, (lo, hi))
    root = Path(cache_dir) if cache_dir is not None else _default_cache_root(ds)
    folder = root / key
    if (folder / "meta.json").exists():
        meta = read_json(folder / "meta.json")
        spans = np.load(folder / "spans.npy", mmap_mode="r")
        offsets = np.load(folder / "offsets.npy")
        return InstanceIndex(spans, offsets, seq_len, InstanceConfig(**meta["config"]), meta["stats"], key)
    index = build_index(np.asarray(ds.doc_lengths[lo:hi]), seq_len, config, first_doc=lo)
    index.key = key
    meta = {
        "version": INDEX_VERSION,
        "seq_len": seq_len,
        "config": asdict(index.config),
        "stats": index.stats,
        "doc_range": [lo, hi],
    }
    try:  # another process may get there first: its entry is kept, this one dropped (the same content)
        with atomic_dir(folder, exist_ok=True) as tmp:
            np.save(tmp / "spans.npy", index.spans)
            np.save(tmp / "offsets.npy", index.offsets)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    except OSError:
        pass  # a read-only cache only costs a rebuild next time
    return index
