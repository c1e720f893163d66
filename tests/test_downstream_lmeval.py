"""`ettin lm-eval`: lm-evaluation-harness on the local PIQA / SST-2 configs, offline, both objectives.

The agreement test runs the harness and ettin's own `piqa` task on the same checkpoint and items: per item
log-likelihoods agree to float precision (decoders: lm-eval's `hf` model against ettin's model, 1e-3 absolute on
sums of about -100 to -600; encoders: the same PLL function, 1e-6) and so do the accuracies, except on items
whose two choices score closer than that tolerance."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")

from downstream_tiny import beir_subset, build  # noqa: E402
from ettin.cli import main as ettin_main  # noqa: E402
from ettin.downstream import lmeval  # noqa: E402
from ettin.downstream.lm_eval_tasks import loaders  # noqa: E402

ITEMS = 24
TOL = {"clm": 1e-3, "mlm": 1e-6}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lmeval")
    beir = beir_subset(shared_data / "retrieval" / "cranfield" / "beir", root / "cran", queries=4, docs=60)
    env = build(root / "models", beir)
    env.data = shared_data
    return env


def _results(tiny, objective):
    return json.loads((tiny.root / "results" / f"{objective}-run" / "stable-step0000010.json").read_text())


# ------------------------------------------------------------------------------------------ task data
def test_local_loaders_give_the_hub_datasets_columns(shared_data):
    piqa = loaders.piqa(data_dir=str(shared_data), version=1.0)["validation"]
    assert len(piqa) == 1838 and set(piqa.column_names) == {"goal", "sol1", "sol2", "label"}
    assert sum(piqa["label"]) == 928
    sst2 = loaders.sst2(data_dir=str(shared_data))
    assert (len(sst2["train"]), len(sst2["validation"])) == (67349, 872)
    assert sum(sst2["validation"]["label"]) == 444 and set(sst2["validation"].column_names) == {"sentence", "label",
                                                                                                "idx"}
    with pytest.raises(ValueError, match="data_dir"):
        loaders.piqa(version=1.0)


def test_decoder_tokenizer_starts_with_bos_and_adds_no_sep(tiny):
    lm = lmeval.decoder_lm(tiny.hf["clm"], "cpu", 4)
    cls, sep = tiny.tok.token_to_id("[CLS]"), tiny.tok.token_to_id("[SEP]")
    ids = lm.tok_encode("Question: why?\nAnswer:")
    assert ids[0] == cls and sep not in ids
    assert ids[1:] == tiny.tok.encode("Question: why?\nAnswer:", add_special_tokens=False).ids


def test_encoder_model_scores_by_ettin_pll(tiny):
    from lm_eval.api.instance import Instance

    from ettin.downstream.lmeval_mlm import EttinMLM
    from ettin.eval.tasks.common import masked_pll

    lm = EttinMLM(pretrained=str(tiny.hf["mlm"]), max_length=64)
    reqs = [Instance("loglikelihood", {}, ("Question: a cup?\nAnswer:", " pour water"), 0),
            Instance("loglikelihood", {}, ("Question: a cup?\nAnswer:", " pour sand"), 1)]
    got = [ll for ll, _ in lm.loglikelihood(reqs)]
    s = lm.subject
    want = [float(lp.sum()) for lp in masked_pll(s, [(s.encode(r.args[0]), s.encode(r.args[1]), []) for r in reqs])]
    assert got == want and all(g < 0 for g in got)
    with pytest.raises(NotImplementedError, match="does not generate"):
        lm.generate_until(reqs)
    with pytest.raises(ValueError, match="ettin-mlm scores encoders"):
        EttinMLM(pretrained=str(tiny.hf["clm"]))


def test_bad_input_is_a_clear_error(tiny, tmp_path, capsys):
    cases = [([str(tmp_path / "nope")], "nope"),
             ([str(tiny.runs["clm"]), "--tasks", "piqa,hellaswag"], "hellaswag"),
             ([str(tiny.runs["clm"]), "--data-dir", str(tmp_path)], "piqa/validation.jsonl")]
    for argv, named in cases:
        assert ettin_main(["lm-eval", *argv, "--results", str(tmp_path / "res")]) == 2
        assert named in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_harness_piqa_agrees_with_ettin_piqa(tiny, objective):
    run, res = str(tiny.runs[objective]), str(tiny.root / "results")
    common = ["--limit", str(ITEMS), "--data-dir", str(tiny.data), "--device", "cpu"]
    assert ettin_main(["lm-eval", run, "--results", res, *common]) == 0
    assert ettin_main(["eval", run, "--tasks", "piqa", "--out", str(tiny.root / "eval"), "--max-length", "512",
                       *common]) == 0
    harness = _results(tiny, objective)["tasks"]
    ours = json.loads((tiny.root / "eval" / f"{objective}-run" / "stable-step0000010.json").read_text())
    ours = ours["tasks"]["piqa"]
    piqa = harness["lm-eval:piqa"]
    assert piqa["n"] == ours["n"] == ITEMS and piqa["model_type"] == ("hf" if objective == "clm" else "ettin-mlm")
    # the same per-item log-likelihoods, by the harness and by ettin
    from ettin.eval.runner import load_subject, resolve_targets
    from ettin.eval.tasks.multiple_choice import choice_logliks, load_items

    subject = load_subject(resolve_targets(run)[-1], "cpu", 512)
    items = load_items(tiny.data / "piqa" / "validation.jsonl")[:ITEMS]
    mine = np.array(choice_logliks(subject, items, " "))
    theirs = np.array(piqa["logliks"])
    assert np.abs(mine - theirs).max() < TOL[objective]
    # so the accuracies agree, up to items whose choices are closer than the tolerance
    nbytes = np.array([[len(c.encode("utf-8")) for c in it.choices] for it in items], dtype=float)
    close = int(np.sum((np.abs(mine[:, 0] - mine[:, 1]) < 2 * TOL[objective])
                       | (np.abs(mine[:, 0] / nbytes[:, 0] - mine[:, 1] / nbytes[:, 1]) < 2 * TOL[objective])))
    assert abs(piqa["acc"] - ours["acc"]) * ITEMS <= close
    assert abs(piqa["acc_bytes"] - ours["acc_norm"]) * ITEMS <= close  # ettin's acc_norm divides by bytes
    assert piqa["baseline"] == 0.5 and len(piqa["per_example"]["score"]) == ITEMS
    sst2 = harness["lm-eval:sst2"]
    assert sst2["main"] == "acc" and sst2["n"] == ITEMS and 0 <= sst2["acc"] <= 1
    assert sst2["baseline_name"].startswith("majority class") and "positive" in sst2["baseline_name"]
    raw = json.loads((tiny.root / "results" / f"{objective}-run" / "stable-step0000010.lm-eval.json").read_text())
    assert raw["results"]["piqa_local"]["acc,none"] == piqa["acc"]
