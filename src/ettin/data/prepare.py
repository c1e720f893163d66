"""`ettin data prepare`: tokenize sources into token shards (see `ettin.data.shards` for the format).

How it stays correct when interrupted:
- the manifest is written first with "complete": false, and rewritten atomically after every shard;
- a shard's files are written to temporary names and moved into place, then recorded in the manifest;
  files on disk that the manifest does not record (a crash between the two) are deleted on the next run;
- each source records how many of its documents the recorded shards consumed (`documents_read`), so a
  re-run skips exactly those (reading, not tokenizing them) and carries on: nothing is counted twice;
- shards break only between document batches, so the bad-record counts recorded with a shard are exactly
  those a re-run sees again before the resume point.
A re-run on complete output is a no-op; a different tokenizer or source list, or a source whose files
changed (size or mtime), is an error unless `overwrite=True`, which starts over.

Documents are stored without special tokens. Pre-tokenized documents (MDS `input_ids`) lose a leading
[CLS] and a trailing [SEP] if present. Documents with no tokens are not stored (counted as "empty").
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from ettin.data.shards import (
    MANIFEST,
    file_sha256,
    new_manifest,
    read_manifest,
    token_dtype,
    write_shard,
)
from ettin.data.sources import (
    BadRecords,
    DataError,
    Document,
    SourceSpec,
    content_hashes,
    fingerprint,
    iter_documents,
)
from ettin.data.tokenizer import TokenizerInfo, load_tokenizer
from ettin.io import atomic_write_json

_OWN_FILES = re.compile(r"^(manifest\.json|shard-\d{5}\.(tokens|offsets)\.npy|\..*\.tmp-\d+)$")


@dataclass
class PrepareConfig:
    out: Path
    workers: int = 2  # tokenizer processes; 0 = the `tokenizers` thread pool in this process
    skip_bad: bool = False  # skip bad records (counted in the manifest) instead of stopping
    overwrite: bool = False  # start over when the output exists but was made differently
    shard_tokens: int = 1 << 24  # a shard is closed once it holds at least this many tokens
    batch_docs: int = 256  # documents per tokenizer call
    log: Callable[[str], None] | None = None


# ------------------------------------------------------------------------------------------- tokenizing

_WORKER_TOKENIZER: TokenizerInfo | None = None
T = TypeVar("T")


def _texts(docs: list[Document]) -> list[str]:
    return [d.text for d in docs if d.text is not None]


def _init_worker(tokenizer_path: str) -> None:
    global _WORKER_TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per process: the pool is the parallelism
    _WORKER_TOKENIZER = load_tokenizer(tokenizer_path)


def _encode_in_worker(texts: list[str]) -> list[np.ndarray]:
    assert _WORKER_TOKENIZER is not None
    return _WORKER_TOKENIZER.encode_batch(texts)


class Encoder:
    """Tokenizes batches of documents in order, in worker processes (workers >= 1) or threads (workers = 0)."""

    def __init__(self, tokenizer: TokenizerInfo, workers: int):
        self.tokenizer = tokenizer
        self.pool = None
        if workers >= 1:
            if not Path(tokenizer.path).is_file():
                raise ValueError("workers >= 1 needs a tokenizer loaded from a file (load_tokenizer)")
            context = multiprocessing.get_context("spawn" if os.name != "posix" else "fork")
            self.pool = context.Pool(workers, initializer=_init_worker, initargs=(tokenizer.path,))
        self.workers = max(workers, 1)

    def map(
        self, batches: Iterator[tuple[list[Document], T]]
    ) -> Iterator[tuple[list[Document], T, list[np.ndarray]]]:
        """(documents, tag, ids per document) for each (documents, tag) batch, in input order.

        The tag travels with its batch (prepare passes the bad-record counts as of that batch, since the
        pool reads ahead). Documents without text (pre-tokenized) pass their own tokens.
        """
        if self.pool is None:
            for docs, tag in batches:
                yield docs, tag, self._merge(docs, self.tokenizer.encode_batch(_texts(docs)))
            return
        pending: list = []  # bounded look-ahead; results are taken in submission order
        for docs, tag in batches:
            pending.append((docs, tag, self.pool.apply_async(_encode_in_worker, (_texts(docs),))))
            if len(pending) >= 4 * self.workers:
                docs0, tag0, result = pending.pop(0)
                yield docs0, tag0, self._merge(docs0, result.get())
        for docs0, tag0, result in pending:
            yield docs0, tag0, self._merge(docs0, result.get())

    def _merge(self, docs: list[Document], encoded: list[np.ndarray]) -> list[np.ndarray]:
        it = iter(encoded)
        return [next(it) if d.text is not None else self._pretokenized(d) for d in docs]

    def _pretokenized(self, doc: Document) -> np.ndarray:
        ids = np.asarray(doc.tokens).reshape(-1).astype(np.int64)
        if len(ids) and ids[0] == self.tokenizer.cls_id:
            ids = ids[1:]
        if len(ids) and ids[-1] == self.tokenizer.sep_id:
            ids = ids[:-1]
        if len(ids) and (ids.min() < 0 or ids.max() >= self.tokenizer.vocab_size):
            raise DataError(
                f"{doc.location}: token id {int(ids.max())} outside the tokenizer's {self.tokenizer.vocab_size} ids"
            )
        return ids

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


# ------------------------------------------------------------------------------------------- the manifest


def _source_entry(spec: SourceSpec) -> dict:
    return {
        "name": spec.name,
        "spec": spec.to_dict(),
        "fingerprint": fingerprint(spec),
        "sha256": content_hashes(spec),  # consulted only when a file's mtime moved (copies, checkouts)
        "documents_read": 0,  # source documents the recorded shards consumed (stored + empty; bad ones: skipped)
        "documents": 0,  # stored documents
        "num_tokens": 0,
        "empty": 0,
        "skipped": {},  # reason -> count (with --skip-bad)
        "complete": False,
    }


def _check_existing(manifest: dict, tokenizer: TokenizerInfo, specs: list[SourceSpec], out: Path) -> bool:
    """Raise DataError when existing output was made with another tokenizer or other/changed sources. Returns
    True when only modification times moved (same bytes): the manifest's fingerprints were refreshed."""
    if manifest["tokenizer"]["sha256"] != tokenizer.sha256:
        raise DataError(
            f"{out}: was prepared with another tokenizer ({manifest['tokenizer'].get('path')}, "
            f"sha256 {manifest['tokenizer']['sha256'][:12]}) than {tokenizer.path} ({tokenizer.sha256[:12]}); "
            "use --overwrite or another --out"
        )
    old = [s["spec"] for s in manifest["sources"]]
    new = [s.to_dict() for s in specs]
    if old != new:
        raise DataError(
            f"{out}: was prepared from other sources ({[s['path'] for s in old]}); use --overwrite or another --out"
        )
    refreshed = False
    for entry, spec in zip(manifest["sources"], specs):
        now = fingerprint(spec)
        if entry["fingerprint"] != now:
            changed = sorted(
                k for k in set(now) | set(entry["fingerprint"]) if now.get(k) != entry["fingerprint"].get(k)
            )
            if _only_mtimes_moved(entry, now, changed):
                entry["fingerprint"] = now  # same bytes (a copy or a checkout touched the files)
                refreshed = True
                continue
            raise DataError(
                f"{out}: source {spec.name!r} changed since it was prepared ({', '.join(changed[:5])}); use --overwrite"
            )
    return refreshed


def _only_mtimes_moved(entry: dict, now: dict, changed: list[str]) -> bool:
    """True when every changed file kept its size and its recorded sha256: only the modification time moved."""
    hashes, old = entry.get("sha256") or {}, entry["fingerprint"]
    for path in changed:
        if path not in old or path not in now or path not in hashes or old[path][0] != now[path][0]:
            return False
        if file_sha256(Path(path)) != hashes[path]:
            return False
    return True


def _clean_folder(out: Path, manifest: dict | None) -> None:
    """Delete this tool's files that the manifest does not record (temporary files, unrecorded shards)."""
    recorded = {MANIFEST} if manifest else set()
    for shard in (manifest or {}).get("shards", []):
        recorded |= {shard["tokens_file"], shard["offsets_file"]}
    for path in out.iterdir():
        if _OWN_FILES.match(path.name) and path.name not in recorded:
            path.unlink()


# ------------------------------------------------------------------------------------------- prepare


def prepare(sources: list, tokenizer: TokenizerInfo | str | Path | None, config: PrepareConfig) -> dict:
    """Tokenize `sources` (specs or spec strings) into shards under `config.out`; returns the manifest."""
    specs = [SourceSpec.parse(s) for s in sources]
    if not specs:
        raise DataError("no sources given")
    duplicates = [name for name, n in Counter(s.name for s in specs).items() if n > 1]
    if duplicates:
        raise DataError(f"two sources share the name {duplicates[0]!r}: give one a name= option")
    tokenizer = tokenizer if isinstance(tokenizer, TokenizerInfo) else load_tokenizer(tokenizer)
    log = config.log or (lambda message: None)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    manifest = read_manifest(out) if (out / MANIFEST).exists() else None
    if manifest is not None and not config.overwrite:
        if _check_existing(manifest, tokenizer, specs, out):
            atomic_write_json(out / MANIFEST, manifest)
            log(f"{out}: sources touched but unchanged (same sha256); fingerprints refreshed")
        if manifest["complete"]:
            log(
                f"{out}: already complete ({manifest['documents']} documents, {manifest['num_tokens']} tokens)"
            )
            return manifest
        log(f"{out}: resuming ({len(manifest['shards'])} shards recorded)")
    elif manifest is None and any(not _OWN_FILES.match(p.name) for p in out.iterdir()):
        raise DataError(f"{out}: folder is not empty and holds no {MANIFEST}; choose an empty or new folder")
    if manifest is None or config.overwrite:
        _clean_folder(out, None)
        manifest = new_manifest(
            token_dtype(tokenizer.vocab_size), tokenizer.describe(), [_source_entry(s) for s in specs]
        )
        atomic_write_json(out / MANIFEST, manifest)
    _clean_folder(out, manifest)

    encoder = Encoder(tokenizer, config.workers)
    try:
        for entry, spec in zip(manifest["sources"], specs):
            if not entry["complete"]:
                _prepare_source(entry, spec, encoder, manifest, out, config, log)
    except Exception:
        if not manifest["shards"]:  # failed before anything was written (bad input): leave no trace
            _clean_folder(out, None)
        raise
    finally:
        encoder.close()
    manifest["complete"] = True
    atomic_write_json(out / MANIFEST, manifest)
    log(
        f"{out}: {manifest['documents']} documents, {manifest['num_tokens']} tokens in {len(manifest['shards'])} shards"
    )
    return manifest


def _prepare_source(entry: dict, spec: SourceSpec, encoder: Encoder, manifest: dict, out: Path,
                    config: PrepareConfig, log: Callable[[str], None]) -> None:  # fmt: skip
    bad = BadRecords(skip=config.skip_bad)
    documents = iter_documents(spec, bad)
    already = entry["documents_read"]
    if already:
        consumed = sum(1 for _ in itertools.islice(documents, already))
        if consumed != already or dict(bad.counts) != entry["skipped"]:
            raise DataError(
                f"source {spec.name!r} yields different documents than when it was prepared; use --overwrite"
            )
        log(f"{spec.name}: skipping {already} documents already in shards")

    def batches() -> Iterator[tuple[list[Document], dict]]:
        while docs := list(itertools.islice(documents, config.batch_docs)):
            yield docs, dict(bad.counts)  # the counts a re-run sees again when it skips up to here

    dtype = np.dtype(manifest["dtype"])
    pending = _Pending(skipped=dict(entry["skipped"]))

    def flush() -> None:
        if pending.docs:
            record = write_shard(out, len(manifest["shards"]), spec.name, pending.docs, dtype)
            manifest["shards"].append(record.to_dict())
            for target in (entry, manifest):
                target["documents"] += record.documents
                target["num_tokens"] += record.num_tokens
        entry["documents_read"] += pending.read
        entry["empty"] += pending.empty
        entry["skipped"] = pending.skipped
        atomic_write_json(out / MANIFEST, manifest)
        pending.reset()

    for docs, skipped, ids in encoder.map(batches()):
        pending.add(ids, len(docs), skipped)
        if pending.tokens >= config.shard_tokens:
            flush()
    if entry["documents_read"] + pending.read == 0 and bad.total == 0:
        raise DataError(f"source {spec.name!r} ({spec.path}): no documents")
    entry["complete"] = True
    pending.skipped = dict(bad.counts)  # the source was read to its end: every bad record is counted
    flush()
    note = f", skipped {bad.total} bad records" if bad.total else ""
    log(f"{spec.name}: {entry['documents']} documents, {entry['num_tokens']} tokens{note}")


@dataclass
class _Pending:
    """Tokenized documents not yet in a shard, and what the manifest records once they are."""

    skipped: dict  # bad-record counts as of the last document read
    docs: list = field(default_factory=list)
    tokens: int = 0
    read: int = 0  # source documents consumed (stored or empty)
    empty: int = 0

    def add(self, ids: list[np.ndarray], read: int, skipped: dict) -> None:
        for doc_ids in ids:
            if len(doc_ids):
                self.docs.append(doc_ids)
                self.tokens += len(doc_ids)
            else:
                self.empty += 1
        self.read += read
        self.skipped = skipped

    def reset(self) -> None:
        self.docs, self.tokens, self.read, self.empty = [], 0, 0, 0
