"""`ettin report`: tables equal their inputs, the verdict rule, a self-contained HTML, PNGs, report.json round trip."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from ettin.eval import report
from ettin.eval.report import compare_values, family_verdict, task_family

TOKENS = (1000, 2000, 3000)
PHASES = ("stable", "stable", "decay")


def _tasks(objective: str, k: int) -> dict:
    """Task results at the k-th checkpoint, shaped as ettin.eval writes them: the encoder ahead on
    classification and retrieval, the decoder on PIQA and generation, a tie on STS-B, objective-specific
    language modelling."""
    enc = objective == "mlm"
    g = 0.01 * k  # both improve along training
    run_info = {"settings": {"limit": 500, "finetune": {"lr": 1e-4}}, "seconds": 1.5}
    tasks = {
        "sst2": {
            "main": "accuracy",
            "accuracy": (0.80 if enc else 0.60) + g,
            "majority_baseline": 0.5092,
            "n": 872,
            "n_train": 2000,
            "family": "classification",
        },
        "cola": {"main": "mcc", "mcc": (0.25 if enc else 0.05) + g, "accuracy": 0.7, "n": 1043},
        "stsb": {"main": "spearman", "spearman": 0.4125, "pearson": 0.4 + g, "n": 1500},
        "cranfield": {
            "main": "ndcg@10",
            "ndcg@10": (0.31 if enc else 0.12) + g,
            "recall@100": 0.55 if enc else 0.3,
            "bm25": {"ndcg@10": 0.3839, "recall@100": 0.7021},
            "n": 225,
            "corpus_size": 1400,
            "family": "retrieval",
            "collection": "cranfield",
        },
        "piqa": {
            "main": "acc_norm",
            "acc_norm": (0.55 if enc else 0.62) + g,
            "acc": 0.56,
            "chance": 0.5,
            "n": 1838,
            "family": "multiple_choice",
            "method": "log-likelihood",
        },
        "generation": {
            "main": "chrf",
            "chrf": (0.05 if enc else 0.15) + g,
            "rouge_l": 0.2,
            "n": 50,
            "family": "generation",
            "example": {"prompt": "a", "output": "b"},
        },
        "winogender": {
            "main": "counter_stereotype_rate",
            "counter_stereotype_rate": 0.41,
            "male_rate": 0.3 if enc else 0.5,
            "female_rate": 0.1 if enc else 0.2,
            "neutral_rate": 0.6 if enc else 0.3,
            "n": 240,
            "family": "bias",
        },
    }
    if enc:
        tasks["lm"] = {
            "main": "masked_accuracy",
            "masked_accuracy": 0.2 + g,
            "pseudo_perplexity": 80.5 - 10 * k,
            "mask_probability": 0.15,
            "tokens_scored": 5000,
            "family": "language_modeling",
        }
    else:
        tasks["lm"] = {
            "main": "perplexity",
            "perplexity": 120.25 - 10 * k,
            "n": 100,
            "family": "language_modeling",
        }
    return {name: task | run_info for name, task in tasks.items()}


def make_runs(root: Path) -> Path:
    """runs/demo/{encoder,decoder}/metrics.jsonl and runs/demo/eval/{encoder,decoder}/<checkpoint>.json."""
    pair = root / "runs" / "demo"
    for objective, name in (("mlm", "encoder"), ("clm", "decoder")):
        run = pair / name
        run.mkdir(parents=True)
        with open(run / "metrics.jsonl", "w") as f:
            for step in range(1, 31):
                phase = "stable" if step <= 20 else "decay"
                loss = (9.0 if objective == "mlm" else 8.0) / (1 + 0.1 * step)
                f.write(
                    json.dumps(
                        {
                            "phase": phase,
                            "step": step,
                            "tokens": 100 * step,
                            "loss": loss,
                            "lr": 1e-3,
                            "tokens_per_s": 5000.0,
                        }
                    )
                    + "\n"
                )
        out = pair / "eval" / name
        out.mkdir(parents=True)
        for k, (tokens, phase) in enumerate(zip(TOKENS, PHASES)):
            ckpt = f"{phase}-step{tokens // 100:07d}"
            model = {
                "run": f"demo/{name}",
                "objective": objective,
                "size": "demo",
                "checkpoint": ckpt,
                "phase": phase,
                "step": tokens // 100,
                "tokens": tokens,
                "sha256": f"{objective}{k}" * 8,
            }
            data = {"model": model, "settings": {"seed": 0, "max_length": 128}, "tasks": _tasks(objective, k)}
            (out / f"{ckpt}.json").write_text(json.dumps(data))
    return pair


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    pair = make_runs(root)
    out = root / "report"
    data = report.build_report([pair], out, title="demo pair")
    return pair, out, data


def _table_row(md: str, task: str, metric: str) -> list[str]:
    rows = [line for line in md.splitlines() if line.startswith(f"| {task} | demo | {metric} |")]
    assert len(rows) == 1, (task, metric, rows)
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_markdown_tables_equal_the_last_checkpoint_inputs(built):
    pair, out, _ = built
    md = (out / "report.md").read_text()
    last = {
        o: json.loads((pair / "eval" / n / "decay-step0000030.json").read_text())["tasks"]
        for o, n in (("mlm", "encoder"), ("clm", "decoder"))
    }
    for task, metric in (
        ("sst2", "accuracy"),
        ("cola", "mcc"),
        ("cranfield", "ndcg@10"),
        ("piqa", "acc_norm"),
        ("stsb", "spearman"),
        ("stsb", "pearson"),
        ("cranfield", "recall@100"),
    ):
        main = last["mlm"][task]["main"] == metric
        cells = _table_row(md, task, metric + (" (main)" if main else ""))
        enc, dec = (float(c.strip("*").replace(",", "")) for c in cells[3:5])
        assert enc == pytest.approx(last["mlm"][task][metric], abs=5e-5)
        assert dec == pytest.approx(last["clm"][task][metric], abs=5e-5)
    assert _table_row(md, "sst2", "accuracy (main)")[3].startswith("**")  # the better one marked
    assert _table_row(md, "piqa", "acc_norm (main)")[4].startswith("**")
    assert not any(
        "settings." in line or "corpus_size" in line or "seconds" in line
        for line in md.split("## Provenance")[0].splitlines()
    )  # run details are not metrics
    assert _table_row(md, "stsb", "spearman (main)")[6] == "tie"
    bm25 = _table_row(md, "cranfield", "bm25.ndcg@10")
    assert bm25[3] == bm25[4] == "0.3839" and bm25[6].startswith("not compared")
    ppl = _table_row(md, "lm", "perplexity (main)")  # never ranked against pseudo-perplexity
    assert ppl[4] == "100.25" and ppl[6].startswith("not compared")
    assert _table_row(md, "lm", "pseudo_perplexity")[3] == "60.50"


def test_directions_as_measured(built):
    _, out, data = built
    verdicts = {d["family"]: d["verdict"] for d in data["directions"]}
    assert verdicts == {
        "classification": "mixed",  # sst2, cola encoder ahead; stsb tie
        "retrieval": "holds",
        "multiple choice": "holds",
        "generation": "holds",
        "language modelling": "not comparable",
        "bias": "holds",
    }
    cls = next(d for d in data["directions"] if d["family"] == "classification")
    assert (cls["encoder_ahead"], cls["decoder_ahead"], cls["ties"]) == (2, 0, 1)
    md = (out / "report.md").read_text()
    assert "### classification: mixed" in md and "### retrieval: holds" in md


def test_verdict_rule_on_hand_made_cases():
    assert compare_values(0.85, 0.60, enc_se=0.012, dec_se=0.016)[0] == "encoder"
    assert compare_values(0.55, 0.70, enc_se=0.012, dec_se=0.011)[0] == "decoder"
    assert compare_values(0.52, 0.50, enc_se=0.017, dec_se=0.017)[0] == "tie"  # |0.02| <= 1.96 * 0.024
    assert compare_values(0.30001, 0.29999)[0] == "tie"  # no error estimate: equal at 4 decimals
    assert compare_values(0.3002, 0.3000)[0] == "encoder"
    assert compare_values(20.0, 30.0, higher_better=False)[0] == "encoder"  # lower perplexity is better
    assert family_verdict("encoder", ["encoder", "encoder"]) == "holds"
    assert family_verdict("encoder", ["decoder", "tie"]) == "does not hold"
    assert family_verdict("encoder", ["encoder", "tie"]) == "mixed"
    assert family_verdict("decoder", []) == "not comparable"
    assert report.standard_error({"accuracy": 0.5, "n": 100}, "accuracy") == pytest.approx(0.05)
    assert report.standard_error({"mcc": 0.5, "n": 100}, "mcc") is None
    assert report.standard_error({"mcc": 0.5, "mcc_stderr": 0.03}, "mcc") == 0.03


def test_task_families():
    fams = {
        t: task_family(t, {"main": m})
        for t, m in (
            ("sst2", "accuracy"),
            ("cola", "mcc"),
            ("mnli_m", "accuracy"),
            ("cranfield", "ndcg@10"),
            ("retrieval/cranfield", "ndcg@10"),
            ("piqa", "acc"),
            ("lm", "perplexity"),
            ("generation", "rouge_l"),
            ("winogender", "gotcha_rate"),
            ("my_mc_task", "acc"),
        )
    }
    assert fams == {
        "sst2": "classification",
        "cola": "classification",
        "mnli_m": "classification",
        "cranfield": "retrieval",
        "retrieval/cranfield": "retrieval",
        "piqa": "multiple choice",
        "lm": "language modelling",
        "generation": "generation",
        "winogender": "bias",
        "my_mc_task": "multiple choice",
    }


def test_html_is_self_contained_and_pngs_exist(built):
    _, out, _ = built
    html = (out / "report.html").read_text()
    srcs = re.findall(r"""src=["']([^"']*)""", html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in html and "<script" not in html and "href=" not in html
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {
        "learning-curves.png",
        "loss-curves.png",
        "bars-classification.png",
        "bars-retrieval.png",
    } <= names
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
    assert len(srcs) == len(pngs)
    md = (out / "report.md").read_text()  # both training logs found, tied to their run's size
    assert (
        "- encoder (demo): `" in md
        and "- decoder (demo): `" in md
        and "30 records, phases stable, decay" in md
    )


def test_report_json_round_trip(built, tmp_path):
    _, out, data = built
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(data))
    assert {c["sha256"] for c in saved["checkpoints"]} >= {"mlm2" * 8, "clm2" * 8}
    assert all(r["settings"]["seed"] == 0 for r in saved["results"])
    # `ettin report report.json` rebuilds the same report without the results files or the run folders
    assert _cli(["report", str(out / "report.json"), "--out", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "report.json").read_text()) == saved
    assert (tmp_path / "again" / "report.md").read_text() == (out / "report.md").read_text()


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ettin")
    report.register_report(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_bad_inputs_exit_2_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.json"
    bad.write_text('{"model": {"objective": "mlm"}, "tasks": ')
    assert _cli(["report", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "broken.json" in capsys.readouterr().err
    no_tasks = tmp_path / "eval" / "no_tasks.json"
    no_tasks.parent.mkdir()
    no_tasks.write_text(json.dumps({"model": {"objective": "clm", "size": "x"}}))
    assert _cli(["report", str(tmp_path / "eval"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no_tasks.json" in err and "'tasks'" in err
    bad_main = tmp_path / "bad_main.json"
    bad_main.write_text(
        json.dumps({"model": {"objective": "clm"}, "tasks": {"sst2": {"main": "f1", "acc": 1}}})
    )
    assert _cli(["report", str(bad_main), "--out", str(tmp_path / "o")]) == 2
    assert "tasks.sst2" in capsys.readouterr().err
    assert _cli(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_two_runs_of_one_size_and_objective_are_refused(tmp_path):
    for run in ("a", "b"):
        data = {
            "model": {"run": run, "objective": "mlm", "size": "17m", "checkpoint": "c", "tokens": 1},
            "settings": {},
            "tasks": {"sst2": {"main": "accuracy", "accuracy": 0.5, "n": 10}},
        }
        (tmp_path / f"{run}.json").write_text(json.dumps(data))
    with pytest.raises(report.ReportError, match="several encoder runs"):
        report.build_report([tmp_path], tmp_path / "out")


def test_metric_values_leave_out_counts_settings_and_timings():
    task = {
        "main": "acc_norm",
        "acc_norm": 0.5,
        "acc": 0.25,
        "n": 10,
        "n_train": 5,
        "chance": 0.25,
        "seconds": 2.0,
        "settings": {"limit": 10, "lr": 1e-4},
        "family": "multiple_choice",
        "tokens_scored": 100,
        "bm25": {"ndcg@10": 0.4},
        "example": {"prompt": "x"},
        "acc_stderr": 0.1,
    }
    assert report.metric_values(task) == {"acc_norm": 0.5, "acc": 0.25, "chance": 0.25, "bm25.ndcg@10": 0.4}


def test_one_objective_only_is_reported_but_not_compared(tmp_path):
    data = {
        "model": {"run": "solo", "objective": "clm", "size": "17m", "checkpoint": "c", "tokens": 10},
        "settings": {"seed": 1},
        "tasks": {"sst2": {"main": "accuracy", "accuracy": 0.7125, "n": 100}},
    }
    (tmp_path / "r.json").write_text(json.dumps(data))
    out = report.build_report([tmp_path / "r.json"], tmp_path / "out")
    assert [d["verdict"] for d in out["directions"]] == ["not comparable"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| sst2 | 17m | accuracy (main) | — | 0.7125 | — | not compared (a) |" in md
    assert not (tmp_path / "out" / "learning-curves.png").exists()  # one checkpoint: no curves


def test_bad_training_log_and_conflicting_duplicates_are_named(tmp_path):
    log = tmp_path / "run" / "metrics.jsonl"
    log.parent.mkdir()
    log.write_text('{"phase": "stable", "step": 1, "tokens": 10, "loss": 5.0}\n{"phase": \n')
    with pytest.raises(report.ReportError, match=r"metrics\.jsonl:2"):
        report.collect([tmp_path / "run"])
    base = {
        "model": {"run": "r", "objective": "mlm", "size": "17m", "checkpoint": "c", "sha256": "ab"},
        "settings": {},
        "tasks": {"sst2": {"main": "accuracy", "accuracy": 0.5, "n": 10}},
    }
    (tmp_path / "a.json").write_text(json.dumps(base))
    base["tasks"]["sst2"]["accuracy"] = 0.6
    (tmp_path / "b.json").write_text(json.dumps(base))
    with pytest.raises(report.ReportError, match="differs"):
        report.collect([tmp_path / "a.json", tmp_path / "b.json"])
    base["tasks"] = {"piqa": {"main": "acc_norm", "acc_norm": 0.5, "n": 10}}  # split over files: joined
    (tmp_path / "b.json").write_text(json.dumps(base))
    (merged,) = report.collect([tmp_path / "a.json", tmp_path / "b.json"]).results
    assert set(merged.tasks) == {"sst2", "piqa"}


def _reference_table(text: str, section: str) -> tuple[list[str], list[tuple[str, tuple[float, ...]]]]:
    lines = text[text.index(section) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows[0][1:], [(r[0].strip("*"), tuple(float(c) for c in r[1:])) for r in rows[2:]]


def test_published_numbers_match_the_reference_tables():
    from ettin.eval import published

    for columns, rows in (
        (published.ENCODER_COLUMNS, published.ENCODER_ROWS),
        (published.DECODER_COLUMNS, published.DECODER_ROWS),
    ):
        assert all(len(values) == len(columns) for _, values in rows)
    ref = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ettin.md"
    if not ref.is_file():
        pytest.skip(f"reference not found at {ref}")
    text = ref.read_text()
    assert _reference_table(text, "### 6.2") == (
        list(published.ENCODER_COLUMNS),
        list(published.ENCODER_ROWS),
    )
    assert _reference_table(text, "### 6.3") == (
        list(published.DECODER_COLUMNS),
        list(published.DECODER_ROWS),
    )
