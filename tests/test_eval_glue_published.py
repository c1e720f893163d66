"""GLUE fine-tuned as published (`--set TASK.protocol=published`, ettin.eval.tasks.glue_published): the published
per-task settings and seeds reach the optimizer, RTE starts from the fine-tuned model it is given (here a CoLA
run's, saved with save_to; MNLI's when online), the results hold the mean and spread over seeds, and what cannot
run is refused before any model work."""

import json

import numpy as np
import pytest
import torch

from downstream_tiny import beir_subset, build
from ettin.cli import main as ettin_main
from ettin.eval.tasks import classification, glue_published

LIMIT = "24"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("glue")
    beir = beir_subset(shared_data / "retrieval" / "cranfield" / "beir", root / "cran", queries=4, docs=60)
    env = build(root / "models", beir)
    env.data = shared_data
    return env


def _eval(tiny, objective, out, *sets, task="rte"):
    argv = ["eval", str(tiny.runs[objective]), "--tasks", task, "--out", str(out), "--limit", LIMIT, "--data-dir",
            str(tiny.data), "--device", "cpu", "--threads", "1"]
    return ettin_main(argv + [a for s in sets for a in ("--set", f"{task}.{s}")])


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_rte_from_a_given_checkpoint_with_several_seeds(tiny, tmp_path, monkeypatch):
    saved = tmp_path / "cola-tuned"
    assert _eval(tiny, "mlm", tmp_path / "eval", "protocol=published", f"save_to={saved}", task="cola") == 0
    cola = json.loads((tmp_path / "eval" / "mlm-run" / "stable-step0000010.json").read_text())["tasks"]["cola"]
    assert cola["designs"]["finetune"]["seeds"] == [19, 8364, 717, 10536]  # CoLA's published seeds
    assert json.loads((saved / glue_published.SAVED).read_text())["seed"] == 19

    calls = []  # what reaches the fine-tuning loop: settings, seed and the start model's weights
    fit = classification.finetune

    def spy(subject, head, n, loss_fn, settings, seed, start=None, *rest):
        calls.append((settings, seed, None if start is None else _state(start), _state(subject.model)))
        return fit(subject, head, n, loss_fn, settings, seed, start, *rest)

    monkeypatch.setattr(classification, "finetune", spy)
    assert _eval(tiny, "mlm", tmp_path / "eval", "protocol=published", f"start_from={saved}",
                 "published_seeds=1,2,3") == 0
    rte = json.loads((tmp_path / "eval" / "mlm-run" / "stable-step0000010.json").read_text())["tasks"]["rte"]
    design = rte["designs"]["finetune"]
    assert [c[1] for c in calls] == [1, 2, 3] and design["seeds"] == [1, 2, 3]
    s = calls[0][0]
    assert (s.lr, s.epochs, s.batch_size, s.warmup_ratio, s.beta2, s.eps, s.max_grad_norm) == \
        (1e-5, 3, 64, 0.1, 0.98, 1e-6, 0.0)
    assert s.weight_decay == pytest.approx(1e-5 / 1e-5)  # Composer's decoupled 1e-5 as torch AdamW's
    from ettin.hf import from_pretrained

    tuned = _state(from_pretrained(saved))
    for _, _, start, pretrained in calls:  # every seed starts from the CoLA-tuned weights, not the pre-trained
        assert start is not None and all(torch.equal(start[k], tuned[k]) for k in tuned)
        assert any(not torch.equal(start[k], pretrained[k]) for k in tuned)
    per_seed = design["per_seed"]
    assert len(per_seed) == 3 and design["value"] == pytest.approx(np.mean(per_seed))
    assert design["seed_std"] == pytest.approx(np.std(per_seed)) and rte["main"] == "accuracy_finetune"
    assert design["start_from"] == str(saved) and rte["protocol"] == "published" and rte["n"] == int(LIMIT)
    assert len(design["per_example"]["pred"]) == 3 and len(rte["per_example"]["gold"]) == int(LIMIT)


def test_refusals_before_model_work(tiny, tmp_path, capsys):
    def no_model(*a, **k):
        raise AssertionError("loaded a model")

    from ettin.eval import runner

    runner_load, runner.load_subject = runner.load_subject, no_model
    try:
        cases = [("rte", ("protocol=published",), "start_from"),  # MNLI is online only
                 ("wnli", ("protocol=published",), "covers"),
                 ("cola", ("protocol=published", f"start_from={tiny.hf['mlm']}"), "starts only"),
                 ("rte", ("start_from=x",), "protocol=published"),
                 ("rte", ("protocol=published", f"start_from={tmp_path}"), "not a checkpoint"),
                 ("rte", ("protocol=paper",), "known: ettin, published")]
        for task, sets, named in cases:
            assert _eval(tiny, "mlm", tmp_path / "eval", *sets, task=task) == 2, (task, sets)
            assert named in capsys.readouterr().err, (task, sets)
    finally:
        runner.load_subject = runner_load
    assert not (tmp_path / "eval").exists()
    # a start from the other objective's model is refused when the task runs (its config is read then)
    assert _eval(tiny, "mlm", tmp_path / "eval", "protocol=published", f"start_from={tiny.hf['clm']}") == 2
    assert "objective clm (model mlm)" in capsys.readouterr().err


def test_mnli_settings_are_the_suites_trainer():
    """MNLI as the Ettin suite's trainer fine-tuned it (orionw/bert24 src/evals/glue_jobs.py lines 67-70: lr 5e-5,
    decoupled weight decay 5e-6; ModernBERT's later default is 1e-6), 2 epochs (bert24's eval configs)."""
    lr, epochs, weight_decay, _ = glue_published.PUBLISHED["mnli"]
    assert (lr, epochs, weight_decay) == (5e-5, 2, 5e-6)
    assert glue_published.fine_tune_settings("mnli").weight_decay == pytest.approx(5e-6 / 5e-5)


def test_mnli_start_is_cached_by_what_decides_it_and_encodes_no_dev_split(tiny, monkeypatch):
    """The MNLI model RTE / MRPC / STS-B start from is fine-tuned again when anything that decides it changes (the
    pooling, the training rows), reused otherwise, and MNLI's dev split is never encoded."""
    from ettin.eval.runner import load_subject, resolve_targets

    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"]
    rows = lambda n: [classification.Example(" ".join(rng.choice(words, 6)), " ".join(rng.choice(words, 4)),  # noqa: E731
                                             float(i % 3)) for i in range(n)]
    train, dev = rows(12), rows(7)
    monkeypatch.setattr(classification, "load", lambda name, *a: (train, dev, "accuracy"))
    fits, wrapped = [], []
    fit, wrap = classification.fit_head, classification.wrap

    def fit_spy(subject, seqs, *args, **kwargs):
        fits.append(len(seqs))
        return fit(subject, seqs, *args, **kwargs)

    monkeypatch.setattr(classification, "fit_head", fit_spy)
    monkeypatch.setattr(classification, "wrap", lambda subject, examples, length: wrapped.append(len(examples))
                        or wrap(subject, examples, length))
    subject = load_subject(resolve_targets(str(tiny.runs["mlm"]))[0], "cpu", 64)
    start = lambda **kw: glue_published.mnli_start(  # noqa: E731
        subject, tiny.data, classification.ClassificationSettings(**kw), 0)
    first = start()
    assert start() is first and fits == [12]  # the same settings: the same model
    assert start(pooling="mean") is not first and fits == [12, 12]  # another pooling: fine-tuned again
    fewer = start(published_train_limit=8)
    assert fewer is not first and fits == [12, 12, 8]  # other training rows: again
    assert start(published_train_limit=8, eval_limit=3, published_seeds=("1",)) is fewer  # not MNLI's settings
    assert fits == [12, 12, 8] and wrapped == [12, 12, 8]  # MNLI's dev rows (7) never encoded
