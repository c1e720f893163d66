"""End to end: a published-format Composer checkpoint of a tiny decoder at step N of its decay phase, imported,
then three steps of `ettin train RECIPE --out RUN --resume` on a replayed published-format order; compared with
the published update rule (tests/test_optim_published.py, written out from bert24's source) applied here to the
same state, batches and learning rates, the rates as the published schedule gives them at the imported
real-token position."""

import json
import math

import numpy as np
import pytest
import torch

from ettin.cli import main
from ettin.data.collate import SpecialTokens
from ettin.data.order import open_order
from ettin.train import checkpoint as ckpt
from ettin.train.composer import composer_name, import_composer
from ettin.train.optim import build_optimizer
from ettin.train.recipe import TrainSection
from published_fixtures import composer_checkpoint, hf_model, write_order
from test_optim_published import published_step

pytest.importorskip("transformers")

N, ROWS, CONTENT = 7, 4, 20  # imported at step 7 (7 recorded steps done); 4 rows of 20 tokens a step
REAL = ROWS * (CONTENT + 2)  # real tokens a step: [CLS] + 20 + [SEP] per row
POSITION = 5_000  # the phase's real tokens before the import (the Composer timestamp's `token`)
PEAK, MAX_LR, WD = 3e-3, 3e-3, 3e-4
RECIPE = f"""
name: continued
objective: clm
seed: 5
model: {{size: tiny}}
data:
  source: synthetic
  vocab_size: 96
  mixtures: {{replay: {{order: ORDER, phase: decay}}}}
train: {{lr: {PEAK}, weight_decay: {WD}, global_batch_size: {ROWS}, micro_batch_size: {ROWS}, precision: fp32,
        progress: false, tensorboard: false, data_workers: 0, log_every: 1, save_every_tokens: 1000000}}
phases:
  - {{name: pretrain, tokens: 1000, seq_len: 32, warmup_tokens: 100}}
  - {{name: extension, tokens: 1000, seq_len: 32, schedule: one_minus_sqrt, lr_start: 1.0, lr_end: 0.5,
     global_rope_theta: 160000, local_rope_theta: 160000}}
  - {{name: decay, tokens: {POSITION + 3 * REAL}, seq_len: 32, schedule: one_minus_sqrt, lr_start: 0.5,
     lr_end: 0.02, global_rope_theta: 160000, local_rope_theta: 160000, mixture: replay}}
"""


def published_lr(position):  # bert24 src/scheduler.py OneMinusSqrtScheduler, lines 230-268 (ettin.train.schedule)
    budget = POSITION + 3 * REAL
    return PEAK * (0.02 + (0.5 - 0.02) * (1 - math.sqrt(position / budget)))


def test_continue_a_published_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hf = hf_model("clm", theta=160000.0, local_theta=160000.0, seed=11)
    path = composer_checkpoint(tmp_path / f"ep0-ba{N}-rank0.pt", hf, "clm", batch=N, tokens=POSITION, lr=1e-3,
                               max_lr=MAX_LR, weight_decay=WD, config={"attn_out_dropout_prob": 0.0})
    # (the recipe's model has no dropout, as the tiny preset: the reference below runs the imported config)
    rng = np.random.default_rng(2)
    steps = {s: [[1, *rng.integers(4, 96, CONTENT).tolist(), 2] for _ in range(ROWS)] for s in range(1, N + 4)}
    write_order(tmp_path / "order" / "decay_000001", steps, rows_per_file=4)
    written = import_composer(path, tmp_path / "run", phase="decay", log=lambda *_: None)
    (tmp_path / "recipe.yaml").write_text(RECIPE.replace("ORDER", str(tmp_path / "order")))
    assert main(["train", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run"), "--resume"]) == 0

    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [N + 1, N + 2, N + 3]
    assert [r["phase_tokens"] for r in rows] == [POSITION + REAL * k for k in (1, 2, 3)]
    for k, r in enumerate(rows):  # each step's LR: the published schedule at the tokens before it
        assert r["lr"] == pytest.approx(published_lr(POSITION + REAL * k), rel=1e-12)
    final = ckpt.latest_checkpoint(tmp_path / "run")
    assert final.name == f"decay-step{N + 3:07d}"

    # the same three steps, by the published rule, from the imported weights and the published optimizer state
    model = ckpt.load_model(written).train()
    raw = torch.load(path, weights_only=False)["state"]["optimizers"]["StableAdamW"]
    names = {p: n for n, p in model.named_parameters()}
    groups = []
    for g in raw["param_groups"]:
        mine = [p for p in model.parameters() if composer_name(names[p], "clm") in g["params"]]
        groups.append({"params": mine, "weight_decay": g["weight_decay"], "step": int(g["step"])})
    state = {p: {k: (v.clone() if torch.is_tensor(v) else v)
                 for k, v in raw["state"][composer_name(names[p], "clm")].items()} for p in model.parameters()}
    special = SpecialTokens(cls_id=1, sep_id=2, pad_id=0, mask_id=3, num_tokens=96)

    class Phase:
        name, mixture, seq_len, mlm_probability = "decay", "replay", 32, 0.0

    source = open_order({"order": str(tmp_path / "order"), "phase": "decay"}, "r.yaml", Phase(), "clm", special,
                        5, ROWS, 0, 1)
    for k in range(3):
        batch, real = source.step_item(N + k)  # recorded step N + k + 1
        assert real == REAL
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        assert loss.item() == pytest.approx(rows[k]["loss"], rel=1e-5)  # the run's logged loss of that step
        loss.backward()
        for g in groups:
            published_step(g, state, lr=published_lr(POSITION + REAL * k), beta1=0.9, beta2=0.98, eps=1e-6,
                           max_lr=MAX_LR)
    assert [g["step"] for g in groups] == [N + 3, N + 3]
    trained = ckpt.load_model(final)
    for (name, p), q in zip(model.named_parameters(), trained.parameters()):
        torch.testing.assert_close(q, p.detach(), rtol=1e-5, atol=1e-7, msg=name)
    moved = max((q - w).abs().max().item() for q, w in zip(trained.parameters(), ckpt.load_model(written).parameters()))
    assert moved > 1e-4  # the three steps did train


def test_decay_from_the_end_of_a_published_extension(tmp_path, monkeypatch):
    """The documented use: the extension's last checkpoint imported (its tokens reach the extension's budget), then
    `--resume` trains the decay phase from it, with the published optimizer state (the step count goes on) and the
    decay schedule from its start."""
    monkeypatch.chdir(tmp_path)
    hf = hf_model("clm", theta=160000.0, local_theta=160000.0, seed=12)
    path = composer_checkpoint(tmp_path / "ep0-ba50-rank0.pt", hf, "clm", batch=50, tokens=1000, lr=1.5e-3,
                               max_lr=MAX_LR, weight_decay=WD, config={"attn_out_dropout_prob": 0.0})
    rng = np.random.default_rng(3)
    write_order(tmp_path / "order" / "decay_000001",
                {s: [[1, *rng.integers(4, 96, CONTENT).tolist(), 2] for _ in range(ROWS)] for s in (1, 2)})
    import_composer(path, tmp_path / "run", phase="extension", log=lambda *_: None)
    recipe = RECIPE.replace("ORDER", str(tmp_path / "order")).replace(f"tokens: {POSITION + 3 * REAL}",
                                                                     f"tokens: {2 * REAL}")
    (tmp_path / "recipe.yaml").write_text(recipe)
    assert main(["train", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run"), "--resume"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["step"]) for r in rows] == [("decay", 1), ("decay", 2)]
    assert rows[0]["lr"] == pytest.approx(0.5 * PEAK, rel=1e-12)  # 1-sqrt from half the peak, at position 0
    final = ckpt.latest_checkpoint(tmp_path / "run")
    model = ckpt.load_model(final).train()
    opt = build_optimizer(model, TrainSection())
    ckpt.load_checkpoint(final, model, opt)
    assert [int(g["step"]) for g in opt.param_groups] == [52, 52]  # the published 50, then 2
