"""`ettin finetune embed | sparse | rerank` (sentence-transformers) end to end on tiny random ettin models, offline:
each command trains a few steps, the library loads the saved folder back, and the scores in the results JSON are
the ones the library's evaluator gives that folder on a Cranfield subset. Plus the shared pieces (model
resolution, pair files, scoring, results) and every bad input the issue names."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("sentence_transformers")

from downstream_tiny import beir_subset, build, forbid_exports  # noqa: E402
from ettin.cli import UserError  # noqa: E402
from ettin.cli import main as ettin_main  # noqa: E402
from ettin.downstream import common  # noqa: E402
from ettin.eval.tasks.retrieval import Collection  # noqa: E402

FAST = ["--max-steps", "2", "--batch-size", "8", "--max-length", "48", "--query-limit", "12", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("downstream")
    beir = beir_subset(shared_data / "retrieval" / "cranfield" / "beir", root / "cran", queries=24, docs=120)
    env = build(root / "models", beir)
    env.beir = beir
    return env


def _args(tiny, out, *extra):
    return ["--out", str(out), "--results", str(tiny.root / "results"), "--pairs", f"beir:{tiny.beir}",
            "--beir", str(tiny.beir), *FAST, *extra]


def _results(tiny, objective, checkpoint="stable-step0000010"):
    return json.loads((tiny.root / "results" / f"{objective}-run" / f"{checkpoint}.json").read_text())


# ------------------------------------------------------------------------------------------ shared pieces
def test_resolve_checkpoint_run_and_hf_folder(tiny, tmp_path):
    for objective in ("mlm", "clm"):
        by_run = common.resolve(str(tiny.runs[objective]), tmp_path / "a")
        by_ckpt = common.resolve(str(tiny.ckpt[objective]), tmp_path / "b")
        by_hf = common.resolve(str(tiny.hf[objective]), tmp_path / "c")
        assert by_run.objective == by_ckpt.objective == by_hf.objective == objective
        assert by_run.model["checkpoint"] == "stable-step0000010" and by_run.model["tokens"] == 10_000
        assert by_run.model["sha256"] == by_ckpt.model["sha256"] != by_hf.model["sha256"]
        assert by_run.model["role"] == {"mlm": "encoder", "clm": "decoder"}[objective]
        assert (by_run.folder / "config.json").is_file() and by_hf.folder == tiny.hf[objective]
        assert common.resolve_model(str(tiny.hf[objective]), tmp_path) == (tiny.hf[objective], objective)


def test_resolve_rejects_unknown_model_and_pair_folder(tiny, tmp_path):
    with pytest.raises(UserError, match="nope"):
        common.resolve(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(UserError, match="no-such-org/no-such-model"):  # a hub id, offline: fails clearly
        common.resolve("no-such-org/no-such-model", tmp_path)
    (tmp_path / "pair").mkdir()
    for side, objective in (("encoder", "mlm"), ("decoder", "clm")):
        (tmp_path / "pair" / side).symlink_to(tiny.runs[objective], target_is_directory=True)
    with pytest.raises(UserError, match="several runs"):
        common.resolve(str(tmp_path / "pair"), tmp_path)


def test_scores_match_a_hand_computed_ranking():
    col = Collection(["d1", "d2", "d3"], ["x", "y", "z"], ["q1", "q2"], ["a", "b"], {"q1": {"d2": 1}, "q2": {"d3": 2}})
    ranking = {"q1": {"d1": 0.9, "d2": 0.5, "d3": 0.1}, "q2": {"d3": 0.7, "d1": 0.7, "d2": 0.0}}
    # q1: relevant at rank 2 -> nDCG 1/log2(3), MRR 1/2; q2: tie broken by ascending id (d1 first) -> rank 2
    expected = 1 / np.log2(3)
    got = common.ranking_metrics(common.ir_evaluator(col), ranking)
    assert got["ndcg@10"] == pytest.approx(expected) and got["mrr@10"] == pytest.approx(0.5)
    assert got["recall@100"] == 1.0
    assert common.per_query(col, ranking) == pytest.approx([expected, expected])


def test_write_results_merges_tasks_of_the_same_model(tmp_path):
    model = {"run": "r", "checkpoint": "c", "sha256": "s", "role": "encoder", "objective": "mlm",
             "path": str(tmp_path / "pair-a" / "r" / "c")}
    path = common.results_path(tmp_path, model)
    common.write_results(path, model, {"a": {"main": "x", "x": 1.0}})
    common.write_results(path, model, {"b": {"main": "x", "x": 2.0}})
    assert set(json.loads(path.read_text())["tasks"]) == {"a", "b"}
    common.write_results(path, model | {"sha256": "other"}, {"c": {"main": "x", "x": 3.0}})
    assert set(json.loads(path.read_text())["tasks"]) == {"c"}  # another model under the same name: replaced
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["c.json"]  # no temporary left
    # another run of the same name (another pair's encoder at another path): a file of its own, the first one kept
    other = model | {"sha256": "t", "path": str(tmp_path / "pair-b" / "r" / "c")}
    other_path = common.results_path(tmp_path, other)
    assert other_path != path and other_path.parent.name.startswith("r-")
    common.write_results(other_path, other, {"d": {"main": "x", "x": 4.0}})
    assert set(json.loads(path.read_text())["tasks"]) == {"c"} and common.results_path(tmp_path, other) == other_path


def test_pairs_from_jsonl_parquet_and_beir(tiny, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"q": f"query {i}", "p": f"passage {i}", "other": i} for i in range(5)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    for name in ("p.jsonl", "p.parquet"):
        assert common.load_pairs(str(tmp_path / name), "q", "p") == [(r["q"], r["p"]) for r in rows]
    assert len(common.load_pairs(str(tmp_path / "p.jsonl"), "q", "p", limit=3)) == 3
    (tmp_path / "folder").mkdir()  # a local folder of data files goes through datasets.load_dataset
    (tmp_path / "folder" / "train.jsonl").write_text((tmp_path / "p.jsonl").read_text())
    assert common.load_pairs(str(tmp_path / "folder"), "q", "p") == [(r["q"], r["p"]) for r in rows]
    with pytest.raises(UserError, match="no-such/pairs-dataset"):  # offline: a hub name fails clearly
        common.load_pairs("no-such/pairs-dataset")
    col = common.load_collection(tiny.beir, 12)
    pairs = common.load_pairs(f"beir:{tiny.beir}", exclude_beir=(tiny.beir, set(col.query_ids)))
    scored = set(col.queries)
    assert pairs and not {q for q, _ in pairs} & scored  # training queries are disjoint from scored ones


# ------------------------------------------------------------------------------------------------- embed
def _check_retrieval_task(task, col, depth=100):
    assert task["family"] == "retrieval" and task["main"] == "ndcg@10" and task["baseline_name"] == "BM25"
    assert task["n"] == len(col.query_ids) == len(task["per_example"]["score"])
    assert np.mean(task["per_example"]["score"]) == pytest.approx(task["ndcg@10"])
    assert np.mean(task["per_example"]["baseline"]) == pytest.approx(task["baseline"])
    bm25 = common.ranking_metrics(common.ir_evaluator(col), common.bm25_ranking(col, depth))
    assert task["bm25"] == pytest.approx(bm25) and bm25["ndcg@10"] > 0.2  # BM25 works on Cranfield


@pytest.mark.parametrize("objective,pooling", [("mlm", "mean"), ("clm", "lasttoken")])
def test_finetune_embed_end_to_end(tiny, objective, pooling, capsys):
    from sentence_transformers import SentenceTransformer

    out = tiny.root / f"embed-{objective}"
    assert ettin_main(["finetune", "embed", str(tiny.runs[objective]), *_args(tiny, out)]) == 0
    printed = capsys.readouterr().out
    assert "ndcg@10" in printed and "(BM25 " in printed
    model = SentenceTransformer(str(out), device="cpu")
    assert model[1].pooling_mode == pooling and model.get_embedding_dimension() == 64
    col = common.load_collection(tiny.beir, 12)
    scores, _, _ = common.evaluate_embeddings(model, col)
    task = _results(tiny, objective)["tasks"][f"embed:{tiny.beir.name}"]
    assert task["ndcg@10"] == pytest.approx(scores["ndcg@10"]) and task["recall@100"] == pytest.approx(scores["recall@100"])
    _check_retrieval_task(task, col)
    untuned = SentenceTransformer(str(tiny.hf[objective]), device="cpu") if objective == "mlm" else None
    if untuned is not None:  # the weights moved: training happened
        assert not np.allclose(model.encode(["wing lift"]), untuned.encode(["wing lift"]))


# ------------------------------------------------------------------------------------------------ sparse
def test_finetune_sparse_end_to_end(tiny, capsys):
    from sentence_transformers import SparseEncoder

    out = tiny.root / "sparse-mlm"
    assert ettin_main(["finetune", "sparse", str(tiny.hf["mlm"]), *_args(tiny, out)]) == 0
    assert "active dimensions" in capsys.readouterr().out
    model = SparseEncoder(str(out), device="cpu")
    col = common.load_collection(tiny.beir, 12)
    emb = model.encode_query(col.queries, convert_to_tensor=True).to_dense()
    assert emb.shape == (12, 512) and (emb >= 0).all()
    res = json.loads((tiny.root / "results" / "mlm-run" / "final.json").read_text())
    task = res["tasks"][f"sparse:{tiny.beir.name}"]
    assert task["query_active_dims"] == pytest.approx(float((emb > 0).sum(1).float().mean()), rel=1e-4)
    assert task["vocabulary_size"] == 512
    _check_retrieval_task(task, col)


def test_sparse_refuses_a_decoder(tiny, capsys, monkeypatch):
    forbid_exports(monkeypatch)  # refused from its meta.json, before any export
    out = tiny.root / "sparse-clm"
    assert ettin_main(["finetune", "sparse", str(tiny.runs["clm"]), *_args(tiny, out)]) == 2
    assert "decoder" in capsys.readouterr().err and not out.exists()


# ------------------------------------------------------------------------------------------------ rerank
def test_bm25_negatives_are_hard_and_never_positives():
    from ettin.downstream.rerank import bm25_negatives

    pairs = [("wing lift", "lift of a wing"), ("wing lift", "wing lift at high speed"),
             ("boundary layer", "the boundary layer of a plate")]
    extra = [("heat flux", "heat flux in a wing lift test"), ("shock", "shock waves")]
    rows = bm25_negatives(pairs + extra, k=1)
    negatives = {r["query"]: r["passage"] for r in rows if r["label"] == 0.0}
    assert negatives["wing lift"] == "heat flux in a wing lift test"  # the best match that is not a positive
    assert all(r["passage"] not in {p for q, p in pairs + extra if q == r["query"]} for r in rows if not r["label"])
    assert sum(r["label"] == 1.0 for r in rows) == 5


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_finetune_rerank_end_to_end(tiny, objective, capsys):
    from sentence_transformers import CrossEncoder

    from ettin.downstream.rerank import rerank

    out = tiny.root / f"rerank-{objective}"
    assert ettin_main(["finetune", "rerank", str(tiny.ckpt[objective]), *_args(tiny, out), "--depth", "30"]) == 0
    assert "BM25 alone" in capsys.readouterr().out
    model = CrossEncoder(str(out), device="cpu")
    assert model.config.num_labels == 1
    col = common.load_collection(tiny.beir, 12)
    ranking = rerank(model, col, common.bm25_ranking(col, 30))
    assert len({s for docs in ranking.values() for s in docs.values()}) > 1  # a real score, not a constant
    scores = common.ranking_metrics(common.ir_evaluator(col), ranking)
    task = _results(tiny, objective)["tasks"][f"rerank:{tiny.beir.name}"]
    assert task["ndcg@10"] == pytest.approx(scores["ndcg@10"])
    assert task["recall@100"] == pytest.approx(task["bm25"]["recall@100"])  # the same 100 documents, reordered
    _check_retrieval_task(task, col, depth=30)


def test_report_shows_encoder_and_decoder_downstream_side_by_side(tiny):
    from ettin.eval import report

    if not (tiny.root / "results" / "clm-run").is_dir():
        assert ettin_main(["finetune", "rerank", str(tiny.ckpt["clm"]), *_args(tiny, tiny.root / "rr"), "--depth", "30"]) == 0
    if not (tiny.root / "results" / "mlm-run" / "stable-step0000010.json").is_file():
        assert ettin_main(["finetune", "rerank", str(tiny.ckpt["mlm"]), *_args(tiny, tiny.root / "rr"), "--depth", "30"]) == 0
    data = report.build([tiny.root / "results" / "mlm-run" / "stable-step0000010.json",
                         tiny.root / "results" / "clm-run" / "stable-step0000010.json"])
    cells = {(role, f["task"]) for role, figs in data["detail"].items() for f in figs}
    assert {("encoder", f"rerank:{tiny.beir.name}"), ("decoder", f"rerank:{tiny.beir.name}")} <= cells


# --------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_are_clear_errors_and_leave_no_folder(tiny, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"question": "q", "passage": "p"}) + "\n")
    cases = [  # (arguments, what the message says, the file it names)
        (["--pairs", str(pairs)], "no field 'query'", pairs),  # the default query field is missing
        (["--pairs", str(pairs), "--query-field", "question", "--passage-field", "text"], "no field 'text'", pairs),
        (["--pairs", str(tmp_path / "empty.jsonl")], "empty", tmp_path / "empty.jsonl"),
        (["--pairs", str(tmp_path / "absent.jsonl")], "no such file", tmp_path / "absent.jsonl"),
        (["--beir", str(tmp_path / "noqrels")], "no qrels/test.tsv", tmp_path / "noqrels"),
    ]
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "noqrels").mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        (tmp_path / "noqrels" / name).write_text((tiny.beir / name).read_text())
    for command in ("embed", "sparse", "rerank"):
        for extra, message, named in cases:
            out = tmp_path / f"out-{command}"
            argv = ["finetune", command, str(tiny.hf["mlm"]), *_args(tiny, out), *extra]
            assert ettin_main(argv) == 2, (command, extra)
            err = capsys.readouterr().err
            assert message in err and str(named) in err, (command, extra, err)
            assert not out.exists()
        assert ettin_main(["finetune", command, str(tmp_path / "no-model"), *_args(tiny, tmp_path / "o")]) == 2
        assert "no-model" in capsys.readouterr().err
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "mine.txt").write_text("x")
    assert ettin_main(["finetune", "embed", str(tiny.hf["mlm"]), *_args(tiny, tmp_path / "keep")]) == 2
    assert "not a model folder" in capsys.readouterr().err and (tmp_path / "keep" / "mine.txt").is_file()


def test_a_failed_training_leaves_no_half_written_folder(tiny, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformerTrainer

    def boom(self, *a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(SentenceTransformerTrainer, "train", boom)
    out = tmp_path / "embed"
    with pytest.raises(RuntimeError, match="interrupted"):
        ettin_main(["finetune", "embed", str(tiny.hf["mlm"]), *_args(tiny, out)])
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary sibling


def test_python_dash_m_reports_a_user_error_with_exit_2(tmp_path):
    """`python -m ettin.cli` runs cli.py as __main__; the areas raise ettin.cli.UserError, which must still be
    caught (exit 2, one line), not end in a traceback."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "ettin.cli", "finetune", "embed", str(tmp_path / "m"), "--out",
                           str(tmp_path / "o"), "--pairs", "p.jsonl", "--beir", str(tmp_path / "no-beir")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "no-beir" in proc.stderr and "Traceback" not in proc.stderr


def test_load_report_silenced_only_where_the_dropped_weights_are_expected(tiny, tmp_path):
    """Building the bi-encoder's body or the reranker's classifier from a masked-LM / causal-LM folder drops the LM
    head (and creates the classifier): transformers' load report of exactly those weights read as an error and is
    not printed; a report with any other row (a body weight missing) still is."""
    import logging

    from safetensors.torch import load_file, save_file

    from ettin.downstream import embed, rerank

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    keep = Keep()
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addHandler(keep)
    try:
        embed.build_model(tiny.hf["mlm"], "mlm", None, 48, "cpu")
        rerank.build_model(tiny.hf["mlm"], 48, "cpu")
        rerank.build_model(tiny.hf["clm"], 48, "cpu")
        assert not [m for m in keep.messages if "LOAD REPORT" in m], keep.messages
        broken = tmp_path / "broken"
        broken.mkdir()
        for f in tiny.hf["mlm"].iterdir():
            if f.name != "model.safetensors":
                (broken / f.name).write_bytes(f.read_bytes())
        weights = load_file(str(tiny.hf["mlm"] / "model.safetensors"))
        gone = next(k for k in weights if ".layers.1." in k)
        save_file({k: v for k, v in weights.items() if k != gone}, str(broken / "model.safetensors"),
                  metadata={"format": "pt"})
        embed.build_model(broken, "mlm", None, 48, "cpu")
        shown = [m for m in keep.messages if "LOAD REPORT" in m]
        assert len(shown) == 1 and "MISSING" in shown[0] and "UNEXPECTED" in shown[0]
    finally:
        logger.removeHandler(keep)
