"""Held-out language modelling and generation, on the last 2% of each pretraining file (see tasks/data.py).

Language modelling: every held-out document is tokenized and cut into non-overlapping windows of
max_length - 2 tokens; the same windows serve both objectives, and the token budget is split evenly over
the pretraining files.
  decoders  perplexity: exp(mean NLL of every window token given [BOS] and the window's earlier tokens)
  encoders  15% of each window's tokens (a fixed seed) are replaced by [MASK] at once; masked-token
            accuracy (arg-max) and masked perplexity exp(mean NLL of the masked tokens) (not a
            pseudo-perplexity, which masks one token at a time: tasks/common.py masked_pll)
Not `ettin.train.heldout`'s likelihood, on purpose: the same held-out rule (`ettin.data.holdout`), but that one
scores a run's own data as its training loss (its phase's masking rate and 80/10/10 replacement, mntp's labels), to
compare one model before and after `ettin continue`; this one fixes the files, the masking and the seed, so that
models trained by any recipe compare on one figure.
Next token: the same held-out documents cut into (left context, next token) pairs, one pair every `context`
tokens; both objectives see only the left context ([CLS] context [MASK] [SEP] for encoders, [CLS] context for
decoders), the one likelihood the two can be compared on. Both tasks report, beside every figure, a unigram
model of the training side (token frequencies, add-one smoothed): a model that learned nothing else; `lm` gives its
figures in the task's own units too (`baseline_metrics`: the arg-max token's accuracy, the unigram perplexity;
next_token: its log-likelihood and accuracy), and both name the held-out text they scored (`held_out`).
Generation: the first `prompt_tokens` of a held-out document prompt `new_tokens` more, compared with the
document's true continuation: ROUGE-L F1 over lower-cased words (the main metric), chrF over characters
(generous to any long output: common letters match), and position-wise token accuracy over ids.
  decoders  greedy decoding with the KV cache (ettin.inference.generate), stopping at [SEP]
  encoders  a documented baseline: iterative mask filling, left to right. [CLS] prompt [MASK]*n [SEP]; each
            step fills the leftmost [MASK] with its arg-max token.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ettin.data.holdout import HOLDOUT_FRACTION
from ettin.eval import metrics
from ettin.eval.progress import Progress
from ettin.eval.tasks.common import Subject, score_positions
from ettin.eval.tasks.data import PRETRAIN_FILES, pretrain_documents
from ettin.inference import Decoder, generate


@dataclass
class LanguageModelingSettings:
    limit: int = 128  # windows of max_length - 2 tokens, split evenly over the pretraining files
    mask_probability: float = 0.15  # encoders


@dataclass
class NextTokenSettings:
    limit: int = 4000  # (context, next token) pairs, split evenly over the pretraining files
    context: int = 64  # left-context tokens


@dataclass
class GenerationSettings:
    limit: int = 64  # prompts, taken round-robin over the pretraining files
    prompt_tokens: int = 32
    new_tokens: int = 32


def held_out_windows(subject: Subject, data_dir: Path, limit: int) -> list[tuple[str, list[int]]]:
    """(file name, window ids) pairs; each pretraining file contributes up to limit / number of files."""
    size = subject.max_length - 2
    per_file = max(1, limit // len(PRETRAIN_FILES))
    used = dict.fromkeys(PRETRAIN_FILES, 0)
    windows = []
    for doc in pretrain_documents(data_dir, held_out=True):
        name = doc["_file"]
        ids = subject.encode(doc["text"]) if used[name] < per_file else []
        for start in range(0, len(ids), size):
            if used[name] >= per_file or len(ids) - start < 2:
                break
            windows.append((name, ids[start : start + size]))
            used[name] += 1
    return windows


@functools.lru_cache(maxsize=4)
def _unigram(tokenizer_json: str, data_dir: str) -> np.ndarray:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    docs = pretrain_documents(Path(data_dir), held_out=False)[::10]  # every 10th training document
    counts = np.ones(tok.get_vocab_size(), dtype=np.float64)  # add-one
    for enc in tok.encode_batch([d["text"] for d in docs], add_special_tokens=False):
        counts += np.bincount(enc.ids, minlength=counts.size)[: counts.size]
    return np.log(counts / counts.sum())


def unigram_logprobs(subject: Subject, data_dir: Path) -> np.ndarray:
    """log p(token) of the training side's token frequencies (every 10th document, add-one smoothed), (V,)."""
    return _unigram(subject.tokenizer.to_str(), str(data_dir))


def run_lm(subject: Subject, data_dir: Path, settings: LanguageModelingSettings, seed: int) -> dict:
    windows = held_out_windows(subject, data_dir, settings.limit)
    if subject.is_encoder:
        rng = np.random.default_rng(seed)
        rows, positions, targets = [], [], []
        for _, w in windows:
            n = max(1, int(round(settings.mask_probability * len(w))))
            picks = np.sort(rng.choice(len(w), size=n, replace=False))
            row = [subject.cls, *w, subject.sep]
            for p in picks:
                row[p + 1] = subject.mask
            rows.append(row)
            positions.append((picks + 1).tolist())
            targets.append([w[p] for p in picks])
        best: list = []
        logps = score_positions(subject, rows, positions, targets, argmax=best)
    else:
        rows = [[subject.cls, *w[:-1]] for _, w in windows]
        positions = [list(range(len(w))) for _, w in windows]
        targets = [w for _, w in windows]
        logps = score_positions(subject, rows, positions, targets)
    per_file: dict[str, list[float]] = {}
    for (name, _), lp in zip(windows, logps):
        per_file.setdefault(name, []).extend(lp.tolist())
    nll = -np.concatenate(logps)
    unigram = unigram_logprobs(subject, data_dir)
    gold = np.concatenate([np.asarray(t) for t in targets])
    base_nll = -unigram[gold]  # the unigram model's figures in the task's own units (baseline_metrics), below
    result: dict = {"n": len(windows), "tokens_scored": int(nll.size), "loglik": float(-nll.mean()),
                    "baseline": float(-base_nll.mean()), "baseline_name": "unigram model of the training side",
                    "held_out": held_out_text(data_dir, [name for name, _ in windows]),
                    "per_example": {"score": [float(lp.mean()) for lp in logps],
                                    "baseline": [float(unigram[np.asarray(t)].mean()) for t in targets]}}
    ppl_by_file = {k.removesuffix(".jsonl"): metrics.perplexity(-float(np.sum(v)), len(v)) for k, v in per_file.items()}
    base_ppl = metrics.perplexity(float(base_nll.sum()), base_nll.size)
    if subject.is_encoder:
        hits = np.concatenate([b == np.asarray(t) for b, t in zip(best, targets)])
        result |= {"main": "masked_accuracy", "masked_accuracy": float(hits.mean()),
                   "masked_perplexity": metrics.perplexity(float(nll.sum()), nll.size),
                   "masked_perplexity_by_file": ppl_by_file, "mask_probability": settings.mask_probability,
                   "baseline_metrics": {"masked_accuracy": float(np.mean(gold == int(unigram.argmax()))),
                                        "masked_perplexity": base_ppl}}
    else:
        result |= {"main": "perplexity", "perplexity": metrics.perplexity(float(nll.sum()), nll.size),
                   "perplexity_by_file": ppl_by_file, "baseline_metrics": {"perplexity": base_ppl}}
    return result


def held_out_text(data_dir: Path, files: list[str]) -> str:
    """Which text a held-out task scored, for its console line: the files its examples came from (in order)."""
    used = [f for f in PRETRAIN_FILES if f in set(files)]
    return f"the last {HOLDOUT_FRACTION:.0%} of the documents of {', '.join(used)} in {data_dir / 'pretrain'}"


def run_next_token(subject: Subject, data_dir: Path, settings: NextTokenSettings) -> dict:
    """log p(next token | left context) for both objectives, beside the unigram model."""
    if settings.context + 3 > subject.max_length:
        raise ValueError("next_token: context + 3 exceeds the evaluation max_length")
    per_file = max(1, settings.limit // len(PRETRAIN_FILES))
    used = dict.fromkeys(PRETRAIN_FILES, 0)
    rows, positions, targets, files = [], [], [], []
    for doc in pretrain_documents(data_dir, held_out=True):
        name = doc["_file"]
        ids = subject.encode(doc["text"]) if used[name] < per_file else []
        for end in range(settings.context, len(ids), settings.context):
            if used[name] >= per_file:
                break
            ctx = ids[end - settings.context : end]
            rows.append([subject.cls, *ctx, subject.mask, subject.sep] if subject.is_encoder else [subject.cls, *ctx])
            positions.append([len(ctx) + 1 if subject.is_encoder else len(ctx)])
            targets.append([ids[end]])
            used[name] += 1
            files.append(name)
    if not rows:
        raise ValueError("next_token: no held-out document is longer than the context")
    best: list = []
    logp = np.concatenate(score_positions(subject, rows, positions, targets, argmax=best))
    gold = np.asarray([t[0] for t in targets])
    logprobs = unigram_logprobs(subject, data_dir)
    unigram = logprobs[gold]
    return {"main": "loglik", "loglik": float(logp.mean()), "accuracy": float(np.mean(np.concatenate(best) == gold)),
            "baseline": float(unigram.mean()), "baseline_name": "unigram model of the training side",
            "baseline_metrics": {"loglik": float(unigram.mean()),
                                 "accuracy": float(np.mean(gold == int(logprobs.argmax())))},
            "n": len(rows), "context": settings.context, "held_out": held_out_text(data_dir, files),
            "method": "[CLS] context [MASK] [SEP]" if subject.is_encoder else "[CLS] context",
            "per_example": {"score": logp.tolist(), "baseline": unigram.tolist()}}


def generation_prompts(subject: Subject, data_dir: Path, settings: GenerationSettings) -> list[tuple[list, list]]:
    """(prompt ids, true continuation ids) from held-out documents long enough, round-robin over files."""
    need = settings.prompt_tokens + settings.new_tokens
    by_file: dict[str, list] = {}
    for doc in pretrain_documents(data_dir, held_out=True):
        by_file.setdefault(doc["_file"], []).append(doc["text"])
    queues = [iter(v) for v in by_file.values()]
    prompts: list[tuple[list, list]] = []
    while queues and len(prompts) < settings.limit:
        for q in list(queues):
            text = next(q, None)
            if text is None:
                queues.remove(q)
                continue
            ids = subject.encode(text[: 16 * need])  # a generous character prefix is enough
            if len(ids) >= need and len(prompts) < settings.limit:
                prompts.append((ids[: settings.prompt_tokens], ids[settings.prompt_tokens : need]))
    return prompts


@torch.no_grad()
def _mask_fill(subject: Subject, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Encoder baseline: fill [MASK] slots after the prompt left to right, one arg-max per step."""
    B, P = prompts.shape
    masks = torch.full((B, new_tokens), subject.mask, dtype=torch.long, device=prompts.device)
    sep = torch.full((B, 1), subject.sep, dtype=torch.long, device=prompts.device)
    ids = torch.cat([prompts, masks, sep], dim=1)  # (B, P + n + 1), prompts start with [CLS]
    specials = torch.tensor([subject.cls, subject.sep, subject.pad, subject.mask], device=prompts.device)
    for j in range(new_tokens):
        h = subject.model.hidden_states(ids)[:, P + j]  # (B, H)
        logits = subject.model.logits_from_hidden(h).float()  # (B, V)
        logits[:, specials] = float("-inf")  # an encoder cannot stop: it fills every slot with a word piece
        ids[:, P + j] = logits.argmax(-1)
    return ids[:, P : P + new_tokens]


def run_generation(subject: Subject, data_dir: Path, settings: GenerationSettings) -> dict:
    prompts = generation_prompts(subject, data_dir, settings)
    if not prompts:
        raise ValueError("generation: no held-out document is long enough for the prompt and continuation")
    if settings.prompt_tokens + settings.new_tokens + 2 > subject.max_length:
        raise ValueError("generation: prompt_tokens + new_tokens exceed the evaluation max_length")
    outputs = []
    decoder = None if subject.is_encoder else Decoder(subject.model)  # one for every batch: its copies' buffers
    progress = Progress("generating", len(prompts), "prompts")
    for start in range(0, len(prompts), 32):
        chunk = prompts[start : start + 32]
        ids = torch.tensor([[subject.cls, *p] for p, _ in chunk], device=subject.device)  # (B, 1 + P)
        if subject.is_encoder:
            new = _mask_fill(subject, ids, settings.new_tokens)
        else:
            new = generate(decoder, ids, max_new_tokens=settings.new_tokens, temperature=0.0,
                           eos_token_id=subject.sep)[:, ids.shape[1] :]
        for row in new.tolist():
            cut = row.index(subject.sep) if subject.sep in row else len(row)
            outputs.append(row[:cut])
        progress.update(len(chunk))
    progress.finish()
    acc, rouge, chrf, copy = [], [], [], []
    for (prompt, ref), out in zip(prompts, outputs):
        out_text, ref_text = subject.decode(out), subject.decode(ref)
        acc.append(metrics.token_accuracy(out, ref))
        rouge.append(metrics.rouge_l(out_text.lower().split(), ref_text.lower().split()))
        chrf.append(metrics.chrf(out_text, ref_text))
        copied = subject.decode(prompt[-settings.new_tokens :])  # baseline: repeat the prompt's end
        copy.append(metrics.rouge_l(copied.lower().split(), ref_text.lower().split()))
    example = {"prompt": subject.decode(prompts[0][0]), "reference": subject.decode(prompts[0][1]),
               "output": subject.decode(outputs[0])}
    return {"main": "rouge_l", "rouge_l": float(np.mean(rouge)), "chrf": float(np.mean(chrf)),
            "token_accuracy": float(np.mean(acc)), "n": len(prompts),
            "baseline": float(np.mean(copy)), "baseline_name": "the prompt's last tokens repeated",
            "per_example": {"score": rouge, "baseline": copy},
            "method": "iterative mask filling (baseline)" if subject.is_encoder else "greedy decoding",
            "example": example}
