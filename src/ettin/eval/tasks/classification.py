"""Sequence classification / regression: GLUE tasks, SST-2 and the user's own files (reference section 6.1).

Two designs, the same for both objectives (each result says which it used):
  finetune  the whole model with a linear head on a pooled vector, AdamW; the learning rate is chosen from
            `lrs` on a validation split carved from the training rows (seed 0), then `seeds` runs at that
            rate are scored once on the test split (mean and spread over seeds).
  probe     the pre-trained model frozen: pooled features, then a logistic regression (ridge for STS-B,
            scikit-learn) whose pooling and regularisation are chosen on the same validation split. The
            probe shows what pre-training put into the representations, which fine-tuning data can swamp.
Poolings: encoders [CLS] or mean, decoders the last real token (as transformers'
ModernBertDecoderForSequenceClassification) or mean. Local files first; `glue:NAME` loads any GLUE task with
`datasets` (online); `cls:PATH` reads the user's TSV / CSV / JSONL (a file, split 80/20 by a fixed seed, or a
folder with train.* and test.*, or dev.* / validation.* in its place as in GLUE's own folders), text columns and
label column set by `text`, `text_pair` (a pair's second text), `label`.
Per-example predictions are kept (`per_example`) for paired bootstrap intervals (ettin.eval.compare).
"""

from __future__ import annotations

import csv
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ettin.eval import metrics
from ettin.eval.progress import Progress
from ettin.eval.tasks.common import (
    FinetuneSettings,
    Subject,
    TaskDataError,
    encode_pooled,
    encode_poolings,
    finetune,
    pad_batch,
)
from ettin.eval.tasks.data import read_jsonl, read_tsv
from ettin.inference import pool
from ettin.io import hub_offline


@dataclass
class Example:
    a: str
    b: str | None
    label: float


@dataclass
class ClassificationSettings:
    designs: tuple[str, ...] = ("probe", "finetune")  # the first is the task's main result
    train_limit: int = 4000  # training rows (a seeded sample when the file has more), validation excluded
    validation_limit: int = 500  # rows carved from the training file (seeded) to choose hyperparameters
    eval_limit: int = 10**6  # test rows (all by default)
    max_length: int = 128
    pooling: str = "cls"  # fine-tuning, encoders; decoders pool the last real token
    seeds: int = 3  # fine-tuning seeds at the chosen learning rate
    lrs: tuple[str, ...] = ("3e-4", "1e-3")  # the fine-tuning grid (text: `--set sst2.lrs=1e-4,1e-3`)
    probe_c: tuple[str, ...] = ("0.01", "0.1", "1", "10")  # inverse L2 strength (ridge: 1/C)
    text: str = "text"  # cls:PATH columns
    text_pair: str = ""
    label: str = "label"
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    # protocol "published": GLUE fine-tuned as published (ettin.eval.tasks.glue_published) instead of the designs
    protocol: str = "ettin"
    start_from: str = ""  # published, RTE / MRPC / STS-B: the fine-tuned model to start from ("": MNLI's, online)
    save_to: str = ""  # published: write the first seed's fine-tuned model here (e.g. MNLI's, for start_from)
    published_seeds: tuple[str, ...] = ()  # published: () = the published seeds of the task
    published_train_limit: int = 10**9  # published: training rows (all by default; --limit caps it)


# name: (folder, train file, test file, header, columns (header-less), text a, text b, label, label map, metric)
LOCAL = {
    "cola": ("glue/CoLA", "train.tsv", "dev.tsv", False, ("source", "label", "orig", "sentence"),
             "sentence", None, "label", None, "mcc"),
    "sst2": ("sst2", "train.tsv", "test.tsv", True, None, "sentence", None, "label", None, "accuracy"),
    "rte": ("glue/RTE", "train.tsv", "dev.tsv", True, None, "sentence1", "sentence2", "label",
            {"entailment": 0, "not_entailment": 1}, "accuracy"),
    "wnli": ("glue/WNLI", "train.tsv", "dev.tsv", True, None, "sentence1", "sentence2", "label", None, "accuracy"),
    "qnli": ("glue/QNLI", None, "dev.tsv", True, None, "question", "sentence", "label",
             {"entailment": 0, "not_entailment": 1}, "accuracy"),
    "stsb": ("glue/STS-B", "train.tsv", "dev.tsv", True, None, "sentence1", "sentence2", "score", None, "spearman"),
}
# GLUE through `datasets`: text fields, test split (GLUE's labelled dev), metric.
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
SPLIT_SEED = 1234  # files without a test split (QNLI's dev here, a single user file): a fixed part is the test
TEST_FRACTION = {"qnli": 1 / 3, "cls": 0.2}
METRIC_FN = {"accuracy": metrics.accuracy, "mcc": metrics.matthews_corrcoef, "spearman": metrics.spearman}


def _examples(rows: list[dict], path: Path, a: str, b: str | None, label: str, label_map, regression: bool):
    out = []
    for row in rows:
        for col in (a, b, label):
            if col and col not in row:
                raise TaskDataError(f"{path}:{row['_line']}: no column {col!r} (columns: "
                                    f"{sorted(k for k in row if k != '_line')})")
        raw = row[label]
        try:
            y = float(raw) if regression else (label_map[raw] if label_map else int(raw))
        except (KeyError, ValueError, TypeError):
            raise TaskDataError(f"{path}:{row['_line']}: bad label {raw!r} in column {label!r}") from None
        out.append(Example(str(row[a]), str(row[b]) if b else None, y))
    if not out:
        raise TaskDataError(f"{path}: no rows")
    return out


def _split(rows: list, fraction: float) -> tuple[list, list]:
    order = np.random.default_rng(SPLIT_SEED).permutation(len(rows))
    n_test = int(len(rows) * fraction)
    return [rows[i] for i in order[n_test:]], [rows[i] for i in order[:n_test]]


def load_local(name: str, data_dir: Path) -> tuple[list[Example], list[Example], str]:
    folder, train_file, test_file, header, columns, a, b, label, label_map, metric = LOCAL[name]
    regression = metric == "spearman"
    test_path = data_dir / folder / test_file
    test = _examples(read_tsv(test_path, header, columns), test_path, a, b, label, label_map, regression)
    if train_file is None:  # split the one labelled file into train / test parts, once and for all
        return (*_split(test, TEST_FRACTION[name]), metric)
    train_path = data_dir / folder / train_file
    train = _examples(read_tsv(train_path, header, columns), train_path, a, b, label, label_map, regression)
    return train, test, metric


def _read_table(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".tsv":
        return read_tsv(path)
    if path.suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            return [row | {"_line": str(i)} for i, row in enumerate(csv.DictReader(f), start=2)]
    raise TaskDataError(f"{path}: expected a .tsv, .csv or .jsonl file")


TEST_SPLITS = ("test", "dev", "validation")  # a folder's test split: the first of these it holds (GLUE's: dev)
_SAID: set[str] = set()  # the folders whose test split was said, once a process


def _folder_files(path: Path, name: str) -> list[Path]:
    """[train file, test file] of a cls: folder: train.EXT, and test.EXT or else dev.EXT or validation.EXT (GLUE's
    own layout has train.tsv and dev.tsv), which one said once."""
    found = {s: [path / f"{s}{e}" for e in (".tsv", ".csv", ".jsonl") if (path / f"{s}{e}").is_file()]
             for s in ("train", *TEST_SPLITS)}
    test = next((found[s][0] for s in TEST_SPLITS if found[s]), None)
    if not found["train"] or test is None:
        raise TaskDataError(f"{path}: a classification folder needs train.(tsv|csv|jsonl) and test.(...) "
                            "(or dev.(...) or validation.(...))")
    if not found["test"] and name not in _SAID:
        _SAID.add(name)
        print(f"{name}: no test.* file; using {test.name} as the test split", file=sys.stderr, flush=True)
    return [found["train"][0], test]


def load_user(path: Path, settings: ClassificationSettings, name: str = "") -> tuple[list[Example], list[Example], str]:
    """`cls:PATH`: labels that are all integers classify (accuracy); otherwise strings are classes, in
    sorted order. A folder holds train.EXT and test.EXT (or dev.EXT / validation.EXT); a single file is split
    80/20 (fixed seed)."""
    if path.is_dir():
        files = _folder_files(path, name or f"cls:{path}")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such classification file or folder")
    tables = [_read_table(f) for f in files]
    for f, rows in zip(files, tables):
        if not rows:
            raise TaskDataError(f"{f}: no rows")
        if settings.label not in rows[0]:
            raise TaskDataError(f"{f}: no label column {settings.label!r} (columns: "
                                f"{sorted(k for k in rows[0] if k != '_line')}); set it with cls:PATH.label=NAME")
    labels = sorted({str(r.get(settings.label)) for rows in tables for r in rows})
    label_map = None if all(x.lstrip("-").isdigit() for x in labels) else {x: i for i, x in enumerate(labels)}
    examples = [_examples([r | {settings.label: str(r.get(settings.label))} for r in rows], f, settings.text,
                          settings.text_pair or None, settings.label, label_map, False)
                for f, rows in zip(files, tables)]
    train, test = examples if len(examples) == 2 else _split(examples[0], TEST_FRACTION["cls"])
    return train, test, "accuracy"


def check_hub(name: str) -> None:
    """Fail early for an unknown GLUE task name or an offline hub."""
    if name not in HUB:
        raise ValueError(f"glue:{name}: unknown GLUE task; known: {', '.join(HUB)}")
    if hub_offline():
        raise ValueError(f"glue:{name} loads GLUE from the Hugging Face hub (datasets), which is offline here "
                         "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)")


def load_hub(name: str) -> tuple[list[Example], list[Example], str]:
    check_hub(name)
    from datasets import load_dataset

    (a, b), test_split, metric = HUB[name]
    ds = load_dataset("nyu-mll/glue", name)

    def convert(split):
        return [Example(r[a], r[b] if b else None, float(r["label"])) for r in ds[split]]

    return convert("train"), convert(test_split), metric


def load(name: str, data_dir: Path, settings: ClassificationSettings) -> tuple[list[Example], list[Example], str]:
    kind, _, arg = name.partition(":")
    if kind == "glue":
        return load_hub(arg)
    if kind == "cls":
        return load_user(Path(arg).expanduser(), settings, name)
    return load_local(name, data_dir)


def sample(rows: list, limit: int, seed: int) -> list:
    if len(rows) <= limit:
        return rows
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=limit, replace=False))
    return [rows[i] for i in keep]


def score(metric: str, pred, gold) -> float:
    return float(METRIC_FN[metric](pred, gold))


def _probe(subject: Subject, seqs: dict[str, list], y: dict[str, np.ndarray], metric: str,
           settings: ClassificationSettings) -> dict:
    """Frozen features, a linear model; pooling and C chosen on validation, scored once on test."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    regression = metric == "spearman"
    best = None
    poolings = ("mean", subject.pooling("cls"))
    every = [s for v in seqs.values() for s in v]  # one encoding step over every split: one progress count
    both = encode_poolings(subject, subject.model, every, poolings, what="encoding features")
    bounds = np.cumsum([0] + [len(v) for v in seqs.values()])
    pooled = {k: {p: both[p][lo:hi] for p in poolings} for k, lo, hi in zip(seqs, bounds[:-1], bounds[1:])}
    grid = Progress("probe grid", len(poolings) * len(settings.probe_c), "fits")
    for pooling in poolings:
        feats = {k: v[pooling].float().cpu().numpy() for k, v in pooled.items()}
        for c in (float(x) for x in settings.probe_c):
            est = Ridge(alpha=1 / c) if regression else LogisticRegression(C=c, max_iter=2000)
            clf = make_pipeline(StandardScaler(), est).fit(feats["train"], y["train"])
            val = score(metric, clf.predict(feats["validation"]), y["validation"])
            if best is None or val > best[0]:
                best = (val, pooling, c, clf.predict(feats["test"]))
            grid.update()
    grid.finish()
    val, pooling, c, pred = best
    return {"value": score(metric, pred, y["test"]), "validation": val, "pooling": pooling, "C": c,
            "per_example": {"pred": [pred.tolist()]}}


def fit_head(subject: Subject, train: list, y_train: np.ndarray, num_labels: int, regression: bool, pooling: str,
             ft: FinetuneSettings, seed: int, start=None, what: str = "fine-tuning"):
    """The whole model (a copy of `start`, else of the subject's) with a linear head on the pooled vector,
    fine-tuned on the wrapped sequences `train`: (model, head). `what` names the run in progress lines."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(subject.model.config.hidden_size, num_labels)
    y = torch.tensor(y_train, device=subject.device)

    def loss_fn(model, batch):
        ids, mask = pad_batch([train[i] for i in batch], subject.pad, subject.device)
        logits = head(pool(model.hidden_states(ids, mask), mask, pooling))  # (B, num_labels)
        yb = y[batch]
        return F.mse_loss(logits.squeeze(-1), yb.float()) if regression else F.cross_entropy(logits, yb.long())

    return finetune(subject, head, len(train), loss_fn, ft, seed, start, what), head


def predict(subject: Subject, model, head, seqs: list, pooling: str, regression: bool) -> np.ndarray:
    with torch.no_grad():
        logits = head(encode_pooled(subject, model, seqs, pooling, what="predicting")).float().cpu()
    return logits.squeeze(-1).numpy() if regression else logits.argmax(-1).numpy()


def _finetune(subject: Subject, seqs: dict[str, list], y: dict[str, np.ndarray], metric: str, num_labels: int,
              settings: ClassificationSettings) -> dict:
    regression = metric == "spearman"
    pooling = subject.pooling(settings.pooling)

    lrs = [float(x) for x in settings.lrs]
    runs, counter = len(lrs) + settings.seeds - 1, itertools.count(1)

    def fit(lr: float, seed: int):
        ft = FinetuneSettings(**{**settings.finetune.__dict__, "lr": lr})
        what = f"fine-tuning run {next(counter)}/{runs} (lr {lr:g}, seed {seed})"
        model, head = fit_head(subject, seqs["train"], y["train"], num_labels, regression, pooling, ft, seed,
                               what=what)
        return lambda split: predict(subject, model, head, seqs[split], pooling, regression)

    first = {lr: fit(lr, 0) for lr in lrs}
    val = {lr: score(metric, first[lr]("validation"), y["validation"]) for lr in lrs}
    lr = max(lrs, key=lambda x: val[x])
    preds = [first[lr]("test")] + [fit(lr, s)("test") for s in range(1, settings.seeds)]
    per_seed = [score(metric, p, y["test"]) for p in preds]
    return {"value": float(np.mean(per_seed)), "per_seed": per_seed, "seed_std": float(np.std(per_seed)),
            "validation": val[lr], "lr": lr, "validation_by_lr": {str(k): v for k, v in val.items()},
            "pooling": pooling, "per_example": {"pred": [p.tolist() for p in preds]}}


def labels(splits: dict[str, list[Example]], metric: str) -> tuple[dict[str, np.ndarray], int]:
    """Label arrays per split and the head's output size (1 for regression)."""
    regression = metric == "spearman"
    y = {k: np.asarray([e.label for e in v], dtype=np.float64 if regression else np.int64) for k, v in splits.items()}
    return y, 1 if regression else int(max(v.max() for v in y.values())) + 1


def wrap(subject: Subject, examples: list[Example], max_length: int) -> list[list[int]]:
    """[CLS] a [SEP] (b [SEP]) token ids of each example."""
    a_ids = subject.encode_batch([e.a for e in examples])
    b_ids = subject.encode_batch([e.b for e in examples]) if examples[0].b is not None else [None] * len(a_ids)
    return [subject.pair(x, yy, max_length) for x, yy in zip(a_ids, b_ids)]


def baseline_fields(metric: str, y: dict[str, np.ndarray]) -> dict:
    """The baseline beside a classification result (the majority class of the training rows; no correlation for
    regression) and the per-example fields compare resamples: gold labels and the baseline's predictions."""
    n = len(y["test"])
    if metric == "spearman":
        return {"baseline": 0.0, "baseline_name": "no correlation",
                "per_example": {"gold": y["test"].tolist(), "baseline_pred": [0.0] * n}}
    majority = int(np.bincount(y["train"]).argmax())
    return {"baseline": score(metric, np.full(n, majority), y["test"]),
            "baseline_name": "majority class of the training rows",
            "majority_baseline": float(np.mean(y["test"] == majority)),
            "per_example": {"gold": y["test"].tolist(), "baseline_pred": [majority] * n}}


def run(subject: Subject, name: str, data_dir: Path, settings: ClassificationSettings, seed: int) -> dict:
    """Carve validation rows from the training rows, then each design; `name` is a LOCAL key, glue:NAME or
    cls:PATH."""
    unknown = set(settings.designs) - {"probe", "finetune"}
    if unknown or not settings.designs:
        raise ValueError(f"{name}: designs must be probe and/or finetune, got {settings.designs}")
    train, test, metric = load(name, data_dir, settings)
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = min(settings.validation_limit, len(train) // 5)
    validation = [train[i] for i in order[:n_val]]
    train = sample([train[i] for i in np.sort(order[n_val:])], settings.train_limit, seed)
    test = sample(test, settings.eval_limit, seed)
    if not validation or not train:
        raise TaskDataError(f"{name}: too few training rows ({len(train) + len(validation)}) for a validation split")
    splits = {"train": train, "validation": validation, "test": test}
    y, num_labels = labels(splits, metric)
    seqs = {k: wrap(subject, v, settings.max_length) for k, v in splits.items()}
    result: dict = {"n": len(test), "n_train": len(train), "n_validation": len(validation), "metric": metric,
                    "designs": {}} | baseline_fields(metric, y)
    for design in settings.designs:
        out = _probe(subject, seqs, y, metric, settings) if design == "probe" else \
            _finetune(subject, seqs, y, metric, num_labels, settings)
        result["designs"][design] = out
        result[f"{metric}_{design}"] = out["value"]
    main = f"{metric}_{settings.designs[0]}"
    result["main"] = main
    result[metric] = result[main]
    return result

