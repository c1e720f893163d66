"""The evaluation tasks: one module per family, one `TaskSpec` per task name.

  classification     cola sst2 rte wnli qnli stsb, glue:NAME (any GLUE task through `datasets`, online) and
                     cls:PATH (the user's TSV / CSV / JSONL; columns by cls:PATH.text / .text_pair / .label);
                     TASK.protocol=published fine-tunes a GLUE task as published (glue_published)
  retrieval          cranfield, and beir:PATH (any BEIR-format folder)
  multiple choice    piqa, and mc:PATH (any lm-eval-style JSONL: {query|context, choices, gold})
  language model     lm (held-out perplexity / masked accuracy + masked perplexity), next_token (the next
                     token from its left context only, both objectives, beside a unigram model)
  generation         generation (greedy continuation of held-out prompts)
  bias               winogender
Every spec has `check(data_dir)`, which reads and validates the task's files before any model work, and
`run(subject, data_dir, seed)`. Settings are dataclasses; `with_limit` caps every example count.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ettin.eval.tasks import (
    bias,
    classification,
    glue_published,
    language_modeling,
    multiple_choice,
    retrieval,
)
from ettin.eval.tasks.common import Subject, TaskDataError
from ettin.eval.tasks.data import pretrain_documents

FAMILIES = {
    **dict.fromkeys(("cola", "sst2", "rte", "wnli", "qnli", "stsb", "glue", "cls"), "classification"),
    "cranfield": "retrieval", "beir": "retrieval", "piqa": "multiple_choice", "mc": "multiple_choice",
    "lm": "language_modeling", "next_token": "language_modeling", "generation": "generation", "winogender": "bias",
}
DEFAULT_TASKS = ("cola", "sst2", "rte", "wnli", "qnli", "stsb", "cranfield", "piqa", "lm", "next_token", "generation",
                 "winogender")
WITH_ARGUMENT = {"glue": "NAME (online)", "beir": "PATH", "mc": "PATH", "cls": "PATH"}  # kind -> its argument


def task_kinds() -> str:
    """Every task name and kind a --tasks list takes, for help texts and errors."""
    return ", ".join([*DEFAULT_TASKS, *(f"{kind}:{arg}" for kind, arg in WITH_ARGUMENT.items())])


@dataclass
class TaskSpec:
    name: str
    family: str
    settings: Any  # the family's settings dataclass
    check: Callable[[Path], None]
    run: Callable[[Subject, Path, int], dict]
    about: Callable[[Path], str] | None = None  # what the task does first that a user would not expect, said before

    def settings_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self.settings)))  # as stored (tuples become lists)


def _path_arg(name: str) -> Path:
    return Path(name.split(":", 1)[1]).expanduser()


def get_task(name: str) -> TaskSpec:
    """The spec for a task name (see the module docstring)."""
    kind = name.split(":", 1)[0]
    if kind not in FAMILIES or (":" in name) != (kind in WITH_ARGUMENT):
        raise ValueError(f"unknown task {name!r}; known: {task_kinds()}")
    family = FAMILIES[kind]
    if family == "classification":
        s = classification.ClassificationSettings()

        def check(d):
            glue_published.check(name, s)
            if kind == "glue":
                classification.check_hub(name.split(":", 1)[1])
            else:
                classification.load(name, d, s)

        def run(subj, d, seed):  # the protocol is read when the task runs: after any --set override
            return (glue_published.run if s.protocol == "published" else classification.run)(subj, name, d, s, seed)

        return TaskSpec(name, family, s, check, run)
    if family == "retrieval":
        s = retrieval.RetrievalSettings()

        def folder(d):
            return d / "retrieval" / "cranfield" / "beir" if kind == "cranfield" else _path_arg(name)

        return TaskSpec(name, family, s, lambda d: (retrieval.load_beir(folder(d)), pretrain_documents(d, False)),
                        lambda subj, d, seed: retrieval.run(subj, d, folder(d), s, seed),
                        about=lambda d: retrieval.about(s, d))
    if family == "multiple_choice":
        s = multiple_choice.MultipleChoiceSettings()

        def mc_path(d):
            return d / "piqa" / "validation.jsonl" if kind == "piqa" else _path_arg(name)

        return TaskSpec(name, family, s, lambda d: multiple_choice.load_items(mc_path(d)),
                        lambda subj, d, seed: multiple_choice.run(subj, mc_path(d), s))
    if kind == "next_token":
        s = language_modeling.NextTokenSettings()
        return TaskSpec(name, family, s, lambda d: pretrain_documents(d, True),
                        lambda subj, d, seed: language_modeling.run_next_token(subj, d, s))
    if family == "language_modeling":
        s = language_modeling.LanguageModelingSettings()
        return TaskSpec(name, family, s, lambda d: pretrain_documents(d, True),
                        lambda subj, d, seed: language_modeling.run_lm(subj, d, s, seed))
    if family == "generation":
        s = language_modeling.GenerationSettings()
        return TaskSpec(name, family, s, lambda d: pretrain_documents(d, True),
                        lambda subj, d, seed: language_modeling.run_generation(subj, d, s))
    s = bias.BiasSettings()
    return TaskSpec(name, family, s, lambda d: bias.load_items(d / "winogender"),
                    lambda subj, d, seed: bias.run(subj, d / "winogender", s))


def with_limit(spec: TaskSpec, limit: int) -> TaskSpec:
    """Cap every example-count setting (fields named *limit) at `limit`, for quick runs."""
    for f in dataclasses.fields(spec.settings):
        if f.name.endswith("limit"):
            setattr(spec.settings, f.name, min(getattr(spec.settings, f.name), limit))
    return spec


def override(spec: TaskSpec, key: str, value: str) -> None:
    """Set a settings field from text, e.g. key "finetune.lr", value "3e-4" (typed by the current value)."""
    obj: Any = spec.settings
    *parents, last = key.split(".")
    for p in parents:
        obj = getattr(obj, p, None)
    if obj is None or not dataclasses.is_dataclass(obj) or last not in {f.name for f in dataclasses.fields(obj)}:
        raise ValueError(f"{spec.name}: no setting {key!r}; settings: {spec.settings_dict()}")
    current = getattr(obj, last)
    if isinstance(current, bool):
        new: Any = value.lower() in ("1", "true", "yes")
    elif isinstance(current, tuple):
        new = tuple(v.strip() for v in value.split(","))
    else:
        new = type(current)(value)
    setattr(obj, last, new)


__all__ = ["DEFAULT_TASKS", "FAMILIES", "Subject", "TaskDataError", "TaskSpec", "get_task", "override", "with_limit"]
