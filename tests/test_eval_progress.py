"""Long evaluation steps say how they go (issue 31 item 1): an estimate once, then counts, rate and eta; quick
steps say nothing."""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch

from ettin.eval import progress
from ettin.eval.tasks.common import Subject, encode_poolings


class _SlowClock:
    """Every reading is `step` seconds after the last one."""

    def __init__(self, step: float):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def _lines(total: int, piece: int, step_s: float, monkeypatch) -> list[str]:
    monkeypatch.setattr(progress, "now", _SlowClock(step_s))
    said: list[str] = []
    with progress.task_label("run/final cls:x", said.append):
        p = progress.Progress("encoding", total, "rows")
        for _ in range(0, total, piece):
            p.update(piece)
    return said


def test_a_slow_step_says_its_estimate_then_counts_and_eta(monkeypatch):
    said = _lines(3667, 64, 2.0, monkeypatch)  # 2 s a batch of 64: about 2 minutes
    assert said[0].startswith("  run/final cls:x: encoding 3,667 rows, about 0:01:5"), said[0]
    counts = [re.search(r"encoding ([\d,]+)/3,667 rows, ([\d.]+) rows/s, eta (\d+:\d\d:\d\d)$", x) for x in said[1:]]
    assert counts and all(counts), said
    done = [int(m.group(1).replace(",", "")) for m in counts]
    assert all(b - a >= 0.1 * 3667 for a, b in zip([64] + done, done))  # at most one line per 10% ...
    assert len(said) <= 11  # ... so the estimate and at most ten more
    assert float(counts[0].group(2)) == 32.0 and counts[-1].group(3) < "0:00:30"


def test_rare_lines_when_the_step_is_fine_grained(monkeypatch):
    said = _lines(100_000, 1, 0.001, monkeypatch)  # 100 s of tiny updates: 10 s apart at least, not every update
    assert 2 <= len(said) <= 11


def test_a_quick_step_says_nothing(monkeypatch):
    assert _lines(3667, 64, 0.01, monkeypatch) == []  # under a second in all


def test_encoding_reports_progress_under_the_task_label(monkeypatch):
    cfg = SimpleNamespace(objective="mlm", vocab_size=8, pad_token_id=3, bos_token_id=1, eos_token_id=2,
                          mask_token_id=4, max_position_embeddings=64, hidden_size=8)
    model = torch.nn.Module()
    model.config = cfg
    model.hidden_states = lambda ids, mask=None: torch.nn.functional.one_hot(ids, 8).float()
    subject = Subject(model, SimpleNamespace(get_vocab_size=lambda: 8), tokens_per_batch=40)
    seqs = [[1, 5 + i % 3, 2] for i in range(200)]
    monkeypatch.setattr(progress, "now", _SlowClock(1.0))
    said: list[str] = []
    with progress.task_label("m/final sst2", said.append):
        out = encode_poolings(subject, model, seqs, ("mean",), what="encoding features")
    assert out["mean"].shape == (200, 8)
    assert said[0].startswith("  m/final sst2: encoding features 200 rows, about ")
    assert any(re.search(r"encoding features \d+/200 rows, .* rows/s, eta \d+:\d\d:\d\d", x) for x in said[1:]), said


def test_a_slow_step_closes_with_its_count_and_a_quick_one_does_not(monkeypatch):
    for step_s, closes in ((2.0, True), (0.01, False)):
        monkeypatch.setattr(progress, "now", _SlowClock(step_s))
        said: list[str] = []
        with progress.task_label("run/final cls:x", said.append):
            with progress.Progress("encoding", 3667, "rows") as p:
                for _ in range(0, 3667, 64):
                    p.update(min(64, 3667 - p.done))
        closing = [x for x in said if "(100%)" in x]
        assert bool(closing) == closes and len(closing) <= 1, said
        if closes:
            assert said[-1].startswith("  run/final cls:x: encoding 3,667/3,667 rows (100%), ") and \
                said[-1].endswith(" in all"), said


def test_a_step_inside_another_counts_silently(monkeypatch):
    monkeypatch.setattr(progress, "now", _SlowClock(2.0))
    said: list[str] = []
    with progress.task_label("m lm-eval", said.append):
        with progress.Progress("loglikelihood", 100, "requests") as outer:
            for _ in range(10):
                inner = progress.Progress("scoring", 50, "rows")  # as masked_pll's, inside the request batch
                for _ in range(5):
                    inner.update(10)
                inner.finish()
                outer.update(10)
    assert said and all(" loglikelihood " in x for x in said), said
    assert said[-1].startswith("  m lm-eval: loglikelihood 100/100 requests (100%)"), said
