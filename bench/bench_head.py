"""The decoding projections on a few rows: F.linear on the (out, in) weight against the (in, out) copy that cached
decoding uses, and MKL's packed linear (a weight packed for the batch size), each as a ratio to F.linear measured in
the same run, beside a 1024-square matmul for this CPU's fp32 rate.

    .venv/bin/python bench/bench_head.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

SHAPES = {"17m head": (50368, 256), "32m head": (50368, 384), "17m Wqkv": (768, 256), "32m Wqkv": (1152, 384)}


def best_ms(fn, n: int = 30, repeats: int = 3) -> float:
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    square = 2 * 1024**3 / best_ms(lambda: a @ b, n=10) / 1e6
    print(f"torch {torch.__version__}, {args.threads} threads; 1024-square fp32 matmul {square:.0f} GFLOP/s")
    print("| shape | rows | F.linear ms | (in, out) copy ms | ratio | MKL packed ms | ratio | GFLOP/s (copy) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (out_f, in_f) in SHAPES.items():
        w, bias = torch.randn(out_f, in_f) * 0.02, torch.zeros(out_f)
        for rows in (1, 8):
            print(row(name, w, bias, rows))


def row(name: str, w: torch.Tensor, bias: torch.Tensor, rows: int) -> str:
    out_f, in_f = w.shape
    wt = w.t().contiguous()
    x = torch.randn(rows, in_f)
    base = best_ms(lambda: torch.nn.functional.linear(x, w, bias))
    copy = best_ms(lambda: (x @ wt).add_(bias))
    assert torch.allclose((x @ wt) + bias, torch.nn.functional.linear(x, w, bias), atol=1e-5)
    try:
        packed_w = torch.ops.mkl._mkl_reorder_linear_weight(w, rows)
        packed = best_ms(lambda: torch.ops.mkl._mkl_linear(x, packed_w, w, bias, rows))
        packed_cells = f"{packed:.3f} | {base / packed:.2f}"
    except (RuntimeError, AttributeError) as e:  # a torch built without MKL
        packed_cells = f"n/a ({type(e).__name__}) | -"
    gflops = 2 * rows * in_f * out_f / copy / 1e6
    return f"| {name} {out_f}x{in_f} | {rows} | {base:.3f} | {copy:.3f} | {base / copy:.2f} | {packed_cells} | {gflops:.0f} |"


if __name__ == "__main__":
    main()
