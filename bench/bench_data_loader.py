"""Loader throughput: tokens per second that `PhaseLoader.batch(step)` delivers (order + reads + collation), in one
thread and through the training loop's background workers (`step_batches`), and the share of a CPU training run's
step time spent waiting for data.

    .venv/bin/python bench/bench_data_loader.py [--seq-len 1024] [--batch 32] [--steps 40] [--workers 0 1 2]

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

from ettin.data.loader import PhaseLoader, step_batches
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


def time_workers(loader: PhaseLoader, steps: int, workers: int, start: int = 2000, warmup: int = 20) -> dict:
    """What the training loop receives from `step_batches` with `workers` background processes (0: built in the
    loop's thread), consumed as fast as it arrives: the loader side's ceiling. The first `warmup` steps (the workers'
    start-up and the queue filling) are timed apart."""
    t0 = time.perf_counter()
    stream = step_batches(loader, start, workers=workers, prefetch=8)
    for _ in range(warmup):
        next(stream)
    t1 = time.perf_counter()
    real = 0
    for _ in range(steps):
        batch, tokens = next(stream)
        real += tokens
    seconds = time.perf_counter() - t1
    stream.close()
    return {"workers": workers, "steps": steps, "seconds": round(seconds, 3), "startup_s": round(t1 - t0, 3),
            "tokens_per_s": round(real / seconds)}


def data_wait_share(out: Path) -> dict:
    """A CPU training run through the loop (the demo recipe's model and data, one thread, pre-training for 400k
    real tokens; the later phases cut to one step): the share of its wall time spent waiting for batches, from
    its metrics.jsonl (`data_wait_share` of each logging window after the first, which holds the start-up)."""
    import shutil
    import subprocess
    import sys

    run = out / "wait-run"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "ettin.cli", "train", str(REPO / "recipes" / "demo.yaml"), "--out", str(run),
           "--objective", "mlm", "phases.0.tokens=400k", "phases.1.tokens=1", "phases.2.tokens=1",
           "train.save_every_tokens=0", "train.progress=false", "train.log_every=10", "train.tensorboard=false"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    pre = [r for r in rows if r["phase"] == "pretrain"][1:]
    return {"windows": len(pre), "mean_data_wait_share": round(sum(r["data_wait_share"] for r in pre) / len(pre), 5),
            "max_data_wait_share": round(max(r["data_wait_share"] for r in pre), 5),
            "tokens_per_s": round(sum(r["tokens_per_s"] for r in pre) / len(pre))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32, help="global batch (rows)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2],
                        help="background worker counts to time through step_batches (mlm, chunk mode)")
    parser.add_argument("--no-train", action="store_true", help="skip the CPU training run's data-wait share")
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
    print(f"\nthrough step_batches (the training loop's feed), chunk mode (the published no-packing), mlm, "
          f"seq {args.seq_len}, batch {args.batch}:")
    feed = PhaseLoader(mixture(folder), tokenizer, args.seq_len, args.batch, 0, "pretrain", "mlm",
                       instances="chunk", cache_dir=out / "instances")
    results["workers"] = []
    for workers in args.workers:
        row = time_workers(feed, args.steps * 3, workers)
        results["workers"].append(row)
        print(f"  {workers} worker(s): {row['tokens_per_s']:>10,} real tokens/s ({row['steps']} steps in "
              f"{row['seconds']:.2f}s after {row['startup_s']:.2f}s for the first 20)")
    if not args.no_train:
        results["cpu_training_data_wait"] = data_wait_share(out)
        r = results["cpu_training_data_wait"]
        print(f"\nCPU training (demo recipe, pre-training, mlm): waiting for data {100 * r['mean_data_wait_share']:.2f}% "
              f"of the step time ({r['windows']} logging windows, {r['tokens_per_s']:,} tokens/s)")
    t0 = time.perf_counter()
    loader.fingerprint(1000)
    results["fingerprint_1000_steps_s"] = round(time.perf_counter() - t0, 3)
    print(f"\nfingerprint over 1000 global batches: {results['fingerprint_1000_steps_s']:.2f}s")
    (out.parent / "data_loader.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.parent / 'data_loader.json'}")


if __name__ == "__main__":
    main()
