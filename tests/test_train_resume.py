"""Exact resume: a run SIGKILLed at an arbitrary step and resumed with --resume logs the same per-step
losses as the uninterrupted run, bitwise (CPU, fp32)."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ettin.train.checkpoint import list_checkpoints

RECIPE = """
name: resume
seed: 5
model: {size: tiny}
data: {source: synthetic, vocab_size: 96}
train: {lr: 3e-3, global_batch_size: 4, micro_batch_size: 2, save_every_tokens: 384, progress: false,
        tensorboard: false}
phases:
  - {name: pretrain, tokens: 3840, seq_len: 32, warmup_tokens: 256}
  - {name: decay, tokens: 768, seq_len: 48, global_rope_theta: 160000, local_rope_theta: 160000,
     schedule: one_minus_sqrt, lr_start: 0.5, lr_end: 0.02, mlm_probability: 0.15}
"""
KILL_AFTER = 11  # logged steps; the newest checkpoint is then at step 9 (every 3 steps)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env.pop("WORLD_SIZE", None)
    return env


def _launch(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ettin.cli", "train", str(recipe), "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _kill_and_resume(recipe: Path, tmp_path: Path, kill_after: int, not_done: str) -> dict:
    """Train `recipe` twice side by side, SIGKILL one after `kill_after` logged steps, resume it, and compare."""
    ref_run, run = tmp_path / "reference", tmp_path / "killed"
    reference = _launch(recipe, ref_run)
    victim = _launch(recipe, run)
    deadline = time.time() + 240
    while len(_rows(run)) < kill_after and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    done = [p.name for p in list_checkpoints(run)]
    assert not any(name.startswith(not_done) for name in done), "the run finished before the kill; nothing was tested"
    killed_rows = _rows(run)
    resumed = _launch(recipe, run, "--resume")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()[-3000:]
    assert b"resuming from" in out
    ref_out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_out.decode()[-3000:]

    expected = {(r["phase"], r["step"]): (r["loss"], r["phase_tokens"], r["lr"]) for r in _rows(ref_run)}
    got: dict = {}
    for r in _rows(run):  # steps between the checkpoint and the kill were run twice: both must agree
        key = (r["phase"], r["step"])
        assert (r["loss"], r["phase_tokens"], r["lr"]) == expected[key], (key, r, expected[key])
        got[key] = (r["loss"], r["phase_tokens"], r["lr"])
    assert got == expected
    assert len(_rows(run)) > len(expected) >= len(killed_rows)  # some steps really were replayed
    # and the final weights are the same
    from ettin.train.checkpoint import load_model

    a = load_model(list_checkpoints(ref_run)[-1]).state_dict()
    b = load_model(list_checkpoints(run)[-1]).state_dict()
    assert all((a[k] == b[k]).all() for k in a)
    return expected


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    recipe = tmp_path / "resume.yaml"
    recipe.write_text(RECIPE)
    expected = _kill_and_resume(recipe, tmp_path, KILL_AFTER, "decay-step0000004")
    assert len(expected) == 30 + 4


def test_sigkill_then_resume_on_real_tokens_with_dropout(tmp_path, shared_data):
    """Real data, unpacked rows (padding not counted), attention-output dropout on: budgets, the save cadence and
    the learning rates follow real tokens, and the resumed run is still bitwise the uninterrupted one."""
    import json as _json

    from ettin.data.ready import ensure_data
    from ettin.train.recipe import load_recipe

    src = tmp_path / "wiki.jsonl"
    src.write_text("".join((shared_data / "pretrain" / "wikipedia_vital_summaries_en.jsonl").read_text()
                           .splitlines(True)[:120]))
    recipe = {
        "name": "resume-real", "seed": 6, "model": {"size": "tiny", "overrides": {"attention_output_dropout": 0.1}},
        "data": {"tokenizer": str(tmp_path / "tok" / "tokenizer.json"),
                 "prepare": {"out": str(tmp_path / "prepared"), "tokenizer_vocab_size": 300, "workers": 0,
                             "sources": [str(src)]},
                 "mixtures": {"m": {"name": "m", "instances": {"mode": "chunk"},
                                    "sources": [{"name": "wiki", "path": str(tmp_path / "prepared"), "weight": 1}]}}},
        "train": {"lr": 3e-3, "global_batch_size": 4, "micro_batch_size": 2, "save_every_tokens": 600,
                  "progress": False, "tensorboard": False},
        "phases": [{"name": "pretrain", "tokens": 3000, "seq_len": 96, "mixture": "m", "warmup_tokens": 500},
                   {"name": "decay", "tokens": 1200, "seq_len": 96, "mixture": "m", "schedule": "one_minus_sqrt",
                    "lr_start": 0.5, "lr_end": 0.02, "mlm_probability": 0.15}],
    }
    path = tmp_path / "real.yaml"
    path.write_text(_json.dumps(recipe))
    ensure_data(load_recipe(path), log=lambda *_: None)  # once, before the two runs start side by side
    expected = _kill_and_resume(path, tmp_path, 9, "decay-step")
    pre = sorted((step, tokens) for (phase, step), (_, tokens, _) in expected.items() if phase == "pretrain")
    assert pre[-1][1] >= 3000 > pre[-2][1] and len(pre) > 3000 / (4 * 96)  # real tokens: rows are part padding


# ---- a resume never makes the run folder describe training it does not hold ----------------------------

SMALL = """
name: small
seed: 4
model: {size: tiny}
data: {source: synthetic, vocab_size: 96}
train: {lr: 3e-3, global_batch_size: 4, micro_batch_size: 4, progress: false, tensorboard: false}
phases:
  - {name: pretrain, tokens: 384, seq_len: 32, warmup_tokens: 128}
  - {name: decay, tokens: 256, seq_len: 32, schedule: constant, lr_start: 0.5}
"""


def _small(tmp_path):
    from ettin.cli import main

    recipe = tmp_path / "small.yaml"
    recipe.write_text(SMALL)
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run)]) == 0
    return main, recipe, run


def _history(run: Path) -> list[dict]:
    path = run / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_resume_refuses_a_changed_recipe(tmp_path, capsys, one_thread):
    main, recipe, run = _small(tmp_path)
    stored = (run / "recipe.yaml").read_text()
    ckpts = list_checkpoints(run)
    for override, named in (("train.lr=1e-2", "train.lr: 0.003 -> 0.01"),
                            ("phases.0.tokens=768", "phases.0 (pretrain).tokens: 384 -> 768 (already trained)"),
                            ("phases.decay.seq_len=64", "phases.1 (decay).seq_len: 32 -> 64"),
                            ("seed=5", "seed: 4 -> 5")):
        capsys.readouterr()
        assert main(["train", str(recipe), "--out", str(run), "--resume", override]) == 2, override
        err = capsys.readouterr().err
        assert named in err and "model.init_from=" in err, err
        assert (run / "recipe.yaml").read_text() == stored and list_checkpoints(run) == ckpts
    assert [h["event"] for h in _history(run)] == ["start"]


def test_resume_extends_the_phase_being_trained_and_records_it(tmp_path, capsys, one_thread):
    import yaml

    main, recipe, run = _small(tmp_path)
    assert main(["train", str(recipe), "--out", str(run), "--resume", "phases.1.tokens=512", "train.log_every=2"]) == 0
    assert "decay: 4 steps" in capsys.readouterr().out
    assert [p.name for p in list_checkpoints(run)][-1] == "decay-step0000004"
    assert yaml.safe_load((run / "recipe.yaml").read_text())["phases"][1]["tokens"] == 512
    last = _history(run)[-1]
    assert last["event"] == "extend" and last["from_checkpoint"] == "decay-step0000002"
    assert last["changes"] == {"phases.1.tokens": {"old": 256, "new": 512}, "train.log_every": {"old": 1, "new": 2}}
    # the folder's recipe.yaml now tells the truth: trained from the start, it gives the same losses
    straight = tmp_path / "straight"
    assert main(["train", str(run / "recipe.yaml"), "--out", str(straight)]) == 0
    got, want = ({(r["phase"], r["step"]): r["loss"] for r in _rows(d)} for d in (run, straight))
    both = got.keys() & want.keys()  # the stored recipe logs every 2nd step
    assert {("pretrain", 3), ("decay", 2), ("decay", 4)} <= both and all(got[k] == want[k] for k in both)
    # a finished run resumed with the same recipe trains nothing and says so
    capsys.readouterr()
    assert main(["train", str(run / "recipe.yaml"), "--out", str(run), "--resume"]) == 0
    assert "nothing to train" in capsys.readouterr().out


def test_lengthening_a_decay_would_rewrite_trained_steps(tmp_path, capsys, one_thread):
    main, recipe, run = _small(tmp_path)
    over = ["phases.1.schedule=one_minus_sqrt", "phases.1.lr_end=0.02"]
    other = tmp_path / "decayed"
    assert main(["train", str(recipe), "--out", str(other), *over]) == 0
    capsys.readouterr()
    assert main(["train", str(recipe), "--out", str(other), "--resume", *over, "phases.1.tokens=512"]) == 2
    err = capsys.readouterr().err
    assert "phases.1 (decay).tokens: 256 -> 512" in err
    assert "the learning rates of the 2 steps already trained (256 tokens) would change" in err


def test_resume_needs_something_to_resume(tmp_path, capsys, one_thread):
    from ettin.cli import main

    recipe = tmp_path / "small.yaml"
    recipe.write_text(SMALL)
    missing = tmp_path / "never-trained"
    for command in ("train", "pair"):
        assert main([command, str(recipe), "--out", str(missing), "--resume"]) == 2
        assert "nothing to resume" in capsys.readouterr().err and not missing.exists()
    # the idempotent form (what `ettin demo` uses) starts, then resumes
    assert main(["train", str(recipe), "--out", str(missing), "--resume-if-exists"]) == 0
    assert main(["train", str(recipe), "--out", str(missing), "--resume-if-exists"]) == 0
    assert "nothing to train" in capsys.readouterr().out


def test_classify_future_phases_and_settings():
    import yaml

    from ettin.train.recipe import recipe_from_dict
    from ettin.train.resume import classify

    old = recipe_from_dict(yaml.safe_load(SMALL)).to_dict()
    meta = {"phase_index": 0, "step": 1, "phase_tokens": 128, "token_unit": "real",
            "scheduler": {"kind": "warmup_stable", "total": 384, "warmup": 128, "decay": 0, "lr_start": 1.0,
                          "lr_end": 1.0, "shape": None, "position": 128}}
    new = recipe_from_dict(yaml.safe_load(SMALL))
    new = dataclasses.replace(new, train=dataclasses.replace(new.train, keep_checkpoints=2, micro_batch_size=2),
                              phases=(dataclasses.replace(new.phases[0], tokens=3840),  # warmup_stable: the learning
                                      dataclasses.replace(new.phases[1], seq_len=64)))  # rates of the first 128 tokens
                                                                                        # are the same
    accepted, refused = classify(old, new, meta)
    assert not refused and set(accepted) == {"phases.1.seq_len", "train.keep_checkpoints", "train.micro_batch_size",
                                             "phases.0.tokens"}
    # now the warmup is twice as long: the trained step's learning rate changes
    new = dataclasses.replace(new, phases=(dataclasses.replace(new.phases[0], warmup_tokens=256), *new.phases[1:]))
    accepted, refused = classify(old, new, meta)
    assert set(refused) == {"phases.0.tokens", "phases.0.warmup_tokens"}
    accepted, refused = classify(old, new, None)  # nothing trained yet: anything goes
    assert not refused and "phases.0.warmup_tokens" in accepted


def test_a_decoder_runs_recipe_yaml_trains_again_and_old_ones_resume(tmp_path):
    """A decoder's recipe.yaml holds no masking rate (a decoder recipe may not set one), so `ettin train
    RUN/recipe.yaml` runs it again; a recipe.yaml written before (with the default rate) still resumes."""
    import yaml

    from ettin.cli import main

    recipe = tmp_path / "small.yaml"
    recipe.write_text(SMALL)
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--objective", "clm", "--out", str(run), "phases.1.tokens=128"]) == 0
    stored = yaml.safe_load((run / "recipe.yaml").read_text())
    assert stored["objective"] == "clm" and all("mlm_probability" not in p for p in stored["phases"])
    assert main(["train", str(run / "recipe.yaml"), "--plan"]) == 0
    for p in stored["phases"]:  # as older versions wrote it
        p["mlm_probability"] = 0.3
    (run / "recipe.yaml").write_text(yaml.safe_dump(stored))
    assert main(["train", str(recipe), "--objective", "clm", "--out", str(run), "--resume"]) == 0
    assert _history(run)[-1]["event"] in ("resume", "extend")
