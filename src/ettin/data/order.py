"""The published batch order (jhu-clsp/ettin-data-order): search it, and replay it as a phase's data.

Layout (the dataset card): one folder per checkpoint interval, `checkpoint_NNNNNN` (pre-training), `ext_NNNNNN`
(extension), `decay_NNNNNN` (decay), each holding zstd Parquet files `steps_AAAAAA_to_BBBBBB.parquet` with columns
`input_ids` (list<uint16>: the row's tokens) and `step` (the optimizer step within the phase, from 1). The masks
were not recorded. Within a folder the rows of a step follow one another in file order; `row` below is a row's
index among its step's rows, counted over the folder.

  where(folder, ids)            every row holding `ids` as a contiguous run: {"folder", "file", "step", "row"};
                                streamed (pyarrow `iter_batches`), never a whole file in memory
  OrderSource(...)              the loader contract (`step_item(step)`, `global_tokens`, `fingerprint`) over the
                                recorded rows: ettin step k is the k-th recorded step of the phase's folders (in
                                folder order), framed as ettin frames a document ([CLS] tokens [SEP]) and masked
                                with ettin's own keys (the published masks are unknown)
A recipe replays a phase by naming an order as its mixture: `data.mixtures.<name>: {order: FOLDER}` (FOLDER: a
phase folder such as `decay_000001`, or a folder of them with `phase: decay` picking the `decay_*` ones).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from ettin.data.collate import SpecialTokens, collate, frame, row_keys
from ettin.io import UserError

PREFIXES = {"pretrain": "checkpoint_", "extension": "ext_", "decay": "decay_"}  # the dataset card's folder names
COLUMNS = ("input_ids", "step")
READ_ROWS = 8192  # rows per record batch when streaming


def phase_folders(root: str | Path, phase: str | None = None) -> list[Path]:
    """The order folders under `root` in training order: `root` itself when it holds Parquet files, else its
    `checkpoint_*`, `ext_*`, `decay_*` folders (only `phase`'s when given), phase by phase, by number."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{root}: no such order folder")
    if any(root.glob("*.parquet")):
        return [root]
    prefixes = [PREFIXES[phase]] if phase else list(PREFIXES.values())
    found = [d for p in prefixes for d in sorted(root.glob(f"{p}*"), key=_number) if d.is_dir()]
    if not found:
        raise UserError(f"{root}: no Parquet files and no {'/'.join(p + '*' for p in prefixes)} folders")
    return found


def _number(path: Path) -> tuple[int, str]:
    digits = re.findall(r"\d+", path.name)
    return (int(digits[-1]) if digits else -1, path.name)


def order_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.parquet"), key=_number)
    if not files:
        raise UserError(f"{folder}: no Parquet files")
    return files


def _check_schema(path: Path, schema) -> None:
    names = set(schema.names)
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise UserError(f"{path}: no column {', '.join(missing)} (the order files have input_ids and step)")


def _batches(path: Path):
    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # not Parquet, truncated
        raise UserError(f"{path}: not readable as Parquet ({e})") from None
    _check_schema(path, f.schema_arrow)
    yield from f.iter_batches(batch_size=READ_ROWS, columns=list(COLUMNS))


def _flat(path: Path, column) -> tuple[np.ndarray, np.ndarray]:
    """A list column's (values, offsets) as numpy, without copying the values when it can."""
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if column.null_count:
        raise UserError(f"{path}: input_ids holds nulls")
    values = column.values.to_numpy(zero_copy_only=False)
    offsets = column.offsets.to_numpy()
    if offsets[0]:
        values, offsets = values[offsets[0]:offsets[-1]], offsets - offsets[0]
    return values, offsets


def find_rows(values: np.ndarray, offsets: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Indices of the rows (values[offsets[r]:offsets[r + 1]]) holding `ids` as a contiguous run, ascending."""
    n = len(ids)
    if n == 0 or len(values) < n:
        return np.empty(0, dtype=np.int64)
    start = np.flatnonzero(values[: len(values) - n + 1] == ids[0])
    for k in range(1, n):  # narrow the candidates one token at a time
        if not len(start):
            break
        start = start[values[start + k] == ids[k]]
    rows = np.searchsorted(offsets, start, side="right") - 1
    rows = rows[start + n <= offsets[rows + 1]]  # the run must not cross into the next row
    return np.unique(rows)


def where(root: str | Path, ids: list[int], phase: str | None = None) -> Iterator[dict]:
    """Every row of the order under `root` that holds `ids`, in order (one dict a row)."""
    needle = np.asarray(ids, dtype=np.int64)
    if needle.size == 0:
        raise UserError("no token ids to search for")
    for folder in phase_folders(root, phase):
        seen: dict[int, int] = {}  # step -> its rows before this record batch (in this folder)
        for path in order_files(folder):
            for batch in _batches(path):
                values, offsets = _flat(path, batch.column(0))
                steps = batch.column(1).to_numpy(zero_copy_only=False)
                fits = values.dtype.kind != "u" or (needle.min() >= 0 and needle.max() <= np.iinfo(values.dtype).max)
                if fits:  # ids a uint16 column cannot hold are in no row
                    for r in find_rows(values, offsets, needle.astype(values.dtype, copy=False)):
                        s = int(steps[r])
                        row = seen.get(s, 0) + int(np.count_nonzero(steps[:r] == s))
                        yield {"folder": folder.name, "file": path.name, "step": s, "row": row}
                uniq, counts = np.unique(steps, return_counts=True)
                for s, c in zip(uniq.tolist(), counts.tolist()):
                    seen[s] = seen.get(s, 0) + c


# ------------------------------------------------------------------------------------------ replay
@dataclass(frozen=True)
class _Span:
    path: Path
    start: int  # first row of the step in the file
    count: int


def index_steps(folders: list[Path]) -> list[list[_Span]]:
    """The recorded steps of the folders, in order: each a list of row spans (a step may span two files). Reads the
    `step` column alone."""
    steps: list[list[_Span]] = []
    for folder in folders:
        last = None
        for path in order_files(folder):
            f = pq.ParquetFile(path)
            _check_schema(path, f.schema_arrow)
            column = f.read(columns=["step"]).column(0).to_numpy()
            if not len(column):
                continue
            cuts = np.flatnonzero(np.diff(column)) + 1
            starts = np.concatenate([[0], cuts])
            ends = np.concatenate([cuts, [len(column)]])
            for a, b in zip(starts.tolist(), ends.tolist()):
                step = int(column[a])
                if last == step:  # the step goes on from the previous file
                    steps[-1].append(_Span(path, a, b - a))
                else:
                    steps.append([_Span(path, a, b - a)])
                last = step
    return steps


def read_rows(span: _Span) -> list[np.ndarray]:
    """The rows of a span, reading only the row groups that hold them."""
    f = pq.ParquetFile(span.path)
    meta, out, first = f.metadata, [], 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        lo, hi = max(span.start, first), min(span.start + span.count, first + n)
        if lo < hi:
            column = f.read_row_group(g, columns=["input_ids"]).column(0).slice(lo - first, hi - lo)
            values, offsets = _flat(span.path, column)
            out.extend(values[offsets[i]:offsets[i + 1]].astype(np.int64) for i in range(len(offsets) - 1))
        first += n
    return out


@dataclass
class OrderSource:
    """The loader contract over a published order: ettin step k = the phase's k-th recorded step."""

    folders: list[Path]
    seq_len: int
    global_batch_size: int
    seed: int
    phase: str
    objective: str  # a collation: mlm, clm or mntp
    special: SpecialTokens
    rank: int = 0
    world_size: int = 1
    mlm_probability: float = 0.3
    steps: list[list[_Span]] = field(init=False)

    def __post_init__(self) -> None:
        self.steps = index_steps(self.folders)
        if not self.steps:
            raise UserError(f"{self.folders[0]}: the order holds no rows")

    def rows(self, step: int) -> list[np.ndarray]:
        """Global step `step`'s rows as content tokens (a recorded [CLS] / [SEP] / padding stripped)."""
        if step >= len(self.steps):
            raise UserError(f"{self.folders[-1]}: the order has {len(self.steps)} steps; step {step + 1} was asked "
                            "(the phase's budget is longer than its recorded order)")
        rows = [r for span in self.steps[step] for r in read_rows(span)]
        if len(rows) != self.global_batch_size:
            where = self.steps[step][0]
            raise UserError(f"{where.path}: step at row {where.start} holds {len(rows)} rows; the recipe's batch is "
                            f"{self.global_batch_size} (set the phase's global_batch_size to the recorded one)")
        s = self.special
        keep = self.seq_len - 2
        out = []
        for r in rows:
            end = len(r)
            while end and r[end - 1] == s.pad_id:
                end -= 1
            lo = 1 if end and r[0] == s.cls_id else 0
            hi = end - 1 if end > lo and r[end - 1] == s.sep_id else end
            out.append(r[lo:hi][:keep])
        return out

    def rank_rows(self, step: int) -> np.ndarray:
        return np.arange(self.rank, self.global_batch_size, self.world_size)

    def step_item(self, step: int) -> tuple[dict[str, torch.Tensor], int]:
        rows = self.rows(step)
        mine = self.rank_rows(step)
        framed = frame([[(rows[int(r)], True)] for r in mine], self.seq_len, self.objective, self.special,
                       packed=False)
        keys = None if self.objective == "clm" else row_keys(self.seed, self.phase, step, mine)
        pool = self.special.replacement_ids()  # random replacements: the non-special ids, as PhaseLoader draws them
        return collate(framed, self.objective, self.special, keys, self.mlm_probability, pool), _real(rows)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        return self.step_item(step)[0]

    def global_tokens(self, step: int) -> int:
        """Real tokens of recorded step `step`; 0 past the order's end (the loop's fill estimate samples the first
        64 steps, which a short order does not have: training there is refused by `rows`)."""
        return _real(self.rows(step)) if step < len(self.steps) else 0

    def fingerprint(self, num_steps: int) -> str:
        digest = hashlib.sha256(json.dumps({"order": [f.name for f in self.folders], "seq_len": self.seq_len,
                                            "steps": num_steps}).encode())
        for step in range(min(num_steps, len(self.steps), 4)):
            for r in self.rows(step):
                digest.update(r.tobytes())
        return digest.hexdigest()


def _real(rows: list[np.ndarray]) -> int:
    return sum(len(r) + 2 for r in rows)  # [CLS] + tokens + [SEP]


def order_spec(spec) -> dict | None:
    """A mixture spec that names a published order (`{order: FOLDER[, phase: NAME]}`), else None."""
    return spec if isinstance(spec, dict) and "order" in spec else None


def order_folders(spec: dict, recipe_file: str, mixture: str) -> list[Path]:
    """The folders an order mixture names (relative paths: to the working directory, else to the recipe)."""
    where = f"{recipe_file}: data.mixtures.{mixture}"
    unknown = sorted(set(spec) - {"order", "phase", "name"})
    if unknown:
        raise UserError(f"{where}: an order mixture takes order and phase, not {', '.join(unknown)}")
    path = Path(str(spec["order"])).expanduser()
    if not path.is_absolute() and not path.exists():
        path = Path(recipe_file).parent / path
    if spec.get("phase") not in (None, *PREFIXES):
        raise UserError(f"{where}.phase: one of {', '.join(PREFIXES)}, got {spec.get('phase')!r}")
    return phase_folders(path, spec.get("phase"))


def open_order(spec: dict, recipe_file: str, phase, objective: str, special: SpecialTokens, seed: int,
               global_batch: int, rank: int, world_size: int) -> OrderSource:
    return OrderSource(order_folders(spec, recipe_file, phase.mixture), phase.seq_len, global_batch, seed,
                       phase.name, objective, special, rank, world_size, phase.mlm_probability)
