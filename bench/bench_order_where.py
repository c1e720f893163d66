"""`ettin data where` speed: rows/s and tokens/s of the streamed search over a published-format order folder
(zstd Parquet, input_ids list<uint16>, step), against a baseline measured in the same run: a plain pyarrow read of
the same files whole (`pq.read_table` of both columns, values to numpy), the least any search over them must do.

    .venv/bin/python bench/bench_order_where.py [--steps 40] [--rows 512] [--tokens 600] [--repeat 3]

Writes the order once under runs/bench/order/ (the sizes in its name), 4,608-row steps at the published size by
default scaled down to --rows; each measurement alternates the two sides, median of --repeat. Results also go to
runs/bench/order_where.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ettin.data.order import order_files, phase_folders, where

REPO = Path(__file__).resolve().parents[1]


def build(folder: Path, steps: int, rows: int, tokens: int, per_file: int = 100) -> int:
    """Random rows (lengths about `tokens`, as the published 1,024-slot rows hold ~615) and one planted needle."""
    if folder.is_dir() and any(folder.glob("*.parquet")):
        return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet"))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for first in range(1, steps + 1, per_file):
        last = min(steps, first + per_file - 1)
        n = (last - first + 1) * rows
        lengths = rng.integers(tokens // 2, tokens * 3 // 2, n)
        values = rng.integers(5, 50_000, int(lengths.sum())).astype(np.uint16)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        values[offsets[n // 2] + 3: offsets[n // 2] + 6] = [60_001, 60_002, 60_003]  # the needle, once
        column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.uint16()))
        step = np.repeat(np.arange(first, last + 1), rows)
        pq.write_table(pa.table({"input_ids": column, "step": step}), folder / f"steps_{first:06d}_to_{last:06d}"
                       ".parquet", compression="zstd")
    return steps * rows


def full_read(folder: Path) -> int:
    total = 0
    for path in order_files(folder):
        table = pq.read_table(path, columns=["input_ids", "step"])
        column = table.column(0).combine_chunks()
        total += len(column.values.to_numpy(zero_copy_only=False)) + len(table.column(1).to_numpy())
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    folder = REPO / "runs" / "bench" / "order" / f"checkpoint_{args.steps}x{args.rows}x{args.tokens}"
    rows = build(folder, args.steps, args.rows, args.tokens)
    folder_size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    tokens = full_read(folder)  # also warms the page cache for both sides
    base, ours = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        full_read(folder)
        base.append(time.perf_counter() - t)
        t = time.perf_counter()
        hits = list(where(phase_folders(folder)[0], [60_001, 60_002, 60_003]))
        ours.append(time.perf_counter() - t)
    assert len(hits) == 1, hits
    b, o = statistics.median(base), statistics.median(ours)
    result = {"rows": rows, "tokens": tokens, "files_mb": round(folder_size / 2**20, 1),
              "full_read_s": round(b, 3), "where_s": round(o, 3), "where_rows_per_s": round(rows / o),
              "where_tokens_per_s": round(tokens / o), "where_over_full_read": round(o / b, 2)}
    print(json.dumps(result, indent=2))
    out = REPO / "runs" / "bench" / "order_where.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
