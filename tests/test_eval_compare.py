"""The comparison module: Multi-Bootstrap intervals over pre-training seeds and test examples (paired by seed and
by example), the above-baseline gate, the one verdict rule, the detectable difference, rows for tasks outside the
claims and the claims over training tokens. Run as a script it measures the interval's coverage
(docs/statistics.md)."""

import sys

import numpy as np
import pytest
from scipy.stats import norm

from ettin.eval import compare, curves, metrics
from ettin.eval.compare import Measure


def _cls(acc: float, n: int = 400, seeds: int = 3, seed: int = 0) -> dict:
    """A classification result whose predictions are right with probability `acc` (majority class 0.5)."""
    rng = np.random.default_rng(seed)
    gold = np.arange(n) % 2
    preds = [np.where(rng.random(n) < acc, gold, 1 - gold).tolist() for _ in range(seeds)]
    return {"metric": "accuracy", "main": "accuracy_probe",
            "designs": {"probe": {"value": acc, "per_example": {"pred": preds[:1]}},
                        "finetune": {"value": acc, "per_seed": [acc] * seeds, "per_example": {"pred": preds}}},
            "per_example": {"gold": gold.tolist(), "baseline_pred": [0] * n}, "baseline_name": "majority"}


def _scores(mean: float, base: float, n: int = 500, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"main": "loglik", "per_example": {"score": (mean + rng.normal(0, 0.5, n)).tolist(),
                                              "baseline": (base + rng.normal(0, 0.5, n)).tolist()}}


PROBE = Measure("sst2", "probe")


def _row(a: dict, b: dict, measure: Measure = PROBE) -> dict:
    return compare.task_row({"tasks": {"sst2": a}}, {"tasks": {"sst2": b}}, measure, ("encoder", "decoder"))


def test_verdicts_follow_the_rule():
    assert _row(_cls(0.85), _cls(0.70, seed=1))["verdict"] == "reproduced"
    assert _row(_cls(0.70), _cls(0.85, seed=1))["verdict"] == "reversed"
    assert _row(_cls(0.80), _cls(0.80, seed=1))["verdict"] == "inconclusive"
    row = _row(_cls(0.85), _cls(0.50, seed=1))  # the decoder at chance: nothing to compare
    assert row["verdict"] == "not testable"
    assert row["models"]["decoder"]["above_baseline"] is False and row["models"]["encoder"]["above_baseline"]


def test_interval_contains_the_difference_and_seeds_are_reported():
    row = _row(_cls(0.85), _cls(0.70, seed=1), Measure("sst2", "finetune"))
    lo, hi = row["interval"]
    assert lo < row["difference"] < hi and 0.05 < row["difference"] < 0.25
    assert row["models"]["encoder"]["finetune_seeds"] == [[0.85] * 3]  # fine-tuning seeds of pre-training seed 0
    assert row["models"]["encoder"]["per_seed"] == [row["models"]["encoder"]["value"]]  # pre-training seeds
    flo, fhi = row["models"]["encoder"]["interval"]
    assert flo < row["models"]["encoder"]["value"] < fhi


def test_mean_tasks_and_gate():
    enc, dec = _scores(-4.0, -5.0), _scores(-3.5, -5.0, seed=1)
    row = compare.task_row({"tasks": {"next_token": enc}}, {"tasks": {"next_token": dec}}, Measure("next_token"),
                           ("decoder", "encoder"))
    assert row["verdict"] == "reversed"  # the favoured (first) model is worse
    flat = _scores(-5.0, -5.0, seed=2)  # no better than its baseline
    row = compare.task_row({"tasks": {"next_token": flat}}, {"tasks": {"next_token": dec}}, Measure("next_token"),
                           ("decoder", "encoder"))
    assert row["verdict"] == "not testable"


def test_unpaired_results_are_refused():
    with pytest.raises(ValueError, match="not a paired comparison"):
        _row(_cls(0.8, n=400), _cls(0.8, n=300))
    with pytest.raises(ValueError, match="per_example"):
        _row({"metric": "accuracy", "designs": {"probe": {}}}, _cls(0.8))


def test_claim_verdicts_and_findings():
    assert compare.claim_verdict([{"verdict": "not testable"}]) == "not testable"
    assert compare.claim_verdict([{"verdict": "reproduced"}, {"verdict": "inconclusive"}]) == "reproduced"
    assert compare.claim_verdict([{"verdict": "reproduced"}, {"verdict": "reversed"}]) == "inconclusive"
    assert compare.claim_verdict([{"verdict": "reversed"}, {"verdict": "not testable"}]) == "reversed"
    results = {"encoder": {"tasks": {"sst2": _cls(0.85)}}, "decoder": {"tasks": {"sst2": _cls(0.7, seed=1)}}}
    out = compare.findings(results)
    assert out["rule"] == compare.RULE and [c["id"] for c in out["claims"]] == [1, 2, 3, 4, 5]
    first = out["claims"][0]
    assert first["verdict"] == "reproduced" and {r["label"] for r in first["rows"]} == {"sst2 (probe)", "sst2 (finetune)"}
    assert "encoder vs decoder: cola (probe)" in first["missing"]
    assert out["claims"][3]["verdict"] == "not run"  # no cross-objective models


def test_learned_bar():
    rows = compare.learned({"encoder": {"tasks": {"sst2": _cls(0.8)}}, "decoder": {"tasks": {"sst2": _cls(0.6)}}})
    assert rows[0]["sst2"]["passed"] and not rows[1]["sst2"]["passed"]


# ---- the seed dimension (Multi-Bootstrap) ------------------------------------------------------------------
def _mean_task(score, baseline=None, main: str = "ndcg@10") -> dict:
    ex = {"score": np.asarray(score, dtype=np.float64)}
    if baseline is not None:
        ex["baseline"] = np.asarray(baseline, dtype=np.float64)
    return {"main": main, "per_example": ex, "baseline_name": "random ranking"}


def _paired_seeds(diffs, n: int = 2000, noise: float = 0.05, seed: int = 0) -> tuple[dict, dict]:
    """{seed: results} of an encoder and a decoder on one mean-score task whose per-seed difference is diffs[s]
    (plus small per-example noise); both well above their baselines; the examples' difficulty is shared."""
    rng = np.random.default_rng(seed)
    hard = rng.normal(0.5, 0.2, n)
    enc, dec = {}, {}
    for s, d in enumerate(diffs):
        enc[s] = {"tasks": {"beir:x": _mean_task(hard + d + rng.normal(0, noise, n), hard - 0.4)}}
        dec[s] = {"tasks": {"beir:x": _mean_task(hard + rng.normal(0, noise, n), hard - 0.4)}}
    return enc, dec


BEIR = Measure("beir:x")
ROLES = ("encoder", "decoder")


def test_seed_variance_widens_the_interval_past_zero():
    enc, dec = _paired_seeds([0.15, -0.12, 0.10])
    row = compare.task_row(enc, dec, BEIR, ROLES)
    lo, hi = row["interval"]
    assert row["seeds"] == 3 and row["seed_list"] == [0, 1, 2] and lo < 0 < hi
    assert row["per_seed_difference"] == pytest.approx([0.15, -0.12, 0.10], abs=0.01)
    assert row["difference"] == pytest.approx(np.mean(row["per_seed_difference"]))
    assert row["seed_sd"] == pytest.approx(np.std(row["per_seed_difference"], ddof=1))
    for s in range(3):  # any one seed alone: examples only, an interval far from 0
        one = compare.task_row({s: enc[s]}, {s: dec[s]}, BEIR, ROLES)
        assert one["seeds"] == 1 and one["seed_sd"] is None and not one["interval"][0] < 0 < one["interval"][1]
        assert one["interval"][1] - one["interval"][0] < (hi - lo) / 5


def test_one_seed_is_todays_paired_bootstrap_and_identical_seeds_change_nothing():
    enc, dec = _paired_seeds([0.03], n=300)
    a = np.asarray(enc[0]["tasks"]["beir:x"]["per_example"]["score"])
    b = np.asarray(dec[0]["tasks"]["beir:x"]["per_example"]["score"])
    idx = np.random.default_rng(0).integers(0, 300, size=(compare.RESAMPLES, 300))  # the paired bootstrap
    expected = np.array([float(a[i].mean()) - float(b[i].mean()) for i in idx])
    lo, hi = np.quantile(expected, [0.025, 0.975])
    one = compare.task_row(enc, dec, BEIR, ROLES)
    assert one["interval"] == (lo, hi) and one["difference"] == a.mean() - b.mean()
    assert one["se"] == np.std(expected, ddof=1)
    assert one["models"]["encoder"]["interval"] == tuple(np.quantile([float(a[i].mean()) for i in idx], [0.025, 0.975]))
    same = compare.task_row({s: enc[0] for s in range(3)}, {s: dec[0] for s in range(3)}, BEIR, ROLES)
    assert same["interval"] == one["interval"] and same["difference"] == one["difference"]
    assert same["models"]["encoder"]["interval"] == one["models"]["encoder"]["interval"] and same["seeds"] == 3
    assert same["seed_sd"] == 0.0 and same["models"]["encoder"]["seed_sd"] == 0.0


def test_one_seed_classification_is_todays_statistic():
    a, b = _cls(0.8), _cls(0.7, seed=1)
    row = _row(a, b, Measure("sst2", "finetune"))
    gold = np.asarray(a["per_example"]["gold"])
    pa, pb = ([np.asarray(p) for p in t["designs"]["finetune"]["per_example"]["pred"]] for t in (a, b))
    idx = np.random.default_rng(0).integers(0, len(gold), size=(compare.RESAMPLES, len(gold)))
    expected = np.array([float(np.mean([metrics.accuracy(p[i], gold[i]) for p in pa]))
                         - float(np.mean([metrics.accuracy(p[i], gold[i]) for p in pb])) for i in idx])
    assert row["interval"] == tuple(np.quantile(expected, [0.025, 0.975]))


def test_detectable_difference():
    def row(n):
        rng = np.random.default_rng(n)
        return compare.task_row({"tasks": {"beir:x": _mean_task(rng.normal(0.5, 0.3, n))}},
                                {"tasks": {"beir:x": _mean_task(rng.normal(0.5, 0.3, n))}}, BEIR, ROLES)
    small, large = row(500), row(2000)
    assert small["detectable"] == pytest.approx((norm.ppf(0.975) + norm.ppf(0.8)) * small["se"], rel=1e-12)
    assert small["detectable"] / large["detectable"] == pytest.approx(2.0, rel=0.1)  # 1/sqrt(n)
    assert small["published_effect"] is None and small["could_detect"] is None


def _coverage(k: int, sigma_seed: float, sigma_ex: float, n: int = 300, replicates: int = 300,
              resamples: int = 400, delta: float = 0.1, seed: int = 0) -> float:
    """The share of replicates whose interval of the difference covers `delta`, on a two-level model: under
    pre-training seed s, example i's difference is delta + u_s + v_i + w_si, u ~ N(0, sigma_seed^2) (the seed),
    v ~ N(0, sigma_ex^2) (the example, the same under every seed: one test set) and w ~ N(0, sigma_ex^2) (the
    example under that seed); both models share each example's difficulty (paired away)."""
    rng, covered = np.random.default_rng(seed), 0
    for r in range(replicates):
        hard, v = rng.normal(0, 1, n), rng.normal(0, sigma_ex, n)
        u, w = rng.normal(0, sigma_seed, k), rng.normal(0, sigma_ex, (k, n))
        enc = {s: {"tasks": {"beir:x": _mean_task(hard + delta + u[s] + v + w[s])}} for s in range(k)}
        dec = {s: {"tasks": {"beir:x": _mean_task(hard)}} for s in range(k)}
        lo, hi = compare._row(enc, dec, BEIR, ROLES, seed=r, resamples=resamples)["interval"]
        covered += lo <= delta <= hi
    return covered / replicates


def _every_seed(k: int, seed: int, resamples: int = compare.RESAMPLES) -> np.ndarray:
    """Seed indices that keep every seed in every resample: the seeds ignored (examples only)."""
    return np.tile(np.arange(k), (resamples, 1))


def test_coverage_where_seeds_dominate(monkeypatch):
    """Measured once with `.venv/bin/python tests/test_eval_compare.py 1000` (1,000 replicates, 2,000 resamples,
    n = 300; a standard error of about 0.01 each):

        seeds dominate    (sigma_seed 0.05,  sigma_ex 0.1): K = 3: 0.770 (seeds ignored 0.301); K = 10: 0.908 (0.523)
        examples dominate (sigma_seed 0.002, sigma_ex 0.5): K = 3: 0.972 (seeds ignored 0.950); K = 10: 0.955 (0.941)

    The percentile interval undercovers when few seeds carry most of the variance: resampling K seeds spreads
    their mean by about (K-1)/K of its variance, and the tails want a t quantile on K-1 degrees of freedom, so
    with K = 3 the nominal 95% is about 77% (an honest limit of three pre-training runs, stated in
    docs/statistics.md); where examples dominate it is slightly conservative. Asserted: K = 10 with seeds
    dominating (here 0.90 with 300 replicates and 400 resamples) inside [0.84, 0.96], about 3 standard errors
    of a proportion near 0.9 either side, and the same data with the seeds not resampled far below it (0.53):
    the band fails when seeds are ignored, and when the interval is needlessly wide."""
    assert 0.84 <= _coverage(10, 0.05, 0.1) <= 0.96
    monkeypatch.setattr(compare, "_seed_indices", _every_seed)
    assert _coverage(10, 0.05, 0.1, replicates=100) < 0.7


def _wino(neutral: float, n: int = 300, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    choice = rng.choice(["male", "female", "neutral"], size=n, p=[0.7 - neutral, 0.3, neutral]).tolist()
    return {"main": "counter_stereotype_rate", "per_example": {"choice": choice}}


def _lm(mean: float, seed: int = 0, n: int = 200) -> dict:
    return _scores(mean, -7.0, n=n, seed=seed) | {"loglik": mean}


def _model(role: str, s: int) -> dict:
    """Results of one pre-training seed: the claims' sst2 and cola, lm and WinoGender, and tasks of the user's
    own: a classification file, a BEIR collection, one without per-example data and one of another size."""
    enc, k = role == "encoder", 10 * s + (role == "decoder")
    cola = _cls(0.8 if enc else 0.7, n=100, seeds=1, seed=k + 5) | {"metric": "mcc"}
    reviews = _cls(0.75 if enc else 0.7, seed=k + 7)
    rng = np.random.default_rng(k)
    return {"tasks": {"sst2": _cls(0.85 if enc else 0.7, seed=k), "cola": cola, "cls:reviews.csv": reviews,
                      "lm": _lm(-4.0 if enc else -3.5, seed=k), "winogender": _wino(0.6 if enc else 0.3, seed=k),
                      "beir:x": _mean_task(rng.normal(0.5 if enc else 0.3, 0.2, 200), np.full(200, 0.05)),
                      "old": {"main": "acc", "acc": 0.5},
                      "odd": _mean_task(rng.normal(0.5, 0.1, 100 if enc else 120))}}


def test_findings_pair_on_common_seeds_and_add_the_users_tasks():
    results = {"encoder": {s: _model("encoder", s) for s in (0, 1, 2)},
               "decoder": {s: _model("decoder", s) for s in (1, 2, 3)},
               "encoder-continued": {0: {"tasks": {"sst2": _cls(0.8)}}},
               "encoder-from-decoder": {1: {"tasks": {"sst2": _cls(0.7)}}}}
    out = compare.findings(results)
    assert out["seeds"] == {"encoder": [0, 1, 2], "decoder": [1, 2, 3], "encoder-continued": [0],
                            "encoder-from-decoder": [1]}
    assert out["one_run"] is False and out["power"] == compare.POWER == 0.8
    claims = {c["id"]: c for c in out["claims"]}
    for row in claims[1]["rows"] + claims[5]["rows"] + out["tasks"]:
        assert row["seed_list"] == [1, 2] and row["seeds"] == 2 and len(row["per_seed_difference"]) == 2
    sst2 = next(r for r in claims[1]["rows"] if r["label"] == "sst2 (finetune)")
    paired = {s: results["encoder"][s]["tasks"]["sst2"] for s in (1, 2)}  # the encoder's seeds the decoder has
    assert sst2["models"]["encoder"] == compare.model_figure(paired, Measure("sst2", "finetune"))
    assert sst2["metric"] == "accuracy" and sst2["published_effect"] == 0.019
    assert "MNLI" in sst2["published_source"] and sst2["could_detect"] == (sst2["detectable"] <= 0.019)
    cola = next(r for r in claims[1]["rows"] if r["label"] == "cola (probe)")
    assert cola["metric"] == "mcc" and cola["published_effect"] is None and cola["could_detect"] is None
    wino = claims[5]["rows"][0]
    assert wino["metric"] == "neutral_rate" and wino["published_effect"] == 0.30 and wino["verdict"] == "reproduced"
    assert claims[4]["missing"] == ["encoder-continued vs encoder-from-decoder: sst2 (probe) (no pre-training seed "
                                    "in common)", "encoder-continued vs encoder-from-decoder: lm",
                                    "encoder-continued vs encoder-from-decoder-mntp: sst2 (probe)",
                                    "decoder-continued vs decoder-from-encoder: lm",
                                    "decoder-continued vs decoder-from-encoder: next_token"]
    assert claims[4]["verdict"] == "not run"
    tasks = {r["label"]: r for r in out["tasks"]}
    assert set(tasks) == {"cls:reviews.csv (probe)", "cls:reviews.csv (finetune)", "beir:x"}  # not lm, old, odd
    for row in tasks.values():
        assert row["verdict"] is None and row["published_effect"] is None and row["could_detect"] is None
        assert row["favoured"] == "encoder" and row["other"] == "decoder" and row["detectable"] > 0
    assert tasks["beir:x"]["metric"] == "ndcg@10" and tasks["beir:x"]["interval"][0] > 0
    assert [s["label"] for s in out["tasks_skipped"]] == ["odd"]
    assert "not a paired comparison" in out["tasks_skipped"][0]["reason"]


def test_findings_of_one_run_each():
    out = compare.findings({"encoder": _model("encoder", 0), "decoder": {0: _model("decoder", 0)}})
    assert out["one_run"] is True and out["seeds"] == {"encoder": [0], "decoder": [0]}
    assert all(r["seeds"] == 1 and r["seed_sd"] is None for c in out["claims"] for r in c["rows"])
    assert compare.ONE_RUN_NOTE and "Multi-Bootstrap" in compare.RULE and "no verdict" in compare.RULE


def test_model_figure_over_seeds():
    tasks = {s: _cls(0.8, seed=s) for s in range(3)}
    for s, t in tasks.items():
        t["designs"]["finetune"] |= {"per_seed": [0.79 + 0.01 * s, 0.81], "seed_std": 0.01 * s}
    fig = compare.model_figure(tasks, Measure("sst2", "finetune"))
    assert fig["seeds"] == 3 and len(fig["per_seed"]) == 3 and fig["value"] == pytest.approx(np.mean(fig["per_seed"]))
    assert fig["seed_sd"] == pytest.approx(np.std(fig["per_seed"], ddof=1))
    assert fig["finetune_seeds"] == [[0.79, 0.81], [0.8, 0.81], [0.81, 0.81]] and fig["finetune_sd"] == pytest.approx(0.01)
    assert fig["baseline"] == 0.5 and fig["above_baseline"] and fig["interval"][0] < fig["value"] < fig["interval"][1]
    assert compare.model_figure(tasks[0], Measure("sst2", "probe"))["seeds"] == 1


def test_learned_and_bias_profile_over_seeds():
    rows = compare.learned({"encoder": {s: {"tasks": {"sst2": _cls(0.8, seed=s), "lm": _lm(-4.0, s)}} for s in range(3)},
                            "decoder": {"tasks": {"sst2": _cls(0.6)}}})
    assert rows[0]["seeds"] == 3 and rows[0]["sst2"]["passed"] and rows[0]["lm"]["passed"]
    assert rows[0]["sst2"]["gain"] == pytest.approx(np.mean(rows[0]["sst2"]["per_seed"]) - 0.5)
    assert rows[1]["seeds"] == 1 and not rows[1]["sst2"]["passed"] and "lm" not in rows[1]
    one = {"tasks": {"winogender": _wino(0.5)}}
    single = compare.bias_profile(one)
    assert compare.bias_profile({s: one for s in range(4)}) == {k: v | {"seeds": 4} for k, v in single.items()}
    mixed = compare.bias_profile({s: {"tasks": {"winogender": _wino(0.5, seed=s)}} for s in range(3)})
    rates = [np.mean(np.asarray(_wino(0.5, seed=s)["per_example"]["choice"]) == "neutral") for s in range(3)]
    assert mixed["neutral"]["value"] == pytest.approx(np.mean(rates)) and mixed["male_skew"]["seeds"] == 3
    assert mixed["neutral"]["interval"][0] < mixed["neutral"]["value"] < mixed["neutral"]["interval"][1]


def test_curves_over_training_tokens():
    """3 seeds, 3 checkpoints: the encoder's lead grows from 0; the decoder is at its baseline at the first
    checkpoint and above it from the second."""
    n, lead = 200, [[0.0, 0.0, 0.0], [0.05, 0.08, 0.11], [0.10, 0.15, 0.20]]  # [checkpoint][seed]
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 0.2, n)
    runs: dict = {"encoder": {}, "decoder": {}}
    for s in range(3):
        for role in runs:
            runs[role][s] = []
        for k in range(3):
            dec = base if k == 0 else base + 0.2 + rng.normal(0, 0.05, n)
            for role, score in (("encoder", dec + lead[k][s]), ("decoder", dec)):
                runs[role][s].append({"model": {"tokens": 1000 * (k + 1) + s},
                                      "tasks": {"cranfield": _mean_task(score, base), "old": {"main": "x"}}})
    runs["decoder"][0].append(runs["decoder"][0][-1])  # a longer run: paired by position up to the shorter
    out = curves.curves(runs, resamples=200)
    assert len(out) == 1
    curve = out[0]
    assert (curve["claim"], curve["label"], curve["metric"], curve["favoured"]) == (2, "cranfield", "ndcg@10", "encoder")
    assert [p["tokens"] for p in curve["points"]] == [1001.0, 2001.0, 3001.0]
    assert [p["testable"] for p in curve["points"]] == [False, True, True] and curve["first_testable"] == 2001.0
    for k, p in enumerate(curve["points"]):
        assert p["seeds"] == 3 and p["per_seed"] == pytest.approx(lead[k], abs=1e-12)
        assert p["band"] == pytest.approx((min(lead[k]), max(lead[k])), abs=1e-12)
        assert p["difference"] == pytest.approx(np.mean(lead[k]), abs=1e-12)
        assert p["interval"][0] <= p["difference"] <= p["interval"][1]
    flat = {role: {s: runs[role][s][:1] for s in range(3)} for role in runs}  # one checkpoint: no curve
    assert curves.curves(flat) == []
    # a costly task scored on a subset of the kept checkpoints: its curve has the positions where every seed of
    # both models has it (here the first checkpoint lacks it for one seed of the decoder), two at least
    part = {role: {s: [dict(r) for r in runs[role][s]] for s in range(3)} for role in runs}
    part["decoder"][1][0] = {**part["decoder"][1][0], "tasks": {"old": {"main": "x"}}}
    subset = curves.curves(part, resamples=200)[0]
    assert [p["tokens"] for p in subset["points"]] == [2001.0, 3001.0] and subset["first_testable"] == 2001.0
    part["decoder"][2][1] = {**part["decoder"][2][1], "tasks": {}}
    assert curves.curves(part, resamples=200) == []  # one position left: no curve


if __name__ == "__main__":  # the coverage table of docs/statistics.md: python tests/test_eval_compare.py [replicates]
    replicates = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(f"coverage of the 95% interval, {replicates} replicates, {compare.RESAMPLES} resamples, n = 300")
    for regime, sigma_seed, sigma_ex in (("seeds dominate", 0.05, 0.1), ("examples dominate", 0.002, 0.5)):
        for k in (3, 10):
            multi = _coverage(k, sigma_seed, sigma_ex, replicates=replicates, resamples=compare.RESAMPLES)
            kept, compare._seed_indices = compare._seed_indices, _every_seed
            ignored = _coverage(k, sigma_seed, sigma_ex, replicates=replicates, resamples=compare.RESAMPLES)
            compare._seed_indices = kept
            print(f"{regime:18} sigma_seed {sigma_seed:<5} sigma_ex {sigma_ex:<4} K {k:>2}: Multi-Bootstrap "
                  f"{multi:.3f}, seeds ignored {ignored:.3f}")


def test_seeds_that_disagree_in_sign_are_inconclusive_even_when_the_interval_is_not():
    """Three seeds far ahead and one a little behind: the pooled interval lies above 0, but a seed flips the sign,
    so the rule says inconclusive; with all four ahead it says reproduced."""
    def results(accs):
        return {s: {"tasks": {"sst2": _cls(acc, n=2000, seeds=1, seed=s)}} for s, acc in enumerate(accs)}

    base = results([0.70, 0.70, 0.70, 0.70])
    mixed = compare._row(results([0.80, 0.80, 0.80, 0.69]), base, PROBE, ("encoder", "decoder"))
    assert mixed["interval"][0] > 0 and min(mixed["per_seed_difference"]) < 0
    assert mixed["verdict"] == "inconclusive"
    agreeing = compare._row(results([0.80, 0.80, 0.80, 0.75]), base, PROBE, ("encoder", "decoder"))
    assert agreeing["verdict"] == "reproduced" and min(agreeing["per_seed_difference"]) > 0
