"""The cluster layout of docs/real-sizes.md: the cross-objective recipes find their starting weights under
$ETTIN_RUNS (default runs/), and path settings expand ${VAR} as mixture paths do."""

from __future__ import annotations

from pathlib import Path

import pytest

from ettin.train.recipe import load_recipe

CROSS = sorted(p for p in Path("recipes/cross").glob("*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", CROSS, ids=lambda p: p.stem)
def test_cross_recipes_start_under_ettin_runs(path, monkeypatch):
    monkeypatch.delenv("ETTIN_RUNS", raising=False)
    default = load_recipe(path).model.init_from
    assert default.startswith("runs/") and default.endswith("-init")
    monkeypatch.setenv("ETTIN_RUNS", "/shared/runs")
    assert load_recipe(path).model.init_from == "/shared/runs/" + default.removeprefix("runs/")


def test_the_tokenizer_path_expands_too(monkeypatch):
    monkeypatch.setenv("TOKS", "/data/tok")
    assert load_recipe("recipes/tiny.yaml", ["data.tokenizer=${TOKS}/tokenizer.json"]).data.tokenizer == \
        "/data/tok/tokenizer.json"


def test_an_unset_variable_is_named(monkeypatch):
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    with pytest.raises(ValueError, match=r"model\.init_from: environment variable NOT_SET_HERE is not set"):
        load_recipe("recipes/tiny.yaml", ["model.init_from=${NOT_SET_HERE}/x"])
