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
FIXED_MINUTES = 6.0  # data, evaluation and report: what does not scale with --minutes
DYNAMICS_TASKS = "lm,next_token"  # cheap tasks on every kept checkpoint (learning curves)
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
TASK_SETTINGS = ["sst2.designs=probe,finetune", "sst2.train_limit=4000", "cola.designs=probe", "qnli.designs=probe",
                 "stsb.designs=probe", "cola.train_limit=4000", "stsb.train_limit=4000"]
CROSS_SETTINGS = ["sst2.designs=probe", "sst2.train_limit=4000"]
# On CUDA: the 17m shape in bf16 on CUDA_TOKENS times the recipe's tokens (69M a native model). Not yet measured on a
# GPU; at 0.2-0.5M tokens/s for a 17m model on one current GPU, about 2.5-6 minutes a native model.
CUDA_TOKENS = 20


def _run(cmds: list[list[str]], logs: list[Path] | None = None) -> None:
    """Run commands side by side (one per core): a single one streams, parallel ones log to files."""
    _lanes([[c] for c in cmds], logs)


def _lanes(lanes: list[list[list[str]]], logs: list[Path] | None = None) -> None:
    """Each lane runs its commands in order, the lanes side by side; while they run, each log's latest line
    is shown. The first failure stops the demo with the tail of its log."""
    import threading

    failed: list[tuple[list[str], Path | None]] = []
    printing = threading.Lock()

    def lane(cmds: list[list[str]], log: Path | None) -> None:
        for cmd in cmds:
            with printing:
                print("$ " + shlex.join(cmd), flush=True)
            if log is None:
                code = subprocess.call(cmd)
            else:
                with open(log, "a") as f:
                    f.write("$ " + shlex.join(cmd) + "\n")
                    f.flush()
                    code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
            if code:
                failed.append((cmd, log))
                return

    for log in logs or []:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
    threads = [threading.Thread(target=lane, args=(cmds, logs[i] if logs else None), daemon=True)
               for i, cmds in enumerate(lanes)]
    for t in threads:
        t.start()
    shown: dict[Path, str] = {}
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=10 / len(threads))
        for log in logs or []:
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("$")]
            if lines and lines[-1] != shown.get(log):
                shown[log] = lines[-1]
                with printing:
                    print(f"  [{log.stem}] {lines[-1][:150]}", flush=True)
    for cmd, log in failed:
        tail = "".join(log.read_text().splitlines(True)[-15:]) if log else ""
        sys.exit(f"ettin demo: step failed: {shlex.join(cmd)}\n{tail}")


def _scaled(recipe: str, factor: float, extra: list[str]) -> list[str]:
    """Overrides that multiply every phase's token budget (and warmup) by `factor`."""
    if factor == 1.0:
        return []
    r = _load(recipe, extra)
    out = []
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
    native_over += _scaled(recipe, factor, [])
    native = _load(recipe, native_over)
    # the continued runs keep the native models' shape and precision
    cont_over = [f"model.size={native.model.size}", f"train.precision={native.train.precision}"]
    if args.quick:
        cont_over += ["phases.0.tokens=48k", "phases.0.seq_len=256", "phases.0.warmup_tokens=8k",
                      "phases.0.decay_tokens=16k"]
    else:
        cont_over += _scaled(cont, factor, [])
    t0 = time.time()

    print(f"== 1-2. data and native pre-training ({recipe}) -> {out / 'pair'}", flush=True)
    _run([ettin + ["pair", recipe, "--parallel", "--resume-if-exists", "--out", str(out / "pair"), *native_over]])
    final = {sub: _final(out / "pair" / sub) for sub in ROLES.values()}  # the pair's folders: encoder, decoder

    print(f"== 3. continued training, the same extra tokens for five models -> {out / 'continue'}", flush=True)
    jobs = [ettin + ["train", cont, "--objective", objective, "--resume-if-exists", "--out", str(out / "continue" / role),
                     f"model.init_from={final[source]}", *extra, *cont_over, "train.progress=false"]
            for role, (objective, source, extra, _) in CONTINUED.items()]
    logs = [out / "continue" / f"{role}.log" for role in CONTINUED]
    for i in range(0, len(jobs), 2):  # two at a time, one core each
        _run(jobs[i : i + 2], logs[i : i + 2])

    print(f"== 4. evaluation -> {out / 'eval'}", flush=True)
    lim = ["--limit", str(limit)] if limit else []

    def eval_cmd(target: Path, role: str, tasks: str, settings: list[str]) -> list[str]:
        sets = [x for s in settings if s.split(".", 1)[0] in tasks.split(",") for x in ("--set", s)]
        return ettin + ["eval", str(target), "--role", role, "--tasks", tasks, "--out", str(out / "eval"),
                        "--threads", "1", *lim, *sets]

    # two lanes, one core each; a checkpoint's results file is written by one lane only. The encoder's
    # pseudo-log-likelihood tasks cost the most, so the decoder's lane also takes the continued models.
    lanes = {sub: [eval_cmd(final[sub], sub, NATIVE_TASKS, TASK_SETTINGS),
                   eval_cmd(out / "pair" / sub, sub, DYNAMICS_TASKS, [])]  # learning curves: kept checkpoints
             for sub in ROLES.values()}
    for role, (_, _, _, tasks) in CONTINUED.items():
        lanes["decoder"].append(eval_cmd(_final(out / "continue" / role), role, tasks, CROSS_SETTINGS))
    _lanes(list(lanes.values()), logs=[out / "eval" / f"{lane}.log" for lane in lanes])

    print(f"== 5. report -> {out / 'report'}", flush=True)
    _run([ettin + ["report", str(out / "eval"), str(out / "pair"), str(out / "continue"), "--out",
                   str(out / "report"), "--title", "ettin demo: paired encoder and decoder"]])
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
