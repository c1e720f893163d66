"""Collators: instance spans -> framed rows -> the tensors each objective trains on.

Framing (objective-specific; the spans, and so the batch order, are not):
  mlm, mntp: every segment is `[CLS] span [SEP]`.
  clm:       every segment is `[CLS] span`, plus `[SEP]` only where the span ends its document
             ([CLS] is the BOS, as the reference's decoders; no [SEP] forced in mid-document chunks).
Rows are right-padded with [PAD] to seq_len; `attention_mask` is 1 on real tokens, 0 on padding.
Packed rows (several segments) also get `position_ids` restarting at 0 at every segment (padding
continues as one more run from 0), the model's "flattening" convention.

Objectives (labels are ALIGNED targets, -100 = ignore, as the model contract says):
  mlm:  each non-special, non-pad token is selected with probability `rate`; a selected token becomes
        [MASK] (80%), a random non-special token (10%) or stays (10%); labels = the original token at
        selected positions, -100 elsewhere.
  clm:  labels[t] = input_ids[t + 1] when t + 1 is in the same segment; -100 at each segment's last
        token and on padding: no loss across a document boundary.
  mntp: masked next-token prediction (LLM2Vec): selection and replacement as mlm, but the label of a
        selected position i sits at i - 1 (predicted from the previous position, causal-style);
        -100 elsewhere. Position 0 of a segment is [CLS], never selected, so i - 1 stays inside it.
Randomness comes from one key per *global row*, derived from (seed, phase, step, row) (`row_keys`), and a
counter-based stream of it (`select_and_replace`): the masks do not depend on the rank, the world size or the
worker that builds the row, and a resumed run redraws exactly the same ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ettin import config
from ettin.data.keyed import derive_key, stream

OBJECTIVES = (*config.OBJECTIVES, "mntp")  # the models' objectives, and mntp (an mlm model on shifted labels)
IGNORE = config.IGNORE_INDEX


def collation_objective(objective: str, mntp: bool) -> str:
    """The collation of a model objective: `mntp` turns a decoder into an encoder (bidirectional model, labels
    shifted), so an mlm model with mntp collates as "mntp"."""
    return "mntp" if (mntp and objective == "mlm") else objective


@dataclass(frozen=True)
class SpecialTokens:
    """The ids the collators need. `num_tokens`: ids [0, num_tokens) exist (random replacements are drawn
    from those that are not special)."""

    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    num_tokens: int
    special_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "special_ids",
            tuple(sorted({*self.special_ids, self.cls_id, self.sep_id, self.pad_id, self.mask_id})),
        )

    @classmethod
    def coerce(cls, info: object) -> SpecialTokens:
        """From a SpecialTokens, an `ettin.data.tokenizer.TokenizerInfo`, a `tokenizers.Tokenizer`, a path
        to a tokenizer.json (or its folder), or a dict/object with cls/sep/pad/mask ids and vocab_size."""
        if isinstance(info, SpecialTokens):
            return info
        if isinstance(info, (str, bytes)) or hasattr(info, "__fspath__"):
            from ettin.data.tokenizer import load_tokenizer

            info = load_tokenizer(info)
        if type(info).__name__ == "Tokenizer" and hasattr(info, "get_added_tokens_decoder"):
            from ettin.data.tokenizer import tokenizer_info

            info = tokenizer_info(info)

        def get(*names: str):
            for name in names:
                value = info.get(name) if isinstance(info, dict) else getattr(info, name, None)
                if value is not None:
                    return value
            return None

        ids = {role: get(f"{role}_id", f"{role}_token_id") for role in ("cls", "sep", "pad", "mask")}
        missing = [role for role, value in ids.items() if value is None]
        if missing:
            raise ValueError(f"tokenizer has no {', '.join(f'[{m.upper()}]' for m in missing)} token id")
        tokenizer = get("tokenizer")
        num = (
            tokenizer.get_vocab_size(with_added_tokens=True)
            if tokenizer is not None
            else get("num_tokens", "vocab_size")
        )
        if num is None:
            raise ValueError("tokenizer info has neither a tokenizer nor vocab_size")
        return cls(
            **{f"{k}_id": int(v) for k, v in ids.items()},
            num_tokens=int(num),
            special_ids=tuple(int(i) for i in (get("special_ids", "all_special_ids") or ())),
        )

    def replacement_ids(self) -> np.ndarray:
        """Ids a 10%-random replacement may take: every existing id that is not special."""
        return np.setdiff1d(
            np.arange(self.num_tokens, dtype=np.int64), np.asarray(self.special_ids, dtype=np.int64)
        )


@dataclass
class Framed:
    """Rows before the objective: numpy (B, T) arrays."""

    input_ids: np.ndarray  # (B, T) int64, [PAD] after the last segment
    segment: np.ndarray  # (B, T) int32: segment number within the row, -1 on padding
    position_ids: np.ndarray  # (B, T) int64, restarting at 0 per segment
    packed: bool

    @property
    def attention_mask(self) -> np.ndarray:
        return (self.segment >= 0).astype(np.int64)


def frame(
    rows: list[list[tuple[np.ndarray, bool]]],
    seq_len: int,
    objective: str,
    special: SpecialTokens,
    packed: bool,
) -> Framed:
    """rows[b] = [(span tokens, span ends its document), ...] -> framed (B, seq_len) arrays."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    batch = len(rows)
    ids = np.full((batch, seq_len), special.pad_id, dtype=np.int64)
    segment = np.full((batch, seq_len), -1, dtype=np.int32)
    positions = np.zeros((batch, seq_len), dtype=np.int64)
    always_sep = objective != "clm"
    for b, row in enumerate(rows):
        t = 0
        for s, (tokens, ends_doc) in enumerate(row):
            n = len(tokens)
            end = t + 1 + n + (1 if always_sep or ends_doc else 0)
            if end > seq_len:
                raise ValueError(
                    f"row {b}: {end} tokens do not fit seq_len {seq_len} (instance index mismatch?)"
                )
            ids[b, t] = special.cls_id
            ids[b, t + 1 : t + 1 + n] = tokens
            if end > t + 1 + n:
                ids[b, end - 1] = special.sep_id
            segment[b, t:end] = s
            positions[b, t:end] = np.arange(end - t)
            t = end
        positions[b, t:] = np.arange(seq_len - t)
    return Framed(ids, segment, positions, packed)


def row_keys(seed: int, phase: str, step: int, rows: np.ndarray) -> np.ndarray:
    """The masking keys of global rows `rows` of batch `step`: (len(rows),) uint64, output `row` of the step's
    SplitMix64 stream, so a row's key depends on its global index only, never on the rank or batch around it."""
    step_key = np.array([derive_key(seed, phase, "collate", step)], dtype=np.uint64)
    return stream(step_key, np.asarray(rows, dtype=np.int64).astype(np.uint64))


def dropout_keys(seed: int, phase: str, step: int, rows: np.ndarray) -> torch.Tensor:
    """(len(rows), 2) int64: two 31-bit keys for each global row `rows` of batch `step`, from which the model hashes
    the row's dropout masks (ettin.dropout): a function of the global row, never of the rank or micro-batch."""
    key = np.array([derive_key(seed, phase, "dropout", step)], dtype=np.uint64)
    bits = stream(key, np.asarray(rows, dtype=np.int64).astype(np.uint64))
    low31 = np.uint64((1 << 31) - 1)
    return torch.from_numpy(np.stack([bits & low31, (bits >> np.uint64(32)) & low31], axis=1).astype(np.int64))


def _below(p: float) -> np.uint64:
    """The uint32 threshold t with P(u < t) = p for a uniform 32-bit u (rounded up to the next 2^-32)."""
    return np.uint64(math.ceil(p * 2**32))


_LOW32, _SHIFT32 = np.uint64(0xFFFFFFFF), np.uint64(32)


def select_and_replace(
    framed: Framed,
    rate: float,
    keys: np.ndarray,
    special: SpecialTokens,
    replacement_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking: -> (corrupted input_ids, selected mask), both (B, T).

    Row b's noise is the SplitMix64 stream of keys[b] (`ettin.data.keyed`): output t (t < T) decides position t,
    its high 32 bits whether it is selected (< rate) and its low 32 bits how it is corrupted (< 0.8 [MASK],
    < 0.9 a random token, else kept); output T + t picks position t's random token from the pool (multiply-shift
    of its high 32 bits). Vectorised over the batch: no generator objects, a third of the cost of drawing from
    one numpy Generator per row."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1), got {rate}")
    ids = framed.input_ids
    batch, length = ids.shape
    keys = np.asarray(keys, dtype=np.uint64)
    if keys.shape != (batch,):
        raise ValueError(f"mlm/mntp collation needs one key per row: {batch} rows, keys of shape {keys.shape}")
    pool = special.replacement_ids() if replacement_ids is None else replacement_ids
    noise = stream(keys[:, None], np.arange(length, dtype=np.uint64))  # (B, T)
    maskable = (framed.segment >= 0) & ~np.isin(ids, special.special_ids)
    selected = maskable & ((noise >> _SHIFT32) < _below(rate))
    how = np.bitwise_and(noise, _LOW32, out=noise)
    as_mask = selected & (how < _below(0.8))
    random_tok = selected & ~as_mask & (how < _below(0.9))
    out = ids.copy()
    out[as_mask] = special.mask_id
    r, t = np.nonzero(random_tok)
    if len(r):
        draw = stream(keys[r], (length + t).astype(np.uint64)) >> _SHIFT32  # uniform in [0, 2^32)
        out[r, t] = pool[(draw * np.uint64(len(pool))) >> _SHIFT32]  # < 2^64: no wrap
    return out, selected


def clm_labels(framed: Framed) -> np.ndarray:
    ids, seg = framed.input_ids, framed.segment
    labels = np.full_like(ids, IGNORE)
    same = (seg[:, :-1] == seg[:, 1:]) & (seg[:, :-1] >= 0)
    labels[:, :-1] = np.where(same, ids[:, 1:], IGNORE)
    return labels


def collate(
    framed: Framed,
    objective: str,
    special: SpecialTokens,
    keys: np.ndarray | None = None,
    mlm_probability: float = 0.3,
    replacement_ids: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Framed rows -> {input_ids, labels, attention_mask[, position_ids]} torch tensors (B, T) int64."""
    if objective == "clm":
        input_ids, labels = framed.input_ids, clm_labels(framed)
    elif objective in ("mlm", "mntp"):
        if keys is None:
            raise ValueError("mlm/mntp collation needs one key per row (`row_keys`)")
        input_ids, selected = select_and_replace(framed, mlm_probability, keys, special, replacement_ids)
        original = framed.input_ids
        if objective == "mlm":
            labels = np.where(selected, original, IGNORE)
        else:
            labels = np.full_like(original, IGNORE)
            labels[:, :-1] = np.where(selected[:, 1:], original[:, 1:], IGNORE)
    else:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    out = {
        "input_ids": torch.from_numpy(np.ascontiguousarray(input_ids)),
        "labels": torch.from_numpy(np.ascontiguousarray(labels)),
        "attention_mask": torch.from_numpy(framed.attention_mask),
    }
    if framed.packed:
        out["position_ids"] = torch.from_numpy(framed.position_ids)
    return out
