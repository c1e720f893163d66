"""The comparison module: paired bootstrap intervals, the above-baseline gate and the one verdict rule."""

import numpy as np
import pytest

from ettin.eval import compare
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
    assert row["models"]["encoder"]["per_seed"] == [0.85] * 3
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
