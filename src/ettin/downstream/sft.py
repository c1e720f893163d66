"""`ettin finetune sft`: instruction tuning of a decoder with TRL's `SFTTrainer` and a chat template.

Data: a JSONL of conversations, either the Self-Instruct / Alpaca seed-task format of ../shared/data/sft
({instruction, instances: [{input, output}]}: the user turn is the instruction, then a blank line and the input
when there is one; the assistant turn is the output) or TRL's conversational format ({messages: [{role,
content}, ...]}, the last message the assistant's answer). Each example goes to TRL as a conversational
prompt-completion pair, so the loss is on the answer only (TRL's completion_only_loss). A seeded
`--eval-fraction` of the examples is held out.

Chat template: the tokenizer's own when it has one; else CHAT_TEMPLATE, set on the tokenizer and saved with the
model:
    [CLS]<|user|>\\n{content}[SEP]<|assistant|>\\n{content}[SEP]...   (bos_token, then per message
    "<|role|>\\n" + content + eos_token; the generation prompt is "<|assistant|>\\n")
The role markers are plain text (no new tokens, so the embeddings are not resized); [CLS] is these decoders' BOS
and [SEP] their end of sequence, so generation stops at the end of the answer.

Loss: TRL's `loss_type="nll"`, the model's own causal-LM loss (see check_trl: TRL's default chunked loss skips
ModernBERT's prediction head). Scores, each beside the untuned model's: per held-out example the mean log-likelihood of its answer tokens (the
main metric, `answer_loglik`; the per-example figures the report resamples), and TRL's `eval_loss` from
`trainer.evaluate` (at an evaluation batch of one, minus the same mean: a check that the two agree). A greedy answer to a fixed prompt is printed before and after; the
"after" one comes from the saved folder loaded back with AutoTokenizer / AutoModelForCausalLM and run through
`apply_chat_template` + `generate`, as a user would.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ettin.config import IGNORE_INDEX
from ettin.downstream import common
from ettin.io import UserError, read_jsonl

TASK = "sft"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
PROMPT = "Give three tips for staying healthy."


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model_arguments(p)
    common.add_training_arguments(p, lr=5e-5, batch_size=8)
    p.set_defaults(epochs=3.0, max_length=512)
    p.add_argument("--data", type=Path, default=Path("../shared/data/sft/alpaca_seed_tasks.jsonl"),
                   help="conversations (JSONL): seed-task rows {instruction, instances} or {messages} "
                   "(default ../shared/data/sft/alpaca_seed_tasks.jsonl)")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="seeded share of examples held out (0.1)")
    p.add_argument("--prompt", default=PROMPT, help=f"the fixed prompt answered before and after (default {PROMPT!r})")
    p.add_argument("--max-new-tokens", type=int, default=48, help="length of the greedy answers (default 48)")


# ------------------------------------------------------------------------------------------------ data
def load_conversations(path: Path) -> list[dict]:
    """[{prompt: [messages], completion: [assistant message]}] from a seed-task or a messages JSONL."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--data {path}: no such file")
    out = []
    for row in read_jsonl(path):
        out.extend(_examples(row, f"{path}:{row.pop('_line')}"))
    if not out:
        raise UserError(f"--data {path}: no conversations (the file is empty)")
    return out


def _text(value, where: str, field: str, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise UserError(f"{where}: field {field!r} must be a{'' if empty_ok else ' non-empty'} string")
    return value


def _examples(row: dict, where: str) -> list[dict]:
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or len(msgs) < 2 or not all(isinstance(m, dict) for m in msgs):
            raise UserError(f"{where}: 'messages' must be a list of at least two {{role, content}} objects")
        msgs = [{"role": _text(m.get("role"), where, "role"), "content": _text(m.get("content"), where, "content")}
                for m in msgs]
        if msgs[-1]["role"] != "assistant":
            raise UserError(f"{where}: the last message must be the assistant's (got {msgs[-1]['role']!r})")
        return [{"prompt": msgs[:-1], "completion": msgs[-1:]}]
    if "instruction" in row and "instances" in row:
        instruction = _text(row["instruction"], where, "instruction")
        if not isinstance(row["instances"], list) or not row["instances"]:
            raise UserError(f"{where}: 'instances' must be a non-empty list of {{input, output}} objects")
        out = []
        for inst in row["instances"]:
            if not isinstance(inst, dict):
                raise UserError(f"{where}: every instance must be an {{input, output}} object")
            given = _text(inst.get("input", ""), where, "instances[].input", empty_ok=True).strip()
            user = f"{instruction}\n\n{given}" if given else instruction
            answer = _text(inst.get("output"), where, "instances[].output")
            out.append({"prompt": [{"role": "user", "content": user}],
                        "completion": [{"role": "assistant", "content": answer}]})
        return out
    raise UserError(f"{where}: expected {{messages}} or seed-task fields {{instruction, instances}}; "
                    f"got {sorted(row)}")


def split(examples: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    if not 0 < fraction < 1:
        raise UserError(f"--eval-fraction must be between 0 and 1, got {fraction}")
    n_eval = max(1, round(fraction * len(examples)))
    if n_eval >= len(examples):
        raise UserError(f"--data: {len(examples)} example(s) cannot be split into training and held-out parts")
    order = np.random.default_rng(seed).permutation(len(examples))
    held = set(order[:n_eval].tolist())
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


# ------------------------------------------------------------------------------------------------ model
def prepare_tokenizer(tokenizer):
    """BOS / EOS / PAD as these decoders use them ([CLS], [SEP], [PAD]) and a chat template when there is none.
    Returns whether CHAT_TEMPLATE was set."""
    for name, fallback in (("bos_token", "cls_token"), ("eos_token", "sep_token"), ("pad_token", "eos_token")):
        if getattr(tokenizer, name) is None and getattr(tokenizer, fallback) is not None:
            setattr(tokenizer, name, getattr(tokenizer, fallback))
    if tokenizer.eos_token is None:
        raise UserError("the tokenizer has no end-of-sequence token ([SEP] or eos_token): a chat cannot end")
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = CHAT_TEMPLATE
    return True


def chat(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """A greedy answer, the way a user chats with the folder: apply_chat_template, then generate."""
    import torch

    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    ids = {k: v.to(model.device) for k, v in ids.items()}
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def answer_logliks(model, dataset) -> list[float]:
    """Mean log-likelihood of each example's answer tokens, one per example: the tokens TRL's dataset labels
    (its `labels` column: the completion's ids, -100 on the prompt), each predicted from the ones before. Their
    mean is minus TRL's eval_loss at an evaluation batch of one (the trainer averages per-batch mean losses)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    out = []
    with torch.no_grad():
        for row in dataset:
            ids = torch.tensor([row["input_ids"]], device=model.device)
            labels = torch.tensor(row["labels"][1:], device=model.device)
            mask = labels != IGNORE_INDEX
            logp = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            picked = logp.gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
            out.append(float(picked[mask].mean()))
    return out


def check_trl(version: str) -> None:
    """TRL's chunked / fused SFT loss multiplies the backbone's last hidden state by the output embedding. ModernBERT's
    decoders put a prediction head (dense, GELU, LayerNorm) between the two, which that path skips: it trains and
    reports the loss of another model. TRL 1.10-1.14 default to it (loss_type "chunked_nll") but keep the model's own
    loss under loss_type "nll", which this command sets; from 1.15 the fused path is the only one."""
    from packaging.version import Version

    if not Version("1.10") <= Version(version) < Version("1.15"):
        raise UserError(f"ettin finetune sft: trl {version} is not supported (from 1.15 its loss uses a fused LM head "
                        "that skips ModernBERT's prediction head); install the tested version: pip install "
                        f"'trl==1.14.2' (or {common.EXTRA_HINT})")


def run(args: argparse.Namespace) -> int:
    check_trl(common.need("trl", "ettin finetune sft").__version__)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    datasets = common.need("datasets", "ettin finetune sft")
    examples = load_conversations(args.data)  # every input is checked before any model work
    train, held = split(examples, args.eval_fraction, args.seed)
    device = common.device_of(args)
    with tempfile.TemporaryDirectory(prefix="ettin-sft-") as work:
        src = common.resolve(args.model, Path(work), args.role, need=(
            "clm", f"ettin finetune sft: {args.model} is an encoder (masked LM); instruction tuning needs a decoder "
                   "(a causal LM checkpoint or a modernbert-decoder folder)"))
        tokenizer = AutoTokenizer.from_pretrained(str(src.folder))
        template_set = prepare_tokenizer(tokenizer)
        torch.manual_seed(args.seed)
        model = AutoModelForCausalLM.from_pretrained(str(src.folder), dtype=torch.float32).to(device)
        print(f"ettin finetune sft: {src.model['run']}/{src.model['checkpoint']}, {len(train)} conversations "
              f"({len(held)} held out) from {args.data}; chat template: "
              f"{'ettin default (set)' if template_set else 'its own'}", file=sys.stderr)
        before = chat(model, tokenizer, args.prompt, args.max_new_tokens)
        print(f"before  {args.prompt!r} -> {before!r}")
        settings = {"data": str(args.data), "n_train": len(train), "n_eval": len(held), "epochs": args.epochs,
                    "max_steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr,
                    "max_length": args.max_length, "seed": args.seed, "eval_fraction": args.eval_fraction,
                    "chat_template": "ettin default" if template_set else "tokenizer", "prompt": args.prompt}
        start = time.perf_counter()
        with common.atomic_folder(args.out) as tmp:
            config = common.training_args(SFTConfig, Path(work) / "trainer", args, bf16=False, loss_type="nll",
                                          activation_checkpointing=False, max_length=args.max_length,
                                          per_device_eval_batch_size=1)  # eval_loss: mean of example means
            trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer,
                                 train_dataset=datasets.Dataset.from_list(train),
                                 eval_dataset=datasets.Dataset.from_list(held))
            untuned_loss = trainer.evaluate()["eval_loss"]
            untuned = answer_logliks(trainer.model, trainer.eval_dataset)
            out = trainer.train()
            tuned_loss = trainer.evaluate()["eval_loss"]
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            common.write_marker(tmp, "ettin finetune sft", args.model, settings)
            eval_rows = trainer.eval_dataset
        # what a user loads: the saved folder, through transformers alone
        tok2 = AutoTokenizer.from_pretrained(str(args.out))
        model2 = AutoModelForCausalLM.from_pretrained(str(args.out), dtype=torch.float32).to(device)
        after = chat(model2, tok2, args.prompt, args.max_new_tokens)
        tuned = answer_logliks(model2, eval_rows)
    print(f"after   {args.prompt!r} -> {after!r}")
    main = "answer_loglik"
    task = common.task_record(
        "sft", main, {main: float(np.mean(tuned)), "eval_loss": float(tuned_loss)}, float(np.mean(untuned)),
        "untuned model", len(tuned), settings, time.perf_counter() - start,
        per_example={"score": tuned, "baseline": untuned}, untuned={main: float(np.mean(untuned)),
                                                                     "eval_loss": float(untuned_loss)},
        train_loss=float(out.training_loss), steps=int(out.global_step), model_folder=str(args.out),
        sample={"prompt": args.prompt, "before": before, "after": after},
        held_out_without_answer_tokens=len(held) - len(tuned))  # TRL drops them: the prompt fills --max-length
    path = common.results_path(args.results, src.model)
    common.write_results(path, src.model, {TASK: task})
    dropped = f", {len(held) - len(tuned)} left out: no answer token within --max-length" if len(tuned) < len(held) else ""
    print(f"{TASK}: held-out answers ({len(tuned)} conversations{dropped})")
    print(f"  {main:<14} {task[main]:.4f}   (untuned model {task['baseline']:.4f})")
    print(f"  {'eval_loss':<14} {tuned_loss:.4f}   (untuned model {untuned_loss:.4f})")
    print(f"model: {args.out}\nresults: {path}")
    return 0
