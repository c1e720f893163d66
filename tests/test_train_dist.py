"""Two processes over gloo (torchrun) against one process with the same global batch: DDP and FSDP2
give the same losses (fp32 tolerance), and a sharded FSDP2 checkpoint reloads (resume on 2 ranks, and
into a single-process model)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from ettin.train.checkpoint import list_checkpoints, load_model
from ettin.train.loop import train
from ettin.train.recipe import load_recipe

pytestmark = pytest.mark.dist

RECIPE = """
name: dist
seed: 7
model: {size: tiny}
data: {source: synthetic, vocab_size: 96}
train: {lr: 3e-3, global_batch_size: 8, micro_batch_size: 4, save_every_tokens: 768, progress: false,
        tensorboard: false}
phases:
  - {name: pretrain, tokens: 1536, seq_len: 32, warmup_tokens: 256}
  - {name: decay, tokens: 512, seq_len: 32, schedule: one_minus_sqrt, lr_start: 0.5, lr_end: 0.02}
"""


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _start(recipe, out, nproc: int, *extra: str) -> subprocess.Popen:
    entry = ["-m", "ettin.cli", "train", str(recipe), "--out", str(out), *extra]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *entry]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()[-4000:]
    return out.decode()


def _copy_at(run, to, checkpoint: str):
    """A copy of a run folder as if it had stopped at `checkpoint` (the later ones and the metrics removed)."""
    shutil.copytree(run, to)
    for path in list_checkpoints(to):
        if path.name != checkpoint:
            shutil.rmtree(path)
    (to / "metrics.jsonl").unlink()
    return to


def _losses(run, key: str = "loss") -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {(r["phase"], r["step"]): r[key] for r in rows}


def test_two_processes_match_one(tmp_path):
    recipe = tmp_path / "dist.yaml"
    recipe.write_text(RECIPE)
    runs = {"ddp": (2, ("train.distributed=ddp",)), "fsdp": (2, ("train.distributed=fsdp",))}
    procs = {name: _start(recipe, tmp_path / name, n, *extra) for name, (n, extra) in runs.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the one-process reference runs here meanwhile
        train(load_recipe(recipe), tmp_path / "single", log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    for name, proc in procs.items():  # each run says at start how many ranks and which strategy
        banner = {"ddp": "DDP (replicated weights)", "fsdp": "FSDP2 (sharded weights)"}[name]
        assert f"training on 2 ranks (gloo, cpu): {banner}" in _finish(proc)
    single = _losses(tmp_path / "single")
    assert len(single) == 6 + 2
    for name in ("ddp", "fsdp"):
        other = _losses(tmp_path / name)
        assert other.keys() == single.keys()
        for key, value in single.items():
            assert other[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, key)
        # the gradient norm: FSDP2's is reduced over the shards, DDP's read from the all-reduced gradients
        norms, one = _losses(tmp_path / name, "grad_norm"), _losses(tmp_path / "single", "grad_norm")
        for key, value in one.items():
            assert norms[key] == pytest.approx(value, rel=1e-4), (name, key)

    # the FSDP2 checkpoint is sharded (one file per rank) and loads into one process
    fsdp_ckpts = list_checkpoints(tmp_path / "fsdp")
    assert len(list(fsdp_ckpts[-1].glob("*.distcp"))) == 2
    a = load_model(fsdp_ckpts[-1]).state_dict()
    b = load_model(list_checkpoints(tmp_path / "single")[-1]).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)

    # resume on two ranks from the sharded mid-run checkpoint: the same losses as the uninterrupted run
    resumed = _copy_at(tmp_path / "fsdp", tmp_path / "fsdp-resumed", "pretrain-step0000003")
    _finish(_start(recipe, resumed, 2, "train.distributed=fsdp", "--resume"))
    original, again = _losses(tmp_path / "fsdp"), _losses(resumed)
    assert sorted(again) == sorted(k for k in original if k[0] == "decay" or k[1] > 3)
    for key, value in again.items():
        assert value == pytest.approx(original[key], rel=1e-6, abs=1e-7), key


def test_session_runs_the_closing_barrier_only_after_a_clean_exit(monkeypatch):
    """After an error the other ranks may never reach a barrier: `session` must not wait for them."""
    from ettin.train import distributed as dist_mod

    calls = []
    monkeypatch.setattr(dist_mod, "teardown", lambda barrier=True: calls.append(barrier))
    with dist_mod.session() as info:
        assert info.world_size == 1
    with pytest.raises(RuntimeError):
        with dist_mod.session():
            raise RuntimeError("a rank failed")
    assert calls == [True, False]


def _rows(run) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_a_batch_that_does_not_split_over_the_ranks_is_an_error_not_a_hang(tmp_path):
    """5 rows over 2 ranks would give the ranks different numbers of micro-batches, and FSDP2's per-micro-batch
    collectives would wait forever; the plan refuses it before any work, naming the phase and the numbers."""
    recipe = tmp_path / "dist.yaml"
    recipe.write_text(RECIPE)
    proc = _start(recipe, tmp_path / "bad", 2, "train.distributed=fsdp", "train.global_batch_size=5",
                  "train.micro_batch_size=1")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "phases.0 (pretrain): global batch 5 rows does not split over 2 ranks" in out.decode()
    assert not (tmp_path / "bad" / "checkpoints").exists()


@pytest.mark.slow
def test_bf16_fsdp2_resumes_bitwise_after_a_kill_and_reshards_to_one_rank(tmp_path):
    """FSDP2 with the bf16 mixed-precision policy and activation checkpointing on 2 gloo ranks: SIGKILLed and
    resumed, it logs the uninterrupted run's losses bitwise; its 2-rank checkpoint resumes on 1 rank (DCP
    reshards) with the next losses within bf16 tolerance of continuing on 2."""
    import signal
    import time

    recipe = tmp_path / "dist.yaml"
    recipe.write_text(RECIPE.replace("tokens: 1536", "tokens: 3072"))
    flags = ("train.distributed=fsdp", "train.precision=bf16", "train.activation_checkpointing=true")
    reference = _start(recipe, tmp_path / "ref", 2, *flags)
    victim = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ettin.cli",
         "train", str(recipe), "--out", str(tmp_path / "killed"), *flags],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 200
    while len(_rows(tmp_path / "killed")) < 8 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(victim.pid, signal.SIGKILL)  # torchrun and both ranks
    victim.wait()
    assert not any(p.name.startswith("decay") for p in list_checkpoints(tmp_path / "killed")), "finished early"
    _finish(_start(recipe, tmp_path / "killed", 2, *flags, "--resume"))
    assert "FSDP2 (sharded weights)" in _finish(reference)
    ref = {(r["phase"], r["step"]): r["loss"] for r in _rows(tmp_path / "ref")}
    for r in _rows(tmp_path / "killed"):  # replayed steps included: every logged loss equals the reference's
        assert r["loss"] == ref[r["phase"], r["step"]], r
    assert {(r["phase"], r["step"]) for r in _rows(tmp_path / "killed")} == set(ref)

    # reshard: the 2-rank checkpoint at pretrain step 6, resumed by one process
    one = _copy_at(tmp_path / "ref", tmp_path / "one-rank", "pretrain-step0000006")
    _finish(subprocess.Popen([sys.executable, "-m", "ettin.cli", "train", str(recipe), "--out", str(one),
                              "train.precision=bf16", "--resume"], env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT))
    again = {(r["phase"], r["step"]): r["loss"] for r in _rows(one)}
    assert sorted(again) == sorted(k for k in ref if k[0] == "decay" or k[1] > 6)
    for key, value in again.items():  # bf16 forward: reduction order differs between 1 and 2 ranks
        assert value == pytest.approx(ref[key], rel=2e-2), key


def test_fsdp_under_torchrun_with_one_process_shards(tmp_path):
    """`torchrun --nproc_per_node 1` with train.distributed=fsdp runs FSDP2 over a group of one (what
    scripts/gpu_check.sh measures on one GPU), not a plain single-process run."""
    recipe = tmp_path / "dist.yaml"
    recipe.write_text(RECIPE)
    out = _finish(_start(recipe, tmp_path / "one", 1, "train.distributed=fsdp", "phases.1.tokens=1"))
    assert "FSDP2 (sharded weights)" in out and "no data parallelism" not in out
    assert list_checkpoints(tmp_path / "one")


def test_the_bf16_policy_gathers_bf16_weights(tmp_path):
    """A bf16 FSDP2 run computes with bf16 parameters (all-gathered in bf16: half the traffic) while the sharded
    master weights stay fp32."""
    import torch.distributed as dist

    from ettin.config import preset
    from ettin.model import EttinModel
    from ettin.train import distributed as D

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        model = EttinModel(preset("tiny", vocab_size=96, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                  mask_token_id=3))
        D.wrap(model, "fsdp", D.DistInfo(), precision="bf16")
        assert all(p.dtype == torch.float32 for p in model.parameters())  # the sharded master weights
        seen = []
        model.layers[1].attn.Wqkv.register_forward_pre_hook(lambda m, i: seen.append(m.weight.dtype))
        model(torch.randint(4, 96, (2, 16)))
        assert seen == [torch.bfloat16]
    finally:
        dist.destroy_process_group()


def test_init_from_a_hugging_face_folder_under_fsdp2_on_two_ranks(tmp_path):
    """model.init_from an exported (Hugging Face) folder, the start of every cross-objective recipe: the weights
    load into the sharded model on each of 2 FSDP2 ranks (a plain load_state_dict mixed tensors and DTensors and
    failed on every rank) and give the one-process run's losses; a folder whose weights do not fit is refused."""
    from ettin.train.checkpoint import export_hf

    recipe = tmp_path / "dist.yaml"
    recipe.write_text(RECIPE.replace("tokens: 1536", "tokens: 768"))
    train(load_recipe(recipe, ["phases.1.tokens=1"]), tmp_path / "base", log=lambda *_: None)
    export_hf(list_checkpoints(tmp_path / "base")[-1], tmp_path / "hf")
    start = ("model.init_from=" + str(tmp_path / "hf"), "phases.1.tokens=1")
    proc = _start(recipe, tmp_path / "fsdp", 2, "train.distributed=fsdp", *start)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_recipe(recipe, list(start)), tmp_path / "single", log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    assert "FSDP2 (sharded weights)" in _finish(proc)
    single, sharded = _losses(tmp_path / "single"), _losses(tmp_path / "fsdp")
    assert sorted(single) == sorted(sharded)
    for key, value in sharded.items():
        assert value == pytest.approx(single[key], rel=1e-5), key
    fresh = _losses(tmp_path / "base")  # the start is the exported weights, not a fresh initialisation
    assert single[("pretrain", 1)] < fresh[("pretrain", 1)]
    bad = _start(recipe, tmp_path / "bad", 2, "train.distributed=fsdp", "model.overrides.num_layers=2", *start)
    out, _ = bad.communicate(timeout=300)
    assert bad.returncode != 0 and "model.init_from" in out.decode() and "unexpected" in out.decode()
    with pytest.raises(ValueError, match="model.init_from .* weights do not fit this model"):  # another shape
        train(load_recipe(recipe, [*start, "model.overrides.hidden_size=32"]), tmp_path / "x", log=lambda *_: None)
