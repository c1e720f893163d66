"""Synthetic batches for speed checks and smoke tests: no tokenizer, no files.

The source has the loader contract (`batch(step)`: this rank's slice of global batch `step`, a pure function
of (seed, phase, step); `fingerprint(num_steps)`). Each global row is drawn from its own generator keyed by
(seed, phase, step, row), so ranks slice it exactly like the real loader. A row's content is a noisy stride
walk, so a model can learn it (a falling loss is a meaningful smoke test), the same for every objective; the
real collators (ettin.data.collate) frame and mask it, as they do prepared data:
  clm        [CLS] + the row's seq_len - 1 content tokens (a chunk that fills the row: no [SEP])
  mlm, mntp  [CLS] + the first seq_len - 2 of them + [SEP], then BERT masking (80% [MASK], 10% random, 10% kept)
             with the row's generator
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from ettin.config import special_token_ids
from ettin.data.collate import SpecialTokens, collate, frame, row_keys

SYNTHETIC_SPECIAL = special_token_ids(pad=0, cls=1, sep=2, mask=3)
_FIRST_CONTENT = 4
FINGERPRINT_ROWS = 4096  # the fingerprint hashes the content of (at most) this many global rows


@dataclass
class SyntheticSource:
    vocab_size: int
    seq_len: int
    global_batch_size: int
    seed: int
    phase: str
    objective: str  # a collation: mlm, clm or mntp
    rank: int = 0
    world_size: int = 1
    mlm_probability: float = 0.3
    special: SpecialTokens = field(init=False)

    def __post_init__(self) -> None:
        s = SYNTHETIC_SPECIAL
        self.special = SpecialTokens(cls_id=s["bos_token_id"], sep_id=s["eos_token_id"], pad_id=s["pad_token_id"],
                                     mask_id=s["mask_token_id"], num_tokens=self.vocab_size)

    def row(self, step: int, row: int) -> np.ndarray:
        """Global row `row` of batch `step`: its seq_len - 1 content tokens, the same for every objective."""
        key = int.from_bytes(hashlib.sha256(f"{self.seed}/{self.phase}/{step}/{row}".encode()).digest()[:8], "little")
        rng = np.random.default_rng(key)
        span = self.vocab_size - _FIRST_CONTENT
        common = max(8, span // 4)  # the walk visits a quarter of the vocabulary: a skewed unigram
        walk = (int(rng.integers(common)) + 3 * np.arange(self.seq_len)) % common  # a predictable stride
        noise = rng.random(self.seq_len) < 0.1  # ... with 10% random tokens
        ids = _FIRST_CONTENT + np.where(noise, rng.integers(span, size=self.seq_len), walk)
        return ids[1:]  # position 0 is the row's [CLS]

    def rank_rows(self, step: int) -> np.ndarray:
        """Rows of the global batch that this rank holds: r, r + w, r + 2w, ... (the rule of every source,
        ettin.data.loader)."""
        return np.arange(self.rank, self.global_batch_size, self.world_size)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        rows = self.rank_rows(step)
        keep = self.seq_len - (1 if self.objective == "clm" else 2)  # room for [CLS] (and [SEP])
        framed = frame([[(self.row(step, int(r))[:keep], False)] for r in rows], self.seq_len, self.objective,
                       self.special, packed=False)
        keys = None if self.objective == "clm" else row_keys(self.seed, self.phase, step, rows)
        return collate(framed, self.objective, self.special, keys, self.mlm_probability)

    def global_tokens(self, step: int) -> int:
        """Real tokens of global batch `step`: every row is full."""
        return self.global_batch_size * self.seq_len

    def step_item(self, step: int) -> tuple[dict[str, torch.Tensor], int]:
        return self.batch(step), self.global_tokens(step)

    def fingerprint(self, num_steps: int) -> str:
        """sha256 of the sizes and of the content tokens of the first global rows (all of them up to
        FINGERPRINT_ROWS rows): the same for every objective, different whenever the rows are."""
        digest = hashlib.sha256(json.dumps(
            {"synthetic": [self.vocab_size, self.seq_len, self.global_batch_size, self.seed, self.phase, num_steps]}
        ).encode())
        for step in range(min(num_steps, max(1, FINGERPRINT_ROWS // self.global_batch_size))):
            for r in range(self.global_batch_size):
                digest.update(self.row(step, r).tobytes())
        return digest.hexdigest()
