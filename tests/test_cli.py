"""The command line explains itself: declared flags with help, unknown flags rejected with the valid ones,
overrides as KEY=VALUE, --version, export-hf / convert-objective on a run folder, and a dry run that checks
every file a recipe names."""

import json
import re

import pytest

import ettin
from ettin.cli import build_parser, main
from ettin.train import checkpoint as ckpt

RECIPE = """
name: c
seed: 2
model: {size: tiny}
data: {source: synthetic, vocab_size: 96}
train: {lr: 3e-3, global_batch_size: 4, micro_batch_size: 4, progress: false, tensorboard: false}
phases:
  - {name: pretrain, tokens: 384, seq_len: 32}
  - {name: decay, tokens: 256, seq_len: 32, schedule: constant, lr_start: 0.5}
"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One finished encoder run (5 steps), shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("cli")
    (root / "c.yaml").write_text(RECIPE)
    assert main(["train", str(root / "c.yaml"), "--out", str(root / "run")]) == 0
    return root / "run"


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command, flags", [
    ("train", ["--out", "--resume", "--resume-if-exists", "--dry-run", "--objective"]),
    ("pair", ["--out", "--resume", "--resume-if-exists", "--dry-run", "--parallel"]),
    ("export-hf", []),
    ("convert-objective", ["--to", "--out"]),
    ("continue", ["--data", "--tokens", "--out", "--revision", "--mntp", "--resume", "--dry-run", "--plan"]),
])
def test_every_flag_is_declared_with_help(command, flags, capsys):
    text = _help(command, capsys)
    usage, options = text.split("\n\n", 1)[0], text.split("options:", 1)[1]
    for flag in flags:  # in the usage line, and described in the options
        assert flag in usage, (flag, usage)
        assert re.search(rf"^  {re.escape(flag)}\b.*\S", options, re.M), (flag, options)
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:  # every argument, positional or not, has a help text
        assert action.help, (command, action.dest)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"ettin {ettin.__version__}"
    pyproject = (ettin.__file__.rsplit("/src/", 1)[0] + "/pyproject.toml")
    declared = re.search(r'^version = "([^"]+)"', open(pyproject).read(), re.M).group(1)
    assert ettin.__version__ == declared


@pytest.mark.parametrize("argv", [
    ["train", "RECIPE", "--parallel"],  # pair's flag: rejected, not silently ignored
    ["train", "RECIPE", "--outt", "x"],
    ["pair", "RECIPE", "--objective", "clm"],
    ["train", "RECIPE", "--model.size", "17m"],  # an override needs its =
])
def test_unknown_flags_are_rejected_with_the_valid_ones(argv, recipe_file, capsys):
    argv = [str(recipe_file) if a == "RECIPE" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown option" in err and "--out" in err and "--resume" in err and "--dry-run" in err, err


def test_overrides_are_key_value_words(recipe_file, capsys):
    assert main(["train", str(recipe_file), "train.precision=fp32", "--dry-run", "--phases.0.tokens=768",
                 "seed=9", "--objective", "clm"]) == 0
    out = capsys.readouterr().out
    assert "768 real tokens (6 steps" in out and "seed: 9" in out and "objective: clm" in out
    assert main(["train", str(recipe_file), "--dry-run", "train.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "command line: override train.lrr=1: train has no field 'lrr'; did you mean train.lr?" in err, err
    assert str(recipe_file) not in err  # the override is blamed, not the recipe file
    assert main(["train", str(recipe_file), "--dry-run", "stray"]) == 2
    assert "overrides look like" in capsys.readouterr().err


def test_dry_run_shows_the_real_output_folder(recipe_file, tmp_path, capsys):
    own = tmp_path / "runs" / "own"
    assert main(["train", str(recipe_file), "--dry-run", "--out", str(own)]) == 0
    assert f"\nout: {own}\n" in capsys.readouterr().out
    assert main(["pair", str(recipe_file), "--dry-run", "--out", str(own)]) == 0
    assert f"\nout: {own}\n" in capsys.readouterr().out
    assert main(["train", str(recipe_file), "--dry-run"]) == 0  # no --out: the recipe's out_dir/name
    assert "\nout: runs/c\n" in capsys.readouterr().out


def test_one_token_count_in_progress_lines_metrics_and_results(recipe_file, tmp_path, capsys):
    """Every progress line's phase count and run count are metrics.jsonl's for that step, and each phase's closing
    line states the phase's final count (stumble: the console said 16,384 in the phase, metrics.jsonl 10,153)."""
    from ettin.train.progress import _human, read_metrics

    run = tmp_path / "run"
    assert main(["train", str(recipe_file), "--out", str(run), "train.log_every=2"]) == 0
    printed = capsys.readouterr().out
    rows = {(r["phase"], r["step"]): r for r in read_metrics(run / "metrics.jsonl")}
    lines = re.findall(r"^(\w+) step (\d+) (\S+)/(\S+) real tokens tok (\S+) ", printed, re.M)
    assert {phase for phase, *_ in lines} == {"pretrain", "decay"}
    for phase, step, count, budget, total in lines:
        row = rows[(phase, int(step))]
        assert (count, budget, total) == (_human(row["phase_tokens"]), _human({"pretrain": 384, "decay": 256}[phase]),
                                          _human(row["tokens"]))
    for phase in ("pretrain", "decay"):
        last = max((r for r in rows.values() if r["phase"] == phase), key=lambda r: r["step"])
        assert f"{phase}: {last['step']} steps, {last['phase_tokens']:,} real tokens, loss" in printed


def test_other_commands_keep_strict_parsing(capsys):
    with pytest.raises(SystemExit) as e:
        main(["export-hf", "a", "b", "c=1"])
    assert e.value.code == 2
    assert "unrecognized arguments: c=1" in capsys.readouterr().err


def test_export_hf_accepts_a_run_folder(trained_run, tmp_path, capsys):
    assert main(["export-hf", str(trained_run), str(tmp_path / "hf")]) == 0
    info = json.loads((tmp_path / "hf" / "ettin_checkpoint.json").read_text())
    assert (info["phase"], info["step"]) == ("decay", 2)  # the newest checkpoint
    assert str(ckpt.latest_checkpoint(trained_run)) in capsys.readouterr().out
    assert main(["export-hf", str(tmp_path / "nowhere"), str(tmp_path / "hf2")]) == 2
    assert "no such checkpoint or run folder" in capsys.readouterr().err


def test_convert_objective_refuses_the_same_objective(trained_run, tmp_path, capsys):
    out = tmp_path / "same"
    assert main(["convert-objective", str(trained_run), "--to", "mlm", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already an encoder (mlm)" in err and "export-hf" in err
    assert not out.exists()
    assert main(["convert-objective", str(trained_run), "--to", "clm", "--out", str(out)]) == 0
    assert "converted mlm -> clm" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["model_type"] != "modernbert"


def _prepared_recipe(tmp_path, tokenizer: str, source_path: str, subset: str = "docs") -> str:
    mixture = {"sources": [{"name": "docs", "path": source_path, "subset": subset, "weight": 1}]}
    recipe = {"name": "p", "model": {"size": "tiny"}, "data": {"tokenizer": tokenizer, "mixtures": {"m": mixture}},
              "phases": [{"name": "pretrain", "tokens": 1024, "seq_len": 32, "mixture": "m"}]}
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(recipe))
    return str(path)


def test_dry_run_checks_sources_and_tokenizer(tmp_path, capsys):
    recipe = _prepared_recipe(tmp_path, str(tmp_path / "no-tokenizer"), str(tmp_path / "no-data"))
    assert main(["train", recipe, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"data.tokenizer: {tmp_path / 'no-tokenizer'} does not exist" in err
    assert "sources[docs].path" in err and "no-data" in err and "ettin data prepare" in err
    # the real run stops on the same check before any work
    assert main(["train", recipe, "--out", str(tmp_path / "run")]) == 2
    assert "data.tokenizer" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_dry_run_checks_a_subset_of_a_prepared_folder(tmp_path, shared_data, capsys):
    from ettin.data.prepare import PrepareConfig, prepare

    src = tmp_path / "wiki.jsonl"
    src.write_text("".join((shared_data / "pretrain" / "wikipedia_vital_summaries_en.jsonl").read_text()
                           .splitlines(True)[:5]))
    tokenizer = shared_data / "gpt2_tokenizer"
    prepare([str(src)], str(tokenizer), PrepareConfig(out=tmp_path / "prepared", workers=0))
    recipe = _prepared_recipe(tmp_path, str(tokenizer), str(tmp_path / "prepared"), subset="wikipedia_vital")
    assert main(["train", recipe, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "sources[docs].subset: 'wikipedia_vital' is not in" in err and "(it has: wiki)" in err
    recipe = _prepared_recipe(tmp_path, str(tokenizer), str(tmp_path / "prepared"), subset="wiki")
    assert main(["train", recipe, "--dry-run"]) == 0
    assert "1 prepared dataset(s) found" in capsys.readouterr().out


def test_missing_init_from_names_the_key_and_path(recipe_file, tmp_path, capsys):
    missing = tmp_path / "no-such-init"
    assert main(["train", str(recipe_file), "--dry-run", f"model.init_from={missing}"]) == 2
    err = capsys.readouterr().err
    assert f"model.init_from: {missing} does not exist" in err and "hub" not in err.lower()
    assert main(["train", str(recipe_file), "--out", str(tmp_path / "r"), f"model.init_from={missing}"]) == 2
    assert f"model.init_from: {missing}" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_shipped_cross_recipe_without_its_init_folder(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    recipe = Path(ettin.__file__).parents[2] / "recipes" / "cross" / "tiny-decoder-from-encoder.yaml"
    monkeypatch.chdir(tmp_path)  # where runs/tiny-dec-from-enc-init does not exist
    assert main(["train", str(recipe), "--dry-run"]) == 2
    assert "model.init_from: runs/tiny-dec-from-enc-init does not exist" in capsys.readouterr().err


def test_progress_line_shows_lr_and_run_eta():
    from ettin.train.progress import status_text

    record = {"tokens": 4096, "loss": 2.5, "lr": 1.5e-3, "tokens_per_s": 900.0, "mfu": 0.01, "eta_s": 62,
              "eta_run_s": 3725}
    text = status_text(record, later_phases=True)
    assert "lr 0.0015" in text and "eta 0:01:02 phase, 1:02:05 run" in text
    assert "run" not in status_text(record, later_phases=False)


def test_parallel_progress_interval_scales_with_the_run():
    from ettin.jobs import follow_interval

    assert follow_interval(0) == 2.0 and follow_interval(15) == 2.0  # short runs: a line every 2 s
    assert follow_interval(600) == 60.0 and follow_interval(300) == 30.0
    assert all(follow_interval(t) <= follow_interval(t + 1) for t in range(0, 1000, 7))


def test_training_output_reads_right(recipe_file, tmp_path, capsys):
    assert main(["train", str(recipe_file), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "training on 1 process (cpu)" in out
    assert "phase pretrain: 384 real tokens, from 0 (about 3 steps of 4 x 32" in out
    first = next(ln for ln in out.splitlines() if ln.startswith("pretrain step 1 128/384 real tokens "))
    assert " lr 0.003 " in first and re.search(r"eta \d+:\d\d:\d\d phase, \d+:\d\d:\d\d run$", first), first
    last = next(ln for ln in out.splitlines() if ln.startswith("decay step 2 256/256 real tokens "))
    assert " lr 0.0015 " in last and last.endswith(" phase"), last  # the last phase: its ETA is the run's
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["eta_run_s"] >= r["eta_s"] >= 0 for r in rows)
