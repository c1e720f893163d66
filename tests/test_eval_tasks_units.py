"""The console line of a held-out task puts its baseline in the units of the figures beside it and names the text
it scored (issue 31 item 3)."""

from __future__ import annotations

import re

from ettin.cli import main as ettin_main
from ettin.eval import runner
from test_eval_tasks import env  # noqa: F401 (the tiny models' fixture)


def _pairs(text: str) -> dict[str, float]:
    """"name value, name value" as a dict."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"(\w+) (-?[\d.]+(?:e[-+]?\d+)?)", text)}


def test_lm_console_line_gives_metric_and_baseline_in_the_same_units(env, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    argv = ["eval", str(env.folders["mlm"]), str(env.folders["clm"]), "--tasks", "lm,next_token", "--out", str(out),
            "--data-dir", str(env.data), "--limit", "8"]
    assert ettin_main(argv) == 0
    err = capsys.readouterr().err
    results = {r["model"]["objective"]: r["tasks"] for r in runner.load_results(out)}
    for objective, unit in (("mlm", "masked_accuracy"), ("clm", "perplexity")):
        for task, main in (("lm", unit), ("next_token", "loglik")):
            line = next(x for x in err.splitlines() if f"tiny-{objective}" in x and f" {task}: {main} " in x)
            m = re.search(rf" {task}: (.*?); baseline (.*?) \(unigram model of the training side\); held-out: (.*) \(n=",
                          line)
            assert m, line
            model, baseline = _pairs(m.group(1)), _pairs(m.group(2))
            assert list(model) == list(baseline) and main in model, line  # the same metrics, in the same order
            res = results[objective][task]
            assert model[main] == round(res[main], 4) and baseline == {k: round(v, 4) for k, v in
                                                                       res["baseline_metrics"].items()}
            assert "the last 2% of the documents of wikipedia_vital_summaries_en.jsonl" in m.group(3), line
    lm = results["mlm"]["lm"]["baseline_metrics"]
    assert 0 <= lm["masked_accuracy"] <= 1 and lm["masked_perplexity"] > 1  # not a log-likelihood
    assert results["clm"]["lm"]["baseline_metrics"]["perplexity"] > 1
