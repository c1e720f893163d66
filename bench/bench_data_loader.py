"""Loader throughput: tokens per second that `PhaseLoader.batch(step)` delivers (order + reads + collation).

    .venv/bin/python bench/bench_data_loader.py [--seq-len 1024] [--batch 32] [--steps 40]

Tokenizes the four files of ../shared/data/pretrain with the ModernBERT tokenizer (once; the token
shards are kept in runs/bench/data_loader/), builds the demo pre-training mixture over them, and
times batch(step) for each objective and instance mode in one thread. "tokens/s" counts real tokens
(attention_mask = 1); "slots/s" counts every position of the (B, T) tensors. The target is 20x what
the 17m model consumes on this CPU (about 2,000 tokens/s, so 40,000 tokens/s). Results also go to
runs/bench/data_loader.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ettin.data.loader import PhaseLoader
from ettin.data.shards import TokenDataset, write_token_dataset
from ettin.data.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = REPO.parent / "shared" / "data" / "pretrain"
FILES = ("wikipedia_vital_summaries_en", "sotu_addresses", "gutenberg_books", "moby_dick_chapters")
MODEL_TOKENS_PER_S = 2_000  # the 17m model's training speed on this CPU (assumed, per the issue)


def prepared_folder(out: Path, tokenizer) -> Path:
    folder = out / "pretrain"
    if (folder / "manifest.json").exists():
        return folder
    docs = {}
    for name in FILES:
        texts = [json.loads(line)["text"] for line in (PRETRAIN / f"{name}.jsonl").read_text().splitlines()]
        docs[name] = tokenizer.encode_batch(texts)
    return write_token_dataset(folder, docs, tokenizer.vocab_size, tokenizer.describe())


def mixture(folder: Path) -> dict:
    shares = {"wikipedia_vital_summaries_en": 30, "sotu_addresses": 35, "gutenberg_books": 35}
    return {
        "name": "bench_pretrain",
        "sources": [
            {"name": name, "path": str(folder), "subset": name, "percent": pct}
            for name, pct in shares.items()
        ],
    }


def time_loader(loader: PhaseLoader, steps: int, start: int = 1000) -> dict:
    loader.batch(start - 1)  # warm caches (memory maps, first allocation)
    real = slots = 0
    t0 = time.perf_counter()
    for step in range(start, start + steps):
        batch = loader.batch(step)
        real += int(batch["attention_mask"].sum())
        slots += batch["input_ids"].numel()
    seconds = time.perf_counter() - t0
    return {
        "steps": steps,
        "seconds": round(seconds, 3),
        "ms_per_batch": round(1000 * seconds / steps, 2),
        "tokens_per_s": round(real / seconds),
        "slots_per_s": round(slots / seconds),
        "fill": round(real / slots, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32, help="global batch (rows)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench" / "data_loader"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    tokenizer = load_tokenizer()
    t0 = time.perf_counter()
    folder = prepared_folder(out, tokenizer)
    prepare_s = time.perf_counter() - t0
    ds = TokenDataset(folder)
    print(f"data: {len(ds)} documents, {ds.num_tokens:,} tokens ({prepare_s:.1f}s to tokenize or open)")
    results = {
        "machine": platform.processor() or platform.machine(),
        "seq_len": args.seq_len,
        "global_batch": args.batch,
        "documents": len(ds),
        "tokens": ds.num_tokens,
        "runs": [],
    }
    target = 20 * MODEL_TOKENS_PER_S
    print(f"target: 20 x {MODEL_TOKENS_PER_S:,} = {target:,} tokens/s\n")
    print(
        f"{'mode':<6} {'objective':<9} {'world':>5} {'index s':>8} {'ms/batch':>9} {'tokens/s':>10} "
        f"{'slots/s':>10} {'fill':>5} {'x target':>8}"
    )
    for mode in ("chunk", "pack"):
        cache = out / "instances"
        for objective, world in (("mlm", 1), ("clm", 1), ("mntp", 1), ("mlm", 2)):
            t0 = time.perf_counter()
            loader = PhaseLoader(
                mixture(folder),
                tokenizer,
                args.seq_len,
                args.batch,
                0,
                "pretrain",
                objective,
                rank=0,
                world_size=world,
                instances=mode,
                cache_dir=cache,
            )
            index_s = time.perf_counter() - t0
            row = {
                "mode": mode,
                "objective": objective,
                "world_size": world,
                "loader_init_s": round(index_s, 2),
                **time_loader(loader, args.steps),
            }
            row["x_target"] = round(row["tokens_per_s"] / target, 1)
            results["runs"].append(row)
            print(
                f"{mode:<6} {objective:<9} {world:>5} {index_s:>8.2f} {row['ms_per_batch']:>9.1f} "
                f"{row['tokens_per_s']:>10,} {row['slots_per_s']:>10,} {row['fill']:>5.2f} {row['x_target']:>8.1f}"
            )
    t0 = time.perf_counter()
    loader.fingerprint(1000)
    results["fingerprint_1000_steps_s"] = round(time.perf_counter() - t0, 3)
    print(f"\nfingerprint over 1000 global batches: {results['fingerprint_1000_steps_s']:.2f}s")
    (out.parent / "data_loader.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.parent / 'data_loader.json'}")


if __name__ == "__main__":
    main()
