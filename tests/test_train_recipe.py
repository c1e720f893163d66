"""Recipes (typed validation, overrides, presets), LR schedules and optimizer groups."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from ettin.train.optim import build_optimizer, param_groups
from ettin.train.plan import describe, make_plan
from ettin.train.recipe import RecipeError, TrainSection, load_recipe, parse_tokens
from ettin.train.schedule import WARMUP_START, PhaseSchedule

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
    plan = make_plan(r)
    assert plan.phases[0].expected_steps() == math.ceil(4000 / (4 * 16))  # rows full: slots = real tokens
    assert plan.phases[0].expected_steps(fill=0.5) == math.ceil(4000 / (0.5 * 4 * 16))
    assert plan.phases[0].accumulation == 2 and plan.phases[0].token_unit == "real"
    text = describe(plan)
    assert "pretrain" in text and "decay" in text and "one_minus_sqrt" in text


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.lr=fast", "train.lr"),
        ("train.precision=fp8", "train.precision"),
        ("phases.0.tokens=lots", "phases.0.tokens"),
        ("phases.0.schedule=cosine", "schedule"),
        ("model.size=7b", "model.size"),
        ("phases.1.warmup_tokens=3k", "warmup_tokens"),
        ("train.micro_batch_size=true", "train.micro_batch_size"),
        ("train.attn_backend=fastest", "train.attn_backend"),
    ],
)
def test_bad_values_name_file_and_field(tmp_path, override, field):
    path = write(tmp_path, BASE)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, [override])
    assert str(path) in str(err.value) and field in str(err.value)


def test_the_attention_backend_is_a_setting_of_the_run(tmp_path):
    """`attn_backend` left the model config: in a recipe file or on the command line it is refused, pointing to
    train.attn_backend."""
    with pytest.raises(RecipeError, match=r"override model.overrides.attn_backend=flash: .*set train.attn_backend"):
        load_recipe(write(tmp_path, BASE), ["model.overrides.attn_backend=flash"])
    path = write(tmp_path, BASE.replace("model: {size: tiny}", "model: {size: tiny, overrides: {attn_backend: sdpa}}"),
                 "old.yaml")
    with pytest.raises(RecipeError, match=r"old\.yaml: model\.overrides\.attn_backend: .*set train\.attn_backend"):
        load_recipe(path)
    assert load_recipe(write(tmp_path, BASE), ["train.attn_backend=flex"]).train.attn_backend == "flex"
    with pytest.raises(RecipeError, match=r"train\.attn_backend: flex is compiled on its own"):
        load_recipe(write(tmp_path, BASE), ["train.attn_backend=flex", "train.compile=true"])


@pytest.mark.parametrize("key, value, instead", [
    ("objective", "clm", r"set the recipe's `objective` \(or ettin train --objective\) instead"),
    ("global_rope_theta", 1e6, r"set phases\.N\.global_rope_theta instead"),
    ("local_rope_theta", 1e6, r"set phases\.N\.local_rope_theta instead"),
    ("vocab_size", 999, r"the vocabulary is the tokenizer's .*: remove it"),
    ("mask_token_id", 5, r"the special ids are the tokenizer's .*: remove it"),
])
def test_model_overrides_the_recipe_sets_elsewhere_are_refused(tmp_path, capsys, key, value, instead):
    """A model config field the recipe sets elsewhere (the objective, the phase's RoPE thetas, the tokenizer's
    vocabulary and ids) under model.overrides: refused naming the key to use, on the command line and in a file."""
    from ettin.cli import main

    refused = rf"override model\.overrides\.{key}=.*: model\.overrides\.{key}: .*{instead}"
    with pytest.raises(RecipeError, match=refused):
        load_recipe(write(tmp_path, BASE), [f"model.overrides.{key}={value}"])
    path = write(tmp_path, BASE.replace("{size: tiny}", f"{{size: tiny, overrides: {{{key}: {value}}}}}"), "f.yaml")
    with pytest.raises(RecipeError, match=rf"f\.yaml: model\.overrides\.{key}: .*{instead}"):
        load_recipe(path)
    assert main(["train", str(path), "--out", str(tmp_path / "x"), "--dry-run"]) == 2
    assert f"model.overrides.{key}: " in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_the_command_line_refuses_model_overrides_objective(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ettin.cli", "train", str(RECIPES / "tiny.yaml"), "--out",
                           str(tmp_path / "x"), "--dry-run", "model.overrides.objective=clm"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "model.overrides.objective: the objective is the run's: set the recipe's `objective`" in done.stderr


def test_set_elsewhere_is_what_model_config_sets_over_overrides(tmp_path):
    """SET_ELSEWHERE (the model config fields refused under model.overrides) is exactly what Recipe.model_config sets
    over an override, or cannot take (the objective), besides the runtime keys: every other field passes through."""
    from ettin.config import RUNTIME_KEYS, ModelConfig, preset
    from ettin.data.synthetic import SYNTHETIC_SPECIAL
    from ettin.train.recipe_checks import SET_ELSEWHERE

    r = load_recipe(write(tmp_path, BASE))
    base = preset("tiny")

    def config(key, value):
        changed = dataclasses.replace(r, model=dataclasses.replace(r.model, overrides={key: value}))  # past validation
        return changed.model_config(changed.phases[0], 128, "mlm", SYNTHETIC_SPECIAL)

    for f in dataclasses.fields(ModelConfig):
        if f.name == "objective":
            with pytest.raises(TypeError):
                config(f.name, "clm")
            continue
        default = getattr(base, f.name)
        value = {"layer_types": ["full_attention"] * base.num_layers, "extra": {"x": 1}}.get(f.name) or 2 * default
        assert (getattr(config(f.name, value), f.name) == value) == (f.name not in SET_ELSEWHERE), f.name
    assert set(SET_ELSEWHERE) - {f.name for f in dataclasses.fields(ModelConfig)} == set(RUNTIME_KEYS)


def test_yaml_errors_and_extends(tmp_path):
    bad = write(tmp_path, "name: [unclosed\n", "bad.yaml")
    with pytest.raises(RecipeError, match=r"bad.yaml:\d+: not valid YAML"):
        load_recipe(bad)
    write(tmp_path, BASE, "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\ntrain: {lr: 5e-4}\n", "child.yaml")
    r = load_recipe(child)
    assert r.name == "child" and r.train.lr == 5e-4 and r.train.global_batch_size == 4 and len(r.phases) == 2


def test_schedules_match_the_published_shapes():
    """Factors of the peak LR by position (tokens before the step), as bert24's schedulers under Composer."""
    # phase 1: linear warmup from 1e-10 to the peak over 1000 tokens, then constant
    s = PhaseSchedule("warmup_stable", total=10_000, warmup=1000)
    assert s.factor(0) == WARMUP_START and s.factor(100) == pytest.approx(0.1) and s.factor(1000) == 1.0
    assert s.factor(9_999) == 1.0
    # phase 2: 1-sqrt from the peak to half of it over the whole phase
    s = PhaseSchedule("one_minus_sqrt", total=10_000, decay=10_000, lr_start=1.0, lr_end=0.5, shape="1-sqrt")
    assert s.factor(0) == 1.0 and s.factor(10_000) == pytest.approx(0.5)
    assert s.factor(2_500) == pytest.approx(0.5 + 0.5 * (1 - math.sqrt(0.25)))
    # phase 3: from 0.5 to 0.02 of the peak
    s = PhaseSchedule("one_minus_sqrt", total=1100, decay=1100, lr_start=0.5, lr_end=0.02, shape="1-sqrt")
    assert s.factor(0) == 0.5 and s.factor(1100) == pytest.approx(0.02)
    # cross-objective: warmup, stable, then a linear decay over the last 2100 tokens (the trainer's
    # 1 - fraction * (1 - alpha_f)); 1-sqrt on request
    s = PhaseSchedule("warmup_stable_decay", total=10_000, warmup=1000, decay=2100, lr_start=1.0, lr_end=0.02,
                      shape="linear")
    assert s.factor(5000) == 1.0 and s.factor(7900) == 1.0 and s.factor(10_000) == pytest.approx(0.02)
    assert s.factor(7900 + 1050) == pytest.approx(1 - 0.5 * 0.98)
    sq = PhaseSchedule("warmup_stable_decay", total=10_000, warmup=1000, decay=2100, lr_start=1.0, lr_end=0.02,
                       shape="1-sqrt")
    assert sq.factor(7900 + 1050) == pytest.approx(0.02 + 0.98 * (1 - math.sqrt(0.5)))
    assert all(s.factor(k) >= s.factor(k + 100) for k in range(7900, 9900, 100))


def test_schedules_agree_until_a_position():
    base = PhaseSchedule("warmup_stable_decay", total=10_000, warmup=1000, decay=2000, lr_end=0.02, shape="linear")
    longer = PhaseSchedule("warmup_stable_decay", total=20_000, warmup=1000, decay=2000, lr_end=0.02, shape="linear")
    assert base.agrees_until(longer, 8000) and not base.agrees_until(longer, 8001)  # base decays from 8000
    for position in (0, 500, 1000, 4000, 8000):  # what "agrees" promises, checked on samples
        assert all(base.factor(x) == longer.factor(x) for x in range(0, position, 97))
    sqrt = PhaseSchedule("one_minus_sqrt", total=10_000, decay=10_000, lr_end=0.5, shape="1-sqrt")
    assert not sqrt.agrees_until(PhaseSchedule("one_minus_sqrt", total=20_000, decay=20_000, lr_end=0.5,
                                               shape="1-sqrt"), 1)
    assert not base.agrees_until(PhaseSchedule("warmup_stable_decay", total=10_000, warmup=2000, decay=2000,
                                               lr_end=0.02, shape="linear"), 10)


def test_plan_checks_the_batch_split_and_names_the_phase(tmp_path):
    path = write(tmp_path, BASE)
    assert make_plan(load_recipe(path), world_size=2).phases[0].accumulation == 1
    assert make_plan(load_recipe(path)).to_json()["model"]["layers"] == 4  # a small synthetic vocabulary plans too
    with pytest.raises(RecipeError, match=r"phases\.0 \(pretrain\): global batch 4 rows does not split over 3 ranks"):
        make_plan(load_recipe(path), world_size=3)
    with pytest.raises(RecipeError, match=r"phases\.0 \(pretrain\).*micro-batch 3 x accumulation must equal 4"):
        make_plan(load_recipe(path, ["train.micro_batch_size=3"]))
    # the published 17m pre-training on 8 ranks: 4608 = 8 x 144 x 4
    assert make_plan(load_recipe(RECIPES / "17m.yaml"), world_size=8).phases[0].accumulation == 4


def test_per_objective_values(tmp_path):
    path = write(tmp_path, BASE + "phases.decay.local_rope_theta: !objective {mlm: 160000, clm: 10000}\n")
    r = load_recipe(path)
    assert r.phases[1].local_rope_theta == 160000.0
    assert r.for_objective("clm").phases[1].local_rope_theta == 10000.0
    assert make_plan(r, "clm").phases[1].local_rope_theta == 10000.0
    assert "mlm:" not in r.for_objective("clm").to_yaml()  # run folders store the resolved value
    half = write(tmp_path, BASE + "phases.decay.local_rope_theta: !objective {clm: 10000}\n", "half.yaml")
    with pytest.raises(RecipeError, match=r"half\.yaml: phases\.1\.local_rope_theta: a per-objective value without "
                                          r"one for 'mlm'"):
        load_recipe(half)


def test_changes_made_in_python_survive_for_objective(tmp_path):
    """A loaded recipe changed in Python (a section replaced, a field set, phases dropped) keeps every change when it
    is resolved for either objective; a per-objective value it did not change still resolves per objective, and one
    set in Python is the value of both."""
    path = write(tmp_path, BASE + "phases.decay.local_rope_theta: !objective {mlm: 160000, clm: 10000}\n")
    r = load_recipe(path)
    r = dataclasses.replace(r, train=dataclasses.replace(r.train, compile=True, lr=5e-4))
    r = dataclasses.replace(r, phases=(dataclasses.replace(r.phases[0], seq_len=16), *r.phases[1:]))
    for objective, theta in (("mlm", 160000.0), ("clm", 10000.0)):
        for resolved in (r.for_objective(objective), make_plan(r, objective).recipe):
            assert resolved.objective == objective and resolved.train.compile and resolved.train.lr == 5e-4
            assert resolved.phases[0].seq_len == 16 and resolved.phases[1].local_rope_theta == theta
    assert r.for_objective("clm").for_objective("mlm").phases[1].local_rope_theta == 160000.0
    r = dataclasses.replace(r, phases=(dataclasses.replace(r.phases[1], local_rope_theta=20000.0),))
    decoder = r.for_objective("clm")
    assert [p.name for p in decoder.phases] == ["decay"] and decoder.phases[0].local_rope_theta == 20000.0


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
    assert r.phases and all(describe(make_plan(r, obj)) for obj in ("mlm", "clm"))


def test_a_loaded_recipe_is_frozen(tmp_path):
    """A recipe is a value: a change is a new recipe (dataclasses.replace), never an assignment."""
    r = load_recipe(write(tmp_path, BASE))
    for obj, attr, value in ((r, "name", "x"), (r.train, "lr", 1.0), (r.phases[0], "tokens", 1), (r.data, "source", "")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attr, value)
    assert isinstance(r.phases, tuple)
    changed = dataclasses.replace(r, train=dataclasses.replace(r.train, lr=5e-4))
    assert changed.train.lr == 5e-4 and r.train.lr == 1e-3


def test_per_objective_values_are_tagged_so_free_keys_are_never_misread(tmp_path):
    """Only the !objective tag makes a per-objective value: a mixture map with a key named mlm stays a map (the
    untagged form read it as a per-objective value), and an untagged {mlm, clm} where one value goes is an error
    that shows the tag."""
    mixtures = BASE.replace("data: {source: synthetic, vocab_size: 128}",
                            "data: {source: synthetic, vocab_size: 128, vars: {mlm: a, clm: b}}")
    r = load_recipe(write(tmp_path, mixtures))
    assert r.data.vars == {"mlm": "a", "clm": "b"} and r.for_objective("clm").data.vars == {"mlm": "a", "clm": "b"}
    tagged = mixtures + "data.vars.mlm: !objective {mlm: x, clm: y}\n"
    r = load_recipe(write(tmp_path, tagged, "tagged.yaml"))
    assert r.data.vars["mlm"] == "x" and r.for_objective("clm").data.vars == {"mlm": "y", "clm": "b"}
    untagged = write(tmp_path, BASE + "phases.decay.local_rope_theta: {mlm: 160000, clm: 10000}\n", "untagged.yaml")
    with pytest.raises(RecipeError, match=r"untagged\.yaml: phases\.1\.local_rope_theta: expected a number, .*"
                                          r"tagged: !objective \{mlm: \.\.\., clm: \.\.\.\}"):
        load_recipe(untagged)
    with pytest.raises(RecipeError, match=r"bad\.yaml:9: not valid YAML: !objective maps objectives"):
        load_recipe(write(tmp_path, BASE + "phases.decay.local_rope_theta: !objective {mlm: 1, encoder: 2}\n",
                          "bad.yaml"))
    r = load_recipe(write(tmp_path, BASE), ["phases.decay.local_rope_theta=!objective {mlm: 5, clm: 7}"])
    assert (r.phases[1].local_rope_theta, r.for_objective("clm").phases[1].local_rope_theta) == (5.0, 7.0)


@pytest.mark.parametrize("override, message", [
    ("phases.decay.warmup_tokens=1k", r"phases\.1 \(decay\)\.warmup_tokens: the one_minus_sqrt schedule does not "
                                      r"read it.*\(warmup_stable, warmup_stable_decay\)"),
    ("phases.pretrain.decay_tokens=1k", r"phases\.0 \(pretrain\)\.decay_tokens: the warmup_stable schedule"),
    ("phases.pretrain.decay_shape=linear", r"phases\.0 \(pretrain\)\.decay_shape: the warmup_stable schedule"),
    ("phases.pretrain.lr_end=0.1", r"phases\.0 \(pretrain\)\.lr_end: the warmup_stable schedule"),
    ("phases.decay.schedule=constant", r"phases\.1 \(decay\)\.lr_end: the constant schedule"),
])
def test_a_setting_the_schedule_does_not_read_is_refused(tmp_path, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, BASE), [override])


def test_mntp_is_refused_for_a_decoder(tmp_path):
    """train.mntp trains an encoder: a decoder resolved from an encoder recipe that sets it is refused, not trained
    without it (ettin pair, --objective clm), and so is a decoder recipe the command line gives it."""
    r = load_recipe(write(tmp_path, BASE), ["train.mntp=true"])
    assert r.train.mntp and r.for_objective("mlm") is r
    with pytest.raises(RecipeError, match=r"r\.yaml: train\.mntp: masked next-token prediction trains an encoder"):
        r.for_objective("clm")
    with pytest.raises(RecipeError, match=r"train\.mntp: .*a clm model cannot use it"):
        make_plan(r, "clm")
    with pytest.raises(RecipeError, match=r"train\.mntp"):
        load_recipe(write(tmp_path, BASE + "objective: clm\n"), ["train.mntp=true"])


def test_a_loaded_recipes_mappings_and_lists_are_frozen_too():
    """Not only its fields: model.overrides, data.mixtures (and the mappings inside), data.vars and
    data.prepare.sources refuse changes; a changed recipe is made with dataclasses.replace."""
    import copy
    import dataclasses
    import json
    import pickle

    r = load_recipe("recipes/tiny.yaml", ["data.vars.X=1", "model.overrides.attention_output_dropout=0.1"])
    for change in (lambda: r.model.overrides.update(a=1), lambda: r.data.vars.__setitem__("Y", "2"),
                   lambda: r.data.mixtures.pop("pretrain"), lambda: r.data.prepare.sources.append("x")):
        with pytest.raises(TypeError, match="dataclasses.replace"):
            change()
    assert copy.deepcopy(r) == r and pickle.loads(pickle.dumps(r)) == r and json.dumps(r.to_dict())
    changed = dataclasses.replace(r, data=dataclasses.replace(r.data, vars={**r.data.vars, "Y": "2"}))
    assert changed.data.vars["Y"] == "2" and "Y" not in r.data.vars
    assert type(r.to_dict()["data"]["vars"]) is dict  # plain again for YAML
