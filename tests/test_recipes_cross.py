"""The cross-objective recipes: one shared phase (recipes/cross/_base.yaml) that every size's pair extends, and
no key the recipe's objective cannot use (a decoder recipe that sets a masking rate is refused)."""

from pathlib import Path

import pytest
import yaml

from ettin.train.recipe import RecipeError, load_recipe

CROSS = Path(__file__).resolve().parents[1] / "recipes" / "cross"
SIZES = ("17m", "32m", "68m", "150m", "400m", "1b")
PAIRS = [(d, s) for s in SIZES for d in ("decoder-from-encoder", "encoder-from-decoder")]


@pytest.mark.parametrize("direction, size", PAIRS, ids=[f"{d}-{s}" for d, s in PAIRS])
def test_cross_recipes_extend_their_size_and_the_one_base(direction, size):
    path = CROSS / f"{direction}-{size}.yaml"
    raw = yaml.safe_load(path.read_text())
    assert raw["extends"] == [f"../{size}.yaml", "_base.yaml"] and "phases" not in raw  # no phase block of its own
    r = load_recipe(path)
    base = yaml.safe_load((CROSS / "_base.yaml").read_text())["phases"][0]
    native = load_recipe(CROSS.parent / f"{size}.yaml")
    decay = next(p for p in native.phases if p.name == "decay")
    (phase,) = r.phases
    assert phase.name == "cross" and phase.schedule == base["schedule"] and phase.mixture == "decay"
    assert phase.global_rope_theta == phase.local_rope_theta == 160000.0 and phase.lr_end == 0.02
    assert phase.tokens == decay.tokens and r.batch_size(phase) == r.batch_size(decay) == 4608
    assert phase.decay_shape == "linear"  # the published trainer's warmup_stable_decay (tests/test_recipes_published.py)
    assert r.train.weight_decay == native.train.weight_decay and r.model.size == size
    assert r.objective == ("clm" if direction.startswith("decoder") else "mlm")
    if r.objective == "mlm":
        assert phase.mlm_probability == 0.15
    else:
        assert "mlm_probability" not in path.read_text()


def test_a_key_the_objective_cannot_use_is_refused(tmp_path):
    recipe = {"name": "d", "objective": "clm", "model": {"size": "tiny"},
              "data": {"source": "synthetic", "vocab_size": 128},
              "phases": [{"name": "p", "tokens": 512, "seq_len": 32}, {"name": "q", "tokens": 512, "seq_len": 32,
                                                                     "mlm_probability": 0.15}]}
    path = tmp_path / "decoder.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=r"decoder\.yaml: phases\.1\.mlm_probability: only mlm and mntp"):
        load_recipe(path)
    recipe["objective"] = "mlm"  # the same key in an encoder recipe is its masking rate
    path.write_text(yaml.safe_dump(recipe))
    assert load_recipe(path).phases[1].mlm_probability == 0.15
