"""`ettin finetune colbert`: PyLate in its own environment, end to end on tiny random ettin models, offline.

The slow test builds PyLate's environment when it is missing ($ETTIN_COLBERT_ENV, else the user cache, shared by
every checkout: about 5 minutes once), trains a few steps, loads the saved folder back with
`pylate.models.ColBERT(path)` in that environment and checks the results JSON against the library's own scoring.
The fast tests cover the environment's recipe and every bad input, none of which may build it."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("sentence_transformers")

from downstream_tiny import beir_subset, build  # noqa: E402
from ettin.cli import UserError  # noqa: E402
from ettin.cli import main as ettin_main  # noqa: E402
from ettin.downstream import colbert, common  # noqa: E402

FAST = ["--max-steps", "2", "--batch-size", "8", "--mini-batch-size", "4", "--max-length", "48",
        "--query-limit", "12", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("colbert")
    beir = beir_subset(shared_data / "retrieval" / "cranfield" / "beir", root / "cran", queries=24, docs=120)
    env = build(root / "models", beir)
    env.beir = beir
    return env


def _cmd(tiny, model, out, *extra):
    return ["finetune", "colbert", str(model), "--out", str(out), "--results", str(tiny.root / "results"),
            "--pairs", f"beir:{tiny.beir}", "--beir", str(tiny.beir), *FAST, *extra]


# ------------------------------------------------------------------------------------------ environment
def test_pins_leave_out_fast_plaid_and_fix_every_version():
    pins = [line for line in colbert.PINS.read_text().splitlines() if line and not line.startswith("#")]
    names = {p.split("==")[0].lower().replace("_", "-") for p in pins}
    assert all("==" in p for p in pins)
    assert {"pylate", "sentence-transformers", "transformers", "voyager", "datasets", "accelerate"} <= names
    assert "fast-plaid" not in names and "torch" not in names  # torch comes first, with its own dependencies
    assert "pylate==1.6.0" in pins and "sentence-transformers==5.3.0" in pins and "voyager==2.1.0" in pins
    steps = colbert.build_steps(colbert.Path("/x/env"))
    assert steps[0][1:3] == ["-m", "venv"] and colbert.TORCH in steps[1]
    assert "--no-deps" in steps[2] and str(colbert.PINS) in steps[2]


def test_a_failed_build_leaves_no_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(colbert, "build_steps", lambda env: [[sys.executable, "-c", "import os; os.makedirs("
                                                              f"{str(env)!r}, exist_ok=True); print('no wheel'); "
                                                              "raise SystemExit(3)"]])
    env = tmp_path / "env"
    with pytest.raises(UserError, match="exit 3.*\n.*no wheel"):
        colbert.ensure_env(env, log=lambda s: None)
    assert not env.exists() and not list(tmp_path.glob(".env.tmp-*"))
    assert not colbert.env_ready(env)


def test_a_folder_it_did_not_build_is_not_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not an environment built by ettin"):
        colbert.ensure_env(tmp_path / "mine", log=lambda s: None)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"


def test_bad_input_fails_before_any_environment_or_model_work(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(colbert, "ensure_env", lambda *a, **k: pytest.fail("the environment was asked for"))
    out = tmp_path / "out"
    (tmp_path / "noqrels").mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        (tmp_path / "noqrels" / name).write_text((tiny.beir / name).read_text())
    run = tiny.runs["mlm"]
    cases = [(_cmd(tiny, tmp_path / "nope", out), "nope"),
             (_cmd(tiny, run, out, "--pairs", str(tmp_path / "x.jsonl")), "x.jsonl"),
             (_cmd(tiny, run, out, "--beir", str(tmp_path / "noqrels")), "qrels/test.tsv")]
    for argv, named in cases:
        assert ettin_main(argv) == 2
        assert named in capsys.readouterr().err
        assert not out.exists()


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_colbert_end_to_end_pylate_loads_and_scores_it(tiny, tmp_path, objective):
    python = colbert.ensure_env()  # built once per machine (or $ETTIN_COLBERT_ENV), reused afterwards
    out = tmp_path / "colbert"
    assert ettin_main(_cmd(tiny, tiny.runs[objective], out)) == 0
    assert (out / common.MARKER).is_file() and not list(tmp_path.glob(".colbert.tmp-*"))
    # PyLate loads the folder back on its own and gives one 128-d vector per token
    probe = ("import sys; from pylate import models; m = models.ColBERT(sys.argv[1], device='cpu'); "
             "d = m.encode(['wing flutter at supersonic speeds'], is_query=False)[0]; "
             "q = m.encode(['flutter'], is_query=True)[0]; print(d.shape[1], q.shape[0])")
    res = subprocess.run([str(python), "-I", "-c", probe, str(out)], capture_output=True, text=True,
                         env=os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-2:] == ["128", "32"]  # embedding size; the query [MASK]-expanded to 32 tokens
    results = json.loads((tiny.root / "results" / f"{objective}-run" / "stable-step0000010.json").read_text())
    task = results["tasks"]["colbert:cran"]
    assert results["model"]["objective"] == objective and task["main"] == "ndcg@10"
    assert task["n"] == 12 and len(task["per_example"]["score"]) == len(task["per_example"]["baseline"]) == 12
    for m in common.IR_METRICS:
        assert 0.0 <= task[m] <= 1.0 and 0.0 <= task["untuned"][m] <= 1.0
    assert task["baseline_name"] == "BM25" and task["baseline"] == task["bm25"]["ndcg@10"] > 0.3
    assert task["steps"] == 2 and task["versions"]["pylate"] == "1.6.0"
    assert task["settings"]["index"] == "pylate.indexes.Voyager"
    assert sum(task["per_example"]["score"]) / 12 == pytest.approx(task["ndcg@10"], abs=1e-6)
