"""Training-step and inference throughput: ettin against transformers' ModernBERT classes, same batches, same run.

    .venv/bin/python bench/bench_model.py                      # full table (several minutes on 2 cores)
    .venv/bin/python bench/bench_model.py --sizes 17m --seqs 512 --dtypes bf16 --steps 3

Training step = forward + backward + optimizer step (StableAdamW from torch-optimi for both). transformers runs at
its best settings: SDPA attention, `sparse_prediction=True` for MLM. MLM masks 30% of tokens. Inference: an
encoder forward on a batch of variable-length sequences (lengths 16..512); transformers pads, ettin unpads.
Utilisation is model FLOPs (6 x params x tokens for the backbone, + attention, + the head on the positions where
it runs) against the machine's measured peak matmul rate in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from optimi import StableAdamW  # noqa: E402

from ettin.config import preset  # noqa: E402
from ettin.model import EttinModel  # noqa: E402

V = 50368


def peak_matmul(dtype: torch.dtype, n: int = 2048, reps: int = 5, trials: int = 5) -> float:
    """Best of `trials` timings of square matmuls: the machine's reachable matmul rate."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


def hf_model(cfg, objective: str):
    """transformers' class for `objective`; MLM with `sparse_prediction=True` (its best setting) unless
    `--hf-sparse-prediction off` (the library's default, the head on every position) was given."""
    from transformers import (
        ModernBertConfig,
        ModernBertDecoderConfig,
        ModernBertDecoderForCausalLM,
        ModernBertForMaskedLM,
    )

    kw = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
              num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, attn_implementation="sdpa")
    if objective == "mlm":
        sparse = os.environ.get("BENCH_HF_SPARSE", "on") == "on"  # set by main(), inherited by the probes
        return ModernBertForMaskedLM(ModernBertConfig(sparse_prediction=sparse, **kw))
    return ModernBertDecoderForCausalLM(ModernBertDecoderConfig(**kw))


def make_batch(B: int, T: int, objective: str, g: torch.Generator):
    ids = torch.randint(5, 50000, (B, T), generator=g)
    if objective == "mlm":
        sel = torch.rand(B, T, generator=g) < 0.3
        labels = torch.where(sel, ids, torch.full_like(ids, -100))
        inp = torch.where(sel, torch.full_like(ids, 50284), ids)
        return inp, labels, labels  # ours and transformers take the same MLM labels
    aligned = torch.cat([ids[:, 1:], torch.full((B, 1), -100)], dim=1)
    return ids, aligned, ids  # ettin: aligned labels; transformers shifts internally


def flops_per_step(cfg, tokens: int, head_tokens: int, T: int, causal: bool) -> float:
    H = cfg.hidden_size
    body = cfg.num_parameters(with_head=False) - cfg.vocab_size * H
    attn = 0
    for kind in cfg.layer_types:
        reach = T if kind == "full_attention" else min(T, cfg.local_attention + 1)
        attn += 4 * H * reach * (0.5 if causal and kind == "full_attention" else 1.0)
    head = 2 * (H * H + H * cfg.vocab_size)
    return 3 * (tokens * (2 * body + attn) + head_tokens * head)


class Trainer:
    """One model + optimizer; `step(batch)` runs forward + backward + optimizer step and returns seconds."""

    def __init__(self, model, dtype: str, which: str):
        self.model, self.dtype, self.which = model.train(), dtype, which
        self.opt = StableAdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
        self.loss = float("nan")

    def step(self, batch) -> float:
        inp, lab_ours, lab_hf = batch
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            if self.which == "ettin":
                loss = self.model(inp, labels=lab_ours).loss
            else:
                loss = self.model(input_ids=inp, labels=lab_hf).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.loss = loss.item()
        return time.perf_counter() - t


def train_steps(model, batches, dtype, steps: int, which: str):
    tr = Trainer(model, dtype, which)
    times = [tr.step(batches[i % len(batches)]) for i in range(steps + 1)][1:]  # first step is warm-up
    return (statistics.median(times) if times else float("nan")), tr.loss


def rss_gb() -> float:
    """Current resident set size (GiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


class PeakRSS:
    """Samples the resident set size every millisecond while the block runs."""

    def __enter__(self):
        import threading

        self.start, self.peak, self._stop = rss_gb(), rss_gb(), threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, rss_gb())
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def train_shape(size: str, objective: str, T: int, tokens: int) -> tuple:
    """The batches (two, fixed seed) and config of one benchmark shape, and its row's shape fields."""
    g = torch.Generator().manual_seed(0)
    B = max(1, tokens // T)
    batches = [make_batch(B, T, objective, g) for _ in range(2)]
    return batches, preset(size, objective, vocab_size=V), dict(batch=B, head_tokens=int((batches[0][1] != -100).sum()))


def train_one(which: str, size: str, objective: str, T: int, dtype: str, tokens: int, steps: int) -> dict:
    """One implementation alone in this process (`--isolated`): nothing the other allocates shapes its heap."""
    batches, cfg, row = train_shape(size, objective, T, tokens)
    torch.manual_seed(0)
    model = EttinModel(cfg) if which == "ettin" else hf_model(cfg, objective)
    sec, loss = train_steps(model, batches, dtype, steps, which)
    return {**row, f"{which}_tps": row["batch"] * T / sec, f"{which}_loss": loss}


def train_pair(size: str, objective: str, T: int, dtype: str, tokens: int, steps: int, compile_: bool) -> dict:
    """Both implementations side by side in this process, their steps alternating, so load drift hits both
    alike. Returns tokens/s and the last loss of each."""
    batches, cfg, row = train_shape(size, objective, T, tokens)
    B = row["batch"]
    torch.manual_seed(0)
    hf = Trainer(hf_model(cfg, objective), dtype, "transformers")
    torch.manual_seed(0)
    ours_model = EttinModel(cfg)
    ours = Trainer(ours_model.compile_blocks() if compile_ else ours_model, dtype, "ettin")
    times = {"transformers": [], "ettin": []}
    for i in range(steps + 1):
        for tr in (hf, ours):
            sec = tr.step(batches[i % len(batches)])
            if i:  # the first step is warm-up
                times[tr.which].append(sec)
    return dict(row, transformers_tps=B * T / statistics.median(times["transformers"]), transformers_loss=hf.loss,
                ettin_tps=B * T / statistics.median(times["ettin"]), ettin_loss=ours.loss)


def bench_train(args, results):
    """Each shape in a fresh process: a long-lived process drifts (allocator state from earlier shapes), which
    moved single figures by up to 30% between otherwise equal runs."""
    import subprocess

    peaks = {"fp32": peak_matmul(torch.float32), "bf16": peak_matmul(torch.bfloat16)}
    print(f"peak matmul: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    hdr = f"{'size':>5} {'obj':>4} {'seq':>5} {'dtype':>5} | {'transformers tok/s':>18} {'ettin tok/s':>12} " \
          f"{'ratio':>6} | {'MFU hf':>6} {'MFU ours':>8} | {'loss hf':>8} {'loss ours':>9}" + \
          (" (ratio range)" if max(args.repeat, args.isolated) > 1 else "")
    print(hdr)
    for size in args.sizes:
        for objective in args.objectives:
            for T in args.seqs:
                for dtype in args.dtypes:
                    cmd = [sys.executable, __file__, "--_train-probe", "--sizes", size, "--objectives", objective,
                           "--seqs", str(T), "--dtypes", dtype, "--tokens", str(args.tokens), "--steps",
                           str(args.steps)] + (["--compile"] if args.compile else [])
                    # isolated: each implementation alone in a process, processes alternating; otherwise both in
                    # one fresh process, steps alternating
                    probes = [cmd + ["--_one", which] for which in ("transformers", "ettin")] if args.isolated \
                        else [cmd]
                    runs: dict = {}
                    for _ in range(args.isolated or args.repeat):
                        for probe in probes:
                            out = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
                            for key, val in json.loads(out.strip().splitlines()[-1]).items():
                                runs.setdefault(key, []).append(val)
                    row = {key: statistics.median(vals) for key, vals in runs.items()}
                    # run-to-run spread: the ratio of each repetition (the host's speed drifts over minutes)
                    each = [o / h for o, h in zip(runs["ettin_tps"], runs["transformers_tps"])]
                    cfg = preset(size, objective, vocab_size=V)
                    B = row["batch"]
                    fl = flops_per_step(cfg, B * T, row["head_tokens"], T, objective == "clm")
                    hf_tps, ours_tps = row["transformers_tps"], row["ettin_tps"]
                    mfu = [fl / (B * T / tps) / peaks[dtype] for tps in (hf_tps, ours_tps)]
                    spread = f" ({min(each):.2f}-{max(each):.2f})" if len(each) > 1 else ""
                    print(f"{size:>5} {objective:>4} {T:>5} {dtype:>5} | {hf_tps:18.0f} {ours_tps:12.0f} "
                          f"{ours_tps / hf_tps:6.2f} | {mfu[0]:6.1%} {mfu[1]:8.1%} | "
                          f"{row['transformers_loss']:8.3f} {row['ettin_loss']:9.3f}{spread}", flush=True)
                    results.append(dict(kind="train", size=size, objective=objective, seq=T, dtype=dtype,
                                        batch=B, transformers_tps=hf_tps, ettin_tps=ours_tps,
                                        ratio=ours_tps / hf_tps, ratios=each, mfu_transformers=mfu[0],
                                        mfu_ettin=mfu[1]))


def bench_memory(args, results):
    """Peak memory of one training step, each implementation in a fresh subprocess (ru_maxrss is per process)."""
    import subprocess

    print(f"\npeak RSS above the pre-step level during a training step (fresh process each, after a warm-up "
          f"step), seq {args.seqs[0]}, {args.tokens} tokens:")
    for size in args.sizes:
        for objective in args.objectives:
            for dtype in args.dtypes:
                row = {}
                for which in ("transformers", "ettin"):
                    cmd = [sys.executable, __file__, "--_memory-probe", which, "--sizes", size, "--objectives",
                           objective, "--dtypes", dtype, "--seqs", str(args.seqs[0]), "--tokens", str(args.tokens)]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                    row[which] = json.loads(out.strip().splitlines()[-1])
                base = row["transformers"]["baseline_gb"]
                hf_gb = row["transformers"]["peak_gb"] - base
                ours_gb = row["ettin"]["peak_gb"] - row["ettin"]["baseline_gb"]
                print(f"  {size} {objective} {dtype}: transformers +{hf_gb:.2f} GB, ettin +{ours_gb:.2f} GB "
                      f"(ratio {ours_gb / hf_gb:.2f})", flush=True)
                results.append(dict(kind="memory", size=size, objective=objective, dtype=dtype,
                                    transformers_gb=hf_gb, ettin_gb=ours_gb))


def memory_probe(args):
    which, size, objective, dtype, T = args._memory_probe, args.sizes[0], args.objectives[0], args.dtypes[0], \
        args.seqs[0]
    cfg = preset(size, objective, vocab_size=V)
    model = EttinModel(cfg) if which == "ettin" else hf_model(cfg, objective)
    batches = [make_batch(max(1, args.tokens // T), T, objective, torch.Generator().manual_seed(0))]
    train_steps(model, batches, dtype, 0, which)  # warm-up: optimizer state and allocator caches exist
    if which == "ettin":  # buffers ettin keeps between steps count as the step's memory: drop them first
        from ettin.cpu import release_scratch

        release_scratch()
    gc.collect()
    with PeakRSS() as m:
        train_steps(model, batches, dtype, 0, which)
    print(json.dumps({"baseline_gb": m.start, "peak_gb": m.peak}))


def bench_inference(args, results):
    from transformers import ModernBertConfig, ModernBertModel

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(16, 513, (args.infer_batch,), generator=g).tolist()
    T = max(lengths)
    ids = torch.randint(5, 50000, (len(lengths), T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    real = sum(lengths)
    print(f"\nencoder inference, {len(lengths)} sequences of 16..512 tokens ({real} real, {ids.numel()} padded):")
    for size in args.sizes:
        cfg = preset(size, "mlm", vocab_size=V)
        hf = ModernBertModel(ModernBertConfig(vocab_size=V, hidden_size=cfg.hidden_size,
                                              intermediate_size=cfg.intermediate_size,
                                              num_hidden_layers=cfg.num_layers,
                                              num_attention_heads=cfg.num_heads, attn_implementation="sdpa")).eval()
        ours = EttinModel(cfg).eval()
        for dtype in args.dtypes:
            row = {}
            runs = (("transformers", lambda m=hf: m(input_ids=ids, attention_mask=mask).last_hidden_state),
                    ("ettin", lambda m=ours: m.hidden_states(ids, mask)))
            for which, fn in runs:
                ts = []
                for i in range(args.steps + 1):
                    t = time.perf_counter()
                    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                        fn()
                    if i:
                        ts.append(time.perf_counter() - t)
                row[which] = real / statistics.median(ts)
            print(f"  {size} {dtype}: transformers {row['transformers']:.0f} real tok/s, ettin {row['ettin']:.0f} "
                  f"real tok/s, ratio {row['ettin'] / row['transformers']:.2f}", flush=True)
            results.append(dict(kind="inference", size=size, dtype=dtype, transformers_tps=row["transformers"],
                                ettin_tps=row["ettin"], ratio=row["ettin"] / row["transformers"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["17m", "32m"])
    p.add_argument("--objectives", nargs="+", default=["mlm", "clm"])
    p.add_argument("--seqs", nargs="+", type=int, default=[512, 1024])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--tokens", type=int, default=4096, help="tokens per training step")
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    p.add_argument("--infer-batch", type=int, default=32)
    p.add_argument("--compile", action="store_true", help="torch.compile the ettin model's blocks")
    p.add_argument("--only", choices=["train", "memory", "inference"], nargs="+",
                   default=["train", "memory", "inference"])
    p.add_argument("--json", help="write the results here")
    p.add_argument("--malloc", choices=["default", "tuned"], default=os.environ.get("BENCH_MALLOC", "default"),
                   help="glibc malloc as shipped, or tuned as every `ettin` command tunes it (ettin.cpu), for both "
                        "implementations alike")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="train: run each shape's paired probe N times, each in a fresh process; medians, and the "
                        "range of the N ratios after the row")
    p.add_argument("--isolated", type=int, default=0, metavar="N",
                   help="train: run each implementation alone in its own process, N times each, processes "
                        "alternating (median); by default both share one process, steps alternating")
    p.add_argument("--hf-sparse-prediction", choices=["on", "off"], default=os.environ.get("BENCH_HF_SPARSE", "on"),
                   help="transformers' MLM head only on masked positions (on: its best setting, the default "
                        "comparison) or on every position (off: the library's default configuration)")
    p.add_argument("--_one", help=argparse.SUPPRESS)
    p.add_argument("--_memory-probe", dest="_memory_probe", help=argparse.SUPPRESS)
    p.add_argument("--_train-probe", dest="_train_probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ["BENCH_MALLOC"] = args.malloc  # the probe subprocesses inherit these
    os.environ["BENCH_HF_SPARSE"] = args.hf_sparse_prediction
    if args.malloc == "tuned":
        from ettin.cpu import tune_allocator

        if not tune_allocator():
            raise SystemExit("--malloc tuned needs Linux with glibc")
    torch.manual_seed(0)
    if args._memory_probe:
        return memory_probe(args)
    if args._train_probe and args._one:
        return print(json.dumps(train_one(args._one, args.sizes[0], args.objectives[0], args.seqs[0], args.dtypes[0],
                                          args.tokens, args.steps)))
    if args._train_probe:
        row = train_pair(args.sizes[0], args.objectives[0], args.seqs[0], args.dtypes[0], args.tokens, args.steps,
                         args.compile)
        return print(json.dumps(row))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, malloc {args.malloc}, "
          f"transformers MLM sparse_prediction {args.hf_sparse_prediction}")
    results: list[dict] = []
    if "train" in args.only:
        bench_train(args, results)
    if "memory" in args.only:
        bench_memory(args, results)
    if "inference" in args.only:
        bench_inference(args, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
