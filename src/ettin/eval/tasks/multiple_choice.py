"""Zero-shot multiple choice (PIQA, or any lm-eval-style JSONL), scored per objective (reference 6.1):

  decoders  log p(choice | context) summed over the choice tokens (lm-eval `acc`), and divided by the
            choice's UTF-8 byte length (`acc_norm`)
  encoders  masked pseudo-log-likelihood of the choice tokens: each choice token is masked in turn with the
            context and the rest of the choice visible (Salazar et al. 2020), then the same acc / acc_norm

File formats (one JSON object a line): PIQA {goal, sol1, sol2, label}, rendered as lm-eval's piqa task
("Question: {goal}\\nAnswer:" + " " + choice); or generic {query | context, choices: [...], gold: int}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ettin.eval import metrics
from ettin.eval.tasks.common import Subject, TaskDataError, causal_loglik, masked_pll
from ettin.eval.tasks.data import read_jsonl


@dataclass
class MCItem:
    context: str
    choices: list[str]
    gold: int


@dataclass
class MultipleChoiceSettings:
    limit: int = 10**6  # items, the first N (all by default; encoder PLL costs one forward per choice token)
    delimiter: str = " "  # between context and choice, as lm-eval's target_delimiter


def load_items(path: Path) -> list[MCItem]:
    items = []
    for row in read_jsonl(path):
        where = f"{path}:{row['_line']}"
        if {"goal", "sol1", "sol2", "label"} <= row.keys():
            ctx, choices, gold = f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]], row["label"]
        elif ("query" in row or "context" in row) and "choices" in row and "gold" in row:
            ctx, choices, gold = row.get("query", row.get("context")), row["choices"], row["gold"]
        else:
            raise TaskDataError(f"{where}: expected PIQA fields (goal, sol1, sol2, label) or "
                                f"(query|context, choices, gold); got {sorted(k for k in row if k != '_line')}")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise TaskDataError(f"{where}: choices must be a list of >= 2 non-empty strings")
        if not isinstance(ctx, str):
            raise TaskDataError(f"{where}: the context must be a string")
        if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise TaskDataError(f"{where}: gold/label {gold!r} is not an index into {len(choices)} choices")
        items.append(MCItem(ctx, choices, gold))
    if not items:
        raise TaskDataError(f"{path}: no items")
    return items


def choice_logliks(subject: Subject, items: list[MCItem], delimiter: str) -> list[list[float]]:
    """Summed log-likelihood of every choice of every item, by the objective's own method."""
    flat, owner = [], []
    for k, item in enumerate(items):
        ctx = subject.encode(item.context)
        for choice in item.choices:
            flat.append((ctx, subject.encode(delimiter + choice)))
            owner.append(k)
    if subject.is_encoder:
        scores = masked_pll(subject, [(ctx, tgt, []) for ctx, tgt in flat])
    else:
        scores = causal_loglik(subject, flat)
    out: list[list[float]] = [[] for _ in items]
    for k, s in zip(owner, scores):
        out[k].append(float(np.sum(s)))
    return out


def run(subject: Subject, path: Path, settings: MultipleChoiceSettings) -> dict:
    items = load_items(path)[: settings.limit]
    lls = choice_logliks(subject, items, settings.delimiter)
    result = metrics.multiple_choice(lls, [it.choices for it in items], [it.gold for it in items])
    chance = [1 / len(it.choices) for it in items]
    hits = [float(metrics.multiple_choice([ll], [it.choices], [it.gold])["acc_norm"]) for ll, it in zip(lls, items)]
    method = "masked pseudo-log-likelihood" if subject.is_encoder else "log-likelihood"
    return {"main": "acc_norm", **result, "n": len(items), "chance": float(np.mean(chance)), "method": method,
            "baseline": float(np.mean(chance)), "baseline_name": "chance",
            "per_example": {"score": hits, "baseline": chance}}
