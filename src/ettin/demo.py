"""`ettin demo` (and `make demo`): the whole paired experiment at small scale, ending in a report of findings.

    ettin demo [--out runs/demo] [--quick] [--minutes N] [--recipe recipes/demo.yaml]

1. data: a 4k BPE tokenizer and token shards from ../shared/data/pretrain (the last 2% of each file held out),
2. native pre-training: `ettin pair` trains the encoder (MLM) and the decoder (CLM), identical but for the
   objective, through the three phases, one CPU core each, same batch order (fingerprints compared),
3. continued training (recipes/demo-continue.yaml): the same extra tokens for five models: both native
   models continued, the encoder-from-decoder (MLM and MNTP) and the decoder-from-encoder,
4. evaluation: the claims' tasks on every final checkpoint (`ettin eval --role ...`), the cheap
   language-model tasks on every kept checkpoint of the native runs (learning curves),
5. `ettin report`: the findings table (five published claims, intervals, one fixed verdict rule), then detail.

Every step is one `ettin` command, printed before it runs, and every step resumes: training continues from
its last checkpoint and evaluation results are cached, so an interrupted demo picks up where it stopped.
`--minutes N` scales the training tokens to fill about N minutes (the default recipe is sized for 15);
`--quick` is a three-minute smoke run of the same steps (the tiny recipe, fewer evaluation examples).
On a CUDA machine the same command trains models of the 17m shape in bf16.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ettin.config import ROLES

REPO = Path(__file__).resolve().parents[2]
BASE_MINUTES = 15.0  # what recipes/demo.yaml is sized for on the 2-core development machine
# set-up, evaluation and report of three seeds, what does not scale with --minutes (measured 2026-12-05 in a fresh
# clone: venv 1.2, evaluation 7.4, report 0.4 minutes)
FIXED_MINUTES = 9.0
# the claims' cheap tasks on every kept checkpoint of every seed (each claim over training tokens; learning curves)
CURVE_TASKS = "sst2,cranfield,lm,next_token,winogender"
CURVE_SETTINGS = ["sst2.designs=probe", "sst2.train_limit=4000"]
NATIVE_TASKS = "sst2,cola,qnli,stsb,cranfield,piqa,lm,next_token,generation,winogender"
# role: (objective, which native model it starts from, extra overrides, tasks)
CONTINUED = {
    "encoder-continued": ("mlm", "encoder", [], "sst2,lm"),
    "encoder-from-decoder": ("mlm", "decoder", [], "sst2,lm"),
    "encoder-from-decoder-mntp": ("mlm", "decoder", ["train.mntp=true"], "sst2"),
    "decoder-continued": ("clm", "decoder", [], "lm,next_token"),
    "decoder-from-encoder": ("clm", "encoder", [], "lm,next_token"),
}
# evaluation settings: the same for every model (paired comparisons need the same examples)
# (the fine-tuning design once per pre-training seed: the seeds carry the spread; PIQA's first 400 items: at chance at
# every budget measured, and the encoder's pseudo-log-likelihood costs 0.07 s an item on one core)
TASK_SETTINGS = ["sst2.designs=probe,finetune", "sst2.train_limit=4000", "sst2.seeds=1", "cola.designs=probe",
                 "qnli.designs=probe", "stsb.designs=probe", "cola.train_limit=4000", "stsb.train_limit=4000",
                 "piqa.limit=400"]
CROSS_SETTINGS = ["sst2.designs=probe", "sst2.train_limit=4000"]
# On CUDA: the 17m shape in bf16 on CUDA_TOKENS times the recipe's tokens (69M a native model). Not yet measured on a
# GPU; at 0.2-0.5M tokens/s for a 17m model on one current GPU, about 2.5-6 minutes a native model.
CUDA_TOKENS = 20


def _run(cmd: list[str]) -> None:
    """One command, its output streamed; a failure stops the demo."""
    print("$ " + shlex.join(cmd), flush=True)
    if subprocess.call(cmd):
        sys.exit(f"ettin demo: step failed: {shlex.join(cmd)}")


def _jobs(jobs: list, lanes: int) -> None:
    """Commands side by side on `lanes` cores (ettin.jobs), each logging to its file; the first failure stops the
    demo with the tail of its log."""
    from ettin.jobs import run_jobs, tail

    failed = run_jobs(jobs, lanes)
    for job in failed:
        sys.exit(f"ettin demo: step failed: {shlex.join(job.cmd)}\n{tail(job.log)}")


def _scaled(recipe: str, factor: float, extra: list[str]) -> list[str]:
    """Overrides that multiply every phase's token budget (warmup, decay and the checkpoint interval) by `factor`."""
    if factor == 1.0:
        return []
    r = _load(recipe, extra)
    out = []
    if r.train.save_every_tokens:  # as many kept checkpoints at every budget: their evaluation is a fixed cost
        out.append(f"train.save_every_tokens={int(r.train.save_every_tokens * factor)}")
    for i, ph in enumerate(r.phases):
        out.append(f"phases.{i}.tokens={int(ph.tokens * factor)}")
        for key in ("warmup_tokens", "decay_tokens"):
            if getattr(ph, key):
                out.append(f"phases.{i}.{key}={int(getattr(ph, key) * factor)}")
    return out


def _final(run: Path) -> Path:
    from ettin.train.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run)  # in training order (phase, then step)
    if ckpt is None:
        sys.exit(f"ettin demo: no checkpoints in {run / 'checkpoints'}")
    return ckpt


def _cpu_precision() -> str:
    """bf16 where this CPU's one-thread bf16 matmul is clearly faster than fp32 (hosts differ), else fp32."""
    import torch

    from ettin.cpu import faster_precision

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the demo trains each model on one core
    precision, rates = faster_precision()
    torch.set_num_threads(threads)
    print(f"precision: {precision} (one-thread matmul here: fp32 {rates['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {rates['bf16'] / 1e9:.0f} GFLOP/s)", flush=True)
    return precision


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="ettin demo")
    p.description, p.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--recipe", default=str(REPO / "recipes" / "demo.yaml"), help="native pre-training recipe")
    p.add_argument("--quick", action="store_true", help="a smoke run of every step: the tiny recipe, few examples")
    p.add_argument("--minutes", type=float, default=None,
                   help=f"scale training to fill about N minutes (the recipe is sized for {BASE_MINUTES:g})")
    p.add_argument("--limit", type=int, default=None, help="cap every evaluation example count")
    p.add_argument("--seeds", type=int, default=None,
                   help="pre-training seeds: K pairs, and the continued roles of each (default: the recipe's "
                        "`seeds`)")
    p.add_argument("--size", default=None, help="model size preset (default: the recipe's on CPU, 17m on CUDA)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="training precision on a CPU (default auto: bf16 where this CPU's one-thread bf16 matmul is "
                        "clearly faster than fp32, else fp32; CUDA always trains in bf16)")
    return p


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the paired experiment at small scale, ending in a report of findings")
    build_parser(p).set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.minutes is not None and args.minutes <= FIXED_MINUTES:
        raise ValueError(f"--minutes must exceed {FIXED_MINUTES:g} (data, evaluation and report alone)")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    from ettin.jobs import Job, usable_cores
    from ettin.train.checkpoint import list_checkpoints
    from ettin.train.cli import pair_folder

    recipe = str(REPO / "recipes" / "tiny.yaml") if args.quick else args.recipe
    cont = str(REPO / "recipes" / "demo-continue.yaml")
    limit = args.limit if args.limit is not None else (48 if args.quick else None)
    out = args.out
    ettin = [sys.executable, "-m", "ettin.cli"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cuda = _cuda()
    size = args.size or ("17m" if cuda else None)
    factor = 1.0 if args.minutes is None else (args.minutes - FIXED_MINUTES) / (BASE_MINUTES - FIXED_MINUTES)
    if cuda and not args.quick:
        factor *= CUDA_TOKENS  # a GPU trains the 17m shape far faster than two CPU cores train the demo shape
    precision = args.precision if args.precision != "auto" else "bf16" if size else _cpu_precision()
    native_over = ([f"model.size={size}"] if size else []) + [f"train.precision={precision}"]
    if args.seeds is not None or args.quick:  # the quick run: two seeds, the several-seed layout exercised
        native_over.append(f"seeds={args.seeds or 2}")
    native_over += _scaled(recipe, factor, native_over)
    native = _load(recipe, native_over)
    seeds = [native.seed + i for i in range(native.seeds)]
    lanes = 1 if cuda else usable_cores()  # one core a run on a CPU; one run at a time on a GPU
    # the continued runs keep the native models' shape and precision
    cont_over = [f"model.size={native.model.size}", f"train.precision={native.train.precision}"]
    if args.quick:
        cont_over += ["phases.0.tokens=48k", "phases.0.seq_len=256", "phases.0.warmup_tokens=8k",
                      "phases.0.decay_tokens=16k", "train.save_every_tokens=24k"]
    else:
        cont_over += _scaled(cont, factor, [])
    t0 = time.time()

    def pair_dir(seed: int) -> Path:  # `ettin pair`'s layout: OUT/seed-<s> when there are several seeds
        return pair_folder(out / "pair", native, seed)

    def cont_dir(seed: int, role: str) -> Path:  # the continued runs of a seed, laid out alike
        return pair_folder(out / "continue", native, seed) / role

    print(f"== 1-2. data and native pre-training ({recipe}), {len(seeds)} pre-training seed(s) -> {out / 'pair'}",
          flush=True)
    _run(ettin + ["pair", recipe, "--parallel", "--resume-if-exists", "--out", str(out / "pair"), *native_over])
    final = {(s, sub): _final(pair_dir(s) / sub) for s in seeds for sub in ROLES.values()}

    print(f"== 3. continued training, the same extra tokens for five models a seed -> {out / 'continue'}", flush=True)
    jobs = [Job(f"seed-{s}/{role}", ettin + ["train", cont, "--objective", objective, "--resume-if-exists", "--out",
                                             str(cont_dir(s, role)), f"model.init_from={final[(s, source)]}",
                                             f"seed={s}", *extra, *cont_over, "train.progress=false"],
                cont_dir(s, role).parent / f"{role}.log")
            for s in seeds for role, (objective, source, extra, _) in CONTINUED.items()]
    _jobs(jobs, lanes)

    print(f"== 4. evaluation -> {out / 'eval'}", flush=True)
    lim = ["--limit", str(limit)] if limit else []

    def eval_job(name: str, targets: list[Path], role: str, tasks: str, settings: list[str], log: str) -> Job:
        sets = [x for s in settings if s.split(".", 1)[0] in tasks.split(",") for x in ("--set", s)]
        return Job(name, ettin + ["eval", *map(str, targets), "--role", role, "--tasks", tasks, "--out",
                                  str(out / "eval"), "--threads", "1", *lim, *sets],
                   out / "eval" / "logs" / f"{log}.log")

    # One command a role, over its seeds (one process start and one task-data load for K models): the native finals
    # first (the encoders' pseudo-log-likelihood tasks cost the most), then the continued models, then the earlier
    # kept checkpoints, native and continued (the claims over training tokens; each final's own results give the last
    # point).
    jobs = [eval_job(f"final/{sub}", [final[(s, sub)] for s in seeds], sub, NATIVE_TASKS, TASK_SETTINGS, sub)
            for sub in ("encoder", "decoder")]
    jobs += [eval_job(f"final/{role}", [_final(cont_dir(s, role)) for s in seeds], role, tasks, CROSS_SETTINGS, role)
             for role, (_, _, _, tasks) in CONTINUED.items()]
    for sub in ("encoder", "decoder"):
        kept = [c for s in seeds for c in list_checkpoints(pair_dir(s) / sub) if c != final[(s, sub)]]
        if kept:
            jobs.append(eval_job(f"kept/{sub}", kept, sub, CURVE_TASKS, CURVE_SETTINGS, f"{sub}-kept"))
    for role, (_, _, _, tasks) in CONTINUED.items():
        kept = [c for s in seeds for c in list_checkpoints(cont_dir(s, role)) if c != _final(cont_dir(s, role))]
        if kept:
            jobs.append(eval_job(f"kept/{role}", kept, role, tasks, CROSS_SETTINGS, f"{role}-kept"))
    _jobs(jobs, lanes)

    print(f"== 5. report -> {out / 'report'}", flush=True)
    _run(ettin + ["report", str(out / "eval"), str(out / "pair"), str(out / "continue"), "--out",
                  str(out / "report"), "--title", "ettin demo: paired encoder and decoder"])
    print(f"\ndone in {(time.time() - t0) / 60:.1f} min. Report: {out / 'report' / 'report.md'} "
          f"and {out / 'report' / 'report.html'}")
    return 0


def _load(recipe: str, overrides: list[str]):
    from ettin.train.recipe import load_recipe

    return load_recipe(recipe, overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ValueError as e:
        print(f"ettin demo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
