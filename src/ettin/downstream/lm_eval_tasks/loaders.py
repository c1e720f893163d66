"""Local-file datasets for the task configs in this folder (lm-eval's `custom_dataset`).

lm-eval calls each loader with the task's metadata (`data_dir`, passed by `ettin lm-eval` through
`TaskManager(metadata=...)`, and the config's own `version`); each returns a `datasets.DatasetDict` with the
splits and columns of the hub dataset the original lm-eval task reads, so the task's prompts apply unchanged.
"""

from __future__ import annotations

import csv
from pathlib import Path

import datasets

from ettin.io import read_jsonl


def _data_dir(kwargs: dict) -> Path:
    if not kwargs.get("data_dir"):
        raise ValueError("this task reads local files: pass metadata {'data_dir': ...} (ettin lm-eval --data-dir)")
    return Path(kwargs["data_dir"]).expanduser()


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: task file not found (ettin lm-eval --data-dir)")
    return path


def piqa(**kwargs) -> datasets.DatasetDict:
    """{goal, sol1, sol2, label} rows of <data_dir>/piqa/validation.jsonl as the `validation` split."""
    path = _need(_data_dir(kwargs) / "piqa" / "validation.jsonl")
    rows = [{k: row[k] for k in ("goal", "sol1", "sol2")} | {"label": int(row["label"])}
            for row in read_jsonl(path, required=("goal", "sol1", "sol2", "label"))]
    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)})


def _tsv(path: Path) -> list[dict]:
    rows = []
    with open(_need(path), encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        if header[:2] != ["label", "sentence"]:
            raise ValueError(f"{path}: expected the header 'label<TAB>sentence', got {header}")
        for line_no, row in enumerate(reader, start=2):
            if len(row) != 2 or row[0] not in ("0", "1"):
                raise ValueError(f"{path}:{line_no}: expected '0|1<TAB>sentence'")
            rows.append({"sentence": row[1], "label": int(row[0]), "idx": len(rows)})
    return rows


def sst2(**kwargs) -> datasets.DatasetDict:
    """GLUE SST-2 from <data_dir>/sst2: train.tsv as `train`, dev.tsv (the GLUE dev set) as `validation`."""
    root = _data_dir(kwargs) / "sst2"
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(_tsv(root / "train.tsv")),
                                 "validation": datasets.Dataset.from_list(_tsv(root / "dev.tsv"))})
