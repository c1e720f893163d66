"""Keyed dropout (ettin.dropout: masks hashed from each row's key, so losses do not depend on the parallelism)
against nn.Dropout (a random stream), in the same run: the cost of a whole training step (forward, backward,
optimizer) of a model at the attention-output dropout of the presets (0.1).

    .venv/bin/python bench/bench_dropout.py [--size demo] [--rows 16] [--seq 512] [--steps 20] [--threads 1]

Both sides train the same model on the same random batch (every row padded at a different length, as real
unpacked rows: the varlen path); sides alternate step by step so load drift hits both. Prints the median step time
of each side and the ratio keyed / nn.Dropout, with the machine's one-thread matmul rate for scale; writes
runs/bench/dropout.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from ettin.config import preset
from ettin.cpu import faster_precision
from ettin.data.collate import dropout_keys as row_keys
from ettin.model import EttinModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="demo")
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/bench/dropout.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = preset(a.size).replace(attention_output_dropout=0.1)
    model = EttinModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(10, cfg.vocab_size, (a.rows, a.seq))
    mask = (torch.arange(a.seq)[None] < torch.randint(a.seq // 4, a.seq + 1, (a.rows, 1))).long()
    labels = ids.masked_fill(torch.rand(ids.shape) > 0.3, -100)
    keys = row_keys(0, "bench", 0, torch.arange(a.rows).numpy())

    def step(k) -> float:
        t = time.perf_counter()
        loss = model(ids, attention_mask=mask, labels=labels, dropout_keys=k).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    for _ in range(3):  # warm-up
        step(keys), step(None)
    times = {"keyed": [], "nn.Dropout": []}
    for _ in range(a.steps):
        times["keyed"].append(step(keys))
        times["nn.Dropout"].append(step(None))
    med = {k: statistics.median(v) for k, v in times.items()}
    _, rates = faster_precision()
    result = {"size": a.size, "rows": a.rows, "seq": a.seq, "steps": a.steps, "threads": a.threads,
              "tokens": int(mask.sum()), "median_step_s": med, "ratio_keyed_over_nn": med["keyed"] / med["nn.Dropout"],
              "matmul_gflops_one_thread": {k: v / 1e9 for k, v in rates.items()}, "cpu": platform.processor(),
              "torch": torch.__version__}
    for k, v in med.items():
        print(f"{k:>10}: median step {v * 1000:.1f} ms ({a.steps} steps, {a.size}, {a.rows} x {a.seq}, "
              f"{a.threads} thread(s))")
    print(f"keyed / nn.Dropout: {result['ratio_keyed_over_nn']:.3f} (one-thread matmul here: fp32 "
          f"{rates['fp32'] / 1e9:.0f}, bf16 {rates['bf16'] / 1e9:.0f} GFLOP/s)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
