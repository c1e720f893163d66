"""`ettin lm-eval` and `ettin mteb` say how they go (issue 31 item 1), as every other evaluation step does
(ettin.eval.progress): an estimate at this size after the first batch, counts with a rate and an eta, and a closing
100% line, counted by the models ettin hands the libraries (lm-eval's requests, mteb's sentences). Tiny random
models on local data, offline; the clock is slowed (each reading 10 s after the last) so that the quick runs read
as long ones, and no assertion is on time."""

import importlib.util
import json
import re

import pytest
import torch

from downstream_tiny import beir_subset, build
from ettin.cli import main as ettin_main
from ettin.eval import progress

ITEMS = 8  # PIQA items: two loglikelihood requests each
DOCS = 40  # documents of a rolling log-likelihood task (more than lmeval_progress.ROLLING_PIECE)
NO_LM_EVAL = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval not installed")
NO_MTEB = pytest.mark.skipif(importlib.util.find_spec("mteb") is None
                             or importlib.util.find_spec("sentence_transformers") is None, reason="mteb not installed")
COUNT = r"(\d[\d,]*)/{total} {unit}, [\d.,]+ {unit}/s, eta \d+:\d\d:\d\d$"


class _SlowClock:
    def __init__(self, step: float = 10.0):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("progress")
    beir = beir_subset(shared_data / "retrieval" / "cranfield" / "beir", root / "cran", queries=6, docs=40)
    env = build(root / "models", beir)
    env.beir, env.data = beir, shared_data
    return env


def _step_lines(err: str, prefix: str, what: str, total: int, unit: str, counts: bool = True) -> None:
    """The step's lines under `prefix`: its estimate first, then counts with eta (a step of a few batches may have
    none: `counts=False`), then its closing 100% line."""
    mine = [line for line in err.splitlines() if line.startswith(f"  {prefix}: {what} ")]
    assert mine, err
    assert re.match(rf"  {re.escape(prefix)}: {re.escape(what)} {total:,} {unit}, about \d+:\d\d:\d\d at this size "
                    rf"\([\d.,]+ {unit}/s over the first \d+\)$", mine[0]), mine
    assert mine[-1].startswith(f"  {prefix}: {what} {total:,}/{total:,} {unit} (100%), ") and \
        mine[-1].endswith(" in all"), mine
    found = [re.search(COUNT.format(total=f"{total:,}", unit=unit), line) for line in mine[1:-1]]
    assert all(found) and (found or not counts), mine
    done = [int(m.group(1).replace(",", "")) for m in found]
    assert done == sorted(done) and all(0 < d < total for d in done)


@NO_LM_EVAL
@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_lm_eval_counts_requests(tiny, tmp_path, objective, monkeypatch, capsys):
    monkeypatch.setattr(progress, "now", _SlowClock())
    assert ettin_main(["lm-eval", str(tiny.runs[objective]), "--tasks", "piqa", "--limit", str(ITEMS),
                       "--data-dir", str(tiny.data), "--results", str(tmp_path / "res"), "--device", "cpu"]) == 0
    _step_lines(capsys.readouterr().err, f"{objective}-run/stable-step0000010 lm-eval", "loglikelihood", 2 * ITEMS,
                "requests")


@NO_LM_EVAL
@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_lm_eval_counts_rolling_requests(tiny, tmp_path, objective, monkeypatch, capsys):
    """Rolling log-likelihoods (perplexity tasks): lm-eval's `hf` model reports them only at the end of a call, so
    they are asked for in pieces; ettin-mlm counts them as it scores them."""
    texts = [json.loads(line)["text"] for line in open(tiny.beir / "corpus.jsonl", encoding="utf-8")][:DOCS]
    (tmp_path / "tasks").mkdir()
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": " ".join(t.split()[:12])}) + "\n" for t in texts))
    (tmp_path / "tasks" / "tiny_rolling.yaml").write_text(
        f"task: tiny_rolling\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'docs.jsonl'}\n"
        'test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n")
    monkeypatch.setattr(progress, "now", _SlowClock())
    assert ettin_main(["lm-eval", str(tiny.runs[objective]), "--tasks", "tiny_rolling", "--include-path",
                       str(tmp_path / "tasks"), "--results", str(tmp_path / "res"), "--device", "cpu"]) == 0
    _step_lines(capsys.readouterr().err, f"{objective}-run/stable-step0000010 lm-eval", "loglikelihood_rolling",
                DOCS, "requests", counts=False)


@NO_MTEB
def test_mteb_counts_sentences(tiny, tmp_path, monkeypatch, capsys):
    from ettin.downstream import common

    col = common.load_collection(tiny.beir)
    monkeypatch.setattr(progress, "now", _SlowClock())
    assert ettin_main(["mteb", str(tiny.ckpt["mlm"]), "--tasks", f"beir:{tiny.beir}", "--batch-size", "4",
                       "--max-length", "64", "--results", str(tmp_path / "res"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    prefix = f"mlm-run/stable-step0000010 mteb:{tiny.beir.name}"
    _step_lines(err, prefix, f"encoding {tiny.beir.name} queries:", len(col.queries), "sentences", counts=False)
    _step_lines(err, prefix, f"encoding {tiny.beir.name} documents:", len(col.docs), "sentences")
