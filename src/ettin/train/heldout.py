"""The held-out likelihood of a run's own data: the documents its training never reads (`ettin.data.holdout`: the
last ceil(fraction x documents) of every source), scored under the run's own objective, so that a model can be
compared with itself before and after training on the same positions (`ettin continue`).

Each held-out document is cut into spans of seq_len - 2 tokens, one span a row, framed as training frames them
(`ettin.data.collate`: [CLS] span [SEP] for mlm and mntp, [CLS] span for clm); mlm and mntp rows are masked at the
phase's rate with generators keyed by (seed, "held-out", row), so every model scored sees the same masks. The figure
is the mean negative log-likelihood of the predicted positions, in nats (the training loss, without dropout), and
its perplexity. At most `HELD_OUT_TOKENS` tokens are scored, split evenly over the sources (each source's first
held-out documents).

Not the eval `lm` task's figure (`ettin.eval.tasks.language_modeling`), on purpose: both score the documents the one
held-out rule (`ettin.data.holdout`) keeps from training, but this one scores a run's own data, at its recipe's
holdout fraction, as its training loss (the phase's masking rate, 80/10/10 replacement, mntp's shifted labels), so
`ettin continue` can say how much a model learned of that data; the `lm` task scores the fixed evaluation files,
every encoder at one masking (15%, all [MASK]) with one seed, so that models of any recipe compare on one figure.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ettin.config import IGNORE_INDEX

HELD_OUT_TOKENS = 65_536  # tokens scored at most, all sources together
SCORE_ROWS = 16  # rows a forward pass


@dataclass
class HeldOut:
    """The held-out spans of a phase's data, ready to frame."""

    rows: list[list[tuple[np.ndarray, bool]]]  # one (span, ends its document) a row
    documents: dict[str, int] = field(default_factory=dict)  # source -> held-out documents scored
    tokens: int = 0  # document tokens in the rows (before [CLS] / [SEP])
    available: int = 0  # held-out documents there are, all sources together
    training_tokens: int = 0  # the tokens training may read (every source's documents before its held-out tail)


def held_out_rows(recipe, phase, max_tokens: int = HELD_OUT_TOKENS) -> HeldOut:
    """The held-out documents of `phase`'s mixture (every source's tail, `recipe.data.holdout_fraction`), cut
    into rows of `phase.seq_len`; an empty HeldOut when nothing is held out."""
    from ettin.data.holdout import HoldoutView
    from ettin.data.order import order_spec
    from ettin.data.ready import resolve_mixture
    from ettin.data.shards import TokenDataset

    held = HeldOut(rows=[])
    fraction = recipe.data.holdout_fraction
    if recipe.data.source != "prepared" or not fraction or order_spec(recipe.data.mixtures.get(phase.mixture)):
        return held  # (a replayed published order holds nothing out: ettin.data.order)
    os.environ.update(recipe.data.vars)  # as the loader reads the mixture's paths
    mixture = resolve_mixture(recipe, phase)
    size = phase.seq_len - 2
    per_source = max(size, max_tokens // max(1, len(mixture.sources)))
    opened: dict = {}
    for spec in mixture.sources:
        path = mixture.resolved_path(spec).resolve()
        if path not in opened:
            opened[path] = HoldoutView(TokenDataset(path), fraction)
        view = opened[path]
        ranges = view.held_out_ranges
        name = spec.subset if spec.subset is not None else next(iter(ranges))
        lo, hi = ranges[name]
        held.available += hi - lo
        first = view.source_ranges[name][0]
        held.training_tokens += int(np.asarray(view.doc_lengths[first:lo]).sum())
        used = 0
        for i in range(lo, hi):
            if used >= per_source:
                break
            rows = document_rows(view[i], per_source - used, size)
            held.rows.extend(rows)
            used += sum(len(row[0][0]) for row in rows)
            held.documents[spec.name] = held.documents.get(spec.name, 0) + 1
        held.tokens += used
    return held


def document_rows(document, budget: int, size: int) -> list[list[tuple[np.ndarray, bool]]]:
    """The first `budget` tokens of one document as rows of at most `size` tokens: [(span, ends the document)] each.
    Only a span that reaches the document's last token ends it (a document cut short by the budget does not)."""
    ids = np.asarray(document[:budget], dtype=np.int64)
    spans = [ids[start : start + size] for start in range(0, len(ids), size)]
    return [[(span, start + len(span) == len(document))] for start, span in zip(range(0, len(ids), size), spans)]


@torch.no_grad()
def score(model, held: HeldOut, tokenizer, collate_as: str, seq_len: int, mlm_probability: float, seed: int,
          device: torch.device | str = "cpu") -> dict:
    """{"loss": mean NLL (nats) of the predicted positions, "perplexity", "predicted": their count}."""
    from ettin.data.collate import SpecialTokens, collate, frame, row_keys

    special = SpecialTokens.coerce(tokenizer)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for first in range(0, len(held.rows), SCORE_ROWS):
        rows = held.rows[first : first + SCORE_ROWS]
        framed = frame(rows, seq_len, collate_as, special, packed=False)
        keys = None if collate_as == "clm" else row_keys(seed, "held-out", 0, np.arange(first, first + len(rows)))
        batch = collate(framed, collate_as, special, keys, mlm_probability)
        n = int((batch["labels"] != IGNORE_INDEX).sum())
        if n == 0:
            continue
        out = model(**{k: v.to(device) for k, v in batch.items()})
        total += float(out.loss) * n
        count += n
    model.train(was_training)
    loss = total / count if count else math.nan
    return {"loss": loss, "perplexity": math.exp(loss) if count else math.nan, "predicted": count}
