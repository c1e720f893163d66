"""One attention layer, forward + backward: ettin's held-scores kernel (`attention_bmm`; causal: in query blocks,
`attention_bmm_causal`) against PyTorch SDPA (its CPU flash kernel), same inputs, same run; each output and gradient's
error against float64.

    .venv/bin/python bench/bench_attention.py
    .venv/bin/python bench/bench_attention.py --malloc tuned     # glibc malloc tuned as `ettin` commands do
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from ettin.attention import band_mask  # noqa: E402
from ettin.attention_cpu import attention_bmm, attention_bmm_causal  # noqa: E402


def median_ms(fn, n: int = 9) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[n // 2] * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["8x512", "4x1024", "64x128"], help="BATCHxSEQ")
    p.add_argument("--heads", type=int, default=4, help="heads of 64")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--malloc", choices=["default", "tuned"], default="default")
    args = p.parse_args()
    if args.malloc == "tuned":
        from ettin.cpu import tune_allocator

        tune_allocator()
    dt = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.dtype}, malloc {args.malloc}")
    print(f"{'shape':>7} {'mask':>6} | {'sdpa ms':>7} {'ours ms':>7} {'ratio':>5} | rel. error vs float64 (out, dq, dk, dv)")
    torch.manual_seed(0)
    for shape in args.shapes:
        B, T = (int(x) for x in shape.split("x"))
        base = [torch.randn(B, args.heads, T, 64) * 3 for _ in range(3)]  # sharp attention: scores of tens
        w = torch.randn(B, args.heads, T, 64)
        for causal in (False, True):
            mask = band_mask(T, T, T, 0, torch.device("cpu")) if causal else None
            exact = [x.to(dt).double().requires_grad_() for x in base]  # the same rounded inputs: kernel error only
            ref = F.scaled_dot_product_attention(*exact, attn_mask=mask)
            ref_grads = torch.autograd.grad((ref * w.to(dt).double()).sum(), exact)
            row = {}
            for name, fn in (("sdpa", lambda q, k, v, c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c)),
                             ("ours", lambda q, k, v, m=mask: (attention_bmm_causal if m is not None else
                                                               attention_bmm)(q, k, v, m))):
                xs = [x.to(dt).requires_grad_() for x in base]
                wd = w.to(dt)
                ms = median_ms(lambda: (fn(*xs) * wd).sum().backward())  # noqa: B023
                out = fn(*xs)
                grads = torch.autograd.grad((out * wd).sum(), xs)
                errs = [((out.double() - ref).norm() / ref.norm()).item()]
                errs += [((g.double() - r).norm() / r.norm()).item() for g, r in zip(grads, ref_grads)]
                row[name] = (ms, errs)
            (a, ea), (b, eb) = row["sdpa"], row["ours"]
            print(f"{shape:>7} {'causal' if causal else 'full':>6} | {a:7.1f} {b:7.1f} {a / b:5.2f} | "
                  f"sdpa {' '.join(f'{e:.1e}' for e in ea)}  ours {' '.join(f'{e:.1e}' for e in eb)}")


if __name__ == "__main__":
    main()
