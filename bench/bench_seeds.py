"""Pre-training seeds: K pairs through one `ettin pair --seeds K --parallel` against K separate
`ettin pair --parallel` runs (one seed each, one after the other), timed in the same benchmark run.

    .venv/bin/python bench/bench_seeds.py [--seeds 3] [--tokens 400k] [--repeats 2]

Both sides train the same runs: the demo recipe (recipes/demo.yaml: its shape, precision fp32 unless
--precision, its three phases) with the pre-training phase cut to --tokens and the other two to an eighth of it,
no kept checkpoints, one CPU core a run. The K separate runs are what a user without --seeds types (seed=s for
each); `--seeds K` lays the 2K runs over the cores as one queue, decoders first, so no core idles while a pair's
slower model finishes. Sides alternate (separate, together, separate, together, ...) so load drift hits both.
Prints, per side: wall time, seeds a minute, real tokens a second (all models together), and the ratio;
writes runs/bench/seeds.json. Uses the demo's data (made on first use by `ettin data` through the recipe).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "demo.yaml"


def _tokens(text: str) -> int:
    from ettin.train.recipe import parse_tokens

    return parse_tokens(text)


def _trained_tokens(root: Path) -> int:
    from ettin.train.checkpoint import latest_checkpoint, read_meta

    total = 0
    for run in sorted(root.rglob("metrics.jsonl")):
        total += int(read_meta(latest_checkpoint(run.parent))["tokens"])
    return total


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=REPO)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tokens", default="400k", help="pre-training phase budget a model (default 400k)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "seeds")
    args = ap.parse_args()
    pre = _tokens(args.tokens)
    over = ["seeds=1", f"phases.0.tokens={pre}", f"phases.0.warmup_tokens={max(1, pre // 24)}",
            f"phases.1.tokens={pre // 8}", f"phases.2.tokens={pre // 8}", "train.save_every_tokens=0",
            f"train.precision={args.precision}"]
    ettin = [sys.executable, "-m", "ettin.cli"]
    cores = len(os.sched_getaffinity(0))
    print(f"{args.seeds} seeds, {pre:,} + 2 x {pre // 8:,} real tokens a model, {args.precision}, {cores} cores; "
          f"{platform.processor() or platform.machine()}", flush=True)
    times: dict[str, list[float]] = {"separate": [], "together": []}
    tokens: dict[str, int] = {}
    for rep in range(args.repeats):
        for side in ("separate", "together"):
            root = args.out / f"{side}-{rep}"
            shutil.rmtree(root, ignore_errors=True)
            if side == "separate":
                wall = sum(_run(ettin + ["pair", str(RECIPE), "--parallel", "--out", str(root / f"seed-{s}"),
                                         *over, f"seed={s}"]) for s in range(args.seeds))
            else:
                wall = _run(ettin + ["pair", str(RECIPE), "--parallel", "--seeds", str(args.seeds), "--out", str(root),
                                     *over[1:], "seed=0"])
            times[side].append(wall)
            tokens[side] = _trained_tokens(root)
            print(f"  repeat {rep}: {side:9s} {wall:7.1f} s, {args.seeds / wall * 60:.2f} seeds/min, "
                  f"{tokens[side] / wall / 1e3:.1f}k real tokens/s ({tokens[side]:,} tokens)", flush=True)
    med = {side: statistics.median(ts) for side, ts in times.items()}
    ratios = [s / t for s, t in zip(times["separate"], times["together"])]
    print(f"median: separate {med['separate']:.1f} s ({args.seeds / med['separate'] * 60:.2f} seeds/min), together "
          f"{med['together']:.1f} s ({args.seeds / med['together'] * 60:.2f} seeds/min); speed-up per repeat "
          f"{', '.join(f'{r:.3f}' for r in ratios)}")
    out = REPO / "runs" / "bench" / "seeds.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seeds": args.seeds, "tokens": pre, "precision": args.precision, "cores": cores,
                               "times": times, "trained_tokens": tokens, "speedup": ratios}, indent=1))


if __name__ == "__main__":
    main()
