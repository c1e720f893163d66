"""A recipe's data made ready (ettin.data.ready): the one held-out rule, what a recipe's objective can use, and
the tokenizer / vocabulary / special ids the trainer gets."""

from pathlib import Path

import pytest
import yaml

from ettin.config import OBJECTIVES, ROLES, SPECIAL_TOKEN_FIELDS
from ettin.data.holdout import HOLDOUT_FRACTION, held_out_count, held_out_range, training_part
from ettin.data.ready import RecipeData, unusable_keys
from ettin.data.synthetic import SYNTHETIC_SPECIAL
from ettin.eval.tasks.data import PRETRAIN_FILES
from ettin.train.recipe import recipe_from_dict

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_held_out_rule():
    assert held_out_count(10033) == 201 and held_out_range(10033) == range(9832, 10033)  # ceil(200.66)
    assert held_out_count(135, 0.1) == 14 and held_out_count(0) == 0 and held_out_count(50, 0.0) == 0
    docs = list(range(135))
    assert training_part(docs, HOLDOUT_FRACTION) == docs[:132] and training_part(docs, 0.0) == docs


@pytest.mark.parametrize("name", ["tiny.yaml", "demo.yaml"])
def test_demo_recipes_hold_out_what_the_evaluation_reads(name):
    """The held-out tasks read the tail of PRETRAIN_FILES under HOLDOUT_FRACTION: the demo recipes train on
    exactly those files and hold out that tail (the rule itself is ettin.data.holdout's, for both)."""
    raw = yaml.safe_load((RECIPES / "tiny.yaml").read_text())
    top = yaml.safe_load((RECIPES / name).read_text())
    data = {**raw["data"], **(top.get("data") or {})}
    assert data["holdout_fraction"] == HOLDOUT_FRACTION
    assert sorted(Path(s).name for s in data["prepare"]["sources"]) == sorted(PRETRAIN_FILES)


def test_objective_facts():
    assert OBJECTIVES == ("mlm", "clm") and set(ROLES) == set(OBJECTIVES)
    assert set(SYNTHETIC_SPECIAL) == set(SPECIAL_TOKEN_FIELDS)


def test_keys_a_recipe_objective_cannot_use():
    phases = [{"name": "a", "mlm_probability": 0.15}, {"name": "b"}]
    assert unusable_keys({"objective": "clm", "phases": phases}) == [
        "phases.0.mlm_probability: only mlm and mntp training read it, not clm"]
    assert unusable_keys({"objective": "clm", "train": {"mntp": True}})[0].startswith("train.mntp:")
    assert unusable_keys({"objective": "mlm", "train": {"mntp": True}, "phases": phases}) == []
    assert unusable_keys({"phases": phases}) == []  # no objective: mlm, and `ettin pair` trains both from it


def test_synthetic_recipe_data():
    recipe = recipe_from_dict({"model": {"size": "tiny"}, "data": {"source": "synthetic", "vocab_size": 96},
                               "phases": [{"name": "p", "tokens": 256, "seq_len": 16}]})
    data = RecipeData.open(recipe)
    assert data.tokenizer is None and data.vocab_size == 96 and data.special_ids == SYNTHETIC_SPECIAL
    batch = data.phase_loader(recipe.phases[0], "clm").batch(0)
    assert batch["input_ids"].shape == (8, 16) and int(batch["input_ids"][:, 0].unique()) == 1  # [CLS]


def test_check_data_answers_by_key_and_file(tmp_path):
    """data/'s own readiness check (ettin.data.check.check_data): synthetic data is ready; a prepared recipe with a
    missing tokenizer and a mixture over a folder that was never prepared names each problem by its recipe key and,
    for a mixture's source, by the mixture and its entry; making it ready is ensure_data's."""
    from ettin.data.check import check_data

    synthetic = recipe_from_dict({"model": {"size": "tiny"}, "data": {"source": "synthetic", "vocab_size": 96},
                                  "phases": [{"name": "p", "tokens": 256, "seq_len": 16}]})
    assert check_data(synthetic).ready and check_data(synthetic).problems == []
    mixture = {"name": "m", "sources": [{"name": "web", "path": str(tmp_path / "nowhere"), "percent": 100}]}
    recipe = recipe_from_dict({"model": {"size": "tiny"},
                               "data": {"tokenizer": str(tmp_path / "no-tokenizer"), "mixtures": {"pretrain": mixture}},
                               "phases": [{"name": "p", "tokens": 256, "seq_len": 16}]}, str(tmp_path / "r.yaml"))
    check = check_data(recipe)
    assert not check.ready and len(check.problems) == 2, check.problems
    assert check.problems[0].startswith(f"data.tokenizer: {tmp_path / 'no-tokenizer'} does not exist")
    assert check.problems[1].startswith("phases.0 (p): mixture pretrain: ") and "sources[web].path: " in check.problems[1]
    assert "nowhere" in check.problems[1]
