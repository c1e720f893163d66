"""The controlled comparison: evaluation results in, findings with intervals and verdicts out (pure; no I/O).

`findings(results)` takes {role: results JSON of that model's final checkpoint} (roles: encoder, decoder,
encoder-continued, decoder-continued, encoder-from-decoder, encoder-from-decoder-mntp, decoder-from-encoder)
and tests the published suite's claims (CLAIMS) on whatever tasks both sides of a comparison were evaluated
on. Every figure comes with a 95% interval from a paired bootstrap over the test examples (queries for
retrieval; the same resampled indices for both models); fine-tuned rows average their seeds inside every
resample and report the spread over seeds beside it. RULE is the one verdict rule, fixed before any run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ettin.eval import metrics

RESAMPLES = 2000
LEVEL = 0.95
RULE = (
    "Fixed before the run and the same for every claim. For each task, the difference is the model the claim "
    "favours minus the other, with a 95% paired bootstrap interval over test examples (queries for retrieval, "
    f"{RESAMPLES:,} resamples). A model is above its baseline on a task when the lower end of the 95% interval of "
    "(model - baseline) is above 0. A task row is *not testable at this scale* when either model is not above "
    "its baseline; otherwise it is *reproduced* when the interval of the difference lies above 0, *reversed* "
    "when it lies below 0, and *inconclusive* when it contains 0. A claim is *not testable* when none of its "
    "tasks is testable, *reproduced* when at least one testable task is reproduced and none reversed, "
    "*reversed* in the mirror case, and *inconclusive* otherwise."
)
METRIC_FN: dict[str, Callable] = {"accuracy": metrics.accuracy, "mcc": metrics.matthews_corrcoef,
                                  "spearman": metrics.spearman}


@dataclass(frozen=True)
class Measure:
    """One task's figure: `task` in the results, `design` for classification (probe | finetune)."""

    task: str
    design: str | None = None
    gate: str | None = None  # a task without a baseline (bias) borrows this task's above-baseline test: for
    # WinoGender `lm`, the held-out loss of the model's own objective against the unigram model (each objective
    # scores the pronouns with its own likelihood)

    @property
    def label(self) -> str:
        return f"{self.task} ({self.design})" if self.design else self.task


@dataclass(frozen=True)
class Comparison:
    favoured: str  # the role the claim says is better
    other: str
    measures: tuple[Measure, ...]


@dataclass(frozen=True)
class Claim:
    id: int
    text: str
    published: str
    comparisons: tuple[Comparison, ...]


CLASSIFICATION = tuple(Measure(t, d) for t in ("sst2", "cola", "qnli", "rte", "stsb") for d in ("probe", "finetune"))
CLAIMS = (
    Claim(1, "Encoders beat decoders on classification",
          "MNLI: a 150M encoder (89.2) beats a 400M decoder (88.2); a 400M encoder beats a 1B decoder",
          (Comparison("encoder", "decoder", CLASSIFICATION),)),
    Claim(2, "Encoders beat decoders on retrieval after the same embedding fine-tuning",
          "MS MARCO dev nDCG@10: the encoder ahead of the same-size decoder at every size",
          (Comparison("encoder", "decoder", (Measure("cranfield"),)),)),
    Claim(3, "Decoders beat encoders on generative tasks",
          "generative average: decoders about 36 -> 59 against encoders 35 -> 51 from 17M to 1B",
          (Comparison("decoder", "encoder", (Measure("piqa"), Measure("next_token"), Measure("generation"))),)),
    Claim(4, "Cross-objective continued training trails the native model",
          "encoder-from-decoder trails native encoders on classification and retrieval; decoder-from-encoder is "
          "significantly worse than native decoders, more so at larger sizes (50B extra tokens)",
          (Comparison("encoder-continued", "encoder-from-decoder", (Measure("sst2", "probe"), Measure("lm"))),
           Comparison("encoder-continued", "encoder-from-decoder-mntp", (Measure("sst2", "probe"),)),
           Comparison("decoder-continued", "decoder-from-encoder", (Measure("lm"), Measure("next_token"))))),
    Claim(5, "Encoders choose neutral pronouns more often than decoders (WinoGender)",
          "encoders 60%+ neutral against 30%+ for decoders; both skew male, decoders slightly more",
          (Comparison("encoder", "decoder", (Measure("winogender", gate="lm"),)),)),
)


# ---- statistics over resampled examples --------------------------------------------------------------------
def _indices(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))  # (R, n)


def _interval(draws: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def statistic(task: dict, measure: Measure) -> tuple[Callable[[np.ndarray], float], Callable | None, int]:
    """(model statistic of example indices, baseline statistic or None, number of examples) for a task result."""
    ex = task.get("per_example")
    if not ex:
        raise ValueError(f"{measure.task}: the result has no per_example data (re-run `ettin eval` with this version)")
    if measure.design:  # classification: the metric over the resampled examples, averaged over seeds
        design = task["designs"].get(measure.design)
        if design is None:
            raise KeyError(measure.design)
        fn, gold = METRIC_FN[task["metric"]], np.asarray(ex["gold"])
        preds = [np.asarray(p) for p in design["per_example"]["pred"]]
        base = np.asarray(ex["baseline_pred"])
        return (lambda i: float(np.mean([fn(p[i], gold[i]) for p in preds])), lambda i: float(fn(base[i], gold[i])),
                len(gold))
    if "choice" in ex:  # bias: the neutral-pronoun rate
        neutral = np.asarray([c == "neutral" for c in ex["choice"]], dtype=np.float64)
        return lambda i: float(neutral[i].mean()), None, len(neutral)
    score = np.asarray(ex["score"], dtype=np.float64)
    base = np.asarray(ex["baseline"], dtype=np.float64) if "baseline" in ex else None
    return (lambda i: float(score[i].mean()), None if base is None else (lambda i: float(base[i].mean())),
            len(score))


def measured(task: dict, measure: Measure) -> str:
    """The name of what `statistic` measures on this task (not always the task's main metric)."""
    if measure.design:
        return task["metric"]
    if "choice" in task.get("per_example", {}):
        return "neutral_rate"
    return "loglik" if "loglik" in task else task["main"]


def _draws(fn: Callable, idx: np.ndarray) -> np.ndarray:
    return np.fromiter((fn(row) for row in idx), dtype=np.float64, count=len(idx))


def model_figure(task: dict, measure: Measure, seed: int = 0) -> dict:
    """One model on one task: value and interval, its baseline and whether it is above it."""
    return _figure(task, measure, seed)[0]


def _figure(task: dict, measure: Measure, seed: int) -> tuple[dict, np.ndarray]:
    """model_figure and the model's resampled statistic (a paired comparison reuses it for the difference)."""
    stat, base, n = statistic(task, measure)
    idx, full = _indices(n, seed), np.arange(n)
    draws = _draws(stat, idx)
    out = {"value": stat(full), "interval": _interval(draws), "n": n}
    if measure.design:
        d = task["designs"][measure.design]
        out["per_seed"] = d.get("per_seed")
        out["seed_std"] = d.get("seed_std")
    if base is not None:
        gap = draws - _draws(base, idx)
        out |= {"baseline": base(full), "baseline_name": task.get("baseline_name", "baseline"),
                "above_baseline": bool(_interval(gap)[0] > 0)}
    return out, draws


def task_row(favoured: dict, other: dict, measure: Measure, roles: tuple[str, str], seed: int = 0) -> dict:
    """A paired comparison of two models' results on one measure, with its verdict."""
    tf, to = favoured["tasks"][measure.task], other["tasks"][measure.task]
    n = statistic(tf, measure)[2]
    n_other = statistic(to, measure)[2]
    if n != n_other:
        raise ValueError(f"{measure.label}: {roles[0]} has {n} test examples and {roles[1]} {n_other}: "
                         "not a paired comparison")
    (a, draws_a), (b, draws_b) = _figure(tf, measure, seed), _figure(to, measure, seed)  # the same indices
    diff = draws_a - draws_b
    if measure.gate:
        a["above_baseline"] = model_figure(favoured["tasks"][measure.gate], Measure(measure.gate), seed)["above_baseline"]
        b["above_baseline"] = model_figure(other["tasks"][measure.gate], Measure(measure.gate), seed)["above_baseline"]
        a["baseline_name"] = b["baseline_name"] = f"{measure.gate} above its baseline"
    lo, hi = _interval(diff)
    if not (a.get("above_baseline") and b.get("above_baseline")):
        verdict = "not testable"
    else:
        verdict = "reproduced" if lo > 0 else "reversed" if hi < 0 else "inconclusive"
    return {"task": measure.task, "design": measure.design, "label": measure.label,
            "metric": measured(tf, measure), "favoured": roles[0], "other": roles[1],
            "models": {roles[0]: a, roles[1]: b}, "difference": a["value"] - b["value"],
            "interval": (lo, hi), "n": n, "verdict": verdict}


def claim_verdict(rows: list[dict]) -> str:
    testable = [r["verdict"] for r in rows if r["verdict"] != "not testable"]
    if not testable:
        return "not testable"
    if "reproduced" in testable and "reversed" not in testable:
        return "reproduced"
    if "reversed" in testable and "reproduced" not in testable:
        return "reversed"
    return "inconclusive"


def _has(result: dict | None, measure: Measure) -> bool:
    if result is None or measure.task not in result.get("tasks", {}):
        return False
    task = result["tasks"][measure.task]
    if measure.gate and measure.gate not in result["tasks"]:
        return False
    return measure.design is None or measure.design in task.get("designs", {})


def findings(results: dict[str, dict], seed: int = 0) -> dict:
    """{"rule", "claims": [{id, text, published, rows, verdict, missing}]} for every claim."""
    claims = []
    for claim in CLAIMS:
        rows, missing = [], []
        for comp in claim.comparisons:
            fav, oth = results.get(comp.favoured), results.get(comp.other)
            for m in comp.measures:
                if _has(fav, m) and _has(oth, m):
                    rows.append(task_row(fav, oth, m, (comp.favoured, comp.other), seed))
                else:
                    missing.append(f"{comp.favoured} vs {comp.other}: {m.label}")
        claims.append({"id": claim.id, "text": claim.text, "published": claim.published, "rows": rows,
                       "missing": missing, "verdict": claim_verdict(rows) if rows else "not run"})
    return {"rule": RULE, "level": LEVEL, "resamples": RESAMPLES, "claims": claims}


def bias_profile(result: dict) -> dict:
    """WinoGender rates of one model with intervals: male, female, neutral and the male skew (male - female)."""
    choice = np.asarray(result["tasks"]["winogender"]["per_example"]["choice"])
    idx = _indices(len(choice), 0)
    out = {}
    for name, fn in (("male", lambda c: np.mean(c == "male")), ("female", lambda c: np.mean(c == "female")),
                     ("neutral", lambda c: np.mean(c == "neutral")),
                     ("male_skew", lambda c: np.mean(c == "male") - np.mean(c == "female"))):
        out[name] = {"value": float(fn(choice)), "interval": _interval(np.array([fn(choice[i]) for i in idx]))}
    return out


def learned(results: dict[str, dict], min_gain: float = 0.15) -> list[dict]:
    """The learned-something bar, per model: SST-2 (best design) at least `min_gain` above the majority class,
    and the held-out loss below the unigram model's (lm), each with its interval."""
    rows = []
    for role, res in results.items():
        tasks = res.get("tasks", {})
        row: dict = {"role": role}
        if "sst2" in tasks:
            sst = tasks["sst2"]
            best = max(sst["designs"], key=lambda d: sst["designs"][d]["value"])
            fig = model_figure(sst, Measure("sst2", best))
            row["sst2"] = fig | {"design": best, "gain": fig["value"] - fig["baseline"],
                                 "passed": fig["value"] - fig["baseline"] >= min_gain}
        if "lm" in tasks and "per_example" in tasks["lm"]:
            fig = model_figure(tasks["lm"], Measure("lm"))
            row["lm"] = fig | {"passed": fig["above_baseline"]}
        rows.append(row)
    return rows
