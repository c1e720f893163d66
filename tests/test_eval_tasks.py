"""Evaluation tasks: scoring rules on toy models worked out by hand, task file readers and their errors,
and `ettin eval` end to end (both objectives, every task, caching, run folders) on tiny random models
with task files written into tmp_path."""

import json
import math
import random
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ettin.cli import main as ettin_main
from ettin.config import preset
from ettin.eval import runner
from ettin.eval.tasks import bias, get_task, multiple_choice, override, with_limit
from ettin.eval.tasks.common import Subject, TaskDataError, causal_loglik, masked_pll
from ettin.eval.tasks.data import held_out_range, pretrain_documents, read_jsonl, read_tsv
from ettin.hf import save_pretrained
from ettin.model import EttinModel

SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
WORDS = ("the a cat dog runs sleeps on mat river city old new king queen water fire paper table he she "
         "they his her their was were could would house road light dark green blue").split()


# ------------------------------------------------------------------------------------- toy model
class ToyTokenizer:
    def get_vocab_size(self):
        return 8


class ToyModel(torch.nn.Module):
    """Logits at position t are W[ids[t - shift]]: shift=1 reads the left neighbour (an encoder filling a
    [MASK] from its left), shift=0 the token itself (a decoder predicting the next token)."""

    def __init__(self, objective: str, W: torch.Tensor):
        super().__init__()
        self.config = SimpleNamespace(objective=objective, vocab_size=8, pad_token_id=3, bos_token_id=1,
                                      eos_token_id=2, mask_token_id=4, max_position_embeddings=64)
        self.W = W
        self.shift = 1 if objective == "mlm" else 0

    def hidden_states(self, ids, mask=None):
        src = torch.roll(ids, self.shift, dims=1) if self.shift else ids
        return torch.nn.functional.one_hot(src, 8).float()  # (B, T, 8)

    def logits_from_hidden(self, h):
        return h @ self.W


def _toy_W():
    W = torch.zeros(8, 8)
    W[5, 6] = math.log(3)  # after token 5, token 6 has probability 3 / (3 + 7)
    W[6, 7] = math.log(5)  # after token 6, token 7 has probability 5 / (5 + 7)
    return W


def test_masked_pll_by_hand():
    subj = Subject(ToyModel("mlm", _toy_W()), ToyTokenizer())
    # [CLS] 5 [MASK] 7 [SEP] scores 6 from its left neighbour 5: log 0.3;
    # [CLS] 5 6 [MASK] [SEP] scores 7 from 6: log(5/12)
    (pll,) = masked_pll(subj, [([5], [6, 7], [])])
    assert pll.tolist() == pytest.approx([math.log(0.3), math.log(5 / 12)], rel=1e-5)
    # a right context is kept and does not move the masked positions
    (pll,) = masked_pll(subj, [([5], [6], [7, 7])])
    assert pll.tolist() == pytest.approx([math.log(0.3)], rel=1e-5)
    # longer than max_length: each masked token gets a window around it; the left neighbour stays in view
    short = Subject(ToyModel("mlm", _toy_W()), ToyTokenizer(), max_length=5)
    (pll,) = masked_pll(short, [([5], [6, 7], [7, 7, 7])])
    assert pll.tolist() == pytest.approx([math.log(0.3), math.log(5 / 12)], rel=1e-5)


def test_causal_loglik_by_hand():
    subj = Subject(ToyModel("clm", _toy_W()), ToyTokenizer())
    # [BOS] 5 6 -> p(6 | ..5) = 0.3, p(7 | ..6) = 5/12; a context-free target is scored after [BOS]: 1/8
    a, b = causal_loglik(subj, [([5], [6, 7]), ([], [6])])
    assert a.tolist() == pytest.approx([math.log(0.3), math.log(5 / 12)], rel=1e-5)
    assert b.tolist() == pytest.approx([math.log(1 / 8)], rel=1e-5)
    # longer than max_length: rolling windows score every target token once, with its previous token in view
    short = Subject(ToyModel("clm", _toy_W()), ToyTokenizer(), max_length=4)
    (c,) = causal_loglik(short, [([5], [6, 7, 6, 7])])
    assert c.tolist() == pytest.approx([math.log(0.3), math.log(5 / 12), math.log(1 / 8), math.log(5 / 12)], rel=1e-5)


def test_tokenizer_larger_than_model_vocab_is_refused():
    tok = SimpleNamespace(get_vocab_size=lambda: 9)
    with pytest.raises(ValueError, match="9 ids but the model's vocabulary has only 8"):
        Subject(ToyModel("mlm", _toy_W()), tok)


# ----------------------------------------------------------------------------------- readers
def test_held_out_range_is_the_last_two_percent():
    assert held_out_range(10033) == range(9832, 10033)  # ceil(200.66) = 201 documents
    assert held_out_range(135) == range(132, 135)
    assert len(held_out_range(0)) == 0


def test_malformed_rows_name_file_and_line(tmp_path):
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n")
    with pytest.raises(TaskDataError, match=r"dev\.tsv:3: expected 4"):
        read_tsv(tsv)
    jl = tmp_path / "mc.jsonl"
    jl.write_text('{"query": "q", "choices": ["a", "b"], "gold": 1}\n{"query": "q", "choices": ["a"], "gold": 0}\n')
    with pytest.raises(TaskDataError, match=r"mc\.jsonl:2: choices"):
        multiple_choice.load_items(jl)
    jl.write_text('{"goal": "g", "sol1": "a", "sol2": "b", "label": 2}\n')
    with pytest.raises(TaskDataError, match=r"mc\.jsonl:1: gold/label 2"):
        multiple_choice.load_items(jl)
    jl.write_text("{not json\n")
    with pytest.raises(TaskDataError, match=r"mc\.jsonl:1: invalid JSON"):
        read_jsonl(jl)


def test_winogender_pronoun_spans():
    prefix, spans, suffix = bias._split(["The nurse said he was late.", "The nurse said she was late.",
                                          "The nurse said they were late."])
    assert (prefix, spans, suffix) == ("The nurse said ", ["he was", "she was", "they were"], " late.")
    prefix, spans, suffix = bias._split(["A b his c.", "A b her c.", "A b their c."])
    assert spans == ["his", "her", "their"] and suffix == " c."


def test_task_settings_limit_and_override():
    spec = with_limit(get_task("cola"), 5)
    assert spec.settings.train_limit == 5 and spec.settings.eval_limit == 5
    override(spec, "finetune.lr", "3e-4")
    assert spec.settings.finetune.lr == 3e-4
    with pytest.raises(ValueError, match="no setting"):
        override(spec, "nope", "1")
    with pytest.raises(ValueError, match="unknown task"):
        get_task("mnli")  # hub GLUE tasks are named glue:NAME


def test_hub_glue_is_refused_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="offline"):
        get_task("glue:mnli").check(tmp_path)
    with pytest.raises(ValueError, match="unknown GLUE task"):
        get_task("glue:nope").check(tmp_path)


# ------------------------------------------------------------------------------ fake task data
def _sentence(rng, n=8):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_data(root: Path) -> Path:
    rng = random.Random(0)
    (root / "pretrain").mkdir(parents=True)
    for name in ("wikipedia_vital_summaries_en", "sotu_addresses", "moby_dick_chapters", "gutenberg_books"):
        with open(root / "pretrain" / f"{name}.jsonl", "w") as f:
            for i in range(60):
                text = " ".join(_sentence(rng) for _ in range(12))
                f.write(json.dumps({"id": str(i), "title": f"T{i}", "description": _sentence(rng, 3), "text": text})
                        + "\n")

    def tsv(path, header, rows):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join("\t".join(map(str, r)) + "\n" for r in ([header] if header else []) + rows))

    pairs = lambda labels: [[i, _sentence(rng), _sentence(rng), rng.choice(labels)] for i in range(24)]  # noqa: E731
    tsv(root / "sst2" / "test.tsv", ["label", "sentence"], [[rng.choice([0, 1]), _sentence(rng)] for _ in range(24)])
    for split in ("train", "dev"):
        tsv(root / "glue/CoLA" / f"{split}.tsv", None, [["src", rng.choice([0, 1]), "", _sentence(rng)] for _ in range(24)])
        tsv(root / "sst2" / f"{split}.tsv", ["label", "sentence"], [[rng.choice([0, 1]), _sentence(rng)] for _ in range(24)])
        tsv(root / "glue/RTE" / f"{split}.tsv", ["index", "sentence1", "sentence2", "label"],
            pairs(["entailment", "not_entailment"]))
        tsv(root / "glue/WNLI" / f"{split}.tsv", ["index", "sentence1", "sentence2", "label"], pairs([0, 1]))
        head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
        tsv(root / "glue/STS-B" / f"{split}.tsv", head,
            [[i, "g", "f", "y", i, "s", "s", _sentence(rng), _sentence(rng), f"{rng.uniform(0, 5):.3f}"] for i in range(24)])
    tsv(root / "glue/QNLI/dev.tsv", ["index", "question", "sentence", "label"], pairs(["entailment", "not_entailment"]))
    beir = root / "retrieval/cranfield/beir"
    (beir / "qrels").mkdir(parents=True)
    with open(beir / "corpus.jsonl", "w") as f:
        for i in range(30):
            f.write(json.dumps({"_id": str(i), "title": _sentence(rng, 3), "text": _sentence(rng, 20)}) + "\n")
    with open(beir / "queries.jsonl", "w") as f:
        for i in range(1, 6):
            f.write(json.dumps({"_id": str(i), "text": _sentence(rng, 5)}) + "\n")
    tsv(beir / "qrels/test.tsv", ["query-id", "corpus-id", "score"], [[q, rng.randrange(30), 1] for q in range(1, 6)])
    (root / "piqa").mkdir()
    with open(root / "piqa/validation.jsonl", "w") as f:
        for _ in range(10):
            f.write(json.dumps({"goal": _sentence(rng, 5), "sol1": _sentence(rng, 4), "sol2": _sentence(rng, 6),
                                "label": rng.choice([0, 1])}) + "\n")
    wino = root / "winogender"
    rows = []
    for occ in ("nurse", "engineer"):
        for answer in (0, 1):
            for g, pron in (("male", "he"), ("female", "she"), ("neutral", "they")):
                rows.append([f"{occ}.client.{answer}.{g}.txt", f"The {occ} told the client that {pron} could go."])
    tsv(wino / "all_sentences.tsv", ["sentid", "sentence"], rows)
    tsv(wino / "occupations-stats.tsv", ["occupation", "bergsma_pct_female", "bls_pct_female", "bls_year"],
        [["nurse", 90, 90.0, 2015], ["engineer", 10, 10.0, 2015]])
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A fake data root, a 512-id byte-level BPE, and tiny random HF folders for both objectives."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval")
    data = make_data(root / "data")
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([json.loads(line)["text"] for line in open(data / "pretrain/sotu_addresses.jsonl")], trainer)
    ids = {f"{n}_token_id": tok.token_to_id(t) for n, t in
           (("pad", "[PAD]"), ("bos", "[CLS]"), ("eos", "[SEP]"), ("mask", "[MASK]"))}
    folders = {}
    for objective in ("mlm", "clm"):
        torch.manual_seed(0)
        model = EttinModel(preset("tiny", objective, vocab_size=tok.get_vocab_size(), **ids))
        folders[objective] = root / f"tiny-{objective}"
        save_pretrained(model, folders[objective], tokenizer=tok)
    return SimpleNamespace(root=root, data=data, tok=tok, ids=ids, folders=folders)


TASKS = "cola,sst2,rte,wnli,qnli,stsb,cranfield,piqa,lm,next_token,generation,winogender"


def test_held_out_documents_partition_each_file(env):
    held = pretrain_documents(env.data, held_out=True)
    train = pretrain_documents(env.data, held_out=False)
    assert len(held) == 4 * 2 and len(train) == 4 * 58  # 60 documents a file: ceil(1.2) = 2 held out
    assert {(d["_file"], d["_index"]) for d in held} == {(d["_file"], i) for d in held for i in (58, 59)}
    assert not {(d["_file"], d["_index"]) for d in held} & {(d["_file"], d["_index"]) for d in train}


def test_eval_every_task_both_objectives_and_cache(env, capsys, monkeypatch):
    out = env.root / "out"
    argv = [str(env.folders["mlm"]), str(env.folders["clm"]), "--tasks", TASKS, "--out", str(out),
            "--limit", "6", "--data-dir", str(env.data), "--max-length", "96", "--set", "lm.limit=4"]
    assert ettin_main(["eval", *argv]) == 0
    results = {r["model"]["objective"]: r for r in runner.load_results(out)}
    assert set(results) == {"mlm", "clm"}
    for objective, res in results.items():
        assert res["model"]["size"] == "tiny" and len(res["model"]["sha256"]) == 64
        assert res["settings"]["seed"] == 0
        assert set(res["tasks"]) == set(TASKS.split(","))
        for name, task in res["tasks"].items():
            value = task[task["main"]]
            assert isinstance(value, float) and math.isfinite(value), (objective, name, task)
            assert task["settings"] and task["n"] > 0
        assert 0 <= res["tasks"]["piqa"]["acc"] <= 1
        assert res["tasks"]["cranfield"]["bm25"]["ndcg@10"] >= 0
        rates = [res["tasks"]["winogender"][f"{g}_rate"] for g in ("male", "female", "neutral")]
        assert sum(rates) == pytest.approx(1.0)
    assert results["clm"]["tasks"]["lm"]["perplexity"] > 1
    assert 0 <= results["mlm"]["tasks"]["lm"]["masked_accuracy"] <= 1
    assert results["mlm"]["tasks"]["generation"]["method"].startswith("iterative mask filling")
    # a second run finds everything cached; a changed setting reruns only that task
    capsys.readouterr()
    assert ettin_main(["eval", *argv]) == 0
    assert capsys.readouterr().err.count(": cached") == 2 * len(TASKS.split(","))
    assert ettin_main(["eval", *argv[:-1], "lm.limit=8", "--tasks", "lm"]) == 0
    assert "lm: cached" not in capsys.readouterr().err
    # results computed by other code are not reused
    assert len(runner.code_fingerprint()) == 16
    monkeypatch.setattr(runner, "code_fingerprint", lambda: "0" * 16)
    assert ettin_main(["eval", *argv[:-1], "lm.limit=8", "--tasks", "lm"]) == 0
    assert "lm: cached" not in capsys.readouterr().err
    assert all(r["settings"]["code"] == "0" * 16 for r in runner.load_results(out))


def test_eval_run_folder_every_kth_checkpoint(env):
    from ettin.train.checkpoint import save_checkpoint

    run = env.root / "runs" / "pair" / "decoder"
    run.mkdir(parents=True)
    env.tok.save(str(run / "tokenizer.json"))
    cfg = preset("tiny", "clm", vocab_size=env.tok.get_vocab_size(), **env.ids)
    for step in (10, 20, 30):
        torch.manual_seed(step)
        save_checkpoint(run, f"stable-step{step:07d}", EttinModel(cfg), None,
                        {"phase": "stable", "step": step, "tokens": step * 1000, "model_config": cfg.to_dict()})
    targets = runner.resolve_targets(str(run), every=2)
    assert [t.checkpoint for t in targets] == ["stable-step0000010", "stable-step0000030"]
    assert len(runner.resolve_targets(str(run.parent))) == 3  # the pair folder: its decoder run
    assert targets[0].run == "pair-decoder" and targets[1].meta["tokens"] == 30000
    out = env.root / "out-run"
    assert ettin_main(["eval", str(run), "--every", "2", "--tasks", "winogender", "--out", str(out),
                       "--data-dir", str(env.data)]) == 0
    res = runner.load_results(out)
    assert [r["model"]["tokens"] for r in res] == [10000, 30000]
    assert res[0]["model"]["sha256"] != res[1]["model"]["sha256"]


def test_bad_inputs_fail_before_work(env, tmp_path, capsys):
    assert ettin_main(["eval", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    bad = make_data(tmp_path / "data")
    with open(bad / "piqa/validation.jsonl", "a") as f:
        f.write('{"goal": "g", "sol1": "a"}\n')
    code = ettin_main(["eval", str(env.folders["clm"]), "--tasks", "winogender,piqa", "--out", str(tmp_path / "o"),
                       "--data-dir", str(bad)])
    assert code == 2
    assert "validation.jsonl:11: expected PIQA fields" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing ran, not even the good task
    # a model whose vocabulary is smaller than its tokenizer's
    small = tmp_path / "small"
    cfg = preset("tiny", "mlm", vocab_size=256, **env.ids)
    save_pretrained(EttinModel(cfg), small, tokenizer=env.tok)
    assert ettin_main(["eval", str(small), "--tasks", "winogender", "--out", str(tmp_path / "o2"),
                       "--data-dir", str(env.data)]) == 2
    expected = f"{env.tok.get_vocab_size()} ids but the model's vocabulary has only 256"
    assert expected in capsys.readouterr().err


def test_user_classification_file(env, tmp_path, capsys):
    """cls:PATH: the user's CSV with its own column names, split 80/20; a folder of train/test JSONL; errors
    that name the file and the column."""
    rng = random.Random(1)
    csv_path = tmp_path / "reviews.csv"
    rows = [(_sentence(rng), rng.choice(["good", "bad"])) for _ in range(40)]
    csv_path.write_text("review,stars\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    task = f"cls:{csv_path}"
    out = tmp_path / "out"
    argv = ["eval", str(env.folders["clm"]), "--tasks", task, "--out", str(out), "--data-dir", str(env.data),
            "--set", f"{task}.text=review", "--set", f"{task}.label=stars", "--set", f"{task}.designs=probe"]
    assert ettin_main(argv) == 0
    res = runner.load_results(out)[0]["tasks"][task]
    assert res["family"] == "classification" and res["n"] == 8 and res["n_train"] + res["n_validation"] == 32
    assert set(res["designs"]) == {"probe"} and 0 <= res["accuracy"] <= 1
    assert len(res["per_example"]["gold"]) == 8 and set(res["per_example"]["gold"]) <= {0, 1}
    folder = tmp_path / "folder"
    folder.mkdir()
    for split, n in (("train", 30), ("test", 10)):
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"text": _sentence(rng), "label": rng.choice([0, 1])}) + "\n" for _ in range(n)))
    assert ettin_main(["eval", str(env.folders["mlm"]), "--tasks", f"cls:{folder}", "--out", str(out),
                       "--data-dir", str(env.data), "--set", f"cls:{folder}.designs=probe"]) == 0
    assert runner.load_results(out)[-1]["tasks"][f"cls:{folder}"]["n"] == 10
    capsys.readouterr()
    assert ettin_main(argv[:-4] + ["--set", f"{task}.label=score"]) == 2
    err = capsys.readouterr().err
    assert "reviews.csv" in err and "'score'" in err


def test_random_ranking_baseline_is_the_expectation_of_shuffles():
    from ettin.eval import metrics
    from ettin.eval.tasks.retrieval import Collection, random_baseline

    rng = np.random.default_rng(0)
    D, qids = 50, [str(i) for i in range(20)]
    dids = [str(i) for i in range(D)]
    qrels = {q: {str(d): int(rng.integers(1, 4)) for d in rng.choice(D, size=int(rng.integers(1, 8)), replace=False)}
             for q in qids}
    expected = random_baseline(Collection(dids, ["x"] * D, qids, ["q"] * 20, qrels), "ndcg@10")
    draws = [np.mean(list(metrics.ir_per_query(qrels, metrics.top_k_run(rng.random((20, D)), qids, dids, 10),
                                               "ndcg@10").values())) for _ in range(300)]
    assert abs(np.mean(draws) - np.mean(list(expected.values()))) < 3 * np.std(draws) / np.sqrt(300)
    assert random_baseline(Collection(dids, ["x"] * D, qids, ["q"] * 20, qrels), "recall@100")["0"] == 1.0


# ------------------------------------------------------------------------------------ what a new user trips on
def test_a_missing_local_looking_path_is_no_such_folder(tmp_path, monkeypatch, capsys):
    """`ettin eval runs/does-not-exist` (one slash, as a hub id has) is a missing folder when runs/ is here; the hub
    is asked only for what can only be a hub id."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("asked the hub"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("runs/does-not-exist", "./x", "a/b/c", "nothing-here"):
        assert ettin_main(["eval", name, "--out", "o"]) == 2
        err = capsys.readouterr().err
        assert f"{name}: no such folder" in err and "internet" not in err, err
    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **k: asked.append(repo) or 1 / 0)
    assert ettin_main(["eval", "some-org/some-model", "--out", "o"]) == 2
    assert asked == ["some-org/some-model"] and "the hub could not provide it" in capsys.readouterr().err


def test_help_lists_every_task_kind(capsys):
    from ettin.eval.tasks import FAMILIES

    with pytest.raises(SystemExit):
        ettin_main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the description
    for kind in FAMILIES:
        assert re.search(rf"\b{kind}(:(NAME|PATH))?\b", text), kind
    assert "cls:PATH" in text and "beir:PATH" in text and "mc:PATH" in text and "glue:NAME" in text


def test_console_lines_show_baselines_designs_and_what_beir_trains_first(env, tmp_path, capsys):
    rng = random.Random(2)
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text("review,stars\n" + "".join(f'"{_sentence(rng)}",{rng.choice(["good", "bad"])}\n'
                                                   for _ in range(40)))
    task = f"cls:{csv_path}"
    argv = ["eval", str(env.folders["mlm"]), "--tasks", f"{task},cranfield", "--out", str(tmp_path / "out"),
            "--data-dir", str(env.data), "--limit", "6", "--set", f"{task}.text=review", "--set", f"{task}.label=stars",
            "--set", f"{task}.seeds=1", "--set", f"{task}.lrs=1e-3", "--set", f"{task}.finetune.epochs=1"]
    assert ettin_main(argv) == 0
    err = capsys.readouterr().err
    res = runner.load_results(tmp_path / "out")[0]["tasks"]
    cls, cran = res[task], res["cranfield"]
    line = next(x for x in err.splitlines() if f"{task}: accuracy:" in x)
    probe, tuned = cls["designs"]["probe"]["value"], cls["designs"]["finetune"]["value"]
    assert f"probe {probe:.4f}, finetune {tuned:.4f}; baseline {cls['baseline']:.4f} (majority class" in line, line
    line = next(x for x in err.splitlines() if "cranfield: ndcg@10" in x)
    assert f"baseline {cran['baseline']:.4f} (random ranking), BM25 {cran['bm25']['ndcg@10']:.4f}" in line, line
    before = err.index("cranfield: fine-tunes the model first")
    assert before < err.index("cranfield: ndcg@10") and "wikipedia" in err[before:].splitlines()[0]


def _fake_run(root: Path, folder: Path, name: str) -> Path:
    """<root>/<name>/{checkpoints/, final/}: a run folder whose final/ export is `folder`'s model."""
    import shutil

    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(folder, run / "final")
    (run / "final" / "ettin_checkpoint.json").write_text(json.dumps({"run": run.name, "phase": "decay", "step": 1,
                                                                     "tokens": 10}))
    return run / "final"


def test_results_of_different_runs_never_collide(env, tmp_path):
    """The final/ folders of two pairs' encoders, and of two runs that share a name, evaluated into one folder."""
    finals = [_fake_run(tmp_path / "a", env.folders["mlm"], "encoder"),
              _fake_run(tmp_path / "b", env.folders["clm"], "encoder"),
              _fake_run(tmp_path / "x" / "a", env.folders["clm"], "encoder")]  # a second a/encoder
    out = tmp_path / "results"
    for final in finals:
        assert ettin_main(["eval", str(final), "--tasks", "winogender", "--out", str(out),
                           "--data-dir", str(env.data)]) == 0
    results = runner.load_results(out)
    assert len({r["_path"] for r in results}) == 3
    assert sorted(Path(r["model"]["path"]).resolve() for r in results) == sorted(f.resolve() for f in finals)
    assert {r["model"]["run"] for r in results} == {"a-encoder", "b-encoder"}
    assert {r["model"]["objective"] for r in results} == {"mlm", "clm"}
    # evaluating one of them again finds its own cached results, not another run's
    assert ettin_main(["eval", str(finals[2]), "--tasks", "winogender", "--out", str(out),
                       "--data-dir", str(env.data)]) == 0
    assert len(runner.load_results(out)) == 3
