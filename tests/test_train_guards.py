"""What guards a run: one writer per run folder (ettin.train.runlock), the loss-spike guard (ettin.train.guard),
and the gradient norm in the logs, as the published runs logged it."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ettin.train import loop as L
from ettin.train import runlock
from ettin.train.checkpoint import list_checkpoints, read_meta
from ettin.train.guard import LossSpike, SpikeGuard
from ettin.train.recipe import load_recipe

RECIPE = """
name: guards
seed: 3
model: {size: tiny}
data: {source: synthetic, vocab_size: 96}
train: {lr: 3e-3, global_batch_size: 4, micro_batch_size: 4, save_every_tokens: 512, progress: false,
        tensorboard: false, log_every: 3}
phases:
  - {name: pretrain, tokens: 2048, seq_len: 32, warmup_tokens: 128}
"""


def _recipe(tmp_path, *overrides):
    path = tmp_path / "guards.yaml"
    path.write_text(RECIPE)
    return load_recipe(path, list(overrides)), path


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


# ---- the loss-spike guard ---------------------------------------------------------------------------------
def test_spike_guard_judges_against_a_full_window_and_keeps_spikes_out_of_it():
    guard = SpikeGuard(window=4, sigmas=3.0)
    assert not any(guard.check(x) for x in (2.0, 2.1, 1.9, 2.0))  # filling the window: never a spike
    assert guard.limit() == pytest.approx(2.0 + 3.0 * float(torch.tensor([2.0, 2.1, 1.9, 2.0]).std()))
    assert guard.check(5.0) and guard.check(5.0)  # a run of spikes is measured against the steps before it
    assert guard.state() == [2.0, 2.1, 1.9, 2.0]
    assert not guard.check(math.nan) and guard.state() == [2.0, 2.1, 1.9, 2.0]  # NaN: nan_policy's
    assert not guard.check(2.05) and guard.state() == [2.1, 1.9, 2.0, 2.05]  # a normal loss joins; the oldest goes
    assert "above" in guard.describe(9.0) and "3 standard deviations" in guard.describe(9.0)


def _inject_spike(monkeypatch, at_step: int, factor: float = 50.0):
    """train_step's loss multiplied by `factor` on the `at_step`-th call (1-based) of the run."""
    real, calls = L.train_step, []

    def spiky(*args, **kwargs):
        loss, n = real(*args, **kwargs)
        calls.append(1)
        return (loss * factor if len(calls) == at_step else loss), n

    monkeypatch.setattr(L, "train_step", spiky)


def test_an_injected_spike_is_skipped_and_logged(tmp_path, monkeypatch):
    recipe, _ = _recipe(tmp_path, "train.spike_guard=skip", "train.spike_window=4")
    baseline = L.train(recipe, tmp_path / "plain", log=lambda *_: None)[0]
    notes = []
    _inject_spike(monkeypatch, at_step=9)
    monkeypatch.setattr(L.Progress, "note", lambda self, text: notes.append(text))
    result = L.train(recipe, tmp_path / "spiky", log=lambda *_: None)[0]
    assert result.skipped == 1 and baseline.skipped == 0
    spikes = [n for n in notes if "loss spike" in n]
    assert len(spikes) == 1 and "phase pretrain step 8 " in spikes[0] and "batch skipped" in spikes[0]
    assert result.losses[:8] == baseline.losses[:8]
    assert result.losses[8] == pytest.approx(50 * baseline.losses[8], rel=1e-5)  # logged as it was
    assert result.losses[9] != baseline.losses[9]  # the skipped update changed what followed


def test_a_spike_under_stop_ends_the_run_before_its_next_checkpoint(tmp_path, monkeypatch):
    recipe, _ = _recipe(tmp_path, "train.spike_guard=stop", "train.spike_window=4")
    _inject_spike(monkeypatch, at_step=10)
    with pytest.raises(LossSpike, match=r"loss spike at phase pretrain step 9 .*spike_guard=skip"):
        L.train(recipe, tmp_path / "run", log=lambda *_: None)
    kept = list_checkpoints(tmp_path / "run")
    assert kept and all(read_meta(c)["step"] < 10 for c in kept)
    assert len(read_meta(kept[-1])["spike_window"]) == 4  # the window travels with the checkpoint


def test_the_spike_window_resumes_with_the_run(tmp_path, monkeypatch):
    """A mid-phase resume judges its first step against the uninterrupted run's window (restored from the
    checkpoint): a spike right after the resume is skipped as it is in the uninterrupted run."""
    recipe, path = _recipe(tmp_path, "train.spike_guard=skip", "train.spike_window=4")
    with monkeypatch.context() as m:
        _inject_spike(m, at_step=9)
        full = L.train(recipe, tmp_path / "full", log=lambda *_: None)[0]
    L.train(load_recipe(path, ["train.spike_guard=skip", "train.spike_window=4", "phases.0.tokens=1024"]),
            tmp_path / "cut", log=lambda *_: None)
    assert read_meta(list_checkpoints(tmp_path / "cut")[-1])["step"] == 8
    _inject_spike(monkeypatch, at_step=1)
    resumed = L.train(recipe, tmp_path / "cut", resume=True, log=lambda *_: None)[0]
    assert full.skipped == resumed.skipped == 1
    assert resumed.losses == full.losses[8:]


# ---- the gradient norm --------------------------------------------------------------------------------------
def test_the_gradient_norm_is_logged_and_is_the_norm_of_the_step_gradients(tmp_path, monkeypatch):
    recipe, _ = _recipe(tmp_path, "train.log_every=1", "phases.0.tokens=512")
    real, by_hand = L.grad_norm, []

    def spy(model):
        grads = [p.grad.double().flatten() for p in model.parameters() if p.grad is not None]
        by_hand.append(float(torch.cat(grads).norm()))
        return real(model)

    monkeypatch.setattr(L, "grad_norm", spy)
    L.train(recipe, tmp_path / "run", log=lambda *_: None)
    logged = [r["grad_norm"] for r in _rows(tmp_path / "run")]
    assert len(logged) == len(by_hand) == 4 and all(x > 0 for x in logged)
    assert logged == pytest.approx(by_hand, rel=1e-5)
    from ettin.train.progress import status_text

    assert "gnorm" in status_text({**_rows(tmp_path / "run")[0], "tokens_per_s": 1.0, "mfu": 0.1})


# ---- one writer per run folder ----------------------------------------------------------------------------
def test_a_held_run_folder_refuses_a_second_writer_and_names_the_holder(tmp_path):
    with runlock.hold(tmp_path / "run") as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"]
        with pytest.raises(runlock.RunLocked, match=rf"being written by another run \(host .*, pid {os.getpid()}"):
            with runlock.hold(tmp_path / "run"):
                pass
    assert path.read_text() == ""  # released: it names no holder
    with runlock.hold(tmp_path / "run"):  # and can be taken again
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / runlock.LOCK).write_text(json.dumps({"host": "node7", "pid": 999999, "started": "yesterday"}))
    said = []
    with runlock.hold(run, log=said.append):
        assert json.loads((run / runlock.LOCK).read_text())["pid"] == os.getpid()
    assert len(said) == 1 and "taking over" in said[0] and "node7" in said[0] and "999999" in said[0]


def _lock_fds(path) -> list[int]:
    """This process's descriptors open on `path`."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                fds.append(int(name))
        except OSError:
            continue
    return fds


def test_a_forked_worker_does_not_hold_the_runs_lock(tmp_path):
    """A flock belongs to the open file description, which a fork shares: a data worker forked by the run would
    keep the folder locked after a SIGKILLed run died, for the seconds its watchdog takes to notice, and the
    relaunch was refused (seen in CI). Forked children drop the lock's descriptor."""
    with runlock.hold(tmp_path / "run") as path:
        assert _lock_fds(path)  # the holder has it
        pid = os.fork()
        if pid == 0:  # a worker: exit 0 when it holds no descriptor of the lock
            os._exit(1 if _lock_fds(path) else 0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        env.pop(key, None)
    return env


def _wait_for(predicate, seconds: float = 120.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _lock_holder(run):
    path = run / runlock.LOCK
    text = path.read_text() if path.is_file() else ""
    return json.loads(text) if text else None


def test_a_second_launch_into_a_live_run_is_refused(tmp_path):
    """`ettin train --resume-if-exists` into a folder a live run is writing: refused, naming the holder; the live
    run goes on undisturbed and ends with one line per step in its metrics."""
    _, path = _recipe(tmp_path)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ettin.cli", "train", str(path), "--out", str(run), "--resume-if-exists"]
    first = subprocess.Popen(cmd + ["phases.0.tokens=40000"], env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    try:
        assert _wait_for(lambda: _lock_holder(run) is not None), "the first run never took the lock"
        second = subprocess.run(cmd + ["phases.0.tokens=40000"], env=_env(), capture_output=True, text=True,
                                timeout=300)
        assert second.returncode != 0
        assert f"pid {first.pid}" in second.stderr and "being written by another run" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out.decode()[-3000:]
    steps = [r["step"] for r in _rows(run)]
    assert steps == sorted(set(steps))  # no step logged twice


@pytest.mark.dist
def test_ranks_stop_when_their_launcher_is_gone(tmp_path):
    """torchrun starts its ranks in sessions of their own: killing the launcher alone left them training, orphaned.
    Now each rank stops within seconds, the lock is released, and a relaunch resumes the run."""
    _, path = _recipe(tmp_path)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ettin.cli",
           "train", str(path), "--out", str(run), "--resume-if-exists", "train.distributed=ddp"]
    launcher = subprocess.Popen(cmd + ["phases.0.tokens=400000"], env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    assert _wait_for(lambda: (run / "metrics.jsonl").is_file() and len(_rows(run)) >= 2, 300), "never trained"
    ranks = [int(p) for p in subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True,
                                            text=True).stdout.split()]
    assert len(ranks) == 2
    launcher.send_signal(signal.SIGKILL)  # the launcher alone
    launcher.wait()

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:  # a zombie has stopped too
            return f.read().split(")")[-1].split()[0] == "Z"

    try:
        assert _wait_for(lambda: all(gone(p) for p in ranks), 60), "the ranks trained on without their launcher"
    finally:
        for pid in ranks:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    relaunch = subprocess.Popen(cmd + ["phases.0.tokens=400000"], env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    rows = len(_rows(run))
    try:  # accepted: it trains on in the same folder
        assert _wait_for(lambda: len(_rows(run)) > rows + 1 or relaunch.poll() is not None, 300)
        assert relaunch.poll() is None, relaunch.communicate()[0].decode()[-3000:]
    finally:
        os.killpg(relaunch.pid, signal.SIGKILL)
        relaunch.wait()
