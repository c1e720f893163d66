"""Synthetic batches for speed checks and smoke tests: no tokenizer, no files.

The source has the loader contract (`batch(step)`: this rank's slice of global batch `step`, a pure function
of (seed, phase, step); `fingerprint(num_steps)`). Each global row is drawn from its own generator keyed by
(seed, phase, step, row), so ranks slice it exactly like the real loader; its rows are a noisy stride walk,
so a model can learn them (a falling loss is a meaningful smoke test).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ettin.config import special_token_ids
from ettin.data.collate import IGNORE

SYNTHETIC_SPECIAL = special_token_ids(pad=0, cls=1, sep=2, mask=3)
_FIRST_CONTENT = 4


@dataclass
class SyntheticSource:
    vocab_size: int
    seq_len: int
    global_batch_size: int
    seed: int
    phase: str
    objective: str
    rank: int = 0
    world_size: int = 1
    mlm_probability: float = 0.3

    def _row(self, step: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        key = int.from_bytes(hashlib.sha256(f"{self.seed}/{self.phase}/{step}/{row}".encode()).digest()[:8], "little")
        rng = np.random.default_rng(key)
        span = self.vocab_size - _FIRST_CONTENT
        common = max(8, span // 4)  # the walk visits a quarter of the vocabulary: a skewed unigram
        walk = (int(rng.integers(common)) + 3 * np.arange(self.seq_len)) % common  # a predictable stride
        noise = rng.random(self.seq_len) < 0.1  # ... with 10% random tokens
        ids = _FIRST_CONTENT + np.where(noise, rng.integers(span, size=self.seq_len), walk)
        ids[0] = SYNTHETIC_SPECIAL["bos_token_id"]
        if self.objective == "clm":
            labels = np.full_like(ids, IGNORE)
            labels[:-1] = ids[1:]
            return ids, labels
        selected = rng.random(self.seq_len) < self.mlm_probability
        selected[0] = False
        labels = np.where(selected, ids, IGNORE)
        inputs = ids.copy()
        if self.objective == "mntp":  # the label of a selected position i sits at i - 1
            labels = np.full_like(ids, IGNORE)
            labels[:-1] = np.where(selected[1:], ids[1:], IGNORE)
        inputs[selected] = SYNTHETIC_SPECIAL["mask_token_id"]
        return inputs, labels

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        if self.global_batch_size % self.world_size:
            raise ValueError(f"global batch {self.global_batch_size} is not divisible by {self.world_size} ranks")
        per_rank = self.global_batch_size // self.world_size
        rows = range(self.rank * per_rank, (self.rank + 1) * per_rank)
        pairs = [self._row(step, r) for r in rows]
        ids = torch.from_numpy(np.stack([p[0] for p in pairs]))
        return {
            "input_ids": ids,  # (B_rank, T)
            "labels": torch.from_numpy(np.stack([p[1] for p in pairs])),
            "attention_mask": torch.ones_like(ids),
        }

    def fingerprint(self, num_steps: int) -> str:
        """Depends on the order of the (unmasked) rows only, so it is the same for every objective."""
        digest = hashlib.sha256(f"synthetic/{self.vocab_size}/{self.seq_len}/{self.global_batch_size}".encode())
        digest.update(f"{self.seed}/{self.phase}/{num_steps}".encode())
        return digest.hexdigest()[:16]
