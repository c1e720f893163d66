"""Where a model's results go does not depend on how it was named: the same checkpoint evaluated from another
working directory, or by its absolute path instead of a relative one, finds its results file (and its cached tasks)
instead of landing in `<run>-<digest>/`. Results record the model's absolute path."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from downstream_tiny import tokenizer
from ettin.config import preset
from ettin.eval import runner
from ettin.eval.tasks import TaskSpec
from ettin.model import EttinModel


@dataclass
class _Settings:
    size: int = 1


def _checkpoint(root: Path) -> Path:
    from ettin.train.checkpoint import save_checkpoint

    tok = tokenizer(["a small text to train a tokenizer on", "and another one"])
    ids = {f"{n}_token_id": tok.token_to_id(t) for n, t in
           (("pad", "[PAD]"), ("bos", "[CLS]"), ("eos", "[SEP]"), ("mask", "[MASK]"))}
    cfg = preset("tiny", "mlm", vocab_size=tok.get_vocab_size(), **ids)
    run = root / "runs" / "x"
    run.mkdir(parents=True)
    tok.save(str(run / "tokenizer.json"))
    return save_checkpoint(run, "stable-step0000001", EttinModel(cfg), None,
                           {"run": "x", "phase": "stable", "step": 1, "tokens": 1, "model_config": cfg.to_dict()})


def test_the_same_checkpoint_finds_its_results_however_it_is_named(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ckpt = _checkpoint(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    out = tmp_path / "results"
    runs = []
    task = TaskSpec("probe", "test", _Settings(), lambda d: None,
                    lambda subject, data_dir, seed: runs.append(1) or {"main": "v", "v": 1.0, "n": 1})
    spellings = [(tmp_path, "runs/x/checkpoints/stable-step0000001"),  # relative, from the project folder
                 (tmp_path / "runs", "x/checkpoints/stable-step0000001"),  # relative, from another folder
                 (tmp_path / "runs" / "x" / "checkpoints", "stable-step0000001"),
                 (tmp_path / "elsewhere", str(ckpt)),  # absolute
                 (tmp_path / "runs", "x"),  # the run folder: its checkpoint
                 (tmp_path / "elsewhere", os.path.relpath(ckpt, tmp_path / "elsewhere"))]  # through ..
    paths = set()
    for cwd, name in spellings:
        monkeypatch.chdir(cwd)
        (target,) = runner.resolve_targets(name)
        paths.add(runner.results_path(out, target))
        runner.evaluate_target(target, [task], tmp_path, out, log=lambda line: None)
    assert paths == {out / "x" / "stable-step0000001.json"} and len(runs) == 1  # one file; evaluated once
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json")) == ["x/stable-step0000001.json"]
    recorded = json.loads((out / "x" / "stable-step0000001.json").read_text())["model"]["path"]
    assert recorded == str(ckpt.resolve())


def test_downstream_records_the_absolute_path(tmp_path, monkeypatch):
    """The downstream commands' results record (`ettin.downstream.common.resolve`) names the model as `ettin eval`
    does, so their --results file is found the same way from any folder."""
    from ettin.downstream import common

    torch.manual_seed(0)
    ckpt = _checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path / "runs")
    record = common.resolve("x/checkpoints/stable-step0000001", tmp_path / "work").model
    assert record["path"] == str(ckpt.resolve())
    common.write_results(common.results_path(tmp_path / "out", record), record, {})
    monkeypatch.chdir(tmp_path)
    again = common.resolve("runs/x", tmp_path / "work").model
    assert common.results_path(tmp_path / "out", again) == tmp_path / "out" / "x" / "stable-step0000001.json"
