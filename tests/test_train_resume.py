"""Exact resume: a run SIGKILLed at an arbitrary step and resumed with --resume logs the same per-step
losses as the uninterrupted run, bitwise (CPU, fp32)."""

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


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    recipe = tmp_path / "resume.yaml"
    recipe.write_text(RECIPE)
    ref_run, run = tmp_path / "reference", tmp_path / "killed"
    reference = _launch(recipe, ref_run)
    victim = _launch(recipe, run)
    deadline = time.time() + 240
    while len(_rows(run)) < KILL_AFTER and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    done = [p.name for p in list_checkpoints(run)]
    assert "decay-step0000004" not in done, "the run finished before the kill; nothing was tested"
    killed_rows = _rows(run)
    resumed = _launch(recipe, run, "--resume")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()[-3000:]
    assert b"resuming from" in out
    ref_out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_out.decode()[-3000:]

    expected = {(r["phase"], r["step"]): r["loss"] for r in _rows(ref_run)}
    assert len(expected) == 30 + 4
    got: dict = {}
    for r in _rows(run):  # steps between the checkpoint and the kill were run twice: both must agree
        key = (r["phase"], r["step"])
        assert r["loss"] == expected[key], (key, r["loss"], expected[key])
        got[key] = r["loss"]
    assert got == expected
    assert len(_rows(run)) > len(expected) >= len(killed_rows)  # some steps really were replayed
    # and the final weights are the same
    from ettin.train.checkpoint import load_model

    a = load_model(list_checkpoints(ref_run)[-1]).state_dict()
    b = load_model(list_checkpoints(run)[-1]).state_dict()
    assert all((a[k] == b[k]).all() for k in a)
