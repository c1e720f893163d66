"""Recipes (typed validation, overrides, presets), LR schedules and optimizer groups."""

import math
from pathlib import Path

import pytest
import torch

from ettin.train.optim import build_optimizer, param_groups
from ettin.train.recipe import RecipeError, TrainSection, describe, load_recipe, parse_tokens
from ettin.train.schedule import PhaseSchedule

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"

BASE = """
name: t
model: {size: tiny}
data: {source: synthetic, vocab_size: 128}
train: {lr: 1e-3, global_batch_size: 4, micro_batch_size: 2}
phases:
  - {name: pretrain, tokens: 4k, seq_len: 32, warmup_tokens: 1k}
  - {name: decay, tokens: 2k, seq_len: 64, schedule: one_minus_sqrt, lr_start: 0.5, lr_end: 0.02}
"""


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_tokens():
    assert parse_tokens("1.7T") == 1_700_000_000_000
    assert parse_tokens("83.333B") == 83_333_000_000
    assert parse_tokens("4k") == 4000
    assert parse_tokens("250_000tok") == 250_000
    assert parse_tokens(65536) == 65536
    for bad in ("lots", "-3B", True):
        with pytest.raises(ValueError):
            parse_tokens(bad)


def test_load_and_overrides(tmp_path):
    path = write(tmp_path, BASE)
    r = load_recipe(path, ["--train.lr=2e-3", "phases.decay.tokens=4k", "phases.0.seq_len=16"])
    assert r.train.lr == 2e-3 and isinstance(r.train.lr, float)
    assert r.phases[1].tokens == 4000 and r.phases[0].seq_len == 16
    assert r.phase_steps(r.phases[0]) == math.ceil(4000 / (4 * 16))
    text = describe(r)
    assert "pretrain" in text and "decay" in text and "one_minus_sqrt" in text


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.lr=fast", "train.lr"),
        ("train.precision=fp8", "train.precision"),
        ("train.bogus=1", "unknown field"),
        ("phases.0.tokens=lots", "phases.0.tokens"),
        ("phases.0.schedule=cosine", "schedule"),
        ("model.size=7b", "model.size"),
        ("phases.1.warmup_tokens=3k", "warmup_tokens"),
        ("train.micro_batch_size=true", "train.micro_batch_size"),
    ],
)
def test_bad_values_name_file_and_field(tmp_path, override, field):
    path = write(tmp_path, BASE)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, [override])
    assert str(path) in str(err.value) and field in str(err.value)


def test_yaml_errors_and_extends(tmp_path):
    bad = write(tmp_path, "name: [unclosed\n", "bad.yaml")
    with pytest.raises(RecipeError, match=r"bad.yaml:\d+: not valid YAML"):
        load_recipe(bad)
    write(tmp_path, BASE, "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\ntrain: {lr: 5e-4}\n", "child.yaml")
    r = load_recipe(child)
    assert r.name == "child" and r.train.lr == 5e-4 and r.train.global_batch_size == 4 and len(r.phases) == 2


def test_schedules_match_the_published_shapes():
    # phase 1: linear warmup to the peak, then constant
    s = PhaseSchedule("warmup_stable", total_steps=100, warmup_steps=10)
    assert s.factor(0) == pytest.approx(0.1) and s.factor(9) == 1.0 and s.factor(99) == 1.0
    # phase 2: 1-sqrt from the peak to half of it
    s = PhaseSchedule("one_minus_sqrt", total_steps=101, lr_start=1.0, lr_end=0.5)
    assert s.factor(0) == 1.0 and s.factor(100) == pytest.approx(0.5)
    assert s.factor(25) == pytest.approx(0.5 + 0.5 * (1 - math.sqrt(0.25)))
    # phase 3: from 0.5 to 0.02 of the peak
    s = PhaseSchedule("one_minus_sqrt", total_steps=11, lr_start=0.5, lr_end=0.02)
    assert s.factor(10) == pytest.approx(0.02)
    # cross-objective: warmup, stable, 1-sqrt decay over the last steps
    s = PhaseSchedule("warmup_stable_decay", total_steps=100, warmup_steps=10, decay_steps=21, lr_start=1.0,
                      lr_end=0.02)
    assert s.factor(50) == 1.0 and s.factor(79) == 1.0 and s.factor(99) == pytest.approx(0.02)
    assert all(s.factor(k) >= s.factor(k + 1) for k in range(79, 99))


def test_optimizer_groups_and_decoupled_decay():
    from ettin.config import preset
    from ettin.model import EttinModel

    model = EttinModel(preset("tiny", vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                              mask_token_id=3))
    decay, plain = param_groups(model, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("norm" in names[id(p)] or p.ndim < 2 for p in plain["params"])
    assert any("tok_embeddings" in names[id(p)] for p in decay["params"])
    assert plain["weight_decay"] == 0.0
    opt = build_optimizer(model, TrainSection(lr=1e-3, weight_decay=1e-4))
    assert opt.defaults["decouple_lr"] and opt.defaults["max_lr"] == 1e-3
    assert (opt.defaults["beta1"], opt.defaults["beta2"], opt.defaults["eps"]) == (0.9, 0.98, 1e-6)
    # fully decoupled: with a zero gradient the decay of a step is weight_decay * lr / max_lr, not * lr
    w = decay["params"][0]
    before = w.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    for g in opt.param_groups:
        g["lr"] = 5e-4
    opt.step()
    torch.testing.assert_close(w.detach(), before * (1 - 1e-4 * 0.5))


# data/: mixtures; _*.yaml: bases that recipes extend, not recipes by themselves
TRAINING_RECIPES = sorted(p for p in RECIPES.glob("**/*.yaml") if p.parent.name != "data" and p.name[0] != "_")


@pytest.mark.parametrize("path", TRAINING_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_shipped_recipes_validate(path):
    r = load_recipe(path)
    assert r.phases and describe(r)
