"""Document sources: local text / JSONL / Parquet files (globs, folders, .gz, .zst), Hugging Face datasets,
and MosaicML streaming (MDS) shards.

A source is described by a `SourceSpec`, written as a string or a YAML/JSON dict:

    data/*.jsonl:text                        # JSONL files, text in the field "text" (":field" picks it)
    corpus/?split_by=paragraph               # every known file under a folder; text split on blank lines
    books.txt.gz                             # one document per (decompressed) file
    hf:allenai/c4?config=en&split=train&streaming=true
    mds:/data/ettin/dclm/text                # MDS shards (index.json); pre-tokenized input_ids read as tokens

`iter_documents(spec)` yields `Document`s with a location ("file:line") used in every error. Bad input
(an empty file, a non-UTF-8 byte, a malformed JSON line, a missing field) raises `DataError` naming the
file and line, unless a `BadRecords(skip=True)` is passed, which counts the skipped records instead.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO

import numpy as np

from ettin.data.shards import file_sha256

FORMATS = ("auto", "text", "jsonl", "parquet", "hf", "mds")
SPLIT_BY = ("file", "paragraph", "line")
_EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".txt": "text", ".text": "text", ".md": "text",
    ".parquet": "parquet",
}  # fmt: skip
_COMPRESSIONS = (".gz", ".zst", ".zstd")


class DataError(ValueError):
    """Bad input data or a bad source description; the message names the file and line."""


@dataclass
class SourceSpec:
    """Where documents come from. `path` is a file, folder, glob, MDS folder, or a Hugging Face dataset name."""

    path: str
    name: str = ""  # how manifests and mixtures refer to it; derived from the path when empty
    format: str = "auto"  # auto | text | jsonl | parquet | hf | mds
    text_field: str = "text"  # JSONL / Parquet / HF / MDS column holding the text
    split_by: str = "file"  # plain text only: file | paragraph | line
    split: str = "train"  # hf only
    config: str | None = None  # hf only: the dataset configuration name
    streaming: bool = False  # hf only: stream instead of downloading the whole split

    def __post_init__(self):
        if self.format not in FORMATS:
            raise DataError(
                f"source {self.path!r}: unknown format {self.format!r} (choose from {', '.join(FORMATS)})"
            )
        if self.split_by not in SPLIT_BY:
            raise DataError(
                f"source {self.path!r}: unknown split_by {self.split_by!r} (choose from {', '.join(SPLIT_BY)})"
            )
        if not self.path:
            raise DataError("source: empty path")
        if not self.name:
            self.name = _default_name(self.path)

    @classmethod
    def parse(cls, spec: str | dict | SourceSpec) -> SourceSpec:
        """From `[hf:|mds:]path[:text_field][?key=value&...]` or a dict of the fields."""
        if isinstance(spec, SourceSpec):
            return spec
        if isinstance(spec, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(spec) - known)
            if unknown:
                raise DataError(f"source {spec}: unknown key(s) {unknown} (known: {sorted(known)})")
            return cls(**spec)
        if not isinstance(spec, str) or not spec.strip():
            raise DataError(f"source {spec!r}: expected a string or a mapping")
        text, _, query = spec.strip().partition("?")
        options: dict = {}
        for scheme in ("hf", "mds"):
            if text.startswith(scheme + ":"):
                options["format"] = scheme
                text = text[len(scheme) + 1 :].removeprefix("//")
        # A trailing ":field" names the text field, unless the whole string is an existing path.
        head, sep, tail = text.rpartition(":")
        if sep and head and tail and "/" not in tail and not os.path.exists(text):
            text, options["text_field"] = head, tail
        for item in filter(None, query.split("&")):
            key, eq, value = item.partition("=")
            if not eq:
                raise DataError(f"source {spec!r}: option {item!r} is not key=value")
            options[key.strip()] = value.strip()
        if "streaming" in options:
            options["streaming"] = str(options["streaming"]).lower() in ("1", "true", "yes")
        return cls.parse({"path": text.rstrip("/") or text, **options})

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved_format(self) -> str:
        if self.format != "auto":
            return self.format
        path = Path(self.path)
        if path.is_dir() and (path / "index.json").exists():
            return "mds"
        return "auto"  # decided per file


def _default_name(path: str) -> str:
    """`data/books.jsonl.gz` -> books; `data/web/*.jsonl` -> web (the folder above the first wildcard)."""
    parts = [p for p in path.split("/") if p and p != "**"]
    wild = next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), None)
    if wild is not None:
        return parts[wild - 1] if wild > 0 else "source"
    base = parts[-1] if parts else "source"
    for suffix in _COMPRESSIONS:
        base = base.removesuffix(suffix)
    return base.split(".")[0] or "source"


@dataclass
class Document:
    """One document: `text`, or `tokens` for pre-tokenized sources (MDS `input_ids`)."""

    text: str | None
    location: str  # "file:line" (or "file:row N", "hf:name[split] row N") for errors
    tokens: np.ndarray | None = None


@dataclass
class BadRecords:
    """The policy for bad input: raise (default) or skip and count per reason."""

    skip: bool = False
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def bad(self, location: str, reason: str, detail: str = "") -> None:
        """Report a bad record: `reason` is what the manifest counts, `detail` only goes in the message."""
        message = f"{location}: {reason}" + (f" ({detail})" if detail else "")
        if not self.skip:
            raise DataError(message)
        self.counts[reason] += 1
        if len(self.examples) < 20:
            self.examples.append(message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# ----------------------------------------------------------------------------------------------- files


def expand_files(spec: SourceSpec) -> list[Path]:
    """The files of a local source, sorted: a file, every known file under a folder, or a glob's matches."""
    path = Path(spec.path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _file_format(p) is not None)
        if not files:
            raise DataError(f"{path}: folder holds no .jsonl/.txt/.parquet files (optionally .gz/.zst)")
        return files
    if any(c in spec.path for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(spec.path, recursive=True) if os.path.isfile(p))
        if not files:
            raise DataError(f"{spec.path}: no files match this pattern")
        return files
    raise FileNotFoundError(f"{spec.path}: no such file, folder or pattern")


def _file_format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in _COMPRESSIONS:
        name = name.removesuffix(suffix)
    return _EXTENSIONS.get(Path(name).suffix)


def file_format(path: Path, spec: SourceSpec) -> str:
    if spec.format not in ("auto", "hf", "mds"):
        return spec.format
    found = _file_format(path)
    if found is None:
        raise DataError(
            f"{path}: unknown file format (expected .jsonl/.json/.txt/.md/.parquet, or set format=)"
        )
    return found


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading bytes, decompressing .gz and .zst/.zstd."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith((".zst", ".zstd")):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _decode(data: bytes, location: str, line: int, bad: BadRecords) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_of_byte = line + data[: e.start].count(b"\n")
        column = e.start - data.rfind(b"\n", 0, e.start)
        bad.bad(
            f"{location}:{line_of_byte}", "invalid UTF-8", f"byte 0x{data[e.start]:02x} at column {column}"
        )
        return None


def _iter_text(path: Path, spec: SourceSpec, bad: BadRecords) -> Iterator[Document]:
    with open_binary(path) as f:
        data = f.read()
    if not data.strip():
        bad.bad(f"{path}:1", "empty file")
        return
    if spec.split_by == "file":
        text = _decode(data, str(path), 1, bad)
        if text is not None:
            yield Document(text, f"{path}:1")
        return
    line_no = 1
    chunks = data.split(b"\n\n") if spec.split_by == "paragraph" else data.split(b"\n")
    for chunk in chunks:
        start = line_no + (len(chunk) - len(chunk.lstrip(b"\n")))
        line_no += chunk.count(b"\n") + (2 if spec.split_by == "paragraph" else 1)
        if not chunk.strip():
            continue
        text = _decode(chunk, str(path), start, bad)
        if text is not None:
            yield Document(text.strip("\n"), f"{path}:{start}")


def _field(record: object, spec: SourceSpec, location: str, bad: BadRecords) -> str | None:
    if not isinstance(record, dict):
        bad.bad(location, "not a JSON object", f"got {type(record).__name__}")
        return None
    if spec.text_field not in record:
        fields = ", ".join(map(str, list(record)[:10]))
        bad.bad(location, f"missing field {spec.text_field!r}", f"fields: {fields}")
        return None
    value = record[spec.text_field]
    if not isinstance(value, str):
        bad.bad(location, f"field {spec.text_field!r} is not a string", f"got {type(value).__name__}")
        return None
    return value


def _iter_jsonl(path: Path, spec: SourceSpec, bad: BadRecords) -> Iterator[Document]:
    records, bad_before = 0, bad.total
    with open_binary(path) as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            location = f"{path}:{line_no}"
            line = _decode(raw, str(path), line_no, bad)
            if line is None:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                bad.bad(location, "malformed JSON line", f"{e.msg} at column {e.colno}")
                continue
            text = _field(record, spec, location, bad)
            if text is not None:
                records += 1
                yield Document(text, location)
    if records == 0 and bad.total == bad_before:
        bad.bad(f"{path}:1", "empty file", "no JSON records")


def _iter_parquet(path: Path, spec: SourceSpec, bad: BadRecords) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid for a file that is not Parquet
        raise DataError(f"{path}: not a readable Parquet file ({e})") from e
    if spec.text_field not in parquet.schema_arrow.names:
        raise DataError(
            f"{path}: missing column {spec.text_field!r} (columns: {', '.join(parquet.schema_arrow.names)})"
        )
    if parquet.metadata.num_rows == 0:
        bad.bad(f"{path}:row 0", "empty file", "no rows")
    row = 0
    for batch in parquet.iter_batches(columns=[spec.text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if not isinstance(value, str):
                reason, got = f"field {spec.text_field!r} is not a string", f"got {type(value).__name__}"
                bad.bad(f"{path}:row {row}", reason, got)
            else:
                yield Document(value, f"{path}:row {row}")
            row += 1


def _iter_hf(spec: SourceSpec, bad: BadRecords) -> Iterator[Document]:
    import datasets

    try:
        dataset = datasets.load_dataset(spec.path, spec.config, split=spec.split, streaming=spec.streaming)
    except (FileNotFoundError, ConnectionError, ValueError) as e:  # not found, offline, bad config/split
        raise DataError(f"hf:{spec.path}: cannot load the dataset ({type(e).__name__}: {e})") from e
    for row, record in enumerate(dataset):
        location = f"hf:{spec.path}[{spec.split}] row {row}"
        text = _field(record, spec, location, bad)
        if text is not None:
            yield Document(text, location)


def _iter_mds(spec: SourceSpec, bad: BadRecords) -> Iterator[Document]:
    from ettin.data.mds import iter_mds_samples

    for location, sample in iter_mds_samples(spec.path):
        # Pre-tokenized shards (the published Ettin data): an integer array in the text field or `input_ids`.
        value = sample.get(spec.text_field, sample.get("input_ids"))
        if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
            yield Document(None, location, tokens=value)
            continue
        text = _field(sample, spec, location, bad)
        if text is not None:
            yield Document(text, location)


def iter_documents(spec: SourceSpec | str | dict, bad: BadRecords | None = None) -> Iterator[Document]:
    """Every document of a source, in a fixed order (files sorted by name; rows in file order)."""
    spec = SourceSpec.parse(spec)
    bad = bad if bad is not None else BadRecords()
    fmt = spec.resolved_format()
    if fmt == "hf":
        yield from _iter_hf(spec, bad)
        return
    if fmt == "mds":
        yield from _iter_mds(spec, bad)
        return
    readers = {"text": _iter_text, "jsonl": _iter_jsonl, "parquet": _iter_parquet}
    for path in expand_files(spec):
        yield from readers[file_format(path, spec)](path, spec, bad)


def _is_hub_dataset(spec: SourceSpec) -> bool:
    return spec.resolved_format() == "hf" and not os.path.exists(spec.path)


def _source_files(spec: SourceSpec) -> list[Path]:
    fmt = spec.resolved_format()
    if fmt == "mds" or fmt == "hf":
        root = Path(spec.path)
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return list(expand_files(spec))


def content_hashes(spec: SourceSpec | str | dict) -> dict:
    """sha256 of each local file of a source ({} for a hub dataset): what identifies its content for sure."""
    spec = SourceSpec.parse(spec)
    if _is_hub_dataset(spec):
        return {}
    return {str(p): file_sha256(p) for p in _source_files(spec)}


def fingerprint(spec: SourceSpec | str | dict) -> dict:
    """What identifies a source's content cheaply: each file's size and mtime (hf: name/config/split)."""
    spec = SourceSpec.parse(spec)
    if _is_hub_dataset(spec):
        return {"hf": spec.path, "config": spec.config, "split": spec.split}
    return {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in _source_files(spec)}
