"""`make demo`: the whole paired experiment at tiny scale on a CPU, ending in a report.

    python -m ettin.demo [--out runs/demo] [--recipe recipes/demo.yaml] [--quick]

1. train a 4k BPE tokenizer and prepare token shards from ../shared/data/pretrain (last 2% of each file held out),
2. `ettin pair`: the encoder (MLM) and the decoder (CLM), identical but for the objective, through the three
   phases (pre-training, context extension, decay), one CPU core each, same batch order (fingerprints compared),
3. `ettin eval`: every task for the final checkpoints of both, and the cheap tasks for every kept checkpoint
   (learning dynamics),
4. `ettin report`: Markdown + HTML with tables, charts, learning and loss curves, the published numbers.

Every step is resumable: a second run reuses finished work (training resumes, evaluation results are cached).
Each step is the same `ettin` command a user would type; they are printed before they run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DYNAMICS_TASKS = "lm,piqa,winogender"  # cheap tasks evaluated on every kept checkpoint


def _run(cmds: list[list[str]], logs: list[Path] | None = None) -> None:
    """Run commands side by side (one per core); stream the single one, log the parallel ones."""
    procs = []
    for i, cmd in enumerate(cmds):
        print("$ " + shlex.join(cmd), flush=True)
        if logs:
            logs[i].parent.mkdir(parents=True, exist_ok=True)
            out = open(logs[i], "w")
            procs.append((subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT), out, logs[i]))
        else:
            procs.append((subprocess.Popen(cmd), None, None))
    shown: dict[Path, str] = {}
    while logs and any(proc.poll() is None for proc, _, _ in procs):  # show each log's latest line
        time.sleep(20)
        for _, _, log in procs:
            lines = log.read_text(errors="replace").strip().splitlines()
            if lines and lines[-1] != shown.get(log):
                shown[log] = lines[-1]
                print(f"  [{log.stem}] {lines[-1][:150]}", flush=True)
    failed = []
    for proc, out, log in procs:
        if proc.wait() != 0:
            failed.append((proc.args, log))
        if out:
            out.close()
    for args, log in failed:
        tail = "".join(log.read_text().splitlines(True)[-15:]) if log else ""
        sys.exit(f"ettin demo: step failed: {shlex.join(args)}\n{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ettin-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--recipe", default=str(REPO / "recipes" / "demo.yaml"))
    p.add_argument("--quick", action="store_true", help="the tiny recipe and few eval examples (a smoke test)")
    p.add_argument("--limit", type=int, default=None, help="cap eval example counts")
    args = p.parse_args(argv)
    recipe = str(REPO / "recipes" / "tiny.yaml") if args.quick else args.recipe
    limit = args.limit if args.limit is not None else (32 if args.quick else None)
    out = args.out
    ettin = [sys.executable, "-m", "ettin.cli"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.time()

    print(f"== 1-2. tokenizer, shards and the paired training ({recipe}) -> {out / 'pair'}", flush=True)
    _run([ettin + ["pair", recipe, "--parallel", "--resume", "--out", str(out / "pair")]])

    print(f"== 3. evaluation -> {out / 'eval'}", flush=True)
    lim = ["--limit", str(limit)] if limit else []
    from ettin.train.checkpoint import latest_checkpoint

    final = {}
    for sub in ("encoder", "decoder"):
        final[sub] = latest_checkpoint(out / "pair" / sub)  # in training order (phase, then step)
        if final[sub] is None:
            sys.exit(f"ettin demo: no checkpoints in {out / 'pair' / sub / 'checkpoints'}")
    # all tasks on the final checkpoints, encoder and decoder side by side (one thread each)
    _run([ettin + ["eval", str(final[sub]), "--out", str(out / "eval" / sub), "--threads", "1", *lim]
          for sub in final], logs=[out / "eval" / f"{sub}.log" for sub in final])
    # learning dynamics: cheap tasks on every kept checkpoint (cached results are reused)
    _run([ettin + ["eval", str(out / "pair" / sub), "--tasks", DYNAMICS_TASKS, "--out", str(out / "eval" / sub),
                   "--threads", "1", *lim] for sub in final],
         logs=[out / "eval" / f"{sub}-dynamics.log" for sub in final])

    print(f"== 4. report -> {out / 'report'}", flush=True)
    _run([ettin + ["report", str(out / "eval"), str(out / "pair"), "--out", str(out / "report"),
                   "--title", "ettin demo: paired encoder and decoder"]])
    print(f"\ndone in {(time.time() - t0) / 60:.1f} min. Report: {out / 'report' / 'report.html'} "
          f"and {out / 'report' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
