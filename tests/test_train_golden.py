"""Golden loss curve: the first steps of a tiny run on synthetic data, pinned, so any change that moves
the training numerics (model, loss, optimizer, schedule, data order) is seen.
After an intended change: ETTIN_UPDATE_GOLDEN=1 pytest tests/test_train_golden.py, and say why in the commit."""

import json
import os
from pathlib import Path

import pytest
import torch

from ettin.train import loop
from ettin.train.recipe import recipe_from_dict

GOLDEN = Path(__file__).parent / "golden" / "train_tiny.json"
RECIPE = {
    "name": "golden", "seed": 11, "model": {"size": "tiny"},
    "data": {"source": "synthetic", "vocab_size": 128},
    "train": {"lr": 3e-3, "global_batch_size": 4, "micro_batch_size": 2, "progress": False, "tensorboard": False},
    "phases": [{"name": "pretrain", "tokens": 6 * 4 * 32, "seq_len": 32, "warmup_tokens": 256}],
}


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_golden_losses(objective, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = loop.train(recipe_from_dict(json.loads(json.dumps(RECIPE))), tmp_path, objective=objective,
                            log=lambda *_: None)[0]
    finally:
        torch.set_num_threads(threads)
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if os.environ.get("ETTIN_UPDATE_GOLDEN"):
        golden[objective] = result.losses
        GOLDEN.write_text(json.dumps(golden, indent=2) + "\n")
    assert result.losses == pytest.approx(golden[objective], rel=1e-4), "see the module docstring to update"
