"""Tokenization throughput (MB of UTF-8 text per second) on shared/data/pretrain, one core and two.

    .venv/bin/python bench/bench_data_prepare.py [--tokenizer PATH] [--data DIR] [--repeats 2]

Rows:
  encode_batch      `tokenizers` batch encoding of the texts already in memory (the tokenizer alone);
                    threads = the library's thread pool size (RAYON_NUM_THREADS), set per subprocess
  prepare           `ettin data prepare` end to end: read JSONL, tokenize, write shards + manifest;
                    workers = tokenizer processes (0 = the library's threads in one process)
Each configuration runs in its own process (the thread-pool size is fixed at first use); the best of
`--repeats` runs is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ETTIN_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_texts(data: Path) -> list[str]:
    texts = []
    for path in sorted(data.glob("*.jsonl")):
        with open(path) as f:
            texts += [json.loads(line)["text"] for line in f]
    return texts


def run_one(mode: str, value: int, tokenizer: str, data: Path) -> dict:
    """Runs inside a subprocess: one timing of one configuration."""
    from ettin.data.prepare import PrepareConfig, prepare
    from ettin.data.tokenizer import load_tokenizer

    info = load_tokenizer(tokenizer)
    texts = load_texts(data)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    cpu0 = _cpu_seconds()
    if mode == "encode_batch":
        info.tokenizer.encode_batch_fast(texts[:64], add_special_tokens=False)  # warm up the pool
        start = time.perf_counter()
        tokens = 0
        for i in range(0, len(texts), 256):
            tokens += sum(len(x) for x in info.encode_batch(texts[i : i + 256]))
        seconds = time.perf_counter() - start
    else:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            sources = [str(p) for p in sorted(data.glob("*.jsonl"))]
            tokens = prepare(sources, info, PrepareConfig(out=Path(out), workers=value))["num_tokens"]
            seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu0
    return {
        "megabytes": megabytes,
        "tokens": tokens,
        "seconds": seconds,
        "cpu": cpu,
        "load": os.getloadavg()[0],
    }


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the prepare workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(mode: str, value: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if mode == "encode_batch" or value == 0:
        env["RAYON_NUM_THREADS"] = str(max(value, 1) if mode == "encode_batch" else os.cpu_count())
    best = None
    for _ in range(args.repeats):
        cmd = [
            sys.executable,
            __file__,
            "--one",
            mode,
            str(value),
            "--tokenizer",
            args.tokenizer,
            "--data",
            str(args.data),
        ]
        result = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", default=str(SHARED / "modernbert_tokenizer"))
    parser.add_argument("--data", type=Path, default=SHARED / "pretrain")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("MODE", "VALUE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.tokenizer, args.data)))
        return

    configs = [("encode_batch", "threads", 1), ("encode_batch", "threads", 2),
               ("prepare", "workers", 1), ("prepare", "workers", 2), ("prepare", "workers", 0)]  # fmt: skip
    print(f"tokenizer {args.tokenizer}; data {args.data}; {os.cpu_count()} CPUs; best of {args.repeats}")
    print("MB/s = MB of text per wall-clock second; MB/cpu-s = per CPU-second (less sensitive to other load)")
    print(f"| {'what':<13} | {'setting':<11} | {'text MB':>7} | {'tokens':>9} | {'seconds':>7} | {'MB/s':>5} "
          f"| {'Mtok/s':>6} | {'MB/cpu-s':>8} | {'load':>4} |")  # fmt: skip
    print(f"|{'-' * 15}|{'-' * 13}|{'-' * 9}|{'-' * 11}|{'-' * 9}|{'-' * 7}|{'-' * 8}|{'-' * 10}|{'-' * 6}|")
    for mode, knob, value in configs:
        r = measure(mode, value, args)
        setting = f"{knob}={value}" if value else "threads=all"
        print(f"| {mode:<13} | {setting:<11} | {r['megabytes']:>7.1f} | {r['tokens']:>9,} | {r['seconds']:>7.2f} | "
              f"{r['megabytes'] / r['seconds']:>5.2f} | {r['tokens'] / r['seconds'] / 1e6:>6.2f} | "
              f"{r['megabytes'] / r['cpu']:>8.2f} | {r['load']:>4.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
