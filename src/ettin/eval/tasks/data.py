"""Task file readers. Every reader checks its rows and names the file and line of the first bad one.

Held-out prose: the pretraining JSONL files' held-out tails (ettin.data.holdout: the last ceil(2%) of the
documents of each file, the rule and fraction the training recipes apply) are the evaluation's held-out
documents (language modelling, generation); the rest is their training side (retrieval's training pairs,
the unigram baselines).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from ettin import io
from ettin.data.holdout import HOLDOUT_FRACTION, held_out_range
from ettin.eval.tasks.common import TaskDataError

# The pretraining prose the held-out tasks read (data_dir/pretrain/NAME), in this order; the demo recipes
# (recipes/tiny.yaml, recipes/demo.yaml) train on the same files with the same held-out fraction.
PRETRAIN_FILES = (
    "wikipedia_vital_summaries_en.jsonl",
    "sotu_addresses.jsonl",
    "moby_dick_chapters.jsonl",
    "gutenberg_books.jsonl",
)


def default_data_dir() -> Path:
    """$ETTIN_DATA, else ../shared/data relative to the working directory (the layout of this project)."""
    return Path(os.environ.get("ETTIN_DATA", "../shared/data"))


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: task file not found (set --data-dir or $ETTIN_DATA)")
    return path


def read_tsv(path: Path, header: bool = True, columns: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Rows of a GLUE-style TSV (no quoting, BOM tolerated) as dicts; `columns` names a header-less file's
    columns. Every row must have as many fields as the header; the error names file and line."""
    require_file(path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        names = list(columns) if columns is not None else None
        rows = []
        for line_no, row in enumerate(reader, start=1):
            if header and line_no == 1:
                names = names or row
                continue
            if not row:
                continue
            if names is None or len(row) != len(names):
                raise TaskDataError(f"{path}:{line_no}: expected {len(names or [])} tab-separated fields, got {len(row)}")
            rows.append(dict(zip(names, row)) | {"_line": str(line_no)})
    return rows


def read_jsonl(path: Path, required: Sequence[str] = ()) -> list[dict]:
    return io.read_jsonl(require_file(path), required, error=TaskDataError)


def pretrain_documents(data_dir: Path, held_out: bool) -> list[dict]:
    """Held-out (or training-side) documents of every pretraining file, each tagged with its `_file`."""
    docs = []
    for name in PRETRAIN_FILES:
        rows = read_jsonl(data_dir / "pretrain" / name, required=("text",))
        keep = held_out_range(len(rows), HOLDOUT_FRACTION)
        for i, row in enumerate(rows):
            if (i in keep) == held_out:
                docs.append(row | {"_file": name, "_index": i})
    return docs
