"""The held-out rule, in one place: the LAST ceil(fraction x documents) of every source are reserved for
evaluation and never trained on (the tokenizer trainer does not see them either).

Training applies it through `training_side` (a `HoldoutView` per prepared source, which the phase loader
reads instead of the whole dataset); evaluation reads the same tail of the pretraining files through
`held_out_range` (ettin.eval.tasks.data). The default fraction, `HOLDOUT_FRACTION`, is the recipes' and the
evaluation's.
"""

from __future__ import annotations

import math

HOLDOUT_FRACTION = 0.02


def held_out_count(num_docs: int, fraction: float = HOLDOUT_FRACTION) -> int:
    """How many documents at the end of a source of num_docs documents are held out: ceil(fraction x docs)."""
    return math.ceil(fraction * num_docs) if num_docs and fraction else 0


def held_out_range(num_docs: int, fraction: float = HOLDOUT_FRACTION) -> range:
    """Document indices reserved for evaluation: the last ceil(fraction x num_docs) documents."""
    return range(num_docs - held_out_count(num_docs, fraction), num_docs)


def training_part(docs: list, fraction: float) -> list:
    """The documents of a source that may be trained on (the held-out tail cut off)."""
    return docs[: len(docs) - held_out_count(len(docs), fraction)]


class HoldoutView:
    """A prepared dataset with the last ceil(fraction x documents) of every source cut off.

    Counted over the source's *read* documents (stored + empty), so whatever rows the evaluation holds
    out of the original file are never trained on."""

    def __init__(self, ds, fraction: float):
        self._ds = ds
        read = {e["name"]: e.get("documents_read", e.get("documents", 0)) for e in ds.manifest["sources"]}
        self.source_ranges = {
            name: (lo, max(lo, hi - held_out_count(read.get(name, hi - lo), fraction)))
            for name, (lo, hi) in ds.source_ranges.items()
        }
        self._len = len(ds) if len(self.source_ranges) != 1 else next(iter(self.source_ranges.values()))[1]

    @property
    def held_out_ranges(self) -> dict[str, tuple[int, int]]:
        """Per source, the stored documents [first, end) that training never reads (the evaluation's)."""
        return {name: (self.source_ranges[name][1], hi) for name, (_, hi) in self._ds.source_ranges.items()}

    def __len__(self) -> int:  # a whole single-source folder is read as documents [0, len)
        return self._len

    def __getitem__(self, i: int):
        return self._ds[i]

    def __getattr__(self, name: str):
        if name == "_ds":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._ds, name)


def training_side(mixture, fraction: float) -> dict | None:
    """The phase loader's `datasets` argument: every source of the mixture through a HoldoutView (None when
    nothing is held out)."""
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
