"""`ettin data prepare-tree` on pre-tokenized MDS (the published datasets' format): tokens per second against reading
the same shards with ettin's MDS reader alone (the baseline, measured in the same run), and the prepared bytes per
token, from which the time and disk of each published phase follow.

    .venv/bin/python bench/bench_prepare_tree.py [--folders 4] [--copies 25] [--repeats 2]

The tree: `--folders` MDS folders, each holding `--copies` copies of the genuine pre-tokenized shards in
../shared/data/mds/tokens_uint32 (400 Wikipedia documents, 42,161 ModernBERT ids, uint32), listed in one index.json
per folder. One process, as one `ettin data prepare-tree` runs; folders can be prepared in parallel by separate
processes (one per folder), which this does not measure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ETTIN_SHARED_DATA", REPO.parent / "shared" / "data"))
PHASES = {"pre-training (1.7T)": 1.7e12, "extension (250B)": 250e9, "decay (100B on the dataset card)": 100e9}


def build_tree(root: Path, folders: int, copies: int) -> None:
    src = SHARED / "mds" / "tokens_uint32"
    shards = json.loads((src / "index.json").read_text())["shards"]
    for f in range(folders):
        folder = root / "train" / f"source{f}"
        folder.mkdir(parents=True)
        listed = []
        for _ in range(copies):
            for shard in shards:
                name = f"shard.{len(listed):05d}.mds"
                shutil.copy(src / shard["raw_data"]["basename"], folder / name)
                listed.append(dict(shard, raw_data=dict(shard["raw_data"], basename=name)))
        (folder / "index.json").write_text(json.dumps({"version": 2, "shards": listed}))


def read_only(root: Path) -> int:
    from ettin.data.mds import iter_mds_samples
    from ettin.data.tree import leaf_folders

    tokens = 0
    for folder in leaf_folders(root):
        for _, sample in iter_mds_samples(folder):
            tokens += len(sample["input_ids"])
    return tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folders", type=int, default=4)
    p.add_argument("--copies", type=int, default=25)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    from ettin.data.tokenizer import load_tokenizer
    from ettin.data.tree import prepare_tree

    tokenizer = load_tokenizer(SHARED / "modernbert_tokenizer")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_tree(tmp / "raw", args.folders, args.copies)
        raw_bytes = sum(f.stat().st_size for f in (tmp / "raw").rglob("*.mds"))
        best = {"read": float("inf"), "prepare": float("inf")}
        for _ in range(args.repeats):  # alternate the two, so load drift hits both alike
            start = time.perf_counter()
            ids = read_only(tmp / "raw")
            best["read"] = min(best["read"], time.perf_counter() - start)
            shutil.rmtree(tmp / "prep", ignore_errors=True)
            start = time.perf_counter()
            sources = prepare_tree(tmp / "raw", tmp / "prep", tokenizer, workers=0, log=lambda m: None)
            best["prepare"] = min(best["prepare"], time.perf_counter() - start)
        kept = sum(s["tokens"] for s in sources)
        out_bytes = sum(f.stat().st_size for f in (tmp / "prep").rglob("*") if f.is_file())
    print(f"tree: {args.folders} folders x {args.copies} copies: {ids:,} ids in MDS ({raw_bytes / ids:.2f} bytes/id), "
          f"{kept:,} tokens kept ([CLS]/[SEP] dropped); best of {args.repeats}; {os.cpu_count()} cores")
    print("| what | seconds | Mtok/s | ratio to the read |")
    print("|---|---|---|---|")
    for name in ("read", "prepare"):
        print(f"| {name} | {best[name]:.2f} | {ids / best[name] / 1e6:.2f} | {best[name] / best['read']:.2f} |")
    rate = ids / best["prepare"]
    print(f"prepared: {out_bytes / kept:.3f} bytes per token (shards + offsets + manifest)")
    print("| phase | prepared on disk | one process at this rate |")
    print("|---|---|---|")
    for phase, tokens in PHASES.items():
        print(f"| {phase} | {tokens * out_bytes / kept / 1e12:.2f} TB | {tokens / rate / 3600:,.0f} h |")


if __name__ == "__main__":
    main()
