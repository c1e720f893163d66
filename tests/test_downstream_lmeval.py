"""`ettin lm-eval`: lm-evaluation-harness on the local PIQA / SST-2 configs and the user's task YAMLs, offline,
both objectives; the paper's suite checked against the installed registry without fetching data.

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
    # is_greedy: True exactly when the continuation is the arg-max at its mask (what LAMBADA's acc reads)
    hits = []
    for context in ("Question: a cup?\nAnswer:", "The wing of the", "pressure distribution on a", "the flow"):
        ids = [s.cls, *s.encode(context), s.mask, s.sep]
        with torch.no_grad():
            logits = s.model(torch.tensor([ids])).logits[0, len(ids) - 2]
        for rank, tok in enumerate(logits.argsort(descending=True)[:2].tolist()):
            text = s.decode([tok])
            if s.encode(text) == [tok]:  # a continuation that tokenizes back to that one token
                hits.append((Instance("loglikelihood", {}, (context, text), 0), rank == 0))
    assert {want for _, want in hits} == {True, False}
    assert [g for _, g in lm.loglikelihood([r for r, _ in hits])] == [want for _, want in hits]
    with pytest.raises(NotImplementedError, match="does not generate"):
        lm.generate_until(reqs)
    with pytest.raises(ValueError, match="ettin-mlm scores encoders"):
        EttinMLM(pretrained=str(tiny.hf["clm"]))


def test_bad_input_is_a_clear_error(tiny, tmp_path, capsys):
    cases = [([str(tmp_path / "nope")], "nope"),
             ([str(tiny.runs["clm"]), "--tasks", "piqa,hellaswag"], "hellaswag"),  # hub data, offline here
             ([str(tiny.runs["clm"]), "--include-path", str(tmp_path / "none")], "none"),
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


# ------------------------------------------------------------------------------- the whole harness
PAPER_TYPES = {"arc_challenge": "multiple_choice", "hellaswag": "multiple_choice", "lambada_openai": "loglikelihood",
               "openbookqa": "multiple_choice", "piqa": "multiple_choice", "sciq": "multiple_choice",
               "social_iqa": "multiple_choice", "triviaqa": "generate_until", "winogrande": "multiple_choice",
               "wsc273": "multiple_choice"}


def test_paper_suite_resolves_to_registry_configs_without_data(shared_data, monkeypatch):
    import datasets

    def no_data(*a, **k):
        raise AssertionError("fetched data")

    monkeypatch.setattr(datasets, "load_dataset", no_data)
    tm = lmeval.task_manager(shared_data)
    asked = lmeval.requested("ettin-paper", tm)
    assert [name for _, name in asked] == list(lmeval.PAPER_TASKS.values()) and len(asked) == 10
    for name in lmeval.PAPER_TASKS.values():
        (leaf, cfg), = lmeval.leaf_configs(tm, name).items()  # a task of the registry, not a group
        assert leaf == name and cfg["output_type"] == PAPER_TYPES[name] and cfg["dataset_path"], name
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    names, _, left_out = lmeval.plan(asked, tm, "mlm")  # encoders: the suite without its generation task
    assert left_out == ["triviaqa"] and names == [t for t in lmeval.PAPER_TASKS.values() if t != "triviaqa"]
    assert lmeval.plan(asked, tm, "clm")[0] == list(lmeval.PAPER_TASKS.values())
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(lmeval.UserError, match="offline"):
        lmeval.plan(asked, tm, "clm")


def _task_yamls(folder, data):
    """Three tasks of the user's own, reading local JSONL (not one of ettin's two): multiple choice, a
    last-word log-likelihood task (acc = greedy match, as LAMBADA) and a generation task."""
    folder.mkdir()
    piqa = [json.loads(line) for line in open(data / "piqa" / "validation.jsonl", encoding="utf-8")][:10]
    (folder / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in piqa))
    words = [" ".join(r["goal"].split()[:8]) for r in piqa if len(r["goal"].split()) >= 4]
    (folder / "words.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in words))
    common = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {file}\ntest_split: test\n"
    (folder / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n" + common.format(file=folder / "mc.jsonl") + "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{goal}}\\nAnswer:"\ndoc_to_target: label\ndoc_to_choice: "{{[sol1, sol2]}}"\n'
        "metric_list:\n  - metric: acc\n")
    (folder / "tiny_lastword.yaml").write_text(
        "task: tiny_lastword\n" + common.format(file=folder / "words.jsonl") + "output_type: loglikelihood\n"
        "doc_to_text: \"{{text.split(' ')[:-1]|join(' ')}}\"\ndoc_to_target: \"{{' '+text.split(' ')[-1]}}\"\n"
        "metric_list:\n  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    (folder / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n" + common.format(file=folder / "words.jsonl") + "output_type: generate_until\n"
        'doc_to_text: "{{text}}"\ndoc_to_target: "{{text}}"\ngeneration_kwargs:\n  until: ["\\n"]\n'
        "  max_gen_toks: 4\nmetric_list:\n  - metric: exact_match\n")
    return piqa, words


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_include_path_task_runs_offline_and_scores_as_ettin(tiny, tmp_path, objective):
    """A task of the user's own runs through the harness for both objectives, offline; its per-item
    log-likelihoods are ettin's own (decoders: [CLS] context choice; encoders: masked PLL), and the encoder's
    greedy-match flag is the arg-max of the model's own logits at each masked token."""
    from ettin.eval.runner import load_subject, resolve_targets
    from ettin.eval.tasks.common import causal_loglik, masked_pll

    piqa, words = _task_yamls(tmp_path / "tasks", tiny.data)
    run, res = str(tiny.runs[objective]), tmp_path / "res"
    assert ettin_main(["lm-eval", run, "--tasks", "tiny_mc,tiny_lastword", "--include-path", str(tmp_path / "tasks"),
                       "--results", str(res), "--device", "cpu", "--data-dir", str(tiny.data)]) == 0
    tasks = json.loads((res / f"{objective}-run" / "stable-step0000010.json").read_text())["tasks"]
    mc, lw = tasks["lm-eval:tiny_mc"], tasks["lm-eval:tiny_lastword"]
    assert mc["n"] == len(piqa) and mc["main"] == "acc" and mc["baseline"] == 0.5
    assert mc["model_type"] == ("hf" if objective == "clm" else "ettin-mlm")
    assert mc["per_example"]["score"] == [float(np.argmax(ll) == r["label"]) for ll, r in zip(mc["logliks"], piqa)]
    assert lw["n"] == len(words) and lw["main"] == "acc" and "perplexity" in lw
    subject = load_subject(resolve_targets(run)[-1], "cpu", 512)
    mc_items = [(subject.encode(f"Question: {r['goal']}\nAnswer:"), subject.encode(" " + c))
                for r in piqa for c in (r["sol1"], r["sol2"])]
    lw_items = [(subject.encode(" ".join(t.split(" ")[:-1])), subject.encode(" " + t.split(" ")[-1])) for t in words]
    if objective == "clm":
        mine = [float(x.sum()) for x in causal_loglik(subject, mc_items)]
    else:
        mine = [float(x.sum()) for x in masked_pll(subject, [(c, t, []) for c, t in mc_items])]
        greedy = []
        for ctx, tgt in lw_items:  # brute force: mask each target token, arg-max of the full logits
            hits = []
            for j, t in enumerate(tgt):
                ids = [subject.cls, *ctx, *tgt, subject.sep]
                ids[1 + len(ctx) + j] = subject.mask
                with torch.no_grad():
                    logits = subject.model(torch.tensor([ids])).logits[0, 1 + len(ctx) + j]
                hits.append(int(logits.argmax()) == t)
            greedy.append(float(all(hits)))
        assert lw["per_example"]["score"] == greedy
    assert np.abs(np.array(mine) - np.array(mc["logliks"]).ravel()).max() < TOL[objective]
    from ettin.eval import report  # the report lays the new entries out (no baseline for tiny_lastword)

    detail = report.build([res])["detail"][{"clm": "decoder", "mlm": "encoder"}[objective]]
    assert {"lm-eval:tiny_mc", "lm-eval:tiny_lastword"} <= {f["task"] for f in detail}


def test_generation_task_refused_for_an_encoder(tiny, tmp_path, capsys):
    _task_yamls(tmp_path / "tasks", tiny.data)
    argv = ["lm-eval", str(tiny.runs["mlm"]), "--tasks", "tiny_mc,tiny_gen", "--include-path",
            str(tmp_path / "tasks"), "--results", str(tmp_path / "res")]
    assert ettin_main(argv) == 2
    err = capsys.readouterr().err
    assert "tiny_gen" in err and "generate" in err and not (tmp_path / "res").exists()
    assert ettin_main(["lm-eval", str(tiny.runs["clm"]), "--tasks", "no_such_task", "--results",
                       str(tmp_path / "res")]) == 2
    assert "no_such_task" in capsys.readouterr().err
