"""What every task shares: the model under test with its tokenizer, batching, scoring and fine-tuning helpers.

Input formats (the same for both objectives, so the comparison is controlled):
  single text   [CLS] a [SEP]            pair   [CLS] a [SEP] b [SEP]
  decoder LM    [CLS] text ...           ([CLS] is the decoders' BOS, as lm-eval's add_bos_token=True)
Scoring is sparse: the vocabulary head runs only at the positions that are scored.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ettin.config import SPECIAL_TOKEN_FIELDS
from ettin.eval.progress import Progress
from ettin.inference import pool
from ettin.model import EttinModel

HEAD_CHUNK = 1024  # scored positions per vocabulary-head call (1024 x 50k fp32 logits = 200 MB)


class TaskDataError(ValueError):
    """A task file that cannot be read: the message names the file and line."""


@dataclass
class Subject:
    """The model under evaluation with its tokenizer (a `tokenizers.Tokenizer`)."""

    model: EttinModel
    tokenizer: object
    device: torch.device = torch.device("cpu")
    max_length: int = 256
    tokens_per_batch: int = 8192  # padded tokens per forward batch

    def __post_init__(self) -> None:
        cfg = self.model.config
        tok_vocab = self.tokenizer.get_vocab_size()
        if tok_vocab > cfg.vocab_size:
            raise ValueError(
                f"the tokenizer has {tok_vocab} ids but the model's vocabulary has only {cfg.vocab_size}: "
                "they do not belong together"
            )
        for name in SPECIAL_TOKEN_FIELDS:
            if getattr(cfg, name) is None:
                raise ValueError(f"the model config has no {name}; evaluation needs it")
        self.model.to(self.device).eval()

    @property
    def objective(self) -> str:
        return self.model.config.objective

    @property
    def is_encoder(self) -> bool:
        return self.objective == "mlm"

    @property
    def cls(self) -> int:
        return self.model.config.bos_token_id

    @property
    def sep(self) -> int:
        return self.model.config.eos_token_id

    @property
    def pad(self) -> int:
        return self.model.config.pad_token_id

    @property
    def mask(self) -> int:
        return self.model.config.mask_token_id

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def pair(self, a: list[int], b: list[int] | None = None, max_length: int | None = None) -> list[int]:
        """[CLS] a [SEP] (b [SEP]), the longer text trimmed first to fit max_length (<= the subject's)."""
        limit = min(max_length or self.max_length, self.max_length) - (2 if b is None else 3)
        a, b = list(a), (None if b is None else list(b))
        while len(a) + (len(b) if b is not None else 0) > limit:
            if b is not None and len(b) >= len(a):
                b.pop()
            else:
                a.pop()
        return [self.cls, *a, self.sep] + ([] if b is None else [*b, self.sep])

    def pooling(self, encoder_pooling: str) -> str:
        return encoder_pooling if self.is_encoder else "last"


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and (B, T) attention mask."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def length_batches(lengths: Sequence[int], tokens_per_batch: int) -> Iterator[list[int]]:
    """Indices grouped by similar length so that each padded batch holds about tokens_per_batch tokens."""
    order = np.argsort(np.asarray(lengths), kind="stable")[::-1]
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * lengths[batch[0]] > tokens_per_batch:
            yield batch
            batch = []
        batch.append(int(i))
    if batch:
        yield batch


@torch.no_grad()
def score_positions(
    subject: Subject, rows: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]], argmax: list | None = None,
    rows_done: Callable[[list[int]], None] | None = None,
) -> list[np.ndarray]:
    """Log-probabilities log p(targets[r][j] | logits of rows[r] at positions[r][j]); one array per row.
    When `argmax` is a list, it receives the arg-max token of each scored position (one array per row).
    `rows_done`, when given, is called after each batch with the indices of the rows it scored."""
    model = subject.model
    progress = Progress("scoring", len(rows), "rows")
    out: list[np.ndarray | None] = [None] * len(rows)
    if argmax is not None:
        argmax[:] = [None] * len(rows)
    for batch in length_batches([len(r) for r in rows], subject.tokens_per_batch):
        ids, mask = pad_batch([rows[i] for i in batch], subject.pad, subject.device)
        h = model.hidden_states(ids, mask)  # (B, T, H)
        b_idx = torch.tensor([k for k, i in enumerate(batch) for _ in positions[i]], device=subject.device)
        t_idx = torch.tensor([p for i in batch for p in positions[i]], device=subject.device)
        tgt = torch.tensor([t for i in batch for t in targets[i]], device=subject.device)
        picked_parts, best_parts = [], []
        for lo in range(0, len(tgt), HEAD_CHUNK):  # the vocabulary head in chunks: (chunk, V) at a time
            sel = slice(lo, lo + HEAD_CHUNK)
            logp = F.log_softmax(model.logits_from_hidden(h[b_idx[sel], t_idx[sel]]).float(), dim=-1)
            picked_parts.append(logp.gather(1, tgt[sel, None]).squeeze(1))
            best_parts.append(logp.argmax(-1))
        picked = torch.cat(picked_parts).cpu().numpy()
        best = torch.cat(best_parts).cpu().numpy()
        start = 0
        for i in batch:
            out[i] = picked[start : start + len(positions[i])]
            if argmax is not None:
                argmax[i] = best[start : start + len(positions[i])]
            start += len(positions[i])
        progress.update(len(batch))
        if rows_done is not None:
            rows_done(batch)
    progress.finish()
    return out  # type: ignore[return-value]


def _per_item(n_items: int, owner: list[int], flat: list[np.ndarray]) -> list[np.ndarray]:
    per_item: list[list[float]] = [[] for _ in range(n_items)]
    for k, lp in zip(owner, flat):
        per_item[k].extend(lp.tolist())
    return [np.asarray(v) for v in per_item]


def causal_loglik(subject: Subject, items: Sequence[tuple[list[int], list[int]]]) -> list[np.ndarray]:
    """Decoder: per-token log p(target | [BOS] context, earlier target tokens) for (context, target) pairs.

    When [BOS] + context + target exceeds max_length, the target is scored in chunks of max_length // 2
    tokens, each with the max_length - 1 tokens before its end as context (lm-eval's rolling windows)."""
    L = subject.max_length
    rows, positions, targets, owner = [], [], [], []
    for k, (ctx, tgt) in enumerate(items):
        if not tgt:
            raise ValueError("causal_loglik: empty target")
        full = [*ctx, *tgt]
        step = len(tgt) if len(full) + 1 <= L else L // 2
        for start in range(len(ctx), len(full), step):
            end = min(start + step, len(full))
            lo = max(0, end - (L - 1))  # row = [BOS] full[lo:end-1]; row[i - lo] predicts full[i]
            rows.append([subject.cls, *full[lo : end - 1]])
            positions.append([i - lo for i in range(start, end)])
            targets.append(full[start:end])
            owner.append(k)
    return _per_item(len(items), owner, score_positions(subject, rows, positions, targets))


def masked_pll(
    subject: Subject, items: Sequence[tuple[list[int], list[int], list[int]]], greedy: list | None = None,
    items_done: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """Encoder pseudo-log-likelihood: for (left, target, right), mask each target token in turn in
    [CLS] left target right [SEP] and score it (Salazar et al. 2020). Returns per-token log-probs per item.
    When the text exceeds max_length, each masked token sees the max_length - 2 tokens centred on it.
    When `greedy` is a list, it receives per item whether every target token is the arg-max at its mask.
    `items_done`, when given, is called after each batch with how many more items have all their tokens scored
    (the batches are the same either way)."""
    size = subject.max_length - 2
    rows, positions, targets, owner = [], [], [], []
    for k, (left, tgt, right) in enumerate(items):
        if not tgt:
            raise ValueError("masked_pll: empty target")
        full = [*left, *tgt, *right]
        for j, t in enumerate(tgt):
            at = len(left) + j
            lo = min(max(0, at - size // 2), max(0, len(full) - size))
            row = [subject.cls, *full[lo : lo + size], subject.sep]
            row[1 + at - lo] = subject.mask
            rows.append(row)
            positions.append([1 + at - lo])
            targets.append([t])
            owner.append(k)
    best: list | None = [] if greedy is not None else None
    left_rows = np.bincount(owner, minlength=len(items)) if owner else np.zeros(len(items), dtype=int)

    def rows_done(batch: list[int]) -> None:
        finished = 0
        for i in batch:
            left_rows[owner[i]] -= 1
            finished += int(left_rows[owner[i]] == 0)
        if finished:
            items_done(finished)

    scores = score_positions(subject, rows, positions, targets, best, rows_done if items_done else None)
    if greedy is not None:
        hits = _per_item(len(items), owner, [(b == np.asarray(t)).astype(np.float64) for b, t in zip(best, targets)])
        greedy[:] = [bool(h.all()) for h in hits]
    return _per_item(len(items), owner, scores)


@torch.no_grad()
def encode_pooled(subject: Subject, model: EttinModel, seqs: Sequence[list[int]], pooling: str,
                  what: str = "encoding") -> torch.Tensor:
    """Pooled hidden states (N, H) of already-wrapped token sequences, in input order."""
    return encode_poolings(subject, model, seqs, (pooling,), what)[pooling]


@torch.no_grad()
def encode_poolings(subject: Subject, model: EttinModel, seqs: Sequence[list[int]],
                    poolings: Sequence[str], what: str = "encoding") -> dict[str, torch.Tensor]:
    """{pooling: (N, H)} from one forward pass per batch, in input order; `what` names the step's progress."""
    out: dict[str, list] = {p: [None] * len(seqs) for p in poolings}
    progress = Progress(what, len(seqs), "rows")
    for batch in length_batches([len(s) for s in seqs], subject.tokens_per_batch):
        ids, mask = pad_batch([seqs[i] for i in batch], subject.pad, subject.device)
        h = model.hidden_states(ids, mask)  # (B, T, H)
        for p in poolings:
            pooled = pool(h, mask, p)
            for k, i in enumerate(batch):
                out[p][i] = pooled[k]
        progress.update(len(batch))
    progress.finish()
    return {p: torch.stack(v) for p, v in out.items()}


# The dropouts of every fine-tuning in `ettin eval` (the classification designs, GLUE as published, the retrieval
# fine-tune), whatever folder the weights come from: a checkpoint keeps its training dropout, its Hugging Face export
# has none (ettin.config: attention_output_dropout is not exported), so the source must not decide. The published
# GLUE fine-tuning ran the pre-training model config: bert24 generate_eval_config_from_checkpoint.py lines 204-206
# copy every model_config key of the training YAML (attn_out_dropout_prob 0.1 in all 48, tests/published), and
# ModernBERT generate_eval_config.py lines 71 and 73 default attention_probs_dropout_prob 0.0 and
# attn_out_dropout_prob 0.1.
FINETUNE_DROPOUT = {"attention_dropout": 0.0, "attention_output_dropout": 0.1}


def finetuning_copy(model: EttinModel) -> EttinModel:
    """A copy of `model` (same weights, dtype and runtime settings) with FINETUNE_DROPOUT, in training mode; a model
    that is not an EttinModel (a test's stand-in) has no such settings and is copied as it is."""
    if not isinstance(model, EttinModel):
        return copy.deepcopy(model).train()
    config = model.config.replace(**FINETUNE_DROPOUT)
    with torch.device("meta"):  # no initialisation: the weights come next
        tuned = EttinModel(config, attn_backend=model.attn_backend, loss_chunk_size=model.loss_chunk_size)
    tuned.load_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()}, assign=True)
    return tuned.train()


@dataclass
class FinetuneSettings:
    epochs: int = 2
    batch_size: int = 16
    lr: float = 5e-4  # small models; the same for both objectives
    weight_decay: float = 0.01  # torch AdamW's (decay per step = lr * weight_decay); matrices only
    warmup_ratio: float = 0.1
    beta2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float = 1.0  # 0: no clipping


def finetune(
    subject: Subject, head: torch.nn.Module, num_examples: int, loss_fn: Callable[[EttinModel, list[int]], torch.Tensor],
    settings: FinetuneSettings, seed: int, start: EttinModel | None = None, what: str = "fine-tuning",
) -> EttinModel:
    """AdamW over a copy of the model (or of `start`, e.g. a model fine-tuned on another task) with the fine-tuning
    dropouts (FINETUNE_DROPOUT) plus `head` for settings.epochs passes over num_examples examples, linear warmup then
    linear decay; loss_fn(model, batch_indices) -> scalar loss. Returns the tuned copy (the models given are left
    untouched). `what` names the run in its progress lines (ettin.eval.progress)."""
    torch.manual_seed(seed)
    model = finetuning_copy(subject.model if start is None else start).to(subject.device)
    head.to(subject.device).train()
    params = [p for p in [*model.parameters(), *head.parameters()] if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr, betas=(0.9, settings.beta2), eps=settings.eps,
    )
    steps_per_epoch = math.ceil(num_examples / settings.batch_size)
    total = max(1, steps_per_epoch * settings.epochs)
    warmup = max(1, int(settings.warmup_ratio * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    rng = np.random.default_rng(seed)
    progress = Progress(f"{what}, {settings.epochs} epoch(s):", total, "steps")
    for _ in range(settings.epochs):
        order = rng.permutation(num_examples)
        for start in range(0, num_examples, settings.batch_size):
            loss = loss_fn(model, order[start : start + settings.batch_size].tolist())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fine-tuning diverged (loss {loss.item()})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            opt.step()
            sched.step()
            progress.update()
    progress.finish()
    model.eval()
    head.eval()
    return model
