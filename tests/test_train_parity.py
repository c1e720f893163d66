"""Losses that do not depend on the parallelism, compared as torchtitan compares them (the same seed and data, step
by step): one process, DDP on 2 ranks, FSDP2 on 2, and FSDP2 on 2 with 2 accumulation steps train 20 steps of a
real-data phase (attention-output dropout 0.1, as every published run) to the same losses, MLM and CLM.

Tolerances: fp32, 1e-5 relative (the ranks only change the order of the gradient all-reduce and of the loss's
reduction: rounding, about 1e-7 a step, compounding over 20 steps). bf16 autocast, 2e-3 relative: the matmuls round
their outputs to bf16 (8 bits of mantissa, 3.9e-3 relative), the weights, the optimizer and the loss stay fp32, and
a different split of the batch changes the order in which the bf16 gradients are summed, so the runs drift apart by
a fraction of one bf16 rounding over 20 steps: measured 1.1e-4 to 1.4e-4 (MLM) and 4e-5 to 3.2e-4 (CLM) here, 2e-3
leaves six times that.
Dropout masks are keyed by global row (ettin.dropout): with `nn.Dropout` the 2-rank losses part at the first step.
"""

import json
import os
import subprocess
import sys

import pytest

from ettin.data.ready import ensure_data
from ettin.train.recipe import load_recipe

pytestmark = pytest.mark.dist
STEPS = 20
ROWS, SEQ = 8, 64


def _recipe(tmp_path, shared_data):
    src = tmp_path / "wiki.jsonl"
    src.write_text("".join((shared_data / "pretrain" / "wikipedia_vital_summaries_en.jsonl").read_text()
                           .splitlines(True)[:200]))
    recipe = {
        "name": "parity", "seed": 11, "model": {"size": "tiny", "overrides": {"attention_output_dropout": 0.1}},
        "data": {"tokenizer": str(tmp_path / "tok" / "tokenizer.json"),
                 "prepare": {"out": str(tmp_path / "prepared"), "tokenizer_vocab_size": 400, "workers": 0,
                             "sources": [str(src)]},
                 "mixtures": {"m": {"name": "m", "instances": {"mode": "chunk"},
                                    "sources": [{"name": "wiki", "path": str(tmp_path / "prepared"), "weight": 1}]}}},
        "train": {"lr": 3e-3, "global_batch_size": ROWS, "micro_batch_size": ROWS, "progress": False,
                  "tensorboard": False, "token_unit": "slots", "save_every_tokens": 0},
        "phases": [{"name": "pretrain", "tokens": STEPS * ROWS * SEQ, "seq_len": SEQ, "mixture": "m",
                    "warmup_tokens": 4 * ROWS * SEQ}],
    }
    path = tmp_path / "parity.yaml"
    path.write_text(json.dumps(recipe))
    ensure_data(load_recipe(path), log=lambda *_: None)
    return path


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        env.pop(key, None)
    return env


LAYOUTS = {  # name: (processes, overrides)
    "one process": (1, ["train.distributed=none"]),
    "DDP x2": (2, ["train.distributed=ddp"]),
    "FSDP2 x2": (2, ["train.distributed=fsdp"]),
    "FSDP2 x2, accumulation 2": (2, ["train.distributed=fsdp", f"train.micro_batch_size={ROWS // 4}"]),
}


def _losses(recipe, out, objective: str, precision: str, procs: int, extra: list[str]) -> list[float]:
    entry = ["-m", "ettin.cli", "train", str(recipe), "--out", str(out), "--objective", objective,
             f"train.precision={precision}", *extra]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *entry]
           if procs > 1 else [sys.executable, *entry])
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    return [r["loss"] for r in rows]


def _compare(tmp_path, recipe, objective: str, precision: str, rel: float, layouts=LAYOUTS) -> dict:
    losses = {name: _losses(recipe, tmp_path / f"{objective}-{precision}-{i}", objective, precision, n, extra)
              for i, (name, (n, extra)) in enumerate(layouts.items())}
    reference = losses["one process"]
    worst = {}
    for name, got in losses.items():
        worst[name] = max(abs(a - b) / abs(b) for a, b in zip(got, reference))
        assert got == pytest.approx(reference, rel=rel), (objective, precision, name, worst[name])
    assert reference[-1] < reference[0]  # it trains
    return worst


@pytest.mark.parametrize("objective", ["mlm", pytest.param("clm", marks=pytest.mark.slow)])
def test_fp32_losses_do_not_depend_on_the_parallelism(tmp_path, shared_data, objective):
    _compare(tmp_path, _recipe(tmp_path, shared_data), objective, "fp32", 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_bf16_losses_do_not_depend_on_the_parallelism(tmp_path, shared_data, objective):
    _compare(tmp_path, _recipe(tmp_path, shared_data), objective, "bf16", 2e-3)


def test_keyed_masks_follow_the_rows_not_the_split():
    """In one process: a batch's per-row losses under dropout are the same whether its rows go through the model
    together or in two halves (each half's keys), and differ with other keys; nn.Dropout's (no keys) differ between
    the two splits, which is what parted the ranks' losses."""
    import torch

    from ettin.config import preset
    from ettin.data.collate import dropout_keys as row_keys
    from ettin.model import EttinModel

    torch.manual_seed(0)
    model = EttinModel(preset("tiny").replace(attention_output_dropout=0.1)).train()
    ids = torch.randint(10, model.config.vocab_size, (8, 48))
    mask = torch.ones_like(ids)
    mask[3, 30:] = 0  # padded rows take the varlen path
    keys = row_keys(5, "pretrain", 7, torch.arange(8).numpy())
    probe = torch.randn(48, model.config.hidden_size)

    def per_row(k, rows):
        h = model.hidden_states(ids[rows], mask[rows], dropout_keys=None if k is None else k[rows])
        return (h.float() * probe).sum(dim=(1, 2))  # a fixed projection (the final norm fixes each row's scale)

    whole = per_row(keys, slice(0, 8))
    halves = torch.cat([per_row(keys, slice(0, 4)), per_row(keys, slice(4, 8))])
    torch.testing.assert_close(whole, halves, rtol=1e-6, atol=1e-7)
    other = row_keys(5, "pretrain", 8, torch.arange(8).numpy())  # the next step's keys: other masks
    assert not torch.allclose(per_row(other, slice(0, 8)), whole)
    plain = per_row(None, slice(0, 8))
    assert not torch.allclose(plain, torch.cat([per_row(None, slice(0, 4)), per_row(None, slice(4, 8))]))
    model.eval()  # evaluation: no dropout, keys or not
    torch.testing.assert_close(per_row(keys, slice(0, 8)), per_row(None, slice(0, 8)))


def test_keyed_dropout_keeps_one_minus_p_independently():
    """The hash's masks: keep rate 1 - p within sampling error, no correlation between neighbouring channels,
    positions or layers, and the survivors scaled by 1 / (1 - p) (the mean is kept)."""
    import torch

    from ettin.data.collate import dropout_keys as row_keys
    from ettin.dropout import keyed_dropout, token_keys

    tokens = token_keys(row_keys(1, "p", 0, torch.arange(64).numpy()), 256)  # 16k tokens
    x = torch.ones(64, 256, 128)
    kept = [keyed_dropout(x, tokens, layer, 0.1) != 0 for layer in (0, 1)]
    n = kept[0].numel()
    for k in kept:
        assert abs(k.float().mean().item() - 0.9) < 4 * (0.09 / n) ** 0.5
    a = kept[0].float() - 0.9
    for other in (a.roll(1, dims=2), a.roll(1, dims=1), a.roll(1, dims=0), kept[1].float() - 0.9):
        assert abs((a * other).mean().item() / 0.09) < 0.01  # correlation
    assert keyed_dropout(x, tokens, 0, 0.1).mean().item() == pytest.approx(1.0, abs=0.01)
