"""Where a phase's batches come from: the real `ettin.data` loader, or synthetic ids for speed checks.

Both expose the loader contract: `batch(step)` -> this rank's slice of global batch `step` (a pure
function of (seed, phase, step)), `fingerprint(num_steps)`, and the vocabulary / special ids the model
config needs. The synthetic source draws each global row from its own generator keyed by
(seed, phase, step, row), so ranks slice it exactly like the real loader; its rows are a noisy
stride walk, so a model can learn them (a falling loss is a meaningful smoke test).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ettin.data.collate import IGNORE

SYNTHETIC_SPECIAL = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2, mask_token_id=3)
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

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(SYNTHETIC_SPECIAL)

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


def loader_objective(objective: str, mntp: bool) -> str:
    """The collator's objective: mntp turns a decoder into an encoder (bidirectional model, shifted labels)."""
    return "mntp" if (mntp and objective == "mlm") else objective


def make_source(recipe, phase, objective: str, rank: int, world_size: int, tokenizer=None):
    """The batch source of one phase for one rank."""
    data = recipe.data
    collate_objective = loader_objective(objective, recipe.train.mntp)
    if data.source == "synthetic":
        return SyntheticSource(
            vocab_size=data.vocab_size, seq_len=phase.seq_len, global_batch_size=recipe.batch_size(phase),
            seed=recipe.seed, phase=phase.name, objective=collate_objective, rank=rank, world_size=world_size,
            mlm_probability=phase.mlm_probability,
        )
    from ettin.data.loader import PhaseLoader

    os.environ.update(recipe.data.vars)
    mixture = resolve_mixture(recipe, phase)
    return PreparedSource(
        PhaseLoader(
            mixture, tokenizer, phase.seq_len, recipe.batch_size(phase), recipe.seed, phase.name,
            collate_objective, rank=rank, world_size=world_size, mlm_probability=phase.mlm_probability,
            datasets=training_side(mixture, recipe.data.holdout_fraction),
        ),
        tokenizer,
    )


def held_out(num_docs: int, fraction: float) -> int:
    """Documents reserved for evaluation at the end of a source: ceil(fraction x docs), as ettin.eval."""
    return math.ceil(fraction * num_docs) if num_docs and fraction else 0


class HoldoutView:
    """A prepared dataset with the last ceil(fraction x documents) of every source cut off.

    Counted over the source's *read* documents (stored + empty), so whatever rows the evaluation holds
    out of the original file are never trained on."""

    def __init__(self, ds, fraction: float):
        self._ds = ds
        read = {e["name"]: e.get("documents_read", e.get("documents", 0)) for e in ds.manifest["sources"]}
        self.source_ranges = {
            name: (lo, max(lo, hi - held_out(read.get(name, hi - lo), fraction)))
            for name, (lo, hi) in ds.source_ranges.items()
        }
        self._len = len(ds) if len(self.source_ranges) != 1 else next(iter(self.source_ranges.values()))[1]

    def __len__(self) -> int:  # a whole single-source folder is read as documents [0, len)
        return self._len

    def __getitem__(self, i: int):
        return self._ds[i]

    def __getattr__(self, name: str):
        return getattr(self._ds, name)


def training_side(mixture, fraction: float) -> dict | None:
    """The loader's `datasets` argument: every source of the mixture through a HoldoutView."""
    if not fraction:
        return None
    from ettin.data.shards import TokenDataset

    views, opened = {}, {}
    for spec in mixture.sources:
        path = mixture.resolved_path(spec).resolve()
        if path not in opened:
            opened[path] = HoldoutView(TokenDataset(path), fraction)
        view = opened[path]
        if spec.subset is None and len(view.source_ranges) > 1:
            raise ValueError(f"{mixture.file}: sources[{spec.name}]: holding out evaluation documents needs "
                             f"`subset:` for a folder of several sources ({sorted(view.source_ranges)})")
        views[spec.name] = view
    return views


def ensure_data(recipe, log=print) -> None:
    """Train the tokenizer and prepare the shards a recipe names, when missing (main rank only)."""
    prep, data = recipe.data.prepare, recipe.data
    if data.source != "prepared" or prep is None:
        return
    from ettin.data.prepare import PrepareConfig, prepare
    from ettin.data.tokenizer import load_tokenizer

    tokenizer_path = Path(data.tokenizer)
    if not tokenizer_path.exists():
        if not prep.tokenizer_vocab_size:
            raise FileNotFoundError(f"{recipe.source_file}: data.tokenizer {tokenizer_path} does not exist "
                                    "(set data.prepare.tokenizer_vocab_size to train one)")
        log(f"training a {prep.tokenizer_vocab_size}-token tokenizer -> {tokenizer_path}")
        train_tokenizer_for(prep.sources, prep.tokenizer_vocab_size, data.holdout_fraction, tokenizer_path)
    prepare(prep.sources, load_tokenizer(tokenizer_path), PrepareConfig(out=Path(prep.out), workers=prep.workers,
                                                                        log=log))


def train_tokenizer_for(sources: list[str], vocab_size: int, fraction: float, out: Path) -> None:
    """A byte-level BPE on the training side of each source (the held-out tail is not seen)."""
    from ettin.data.sources import iter_documents
    from ettin.data.tokenizer import save_tokenizer, train_tokenizer

    texts: list[str] = []
    for spec in sources:
        docs = [d.text for d in iter_documents(spec) if d.text]
        texts.extend(docs[: len(docs) - held_out(len(docs), fraction)])
    tokenizer = train_tokenizer(texts, vocab_size)
    folder = out.parent if out.suffix == ".json" else out
    written = save_tokenizer(tokenizer, folder)
    if out.suffix == ".json" and (Path(written) / "tokenizer.json") != out:
        os.replace(Path(written) / "tokenizer.json", out)


def resolve_mixture(recipe, phase):
    """data.mixtures[phase.mixture]: a mixture YAML path (relative to the recipe file) or an inline mapping."""
    from ettin.data.mixture import load_mixture, mixture_from_dict

    spec = recipe.data.mixtures.get(phase.mixture, phase.mixture)
    if isinstance(spec, dict):
        return mixture_from_dict(spec, file=f"{recipe.source_file}: data.mixtures.{phase.mixture}")
    path = Path(str(spec))
    if not path.is_absolute() and not path.exists():
        path = Path(recipe.source_file).parent / path
    return load_mixture(path)


class PreparedSource:
    """The `ettin.data.loader.PhaseLoader`, plus the special ids of its tokenizer."""

    def __init__(self, loader, tokenizer):
        self.loader = loader
        self.tokenizer = tokenizer

    @property
    def special_ids(self) -> dict[str, int]:
        t = self.tokenizer
        return dict(pad_token_id=t.pad_id, bos_token_id=t.cls_id, eos_token_id=t.sep_id, mask_token_id=t.mask_id)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        return self.loader.batch(step)

    def fingerprint(self, num_steps: int) -> str:
        return self.loader.fingerprint(num_steps)
