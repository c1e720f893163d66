"""`ettin finetune sft`: TRL's SFTTrainer on a tiny random ettin decoder, offline, on the shared seed tasks.

The end-to-end test (seconds) trains enough steps for the held-out answers to become likelier than under the untuned model,
and chats with the saved folder through transformers alone; the fast ones cover the data formats, the chat
template and every bad input."""

import json

import pytest
import torch

pytest.importorskip("trl")

from downstream_tiny import beir_subset, build, forbid_exports  # noqa: E402
from ettin.cli import UserError  # noqa: E402
from ettin.cli import main as ettin_main  # noqa: E402
from ettin.downstream import sft  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sft")
    beir = beir_subset(shared_data / "retrieval" / "cranfield" / "beir", root / "cran", queries=4, docs=60)
    env = build(root / "models", beir)
    env.data = shared_data / "sft" / "alpaca_seed_tasks.jsonl"
    return env


def _cmd(tiny, model, out, *extra):
    return ["finetune", "sft", str(model), "--out", str(out), "--results", str(tiny.root / "results"),
            "--data", str(tiny.data), "--device", "cpu", "--max-length", "160", *extra]


# ------------------------------------------------------------------------------------------------ data
def test_seed_tasks_become_prompt_completion_conversations(tiny):
    examples = sft.load_conversations(tiny.data)
    assert len(examples) == 175  # one instance per seed task
    rows = [json.loads(line) for line in open(tiny.data, encoding="utf-8")]
    with_input = next(i for i, r in enumerate(rows) if r["instances"][0]["input"])
    ex = examples[with_input]
    inst = rows[with_input]["instances"][0]
    assert ex["prompt"] == [{"role": "user", "content": f"{rows[with_input]['instruction']}\n\n{inst['input'].strip()}"}]
    assert ex["completion"] == [{"role": "assistant", "content": inst["output"]}]
    train, held = sft.split(examples, 0.1, seed=0)
    assert (len(train), len(held)) == (157, 18) and sft.split(examples, 0.1, seed=0)[1] == held
    assert not any(h in train for h in held)


def test_messages_format_and_bad_rows_name_the_line(tmp_path):
    good = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello."}]}
    f = tmp_path / "chat.jsonl"
    f.write_text(json.dumps(good) + "\n")
    (ex,) = sft.load_conversations(f)
    assert [m["role"] for m in ex["prompt"]] == ["system", "user"] and ex["completion"][0]["content"] == "Hello."
    bad = [({"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "x"}]}, "last message"),
           ({"instruction": "Do it", "instances": [{"input": ""}]}, "output"),
           ({"prompt": "x"}, "expected {messages}")]
    for row, match in bad:
        f.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
        with pytest.raises(UserError, match=f"chat.jsonl:2: .*{match}"):
            sft.load_conversations(f)
    f.write_text("")
    with pytest.raises(UserError, match="empty"):
        sft.load_conversations(f)


def test_default_chat_template_renders_the_documented_format(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny.hf["clm"]))
    assert sft.prepare_tokenizer(tok) is True and tok.bos_token == "[CLS]" and tok.eos_token == "[SEP]"
    msgs = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]
    assert tok.apply_chat_template(msgs, tokenize=False) == "[CLS]<|user|>\nName a colour.[SEP]<|assistant|>\nBlue.[SEP]"
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "[CLS]<|user|>\nName a colour.[SEP]<|assistant|>\n"
    # the prompt's tokens are a prefix of the whole conversation's (TRL's completion mask relies on it)
    ids_prompt = tok.apply_chat_template(msgs[:1], add_generation_prompt=True, return_dict=True)["input_ids"]
    ids_all = tok.apply_chat_template(msgs, return_dict=True)["input_ids"]
    assert ids_all[: len(ids_prompt)] == ids_prompt
    assert sft.prepare_tokenizer(tok) is False  # a template already there is kept


def test_trl_with_only_the_fused_lm_head_is_refused():
    sft.check_trl("1.14.2")
    for version in ("1.15.0", "1.16.0", "0.29.1"):
        with pytest.raises(UserError, match="trl==1.14.2"):
            sft.check_trl(version)


# ------------------------------------------------------------------------------------------------ bad input
def test_encoder_unknown_model_and_missing_data_fail_cleanly(tiny, tmp_path, capsys, monkeypatch):
    forbid_exports(monkeypatch)  # an encoder is refused before any export
    out = tmp_path / "out"
    cases = [(_cmd(tiny, tiny.runs["mlm"], out), "is an encoder"),
             (_cmd(tiny, tmp_path / "nope", out), "nope"),
             (_cmd(tiny, tiny.runs["clm"], out, "--data", str(tmp_path / "none.jsonl")), "none.jsonl")]
    for argv, named in cases:
        assert ettin_main(argv) == 2
        assert named in capsys.readouterr().err
        assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


# ------------------------------------------------------------------------------------------------ end to end
def test_sft_end_to_end_learns_the_answers_and_the_folder_chats(tiny, tmp_path, capsys):
    out = tmp_path / "chat-model"
    argv = _cmd(tiny, tiny.runs["clm"], out, "--max-steps", "40", "--batch-size", "8", "--lr", "2e-3",
                "--max-new-tokens", "12")
    assert ettin_main(argv) == 0
    printed = capsys.readouterr().out
    assert "before  'Give three tips for staying healthy.' ->" in printed and "after   " in printed
    results = json.loads((tiny.root / "results" / "clm-run" / "stable-step0000010.json").read_text())
    task = results["tasks"]["sft"]
    # held-out examples whose prompt fills --max-length have no answer token: TRL drops them
    assert task["main"] == "answer_loglik" and task["baseline_name"] == "untuned model"
    assert task["n"] + task["held_out_without_answer_tokens"] == 18 and task["n"] >= 9
    assert task["answer_loglik"] > task["baseline"] + 0.5  # held-out answers much likelier after tuning
    assert task["eval_loss"] < task["untuned"]["eval_loss"] and task["steps"] == 40
    # TRL's eval_loss (evaluation batch of one) is minus the mean of the per-example figures
    assert task["eval_loss"] == pytest.approx(-task["answer_loglik"], abs=1e-4)
    assert task["untuned"]["eval_loss"] == pytest.approx(-task["baseline"], abs=1e-4)
    assert len(task["per_example"]["score"]) == len(task["per_example"]["baseline"]) == task["n"]
    # the folder chats through transformers alone, with the template saved beside it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert tok.chat_template == sft.CHAT_TEMPLATE
    ids = tok.apply_chat_template([{"role": "user", "content": "Give three tips for staying healthy."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=12, do_sample=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    assert tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() == task["sample"]["after"]
