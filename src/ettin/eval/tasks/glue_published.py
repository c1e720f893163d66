"""GLUE fine-tuned as published: `ettin eval MODEL --tasks rte --set rte.protocol=published`.

The protocol of ModernBERT's GLUE jobs, which Ettin reused (AnswerDotAI/ModernBERT `src/evals/glue_jobs.py`,
`glue.py` and `yamls/finetuning/glue/*.yaml`), as the suite's own trainer fork runs them (orionw/bert24, the same
files; they differ on MNLI only, where bert24's values are taken): for each task a fixed learning rate, number of
epochs and decoupled weight decay (PUBLISHED), batch size 64 for every task (AnswerDotAI/ModernBERT#196), AdamW with
betas (0.9, 0.98) and eps 1e-6, no gradient clipping, a linear schedule after 10% warmup, sequences of up to 256
tokens, trained on the whole training split and scored once on GLUE's dev split after the last epoch, with each of
the task's seeds; the result is the mean over seeds (their spread beside it). RTE, MRPC and STS-B start from the
model fine-tuned on MNLI (its backbone; the head is new): missing that rule is the known RTE reproduction failure
(57-66 against 87.4, AnswerDotAI/ModernBERT#225). `start_from` gives that model (a checkpoint folder or Hugging
Face folder, e.g. one written by an MNLI run with `save_to`); when empty, MNLI is fine-tuned here first (glue:mnli,
online; kept on the subject, keyed by what decides it). Composer's decoupled weight decay (per step: wd x lr / peak
lr) is torch AdamW's weight_decay = wd / lr.

What stays ettin's, the same for both objectives: the head (a linear layer on the pooled vector: [CLS] or mean for
encoders, the last real token for decoders) and the input framing; weight decay on matrices only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ettin.eval.tasks import classification
from ettin.eval.tasks.classification import ClassificationSettings
from ettin.eval.tasks.common import FinetuneSettings, Subject

PUBLISHED = {  # GLUE task: (learning rate, epochs, decoupled weight decay, seeds)
    # MNLI as the Ettin suite's trainer ran it: orionw/bert24 src/evals/glue_jobs.py lines 67 and 70 (lr 5e-5, weight
    # decay 5e-6; AnswerDotAI/ModernBERT's same file, line 74, later changed it to 1e-6), for 2 epochs as bert24's
    # eval configs set (generate_eval_config_from_checkpoint.py line 280, over glue_jobs.py's default 3, line 37).
    "mnli": (5e-5, 2, 5e-6, (19,)),
    "qnli": (1e-5, 10, 1e-6, (19,)),
    "qqp": (3e-5, 5, 3e-6, (19,)),
    "sst2": (3e-5, 3, 3e-6, (19, 8364, 717)),
    "cola": (5e-5, 10, 5e-6, (19, 8364, 717, 10536)),
    "rte": (1e-5, 3, 1e-5, (19, 8364, 717, 10536, 90166)),
    "mrpc": (8e-5, 10, 8e-6, (19, 8364, 717, 10536, 90166)),
    "stsb": (3e-5, 10, 3e-6, (19, 8364, 717, 10536, 90166)),
}
FROM_MNLI = ("rte", "mrpc", "stsb")
BATCH_SIZE, WARMUP_RATIO, BETA2, EPS, MAX_LENGTH = 64, 0.1, 0.98, 1e-6, 256
PROTOCOLS = ("ettin", "published")
SAVED = "ettin_glue.json"  # written into a save_to folder: what was fine-tuned, from what


def glue_task(name: str) -> str | None:
    """The GLUE task behind an ettin task name (a local one or glue:NAME); None for cls:PATH."""
    if name.startswith("glue:"):
        return name.split(":", 1)[1]
    return name if name in classification.LOCAL else None


def seeds(task: str, settings: ClassificationSettings) -> list[int]:
    try:
        return [int(s) for s in settings.published_seeds] or list(PUBLISHED[task][3])
    except ValueError:
        raise ValueError(f"published_seeds: integers expected, got {settings.published_seeds}") from None


def check(name: str, settings: ClassificationSettings) -> None:
    """Everything about the protocol that can be checked before any model work."""
    if settings.protocol not in PROTOCOLS:
        raise ValueError(f"{name}.protocol: {settings.protocol!r}; known: {', '.join(PROTOCOLS)}")
    if settings.protocol != "published":
        for key in ("start_from", "save_to", "published_seeds"):
            if getattr(settings, key):
                raise ValueError(f"{name}.{key} belongs to the published protocol: set {name}.protocol=published")
        return
    task = glue_task(name)
    if task not in PUBLISHED:
        raise ValueError(f"{name}: the published GLUE protocol covers {', '.join(PUBLISHED)} (local or glue:NAME)")
    seeds(task, settings)
    if settings.start_from:
        if task not in FROM_MNLI:
            raise ValueError(f"{name}.start_from: the published protocol starts only {', '.join(FROM_MNLI)} from "
                             "another fine-tuned model")
        start_folder(settings.start_from)
    elif task in FROM_MNLI:
        try:
            classification.check_hub("mnli")
        except ValueError as e:
            raise ValueError(f"{name}: the published protocol starts {task} from the model fine-tuned on MNLI; "
                             f"{e}. Give that model with {name}.start_from=FOLDER (e.g. the save_to folder of an "
                             "MNLI run)") from None
    if settings.save_to and Path(settings.save_to).exists() and any(Path(settings.save_to).iterdir()) \
            and not (Path(settings.save_to) / SAVED).is_file():
        raise ValueError(f"{name}.save_to {settings.save_to}: exists and is not a folder written by save_to")


def start_folder(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir() or not ((p / "meta.json").is_file() or (p / "config.json").is_file()):
        raise FileNotFoundError(f"start_from {path}: not a checkpoint folder (meta.json) or a Hugging Face folder "
                                "(config.json)")
    return p


def load_start(subject: Subject, path: str):
    """The model in `path`, checked to have the subject's architecture and objective."""
    p = start_folder(path)
    if (p / "meta.json").is_file():
        from ettin.train.checkpoint import load_model

        model = load_model(p)
    else:
        from ettin.hf import from_pretrained

        model = from_pretrained(p)
    mine, theirs = subject.model.config.to_dict(), model.config.to_dict()
    keys = ("objective", "num_layers", "hidden_size", "intermediate_size", "num_heads", "vocab_size")
    if any(mine.get(k) != theirs.get(k) for k in keys):
        diff = ", ".join(f"{k} {theirs.get(k)} (model {mine.get(k)})" for k in keys if mine.get(k) != theirs.get(k))
        raise ValueError(f"start_from {path}: not the evaluated model's architecture: {diff}")
    return model.to(subject.device)


def fine_tune_settings(task: str) -> FinetuneSettings:
    lr, epochs, weight_decay, _ = PUBLISHED[task]
    return FinetuneSettings(epochs=epochs, batch_size=BATCH_SIZE, lr=lr, weight_decay=weight_decay / lr,
                            warmup_ratio=WARMUP_RATIO, beta2=BETA2, eps=EPS, max_grad_norm=0.0)


def _data(subject: Subject, name: str, data_dir: Path, settings: ClassificationSettings, seed: int,
          splits: tuple[str, ...] = ("train", "test")):
    """The task's rows of `splits` (sampled to their limits), wrapped, with labels, head size and metric."""
    train, test, metric = classification.load(name, data_dir, settings)
    limits = {"train": (train, settings.published_train_limit), "test": (test, settings.eval_limit)}
    rows = {k: classification.sample(*limits[k], seed) for k in splits}
    y, num_labels = classification.labels(rows, metric)
    length = min(MAX_LENGTH, subject.max_length)
    return rows, {k: classification.wrap(subject, v, length) for k, v in rows.items()}, y, num_labels, metric


def mnli_start(subject: Subject, data_dir: Path, settings: ClassificationSettings, seed: int):
    """The subject fine-tuned on MNLI with MNLI's published settings: trained on MNLI's training rows only (its dev
    split is not needed) and kept on the subject for the next task, keyed by everything that decides it (the
    pooling, the training rows' limit and sampling seed, the input length); another key trains it again."""
    key = (subject.pooling(settings.pooling), settings.published_train_limit, seed, min(MAX_LENGTH, subject.max_length))
    cached = getattr(subject, "_published_mnli", None)
    if cached is None or cached[0] != key:
        subject._published_mnli = None  # one MNLI model at a time: the old one is freed first
        _, seqs, y, num_labels, _ = _data(subject, "glue:mnli", data_dir, settings, seed, splits=("train",))
        model, _ = classification.fit_head(subject, seqs["train"], y["train"], num_labels, False, key[0],
                                           fine_tune_settings("mnli"), PUBLISHED["mnli"][3][0],
                                           what="fine-tuning on MNLI (the start model)")
        cached = subject._published_mnli = (key, model)
    return cached[1]


def save(subject: Subject, model, folder: str, name: str, seed: int, start: str) -> None:
    from ettin.hf import save_pretrained

    path = save_pretrained(model, Path(folder).expanduser(), tokenizer=subject.tokenizer)
    (path / SAVED).write_text(json.dumps({"task": name, "protocol": "published", "seed": seed,
                                          "start": start}, indent=2) + "\n")


def run(subject: Subject, name: str, data_dir: Path, settings: ClassificationSettings, seed: int) -> dict:
    """Fine-tune with the task's published settings from its start, once per seed; score GLUE's dev split."""
    check(name, settings)
    task = glue_task(name)
    splits, seqs, y, num_labels, metric = _data(subject, name, data_dir, settings, seed)
    regression = metric == "spearman"
    if task in FROM_MNLI and settings.start_from:
        start, start_name = load_start(subject, settings.start_from), str(settings.start_from)
    elif task in FROM_MNLI:
        start, start_name = mnli_start(subject, data_dir, settings, seed), "glue:mnli (fine-tuned here)"
    else:
        start, start_name = None, "the evaluated model"
    pooling = subject.pooling(settings.pooling)
    ft = fine_tune_settings(task)
    preds, used = [], seeds(task, settings)
    for i, s in enumerate(used):
        model, head = classification.fit_head(subject, seqs["train"], y["train"], num_labels, regression, pooling,
                                              ft, s, start, what=f"fine-tuning seed {s} ({i + 1}/{len(used)})")
        preds.append(classification.predict(subject, model, head, seqs["test"], pooling, regression))
        if i == 0 and settings.save_to:
            save(subject, model, settings.save_to, name, s, start_name)
        del model, head
    per_seed = [classification.score(metric, p, y["test"]) for p in preds]
    lr, epochs, weight_decay, _ = PUBLISHED[task]
    design = {"value": float(np.mean(per_seed)), "per_seed": per_seed, "seed_std": float(np.std(per_seed)),
              "seeds": used, "protocol": "published", "lr": lr, "epochs": epochs, "batch_size": BATCH_SIZE,
              "weight_decay_decoupled": weight_decay, "warmup_ratio": WARMUP_RATIO, "betas": [0.9, BETA2],
              "eps": EPS, "max_length": min(MAX_LENGTH, subject.max_length), "start_from": start_name,
              "pooling": pooling, "per_example": {"pred": [p.tolist() for p in preds]}}
    result = {"n": len(splits["test"]), "n_train": len(splits["train"]), "n_validation": 0, "metric": metric,
              "protocol": "published", "designs": {"finetune": design}} | classification.baseline_fields(metric, y)
    result[f"{metric}_finetune"] = design["value"]
    result["main"] = f"{metric}_finetune"
    result[metric] = design["value"]
    return result
