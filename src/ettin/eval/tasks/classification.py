"""Sequence classification / regression by fine-tuning: GLUE tasks and SST-2 (reference section 6.1).

The whole model is fine-tuned with a linear head on a pooled vector: encoders pool [CLS] (or mean),
decoders the last real token (as transformers' ModernBertDecoderForSequenceClassification). The same
hyperparameters serve both objectives. Local files first; `glue:NAME` loads any GLUE task with `datasets`
(MNLI included) when online.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ettin.eval import metrics
from ettin.eval.tasks.common import (
    FinetuneSettings,
    Subject,
    TaskDataError,
    encode_pooled,
    finetune,
    pad_batch,
)
from ettin.eval.tasks.data import read_tsv
from ettin.inference import pool


@dataclass
class Example:
    a: str
    b: str | None
    label: float


@dataclass
class ClassificationSettings:
    train_limit: int = 1000  # fine-tuning rows (a seeded sample when the file has more); CPU-sized default
    eval_limit: int = 1000  # dev rows (a seeded sample when the dev set has more)
    max_length: int = 128
    pooling: str = "cls"  # encoders; decoders always pool the last real token
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)


# name: (folder, train file, dev file, header, columns (header-less), text a, text b, label, label map, metric)
LOCAL = {
    "cola": ("glue/CoLA", "train.tsv", "dev.tsv", False, ("source", "label", "orig", "sentence"),
             "sentence", None, "label", None, "mcc"),
    "sst2": ("sst2", "train.tsv", "dev.tsv", True, None, "sentence", None, "label", None, "accuracy"),
    "rte": ("glue/RTE", "train.tsv", "dev.tsv", True, None, "sentence1", "sentence2", "label",
            {"entailment": 0, "not_entailment": 1}, "accuracy"),
    "wnli": ("glue/WNLI", "train.tsv", "dev.tsv", True, None, "sentence1", "sentence2", "label", None, "accuracy"),
    "qnli": ("glue/QNLI", None, "dev.tsv", True, None, "question", "sentence", "label",
             {"entailment": 0, "not_entailment": 1}, "accuracy"),
    "stsb": ("glue/STS-B", "train.tsv", "dev.tsv", True, None, "sentence1", "sentence2", "score", None, "spearman"),
}
# GLUE through `datasets`: text fields, dev split, metric.
HUB = {
    "cola": (("sentence", None), "validation", "mcc"),
    "sst2": (("sentence", None), "validation", "accuracy"),
    "mrpc": (("sentence1", "sentence2"), "validation", "accuracy"),
    "qqp": (("question1", "question2"), "validation", "accuracy"),
    "stsb": (("sentence1", "sentence2"), "validation", "spearman"),
    "mnli": (("premise", "hypothesis"), "validation_matched", "accuracy"),
    "qnli": (("question", "sentence"), "validation", "accuracy"),
    "rte": (("sentence1", "sentence2"), "validation", "accuracy"),
    "wnli": (("sentence1", "sentence2"), "validation", "accuracy"),
}
QNLI_SPLIT_SEED = 1234  # QNLI ships only its dev set here: a fixed third is the test part, the rest trains
QNLI_TEST_FRACTION = 1 / 3


def _examples(rows: list[dict], path: Path, a: str, b: str | None, label: str, label_map, regression: bool):
    out = []
    for row in rows:
        raw = row[label]
        try:
            y = float(raw) if regression else (label_map[raw] if label_map else int(raw))
        except (KeyError, ValueError):
            raise TaskDataError(f"{path}:{row['_line']}: bad label {raw!r} in column {label!r}") from None
        out.append(Example(row[a], row[b] if b else None, y))
    return out


def load_local(name: str, data_dir: Path) -> tuple[list[Example], list[Example], str]:
    folder, train_file, dev_file, header, columns, a, b, label, label_map, metric = LOCAL[name]
    regression = metric == "spearman"
    dev_path = data_dir / folder / dev_file
    dev = _examples(read_tsv(dev_path, header, columns), dev_path, a, b, label, label_map, regression)
    if train_file is None:  # split the dev set into train / test parts, once and for all
        order = np.random.default_rng(QNLI_SPLIT_SEED).permutation(len(dev))
        n_test = int(len(dev) * QNLI_TEST_FRACTION)
        return [dev[i] for i in order[n_test:]], [dev[i] for i in order[:n_test]], metric
    train_path = data_dir / folder / train_file
    train = _examples(read_tsv(train_path, header, columns), train_path, a, b, label, label_map, regression)
    return train, dev, metric


def check_hub(name: str) -> None:
    """Fail early for an unknown GLUE task name or an offline hub."""
    if name not in HUB:
        raise ValueError(f"glue:{name}: unknown GLUE task; known: {', '.join(HUB)}")
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ValueError(f"glue:{name} loads GLUE from the Hugging Face hub (datasets), which is offline here "
                         "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)")


def load_hub(name: str) -> tuple[list[Example], list[Example], str]:
    check_hub(name)
    from datasets import load_dataset

    (a, b), dev_split, metric = HUB[name]
    ds = load_dataset("nyu-mll/glue", name)

    def convert(split):
        return [Example(r[a], r[b] if b else None, float(r["label"])) for r in ds[split]]

    return convert("train"), convert(dev_split), metric


def _sample(rows: list, limit: int, seed: int) -> list:
    if len(rows) <= limit:
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=limit, replace=False))
    return [rows[i] for i in keep]


def run(subject: Subject, name: str, data_dir: Path, settings: ClassificationSettings, seed: int) -> dict:
    """Fine-tune on the train rows, score the dev rows. `name` is a LOCAL key or "glue:NAME"."""
    if name.startswith("glue:"):
        train, dev, metric = load_hub(name.split(":", 1)[1])
    else:
        train, dev, metric = load_local(name, data_dir)
    train, dev = _sample(train, settings.train_limit, seed), _sample(dev, settings.eval_limit, seed)
    regression = metric == "spearman"
    num_labels = 1 if regression else int(max(max(e.label for e in train), max(e.label for e in dev))) + 1

    def wrap(examples):
        a_ids = subject.encode_batch([e.a for e in examples])
        b_ids = subject.encode_batch([e.b for e in examples]) if examples[0].b is not None else [None] * len(a_ids)
        return [subject.pair(x, y, settings.max_length) for x, y in zip(a_ids, b_ids)]

    train_seqs, dev_seqs = wrap(train), wrap(dev)
    pooling = subject.pooling(settings.pooling)
    torch.manual_seed(seed)
    head = torch.nn.Linear(subject.model.config.hidden_size, num_labels)
    y_train = torch.tensor([e.label for e in train], device=subject.device)

    def loss_fn(model, batch):
        ids, mask = pad_batch([train_seqs[i] for i in batch], subject.pad, subject.device)
        logits = head(pool(model.hidden_states(ids, mask), mask, pooling))  # (B, num_labels)
        y = y_train[batch]
        return F.mse_loss(logits.squeeze(-1), y) if regression else F.cross_entropy(logits, y.long())

    model = finetune(subject, head, len(train), loss_fn, settings.finetune, seed)
    with torch.no_grad():
        logits = head(encode_pooled(subject, model, dev_seqs, pooling)).float().cpu()
    gold = [e.label for e in dev]
    result: dict = {"n": len(dev), "n_train": len(train), "pooling": pooling}
    if regression:
        pred = logits.squeeze(-1).numpy()
        result |= {"main": "spearman", "spearman": metrics.spearman(pred, gold), "pearson": metrics.pearson(pred, gold)}
    else:
        pred = logits.argmax(-1).numpy()
        gold_i = [int(g) for g in gold]
        result |= {"main": metric, "accuracy": metrics.accuracy(pred, gold_i)}
        if metric == "mcc":
            result["mcc"] = metrics.matthews_corrcoef(pred, gold_i)
        result["majority_baseline"] = float(np.mean(np.asarray(gold_i) == np.bincount(gold_i).argmax()))
    return result

