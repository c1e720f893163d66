"""`ettin mteb` (MTEB v2 through the mteb package) on tiny random ettin models, offline: a local BEIR folder run as
an MTEB retrieval task agrees with the sentence-transformers evaluator figure `ettin finetune embed` reports, on
the fine-tuned folder and on checkpoints embedded with a pooling choice; names are checked against mteb's
registry and hub tasks are refused while offline, before any model work."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("mteb")
pytest.importorskip("sentence_transformers")

from downstream_tiny import beir_subset, build  # noqa: E402
from ettin.cli import main as ettin_main  # noqa: E402
from ettin.downstream import common, embed, mteb_eval  # noqa: E402

TOL = 1e-6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mteb")
    beir = beir_subset(shared_data / "retrieval" / "cranfield" / "beir", root / "cran", queries=24, docs=120)
    env = build(root / "models", beir)
    env.beir = beir
    return env


def _results(root, objective):
    return json.loads((root / f"{objective}-run" / "stable-step0000010.json").read_text())["tasks"]


def test_agrees_with_finetune_embed_on_its_folder(tiny, tmp_path):
    """The figure `ettin finetune embed` reports (sentence-transformers' InformationRetrievalEvaluator, binary
    judgements) and mteb's on the folder it saved, both in the fine-tuned model's results file."""
    res = tmp_path / "results"
    assert ettin_main(["finetune", "embed", str(tiny.runs["mlm"]), "--out", str(tmp_path / "st"), "--results", str(res),
                       "--pairs", f"beir:{tiny.beir}", "--beir", str(tiny.beir), "--max-steps", "2", "--batch-size",
                       "8", "--max-length", "48", "--query-limit", "12", "--device", "cpu"]) == 0
    assert ettin_main(["mteb", str(tmp_path / "st"), "--tasks", f"beir:{tiny.beir}", "--query-limit", "12",
                       "--results", str(res), "--device", "cpu"]) == 0
    tasks = _results(res, "mlm")
    st, mt = tasks[f"embed:{tiny.beir.name}"], tasks[f"mteb:{tiny.beir.name}"]
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        assert abs(st[metric] - mt[metric]) < TOL, metric
    assert abs(mt["mteb_scores"]["test"][0]["ndcg_at_10"] - st["ndcg@10"]) <= 5e-6  # mteb rounds to 5 decimals
    assert mt["main"] == "ndcg@10" and mt["n"] == 12 and mt["model_folder"] == str(tmp_path / "st")
    assert np.mean(mt["per_example"]["score"]) == pytest.approx(mt["ndcg@10"], abs=TOL)
    assert mt["baseline_name"] == "BM25" and mt["baseline"] == pytest.approx(st["baseline"])


@pytest.mark.parametrize("objective,pooling", [("mlm", "mean"), ("mlm", "cls"), ("clm", "lasttoken")])
def test_checkpoint_with_a_pooling_choice(tiny, tmp_path, objective, pooling):
    """A checkpoint embedded with a pooling choice. The two libraries agree on every similarity score; their
    nDCG@10 agree to 1e-6 unless scores tie at the top (the random encoder's [CLS] vectors nearly coincide), where
    each figure is the other library's code with its tie order: pytrec_eval (mteb) document id descending,
    sentence-transformers ascending."""
    res = tmp_path / "results"
    assert ettin_main(["mteb", str(tiny.ckpt[objective]), "--tasks", f"beir:{tiny.beir}", "--pooling", pooling,
                       "--max-length", "128", "--results", str(res), "--device", "cpu"]) == 0
    task = _results(res, objective)[f"mteb:{tiny.beir.name}"]
    model = embed.build_model(tiny.hf[objective], objective, pooling, 128, "cpu")
    col = common.load_collection(tiny.beir)
    scores, ranking, _ = common.evaluate_embeddings(model, col)
    assert task["pooling"] == pooling and task["n"] == len(col.query_ids)
    assert np.mean(task["per_example"]["score"]) == pytest.approx(task["ndcg@10"], abs=TOL)  # per query, too
    (_,) = mteb_eval.evaluate(model, [mteb_eval.local_task(col, "again")], 32, tmp_path / "pred")
    theirs = json.loads(next((tmp_path / "pred").glob("again*.json")).read_text())["default"]["test"]
    assert max(abs(s - theirs[q][d]) for q, docs in ranking.items() for d, s in docs.items()) < TOL
    assert task["tie_sensitive_queries"] == mteb_eval.tie_sensitive(theirs)
    if task["tie_sensitive_queries"] == 0:
        for metric in ("ndcg@10", "mrr@10", "recall@100"):
            assert abs(scores[metric] - task[metric]) < TOL, metric
    else:
        ev = common.ir_evaluator(col)
        ascending = {q: {d: -float(i) for i, (d, _) in enumerate(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0])))}
                     for q, docs in theirs.items()}
        assert abs(common.ranking_metrics(ev, ascending)["ndcg@10"] - scores["ndcg@10"]) < TOL
        assert abs(common.ranking_metrics(ev, mteb_eval.trec_order(theirs))["ndcg@10"] - task["ndcg@10"]) < TOL


def test_names_checked_and_hub_tasks_refused_offline(tiny, tmp_path, capsys):
    def no_model(*a, **k):
        raise AssertionError("loaded a model")

    cases = [(["--tasks", "NFCorpus"], "offline"), (["--benchmark", "MTEB(eng, v2)"], "offline"),
             (["--tasks", "NoSuchTask"], "NoSuchTask"), (["--benchmark", "No bench"], "No bench"),
             (["--tasks", f"beir:{tmp_path}"], "corpus.jsonl"), ([], "no task")]
    original, mteb_eval.load_model = mteb_eval.load_model, no_model
    try:
        for extra, named in cases:
            assert ettin_main(["mteb", str(tiny.hf["mlm"]), "--results", str(tmp_path / "res"), *extra]) == 2
            assert named in capsys.readouterr().err, extra
    finally:
        mteb_eval.load_model = original
    assert not (tmp_path / "res").exists()


def test_benchmark_entry_averages_tasks_and_types():
    import mteb

    bench = mteb.get_benchmark("MTEB(eng, v2)")
    clustering = [t for t in bench.tasks if t.metadata.type == "Clustering"][:2]
    picked = [t for t in bench.tasks if t.metadata.type != "Clustering"][:3] + clustering
    tasks = {f"mteb:{t.metadata.name}": {"main": "m", "m": float(i)} for i, t in enumerate(picked)}
    entry = mteb_eval.benchmark_entry(bench, tasks, {}, 0.0)
    assert entry["average"] == pytest.approx(np.mean(range(len(picked)))) and not entry["complete"]
    types = {t.metadata.type for t in picked}
    assert set(entry["by_type"]) == types and entry["n"] == len(picked)
    assert entry["by_type"]["Clustering"] == pytest.approx(np.mean([i for i, t in enumerate(picked)
                                                                      if t.metadata.type == "Clustering"]))
