"""`ettin report`: findings first (from ettin.eval.compare), the rule, a forest plot, roles from the results,
learning and loss curves, a self-contained HTML, report.json rebuilding the same report, bad input named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ettin import cli
from ettin.eval import compare, report
from test_eval_tasks import env  # noqa: F401  (tiny models and fake task data)

N = 120  # test examples per task (small: the bootstrap runs 2,000 resamples)
CHECKPOINTS = ((1000, "stable-step0000010"), (3000, "decay-step0000030"))


def _preds(rng, gold: np.ndarray, acc: float) -> list[int]:
    return np.where(rng.random(len(gold)) < acc, gold, 1 - gold).tolist()


def _classification(rng, acc: float, metric: str = "accuracy", majority: bool = False) -> dict:
    """Shaped as tasks/classification.py writes it: designs probe and finetune (two seeds), majority baseline;
    `majority`: every prediction the majority class."""
    gold = np.arange(N) % 2
    probe, seeds = _preds(rng, gold, acc), [_preds(rng, gold, acc) for _ in range(2)]
    if majority:
        probe, seeds = [0] * N, [[0] * N] * 2
    return {"main": f"{metric}_probe", "metric": metric, metric: acc, f"{metric}_probe": acc,
            f"{metric}_finetune": acc, "n": N, "n_train": 200, "n_validation": 20, "family": "classification",
            "baseline": 0.5 if metric == "accuracy" else 0.0, "baseline_name": "majority class of the training rows",
            "majority_baseline": 0.5,
            "designs": {"probe": {"value": acc, "validation": acc, "pooling": "mean", "C": 1.0,
                                  "per_example": {"pred": [probe]}},
                        "finetune": {"value": acc, "per_seed": [acc, acc], "seed_std": 0.0, "pooling": "mean",
                                     "per_example": {"pred": seeds}}},
            "per_example": {"gold": gold.tolist(), "baseline_pred": [0] * N}}


def _scores(rng, mean: float, base: float, main: str, family: str, spread: float = 0.05, **extra) -> dict:
    """Mean-of-examples tasks (retrieval, multiple choice, lm, next_token, generation): per_example score and
    baseline."""
    score, baseline = rng.normal(mean, spread, N), rng.normal(base, spread, N)
    return {"main": main, main: float(score.mean()), "n": N, "family": family, "baseline": float(baseline.mean()),
            "baseline_name": extra.pop("baseline_name", "baseline"),
            "per_example": {"score": score.tolist(), "baseline": baseline.tolist()}, **extra}


def _winogender(rng, neutral: float) -> dict:
    choice = rng.choice(["male", "female", "neutral"], size=N, p=[0.7 - neutral, 0.3, neutral]).tolist()
    rates = {f"{g}_rate": float(np.mean([c == g for c in choice])) for g in ("male", "female", "neutral")}
    return {"main": "counter_stereotype_rate", "counter_stereotype_rate": 0.3, **rates, "n": N, "family": "bias",
            "male_skew": rates["male_rate"] - rates["female_rate"],
            "per_example": {"choice": choice, "counter": [c == "female" for c in choice]}}


def _tasks(role: str, k: int) -> dict:
    """The encoder ahead on classification, the decoder on generative tasks; the decoder's cola at the majority
    class and its retrieval at its baseline (not testable); both improving from checkpoint 0 to 1."""
    rng = np.random.default_rng(10 * k + (role == "decoder"))
    enc, g = role == "encoder", 0.05 * k
    lm = ("masked_accuracy", {"masked_accuracy": 0.2 + g}) if enc else ("perplexity", {"perplexity": 90.0 - 20 * k})
    return {
        "sst2": _classification(rng, (0.88 if enc else 0.65) + g),
        "cola": _classification(rng, 0.9, "mcc") if enc else _classification(rng, 0.0, "mcc", majority=True),
        "cranfield": _scores(rng, 0.4 + g if enc else 0.05, 0.05, "ndcg@10", "retrieval", baseline_name="random ranking",
                             bm25={"ndcg@10": 0.38}),
        "piqa": _scores(rng, (0.60 if enc else 0.75) + g, 0.5, "acc_norm", "multiple_choice", baseline_name="chance"),
        "lm": _scores(rng, (-5.0 if enc else -4.0) + g, -7.0, "loglik", "language_modeling",
                      baseline_name="unigram model") | {"main": lm[0], **lm[1]},
        "next_token": _scores(rng, (-5.5 if enc else -4.5) + g, -7.0, "loglik", "language_modeling",
                              baseline_name="unigram model"),
        "generation": _scores(rng, (0.10 if enc else 0.25) + g, 0.05, "rouge_l", "generation",
                              baseline_name="the prompt's last tokens repeated"),
        "winogender": _winogender(rng, 0.6 if enc else 0.3),
    }


def make_inputs(root: Path) -> tuple[Path, Path]:
    """root/eval/<run>/<ckpt>.json and root/runs/<run>/metrics.jsonl. The folder names lie on purpose: the
    encoder's run is called "decoder" and the decoder's "encoder"; only model.role tells them apart."""
    eval_dir, runs = root / "eval", root / "runs"
    for role, objective, run in (("encoder", "mlm", "decoder"), ("decoder", "clm", "encoder")):
        (runs / run).mkdir(parents=True)
        with open(runs / run / "metrics.jsonl", "w") as f:
            for step in range(1, 31):
                loss = (9.0 if role == "encoder" else 8.0) / (1 + 0.1 * step)
                f.write(json.dumps({"phase": "stable" if step <= 20 else "decay", "step": step, "tokens": 100 * step,
                                    "loss": loss, "loss_avg": loss, "lr": 1e-3, "tokens_per_s": 5000.0}) + "\n")
        for k, (tokens, ckpt) in enumerate(CHECKPOINTS):
            model = {"run": run, "role": role, "objective": objective, "size": "demo", "checkpoint": ckpt,
                     "tokens": tokens, "step": tokens // 100, "sha256": f"{role}{k}".ljust(64, "0"),
                     "path": str(runs / run / "checkpoints" / ckpt)}
            out = eval_dir / run / f"{ckpt}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"model": model, "settings": {"seed": 0}, "tasks": _tasks(role, k)}))
    return eval_dir, runs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    eval_dir, runs = make_inputs(root)
    out = root / "report"
    assert cli.main(["report", str(eval_dir), str(runs), "--out", str(out), "--title", "demo pair"]) == 0
    return root, out, json.loads((out / "report.json").read_text())


def _tables(md: str) -> list[list[list[str]]]:
    tables, current = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            if not set(line) <= set("|-: "):
                current.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        else:
            current = None
    return tables


def test_findings_table_comes_first_with_every_claim(built):
    _, out, _ = built
    md = (out / "report.md").read_text()
    assert md.startswith("# demo pair\n")
    first = _tables(md)[0]
    assert first[0] == ["#", "claim", "published evidence",
                        "our measurement (95% intervals; detectable difference at 80% power)", "verdict"]
    assert [r[0] for r in first[1:]] == ["1", "2", "3", "4", "5"]
    assert [r[1] for r in first[1:]] == [c.text for c in compare.CLAIMS]
    verdicts = {r[0]: r[4] for r in first[1:]}
    assert verdicts == {"1": "**reproduced**", "2": "**not testable at this scale**", "3": "**reproduced**",
                        "4": "**not run (no results for these models)**", "5": "**reproduced**"}
    sst2 = next(p for p in first[1][3].split("<br>") if p.startswith("sst2 (probe)"))
    assert re.search(r"encoder [\d.]+ \[[\d.]+, [\d.]+\] vs decoder [\d.]+ \[[\d.]+, [\d.]+\]; "
                     r"difference \+[\d.]+ \[\+[\d.]+, \+[\d.]+\]; detectable ±[\d.]+ against a published 0.019 "
                     r"\(could not have seen it\): \*reproduced\*", sst2), sst2
    assert compare.RULE in md and md.index(compare.RULE) > md.index(first[1][1])
    assert md.index("(findings.png)") > md.index(compare.RULE)


def test_not_testable_reads_as_such(built):
    _, out, data = built
    first = _tables((out / "report.md").read_text())[0]
    retrieval = first[2][3]
    assert "not testable at this scale" in retrieval and "decoder not shown above the baseline" in retrieval
    assert "reproduced" not in retrieval and "reversed" not in retrieval
    cola = [p for p in first[1][3].split("<br>") if p.startswith("cola")]
    assert len(cola) == 2 and all("*not testable at this scale*" in p for p in cola)
    assert {r["verdict"] for r in data["findings"]["claims"][1]["rows"]} == {"not testable"}


def test_verdicts_are_compare_s_on_the_final_checkpoints(built):
    root, _, data = built
    finals = {}
    for f in sorted((root / "eval").rglob("decay-*.json")):
        res = json.loads(f.read_text())
        finals[res["model"]["role"]] = res
    assert data["findings"] == json.loads(json.dumps(compare.findings(finals)))
    assert data["learned"] == json.loads(json.dumps(compare.learned(finals)))
    assert data["bias"]["encoder"] == json.loads(json.dumps(compare.bias_profile(finals["encoder"])))
    assert [r["model"]["tokens"] for r in data["results"]["encoder"]] == [1000, 3000]


def test_roles_come_from_the_results_not_the_folders(built, tmp_path):
    root, out, data = built
    assert list(data["results"]) == ["encoder", "decoder"]
    assert all(r["model"]["run"] == "decoder" for r in data["results"]["encoder"])  # the lying folder name
    assert data["training"]["encoder"][0]["path"].endswith(str(Path("runs", "decoder", "metrics.jsonl")))
    assert data["training"]["encoder"][0]["rows"][0]["loss"] == pytest.approx(9.0 / 1.1)
    md = (out / "report.md").read_text()
    assert "- encoder, seed 0: `" in md and "decoder/metrics.jsonl`, 30 records" in md
    # an older file without model.role: the objective's native role
    old = json.loads((root / "eval" / "encoder" / "decay-step0000030.json").read_text())
    del old["model"]["role"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    rebuilt = report.build_report([tmp_path / "old.json"], tmp_path / "out")
    assert list(rebuilt["results"]) == ["decoder"]  # its log found beside the evaluated checkpoint (model.path)
    assert rebuilt["training"]["decoder"][0]["path"].endswith(str(Path("runs", "encoder", "metrics.jsonl")))
    assert "not run" in (tmp_path / "out" / "report.md").read_text()


def test_detail_learning_curves_and_figures(built):
    root, out, data = built
    md = (out / "report.md").read_text()
    tables = _tables(md)
    learned = next(t for t in tables if t[0][0] == "model" and "learned something" in t[0])
    assert {r[0]: r[-1] for r in learned[1:]} == {"encoder": "yes", "decoder": "yes"}
    detail = next(t for t in tables if t[0][:3] == ["task", "measure", "baseline"])
    assert detail[0][3:] == ["encoder", "decoder"]
    rows = {(r[0], r[1]): r for r in detail[1:]}
    final = json.loads((root / "eval" / "encoder" / "decay-step0000030.json").read_text())["tasks"]  # the decoder
    probe = rows[("sst2 (probe)", "accuracy")]
    assert probe[2] == "majority class of the training rows" and "baseline 0.500" in probe[3]
    assert "seeds " in rows[("sst2 (finetune)", "accuracy")][3]
    assert f"perplexity {final['lm']['perplexity']:.3f}" in rows[("lm", "loglik")][4]
    assert ("winogender", "neutral rate") in rows and "### WinoGender" in md
    panels = report._learning_panels(data["results"])
    lm = {p["ylabel"]: p["series"] for p in panels if p["title"] == "lm"}
    assert set(lm) == {"masked_accuracy", "perplexity"}  # one measure per axis
    assert list(lm["perplexity"]) == ["decoder"] and lm["perplexity"]["decoder"] == [([1000, 3000], [90.0, 70.0])]
    for name in ("findings.png", "learning-curves.png", "loss-curves.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        assert f"]({name})" in md
    assert "Ettin-Enc-150m" in md and "Ettin-Dec-1B" in md


def test_html_is_made_from_the_markdown_and_self_contained(built):
    _, out, _ = built
    page = (out / "report.html").read_text()
    srcs = re.findall(r'<img[^>]* src="([^"]*)"', page)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(srcs) == len(pngs) > 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "claim-1-over-tokens.png" in pngs
    assert "<table>" in page and "<h2>Findings</h2>" in page and "<style>" in page
    assert page.index("<table>") < page.index("Rule.")


def test_report_json_rebuilds_the_same_report(built, tmp_path):
    _, out, data = built
    assert {"findings", "learned", "results", "training", "detail", "bias"} <= data.keys()
    assert all(r["_path"].endswith(".json") for rs in data["results"].values() for r in rs)
    again = tmp_path / "again"
    assert cli.main(["report", str(out / "report.json"), "--out", str(again)]) == 0
    assert (again / "report.md").read_text() == (out / "report.md").read_text()
    assert json.loads((again / "report.json").read_text()) == data


def test_damaged_results_are_named_and_nothing_is_written(built, tmp_path, capsys):
    root, _, _ = built
    bad = tmp_path / "eval" / "run" / "broken.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"model": {"objective": "mlm"}, "tasks": ')
    for inputs in ([bad], [tmp_path / "eval", root / "eval"]):
        assert cli.main(["report", *map(str, inputs), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ettin report: error: ") and "broken.json" in err
        assert not (tmp_path / "out").exists()
    no_main = tmp_path / "no_main.json"
    no_main.write_text(json.dumps({"model": {"objective": "clm"}, "tasks": {"sst2": {"main": "f1", "acc": 1}}}))
    assert cli.main(["report", str(no_main), "--out", str(tmp_path / "out")]) == 2
    assert "no_main.json: tasks.sst2" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "missing: no such file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_two_runs_in_one_role_are_refused(built, tmp_path):
    root, _, _ = built
    for run in ("a", "b"):
        res = json.loads((root / "eval" / "encoder" / "decay-step0000030.json").read_text())
        res["model"]["run"] = run
        (tmp_path / f"{run}.json").write_text(json.dumps(res))
    with pytest.raises(report.ReportError, match="role decoder: results of several runs"):
        report.build_report([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "out")


def test_eval_and_downstream_results_of_one_checkpoint_are_merged(built, tmp_path):
    """`ettin finetune` writes its own results file for a checkpoint `ettin eval` also scored: the report shows
    both files' tasks for that checkpoint; one task measured twice with different results is refused."""
    root, _, _ = built
    final = root / "eval" / "encoder" / "decay-step0000030.json"
    res = json.loads(final.read_text())
    embed = _scores(np.random.default_rng(3), 0.5, 0.3, "ndcg@10", "retrieval", baseline_name="BM25")
    down = tmp_path / "downstream" / "encoder"
    down.mkdir(parents=True)
    (down / final.name).write_text(json.dumps({"model": res["model"], "settings": {}, "tasks": {"embed": embed}}))
    rebuilt = report.build_report([root / "eval", tmp_path / "downstream"], tmp_path / "out")
    role = res["model"]["role"]  # (the folder names lie: see make_inputs)
    last = rebuilt["results"][role][-1]
    assert last["model"]["checkpoint"] == final.stem and set(last["tasks"]) == set(res["tasks"]) | {"embed"}
    assert last["tasks"]["embed"]["ndcg@10"] == pytest.approx(embed["ndcg@10"])
    assert len(rebuilt["results"][role]) == len(CHECKPOINTS)
    assert "embed" in (tmp_path / "out" / "report.md").read_text()
    changed = dict(res["tasks"]["sst2"], value=0.1)
    (down / final.name).write_text(json.dumps({"model": res["model"], "settings": {}, "tasks": {"sst2": changed}}))
    with pytest.raises(report.ReportError, match="task 'sst2' of checkpoint decay-step0000030.*different results"):
        report.build_report([root / "eval", tmp_path / "downstream"], tmp_path / "out2")


def test_a_run_folder_and_its_final_export_are_one_model(built, tmp_path):
    """`ettin eval runs/x` and `ettin eval runs/x/final` score the same weights in two formats (two sha256s): the
    report keeps one model, the checkpoint, with the export's extra tasks merged in and says so; for a task both
    hold with different results it uses the checkpoint's and says that too. Before, final/ became the compared
    checkpoint and the claims whose tasks it lacked went to "not measured"."""
    import shutil

    root, _, _ = built
    evals = tmp_path / "eval"
    shutil.copytree(root / "eval", evals)
    last = evals / "encoder" / "decay-step0000030.json"  # the decoder's run (the folder names lie: make_inputs)
    res = json.loads(last.read_text())
    res["model"]["phase"] = "decay"
    last.write_text(json.dumps(res))
    embed = _scores(np.random.default_rng(3), 0.5, 0.3, "ndcg@10", "retrieval", baseline_name="BM25")
    export = {**res["model"], "checkpoint": "final", "sha256": "f" * 64, "path": "/runs/encoder/final",
              "tokens": res["model"]["tokens"]}
    (evals / "encoder" / "final.json").write_text(json.dumps(
        {"model": export, "settings": {}, "tasks": {"embed": embed, "sst2": dict(res["tasks"]["sst2"], value=0.1)}}))
    rebuilt = report.build_report([evals], tmp_path / "out")
    role = res["model"]["role"]
    assert [r["model"]["checkpoint"] for r in rebuilt["results"][role]] == [c for _, c in CHECKPOINTS]
    merged = rebuilt["results"][role][-1]
    assert set(merged["tasks"]) == set(res["tasks"]) | {"embed"}
    assert merged["tasks"]["sst2"] == res["tasks"]["sst2"]  # the checkpoint's own record
    assert rebuilt["same_model"] == [{"run": res["model"]["run"], "seed": 0, "checkpoint": "decay-step0000030",
                                      "export": "/runs/encoder/final", "added": ["embed"], "kept": ["sst2"],
                                      "role": role}]
    assert {c["verdict"] for c in rebuilt["findings"]["claims"]} == {c["verdict"] for c in built[2]["findings"]["claims"]}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "`/runs/encoder/final` is the export of" in md and "the checkpoint's own results are used" in md


def _reference_rows(text: str, section: str) -> tuple[list[str], dict[str, tuple[float, ...]]]:
    lines = text[text.index(section):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows[0][1:], {r[0].strip("*"): tuple(float(c) for c in r[1:]) for r in rows[2:]}


def test_published_numbers_match_the_reference_tables():
    from ettin.eval import published

    ref = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ettin.md"
    for columns, rows in ((published.ENCODER_COLUMNS, published.ENCODER_ROWS),
                          (published.DECODER_COLUMNS, published.DECODER_ROWS)):
        assert len(rows) == 6 and all(len(values) == len(columns) for _, values in rows)
    if not ref.is_file():
        pytest.skip(f"reference not found at {ref}")
    text = ref.read_text()
    for section, columns, rows in (("### 6.2", published.ENCODER_COLUMNS, published.ENCODER_ROWS),
                                   ("### 6.3", published.DECODER_COLUMNS, published.DECODER_ROWS)):
        ref_columns, ref_rows = _reference_rows(text, section)
        assert ref_columns == list(columns) and all(ref_rows[name] == values for name, values in rows)


def test_report_of_real_eval_results(env, tmp_path):  # noqa: F811  (the fixture imported above)
    """The tasks' own results (tiny random models, fake data): the report reads what `ettin eval` writes."""
    out = tmp_path / "eval"
    assert cli.main(["eval", str(env.folders["mlm"]), str(env.folders["clm"]), "--out", str(out), "--limit", "6",
                     "--tasks", "sst2,cranfield,piqa,lm,next_token,generation,winogender", "--set", "lm.limit=4",
                     "--data-dir", str(env.data), "--max-length", "96"]) == 0
    assert cli.main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    first = _tables(md)[0]
    assert [r[0] for r in first[1:]] == ["1", "2", "3", "4", "5"]
    allowed = {f"**{v}**" for v in ("reproduced", "reversed", "inconclusive", *report.VERDICTS.values())}
    assert {r[4] for r in first[1:]} <= allowed
    assert "### WinoGender" in md and "No training logs given." in md


def _seeded_inputs(root: Path, seeds=(0, 1, 2), tasks=None) -> Path:
    """Three pre-training seeds of each role, two kept checkpoints each; `tasks(role, k, seed)` gives the tasks."""
    eval_dir = root / "eval"
    for seed in seeds:
        for role, objective in (("encoder", "mlm"), ("decoder", "clm")):
            run = f"pair-seed-{seed}-{role}"
            for k, (tokens, ckpt) in enumerate(CHECKPOINTS):
                model = {"run": run, "role": role, "objective": objective, "size": "demo", "checkpoint": ckpt,
                         "tokens": tokens, "step": tokens // 100, "seed": seed,
                         "sha256": f"{role}{seed}{k}".ljust(64, "0"),
                         "path": str(root / "pair" / f"seed-{seed}" / role / "checkpoints" / ckpt)}
                out = eval_dir / run / f"{ckpt}.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                body = tasks(role, k, seed) if tasks else _tasks(role, k + 2 * seed)
                out.write_text(json.dumps({"model": model, "settings": {"seed": 0}, "tasks": body}))
    return eval_dir


def test_seeds_are_one_role_each_and_every_row_says_so(tmp_path):
    eval_dir = _seeded_inputs(tmp_path)
    out = tmp_path / "report"
    data = report.build_report([eval_dir], out)
    f = data["findings"]
    assert f["seeds"] == {"encoder": [0, 1, 2], "decoder": [0, 1, 2]} and f["one_run"] is False
    rows = [r for c in f["claims"] for r in c["rows"]]
    assert rows and all(r["seeds"] == 3 and len(r["per_seed_difference"]) == 3 and r["seed_sd"] is not None
                        and r["detectable"] > 0 for r in rows)
    saved = json.loads((out / "findings.json").read_text())  # the findings alone, beside the report
    assert saved == data["findings"]
    md = (out / "report.md").read_text()
    assert "3 seeds: encoder" in md and "between-seed sd" in md and "One run per model" not in md
    assert "encoder, 3 seeds (0, 1, 2), 3k tokens" in md and "pair-seed-2-encoder/decay-step0000030" in md
    # each claim over training tokens: a figure per claim, from every seed's kept checkpoints
    assert data["curves"] and all(len(p["per_seed"]) == 3 for c in data["curves"] for p in c["points"])
    for claim in {c["claim"] for c in data["curves"]}:
        assert (out / f"claim-{claim}-over-tokens.png").read_bytes()[:4] == b"\x89PNG"
        assert f"](claim-{claim}-over-tokens.png)" in md
    # a second run of one role and seed is refused, naming the seed
    other = eval_dir / "elsewhere" / "x.json"
    other.parent.mkdir()
    res = json.loads((eval_dir / "pair-seed-1-encoder" / "decay-step0000030.json").read_text())
    res["model"] |= {"run": "another", "sha256": "f" * 64}
    other.write_text(json.dumps(res))
    with pytest.raises(report.ReportError, match="pre-training seed 1"):
        report.build_report([eval_dir], tmp_path / "again")


def test_one_seed_says_its_intervals_cover_examples_only(built):
    _, out, data = built
    assert data["findings"]["one_run"] is True
    assert compare.ONE_RUN_NOTE in (out / "report.md").read_text()


def test_a_users_own_tasks_get_paired_differences_without_verdicts(tmp_path):
    def own(role, k, seed):
        rng = np.random.default_rng(100 * seed + 10 * k + (role == "decoder"))
        reviews = _classification(rng, 0.8 if role == "encoder" else 0.7)
        return {"cls:reviews.csv": reviews,
                "beir:mydocs": _scores(rng, 0.3 if role == "encoder" else 0.2, 0.05, "ndcg@10", "retrieval")}

    eval_dir = _seeded_inputs(tmp_path, tasks=own)
    data = report.build_report([eval_dir], tmp_path / "report")
    assert all(c["verdict"] == "not run" for c in data["findings"]["claims"])
    labels = {r["label"]: r for r in data["findings"]["tasks"]}
    assert {"cls:reviews.csv (probe)", "cls:reviews.csv (finetune)", "beir:mydocs"} <= set(labels)
    for r in labels.values():
        assert r["verdict"] is None and r["seeds"] == 3 and r["favoured"] == "encoder" and r["other"] == "decoder"
        assert r["interval"][0] <= r["difference"] <= r["interval"][1]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "None of the published claims' tasks was run." in md
    assert md.index("### Every other task both models") < md.index("**Rule.**")
    assert "| # | claim |" not in md  # no table of five claims that were not run
