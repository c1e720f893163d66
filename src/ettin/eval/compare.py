"""The controlled comparison: evaluation results in, findings with intervals and verdicts out (pure; no I/O).

`findings(results)` takes {role: {pre-training seed: results JSON of that seed's final checkpoint}} (roles:
encoder, decoder, encoder-continued, decoder-continued, encoder-from-decoder, encoder-from-decoder-mntp,
decoder-from-encoder; a role's single results JSON counts as seed 0) and tests the published suite's claims
(CLAIMS) on whatever tasks both sides of a comparison were evaluated on, pairing the two roles on the seeds both
have. Every figure comes with a 95% Multi-Bootstrap interval (Sellam et al., "The MultiBERTs", ICLR 2022):
each resample draws pre-training seeds and test examples (queries for retrieval) together, the same seeds and
the same example indices for both models; with one seed it is the paired bootstrap over test examples. Beside
each difference: the spread over seeds and the smallest difference the design detects with 80% power.
Fine-tuned rows average their fine-tuning seeds inside every resample. RULE is the one verdict rule, fixed
before any run; docs/statistics.md describes the interval and its measured coverage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ettin.eval import metrics

RESAMPLES = 2000
LEVEL = 0.95
POWER = 0.8
DETECTABLE_SE = NormalDist().inv_cdf(1 - (1 - LEVEL) / 2) + NormalDist().inv_cdf(POWER)  # about 2.80
RULE = (
    "Fixed before the run and the same for every claim. For each task, the difference is the model the claim "
    "favours minus the other, averaged over pre-training seeds, with a 95% Multi-Bootstrap interval over "
    "pre-training seeds and test examples, paired by seed and by example (queries for retrieval), "
    f"{RESAMPLES:,} resamples; with one seed it covers test examples only and the verdict is one run's. A model "
    "is above its baseline on a task when the lower end of the 95% interval of (model - baseline), over the same "
    "resampled seeds and examples, is above 0. A task row is *not testable at this scale* when either model is "
    "not above its baseline; otherwise it is *reproduced* when the interval of the difference lies above 0 and "
    "every pre-training seed's own difference is above 0, *reversed* in the mirror case, and *inconclusive* "
    "otherwise (the interval contains 0, or the seeds disagree in sign: with few seeds the interval alone "
    "undercovers, see docs/statistics.md). A claim is *not testable* when none "
    "of its tasks is testable, *reproduced* when at least one testable task is reproduced and none reversed, "
    "*reversed* in the mirror case, and *inconclusive* otherwise. Beside each difference, the detectable "
    f"difference is the smallest true difference this design finds with {POWER:.0%} power: "
    f"(z_0.975 + z_0.8) x the Multi-Bootstrap standard error, about {DETECTABLE_SE:.2f} standard errors. Tasks "
    "outside the claims get the same intervals but no verdict."
)
ONE_RUN_NOTE = (
    "Every model here has one pre-training run: the intervals cover test examples only, not the pre-training "
    "run's own randomness, so every verdict is one run's."
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


@dataclass(frozen=True)
class Published:
    """A claim's published effect at 17M, in the units of the rows whose measured metric is in `metrics`."""

    effect: float
    metrics: tuple[str, ...]
    source: str


PUBLISHED_EFFECTS: dict[int, Published] = {  # claim id -> effect; claim 4: the paper gives no numbers
    1: Published(0.019, ("accuracy",), "MNLI accuracy at 17M: encoder 79.5 vs decoder 77.6 (Ettin paper; read "
                                       "from its figure, to about 0.3 points)"),
    2: Published(0.019, ("ndcg@10", "ndcg_at_10"), "MS MARCO dev nDCG@10 at 17M: encoder 31.0 vs decoder 29.1 "
                                                   "(Ettin paper)"),
    3: Published(0.014, ("acc_norm", "acc", "accuracy"), "generative-task average at 17M: decoder 36.5 vs "
                                                         "encoder 35.1 (Ettin paper)"),
    5: Published(0.30, ("neutral_rate",), "WinoGender neutral-pronoun rate: encoders 60%+ vs decoders 30%+ "
                                          "(the Ettin announcement)"),
}
_NAMED = {m.task for c in CLAIMS for comp in c.comparisons for m in comp.measures} | {
    m.gate for c in CLAIMS for comp in c.comparisons for m in comp.measures if m.gate}


# ---- the seed dimension ------------------------------------------------------------------------------------
def _seeds(value: dict) -> dict[int, dict]:
    """One role's {pre-training seed: results}, sorted by seed; a single results dict (it has "tasks") is seed 0."""
    if "tasks" in value:
        return {0: value}
    return dict(sorted((int(s), r) for s, r in value.items()))


def by_seed(results: dict) -> dict[str, dict[int, dict]]:
    """{role: {pre-training seed: results}} from {role: that, or one results dict (seed 0)}."""
    return {role: _seeds(value) for role, value in results.items()}


def _task_seeds(task: dict) -> dict[int, dict]:
    """{seed: task dict} from that or a single task dict (seed 0); seeds may be digit strings (JSON)."""
    if task and all(isinstance(k, int) or (isinstance(k, str) and k.isdigit()) for k in task):
        return dict(sorted((int(s), t) for s, t in task.items()))
    return {0: task}


# ---- statistics over resampled seeds and examples ----------------------------------------------------------
def _indices(n: int, seed: int, resamples: int = RESAMPLES) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # (R, n) example indices


def _seed_indices(k: int, seed: int, resamples: int = RESAMPLES) -> np.ndarray:
    return np.random.default_rng([seed, 1]).integers(0, k, size=(resamples, k))  # (R, K) positions in the seeds


def _interval(draws: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def _seed_mean(x: np.ndarray) -> np.ndarray:
    """The mean over the last axis, as the first value plus the mean deviation from it: exactly that value when
    all are equal (identical seeds reproduce the one-seed figures bit for bit)."""
    ref = x[..., :1]
    return (ref + (x - ref).mean(axis=-1, keepdims=True))[..., 0]


def _over_seeds(per_seed: np.ndarray, sidx: np.ndarray) -> np.ndarray:
    """(K, R) draws of each seed's statistic -> (R,) Multi-Bootstrap draws: draw b averages the seeds sidx[b]."""
    return _seed_mean(per_seed[sidx, np.arange(len(sidx))[:, None]])


def _sd(values: np.ndarray) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


@dataclass(frozen=True)
class _Stat:
    """One seed's statistic of a measure as a function of example indices, and its baseline's; where the
    statistic is a mean of per-example values, those values (rows averaged) for the vectorised path."""

    model: Callable[[np.ndarray], float]
    baseline: Callable[[np.ndarray], float] | None
    n: int
    rows: np.ndarray | None = None  # (F, n): the statistic is the mean over rows of the mean over examples
    base_rows: np.ndarray | None = None


def _stat(task: dict, measure: Measure) -> _Stat:
    ex = task.get("per_example")
    if not ex:
        raise ValueError(f"{measure.task}: the result has no per_example data (re-run `ettin eval` with this version)")
    if measure.design:  # classification: the metric over the resampled examples, averaged over fine-tuning seeds
        design = task["designs"].get(measure.design)
        if design is None:
            raise KeyError(measure.design)
        fn, gold = METRIC_FN[task["metric"]], np.asarray(ex["gold"])
        preds = [np.asarray(p) for p in design["per_example"]["pred"]]
        base = np.asarray(ex["baseline_pred"])
        rows = base_rows = None
        if task["metric"] == "accuracy" and all(len(p) == len(gold) for p in [*preds, base]):
            rows = np.stack([p == gold for p in preds]).astype(np.float64)
            base_rows = (base == gold).astype(np.float64)[None]
        return _Stat(lambda i: float(np.mean([fn(p[i], gold[i]) for p in preds])),
                     lambda i: float(fn(base[i], gold[i])), len(gold), rows, base_rows)
    if "choice" in ex:  # bias: the neutral-pronoun rate
        neutral = np.asarray([c == "neutral" for c in ex["choice"]], dtype=np.float64)
        return _Stat(lambda i: float(neutral[i].mean()), None, len(neutral), neutral[None])
    score = np.asarray(ex["score"], dtype=np.float64)
    base = np.asarray(ex["baseline"], dtype=np.float64) if "baseline" in ex else None
    return _Stat(lambda i: float(score[i].mean()), None if base is None else (lambda i: float(base[i].mean())),
                 len(score), score[None], None if base is None else base[None])


def statistic(task: dict, measure: Measure) -> tuple[Callable[[np.ndarray], float], Callable | None, int]:
    """(model statistic of example indices, baseline statistic or None, number of examples) for a task result."""
    s = _stat(task, measure)
    return s.model, s.baseline, s.n


def measured(task: dict, measure: Measure) -> str:
    """The name of what `statistic` measures on this task (not always the task's main metric)."""
    if measure.design:
        return task["metric"]
    if "choice" in task.get("per_example", {}):
        return "neutral_rate"
    return "loglik" if "loglik" in task else task["main"]


def _draws(fn: Callable, idx: np.ndarray) -> np.ndarray:
    return np.fromiter((fn(row) for row in idx), dtype=np.float64, count=len(idx))


def _seed_draws(s: _Stat, idx: np.ndarray, baseline: bool = False) -> np.ndarray:
    """The statistic at each row of example indices (R, n) -> (R,)."""
    rows = s.base_rows if baseline else s.rows
    if rows is None:
        return _draws(s.baseline if baseline else s.model, idx)
    per_row = [r[idx].mean(axis=1) for r in rows]
    return per_row[0] if len(per_row) == 1 else np.mean(per_row, axis=0)


def _stats(tasks: list[dict], measure: Measure) -> tuple[list[_Stat], int]:
    """Each seed's statistic and the number of test examples, which every seed must share (paired by example)."""
    stats = [_stat(t, measure) for t in tasks]
    sizes = sorted({s.n for s in stats})
    if len(sizes) > 1:
        raise ValueError(f"{measure.label}: the pre-training seeds have {sizes} test examples: not the same test "
                         "set, not a paired comparison")
    return stats, sizes[0]


def _figure(tasks: list[dict], stats: list[_Stat], measure: Measure, idx: np.ndarray,
            sidx: np.ndarray) -> tuple[dict, np.ndarray]:
    """model_figure over the given seeds and the model's Multi-Bootstrap draws (a comparison reuses them)."""
    n, full = stats[0].n, np.arange(stats[0].n)[None]
    values = np.array([_seed_draws(s, full)[0] for s in stats])
    draws = _over_seeds(np.stack([_seed_draws(s, idx) for s in stats]), sidx)
    out = {"value": float(_seed_mean(values)), "interval": _interval(draws), "n": n, "seeds": len(stats),
           "per_seed": values.tolist(), "seed_sd": _sd(values)}
    if measure.design:
        designs = [t["designs"][measure.design] for t in tasks]
        if any("per_seed" in d for d in designs):
            sds = [d.get("seed_std") for d in designs]
            out["finetune_seeds"] = [d.get("per_seed") for d in designs]
            out["finetune_sd"] = float(np.mean(sds)) if None not in sds else None
    if all(s.baseline is not None for s in stats):
        base = np.array([_seed_draws(s, full, baseline=True)[0] for s in stats])
        gap = draws - _over_seeds(np.stack([_seed_draws(s, idx, baseline=True) for s in stats]), sidx)
        out |= {"baseline": float(_seed_mean(base)), "baseline_name": tasks[0].get("baseline_name", "baseline"),
                "above_baseline": bool(_interval(gap)[0] > 0)}
    return out, draws


def _model_figure(tasks: list[dict], measure: Measure, seed: int, resamples: int) -> dict:
    stats, n = _stats(tasks, measure)
    return _figure(tasks, stats, measure, _indices(n, seed, resamples), _seed_indices(len(stats), seed, resamples))[0]


def model_figure(task_by_seed: dict, measure: Measure, seed: int = 0) -> dict:
    """One model on one measure over its pre-training seeds ({seed: task dict}, or one task dict as seed 0):
    value (mean over seeds) and Multi-Bootstrap interval, per-seed values, its baseline and whether it is above
    it."""
    return _model_figure(list(_task_seeds(task_by_seed).values()), measure, seed, RESAMPLES)


# ---- comparisons -------------------------------------------------------------------------------------------
def _has(result: dict | None, measure: Measure) -> bool:
    if result is None or measure.task not in result.get("tasks", {}):
        return False
    task = result["tasks"][measure.task]
    if measure.gate and measure.gate not in result["tasks"]:
        return False
    return measure.design is None or measure.design in task.get("designs", {})


def _common(fav: dict[int, dict], oth: dict[int, dict], measure: Measure) -> list[int]:
    """The pre-training seeds at which both roles have the measure."""
    return [s for s in fav if s in oth and _has(fav[s], measure) and _has(oth[s], measure)]


def _published(claim: int | None, metric: str) -> Published | None:
    pub = PUBLISHED_EFFECTS.get(claim)
    return pub if pub is not None and metric in pub.metrics else None


def _row(fav: dict[int, dict], oth: dict[int, dict], measure: Measure, roles: tuple[str, str], seed: int = 0,
         resamples: int = RESAMPLES, claim: int | None = None) -> dict:
    """task_row on the seeds both roles have; `claim` sets the published effect."""
    seeds = _common(fav, oth, measure)
    if not seeds:
        raise ValueError(f"{measure.label}: {roles[0]} and {roles[1]} have no pre-training seed in common")
    ta, tb = [fav[s]["tasks"][measure.task] for s in seeds], [oth[s]["tasks"][measure.task] for s in seeds]
    (sa, n), (sb, n_other) = _stats(ta, measure), _stats(tb, measure)
    if n != n_other:
        raise ValueError(f"{measure.label}: {roles[0]} has {n} test examples and {roles[1]} {n_other}: "
                         "not a paired comparison")
    idx, sidx = _indices(n, seed, resamples), _seed_indices(len(seeds), seed, resamples)  # shared: paired
    (a, draws_a), (b, draws_b) = _figure(ta, sa, measure, idx, sidx), _figure(tb, sb, measure, idx, sidx)
    diff = draws_a - draws_b
    if measure.gate:
        gate = Measure(measure.gate)
        for fig, res in ((a, fav), (b, oth)):
            fig["above_baseline"] = _model_figure([res[s]["tasks"][gate.task] for s in seeds], gate, seed,
                                                  resamples).get("above_baseline", False)
            fig["baseline_name"] = f"{measure.gate} above its baseline"
    lo, hi = _interval(diff)
    per_seed = np.asarray(a["per_seed"]) - np.asarray(b["per_seed"])
    if not (a.get("above_baseline") and b.get("above_baseline")):
        verdict = "not testable"
    elif lo > 0 and bool(np.all(per_seed > 0)):
        verdict = "reproduced"
    elif hi < 0 and bool(np.all(per_seed < 0)):
        verdict = "reversed"
    else:  # the interval contains 0, or another seed would flip the sign
        verdict = "inconclusive"
    se = float(np.std(diff, ddof=1))
    metric = measured(ta[0], measure)
    pub = _published(claim, metric)
    detectable = DETECTABLE_SE * se
    return {"task": measure.task, "design": measure.design, "label": measure.label, "metric": metric,
            "favoured": roles[0], "other": roles[1], "models": {roles[0]: a, roles[1]: b},
            "difference": float(_seed_mean(per_seed)), "interval": (lo, hi), "n": n, "seeds": len(seeds),
            "seed_list": seeds, "per_seed_difference": per_seed.tolist(), "seed_sd": _sd(per_seed), "se": se,
            "detectable": detectable, "published_effect": pub.effect if pub else None,
            "published_source": pub.source if pub else None,
            "could_detect": bool(detectable <= abs(pub.effect)) if pub else None, "verdict": verdict}


def task_row(favoured: dict, other: dict, measure: Measure, roles: tuple[str, str], seed: int = 0,
             resamples: int = RESAMPLES) -> dict:
    """A paired comparison of two models (each {seed: results} or one results dict) on one measure, over the
    pre-training seeds both have, with its verdict."""
    return _row(_seeds(favoured), _seeds(other), measure, roles, seed, resamples)


def claim_verdict(rows: list[dict]) -> str:
    testable = [r["verdict"] for r in rows if r["verdict"] != "not testable"]
    if not testable:
        return "not testable"
    if "reproduced" in testable and "reversed" not in testable:
        return "reproduced"
    if "reversed" in testable and "reproduced" not in testable:
        return "reversed"
    return "inconclusive"


def has_examples(result: dict, measure: Measure) -> bool:
    """The result holds the measure with per-example data (and its gate task's), so a paired figure can be drawn."""
    if not _has(result, measure):
        return False
    task = result["tasks"][measure.task]
    design = task.get("designs", {}).get(measure.design) if measure.design else None
    return ("per_example" in task and (measure.design is None or "per_example" in (design or {}))
            and (not measure.gate or "per_example" in result["tasks"][measure.gate]))


def _task_rows(runs: dict[str, dict[int, dict]], seed: int) -> tuple[list[dict], list[dict]]:
    """Encoder against decoder on every task both have that the claims do not name (no verdict), and the tasks
    whose figure could not be computed, with the reason. `lm` is named by the claims and is each objective's
    own likelihood, so it is compared only between models of one objective (claim 4)."""
    enc, dec = runs.get("encoder", {}), runs.get("decoder", {})
    rows, skipped = [], []
    names = list(dict.fromkeys(name for r in enc.values() for name in r.get("tasks", {})))
    for name in names:
        if name in _NAMED:
            continue
        designs = dict.fromkeys(d for r in enc.values() for d in r["tasks"].get(name, {}).get("designs") or [])
        for m in [Measure(name, d) for d in designs] or [Measure(name)]:
            fav, oth = ({s: r for s, r in side.items() if has_examples(r, m)} for side in (enc, dec))
            if not fav or not oth:
                continue
            try:
                rows.append(_row(fav, oth, m, ("encoder", "decoder"), seed) | {"verdict": None})
            except (KeyError, ValueError) as e:
                skipped.append({"task": name, "design": m.design, "label": m.label,
                                "reason": f"{type(e).__name__}: {e}"})
    return rows, skipped


def findings(results: dict[str, dict], seed: int = 0) -> dict:
    """{"rule", "level", "resamples", "power", "seeds": {role: [seeds]}, "one_run", "claims": [{id, text,
    published, rows, missing, verdict}], "tasks": [rows without verdict], "tasks_skipped": [{task, design,
    label, reason}]} from {role: {pre-training seed: results}}."""
    runs = by_seed(results)
    claims = []
    for claim in CLAIMS:
        rows, missing = [], []
        for comp in claim.comparisons:
            fav, oth = runs.get(comp.favoured, {}), runs.get(comp.other, {})
            for m in comp.measures:
                where = f"{comp.favoured} vs {comp.other}: {m.label}"
                if not (any(_has(r, m) for r in fav.values()) and any(_has(r, m) for r in oth.values())):
                    missing.append(where)
                elif not _common(fav, oth, m):
                    missing.append(f"{where} (no pre-training seed in common)")
                else:
                    rows.append(_row(fav, oth, m, (comp.favoured, comp.other), seed, claim=claim.id))
        claims.append({"id": claim.id, "text": claim.text, "published": claim.published, "rows": rows,
                       "missing": missing, "verdict": claim_verdict(rows) if rows else "not run"})
    tasks, skipped = _task_rows(runs, seed)
    compared = [r for c in claims for r in c["rows"]] + tasks
    one_run = all(r["seeds"] == 1 for r in compared) if compared else all(len(s) <= 1 for s in runs.values())
    return {"rule": RULE, "level": LEVEL, "resamples": RESAMPLES, "power": POWER,
            "seeds": {role: sorted(s) for role, s in runs.items()}, "one_run": one_run, "claims": claims,
            "tasks": tasks, "tasks_skipped": skipped}


# ---- per-model profiles ------------------------------------------------------------------------------------
def bias_profile(result_by_seed: dict) -> dict:
    """WinoGender rates of one model ({seed: results} or one results dict), averaged over its pre-training seeds,
    with Multi-Bootstrap intervals: male, female, neutral and the male skew (male - female)."""
    runs = _seeds(result_by_seed)
    choices = [np.asarray(r["tasks"]["winogender"]["per_example"]["choice"]) for r in runs.values()]
    if len({len(c) for c in choices}) > 1:
        raise ValueError("winogender: the pre-training seeds have different test sets")
    n, k = len(choices[0]), len(choices)
    idx, sidx = _indices(n, 0), _seed_indices(k, 0)
    rates = {}
    for g in ("male", "female", "neutral"):
        rows = [(c == g).astype(np.float64) for c in choices]
        rates[g] = (np.array([r.mean() for r in rows]), np.stack([r[idx].mean(axis=1) for r in rows]))
    rates["male_skew"] = (rates["male"][0] - rates["female"][0], rates["male"][1] - rates["female"][1])
    return {name: {"value": float(_seed_mean(values)), "interval": _interval(_over_seeds(draws, sidx)), "seeds": k}
            for name, (values, draws) in rates.items()}


def learned(results: dict[str, dict], min_gain: float = 0.15) -> list[dict]:
    """The learned-something bar, per model over its pre-training seeds: SST-2 (best design by its mean over
    seeds) at least `min_gain` above the majority class, and the held-out loss below the unigram model's (lm),
    each with its interval."""
    rows = []
    for role, runs in by_seed(results).items():
        row: dict = {"role": role, "seeds": len(runs)}
        sst = [r["tasks"]["sst2"] for r in runs.values() if "sst2" in r.get("tasks", {})]
        designs = [d for d in sst[0]["designs"] if all(d in t["designs"] for t in sst)] if sst else []
        if designs:
            best = max(designs, key=lambda d: np.mean([t["designs"][d]["value"] for t in sst]))
            fig = _model_figure(sst, Measure("sst2", best), 0, RESAMPLES)
            row["sst2"] = fig | {"design": best, "gain": fig["value"] - fig["baseline"],
                                 "passed": fig["value"] - fig["baseline"] >= min_gain}
        lm = [r["tasks"]["lm"] for r in runs.values() if "per_example" in r.get("tasks", {}).get("lm", {})]
        if lm:
            fig = _model_figure(lm, Measure("lm"), 0, RESAMPLES)
            row["lm"] = fig | {"passed": fig["above_baseline"]}
        rows.append(row)
    return rows
