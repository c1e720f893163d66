"""`ettin mteb` with several local collections in one call: each is scored on the ranking mteb wrote for it, found
by its exact task name (a collection named scifact is not scored on scifact-small's ranking), and two collections
of one name are refused. mteb is stood in for by a fake that writes predictions as mteb 2 does
(`{task name}_predictions.json`, mteb/abstasks/abstask.py `prediction_file_name`), so this runs without it."""

import argparse
import json
import sys
from types import SimpleNamespace

import pytest

from ettin.downstream import common, mteb_eval
from ettin.io import UserError


@pytest.fixture
def fake_mteb(monkeypatch):
    monkeypatch.setitem(sys.modules, "mteb", SimpleNamespace(__version__="fake", get_benchmark=None, get_tasks=None))
    monkeypatch.setattr(common, "need", lambda module, command="": sys.modules.get(module))


def _args(tmp_path, tasks=""):
    return argparse.Namespace(tasks=tasks, benchmark=[], batch_size=8, max_length=32, query_limit=None,
                              model="m", results=tmp_path / "results", role=None, device="cpu", pooling=None)


def test_each_collection_is_scored_on_its_own_ranking(tmp_path, monkeypatch, fake_mteb):
    names = ("scifact-small", "scifact")  # one name the prefix of the other
    local = {n: (SimpleNamespace(name=n), SimpleNamespace(metadata=SimpleNamespace(name=n))) for n in names}
    monkeypatch.setattr(mteb_eval, "plan", lambda args: (local, [], []))
    record = {"run": "m", "checkpoint": "c", "path": str(tmp_path / "m"), "sha256": "0"}
    monkeypatch.setattr(mteb_eval, "load_model", lambda args, work: (None, record, {}))

    def evaluate(model, tasks, batch_size, predictions):  # as mteb.evaluate(..., prediction_folder=predictions)
        (task,) = tasks
        predictions.mkdir(parents=True, exist_ok=True)
        ranking = {"q": {f"{task.metadata.name}/doc": 1.0}}
        (predictions / f"{task.metadata.name}_predictions.json").write_text(json.dumps({"default": {"test": ranking}}))
        return [SimpleNamespace(scores={})]

    scored = {}

    def local_scores(col, ranking):
        scored[col.name] = ranking
        return {"ndcg@10": 0.5}

    monkeypatch.setattr(mteb_eval, "evaluate", evaluate)
    monkeypatch.setattr(mteb_eval, "local_scores", local_scores)
    monkeypatch.setattr(common, "bm25_ranking", lambda col: {})
    monkeypatch.setattr(common, "retrieval_task", lambda col, name, scores, *a, **k: {"main": "ndcg@10", **scores})
    assert mteb_eval.run(_args(tmp_path)) == 0
    assert scored == {n: {"q": {f"{n}/doc": 1.0}} for n in names}


def test_two_collections_of_one_name_are_refused(tmp_path, monkeypatch, fake_mteb):
    monkeypatch.setattr(common, "load_collection", lambda path, limit: SimpleNamespace(path=path))
    monkeypatch.setattr(mteb_eval, "local_task", lambda col, name: (col, name))
    for folder in ("x/scifact", "y/scifact"):
        (tmp_path / folder / "qrels").mkdir(parents=True)
        for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
            (tmp_path / folder / name).write_text("")
    with pytest.raises(UserError, match="two collections named scifact"):
        mteb_eval.plan(_args(tmp_path, f"beir:{tmp_path / 'x/scifact'},beir:{tmp_path / 'y/scifact'}"))
