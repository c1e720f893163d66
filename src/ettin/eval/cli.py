"""`ettin eval MODEL_OR_RUN --tasks ... --out DIR [--every K] [--limit N]` (and `ettin report`, whose
subcommand lives in ettin.eval.report and is registered from here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ettin.eval.tasks import DEFAULT_TASKS, get_task, override, task_kinds, with_limit
from ettin.eval.tasks.data import default_data_dir


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a model, a checkpoint, or every kept checkpoint of a run",
        description="Run evaluation tasks and write one results JSON per checkpoint (cached per checkpoint "
        f"hash). Tasks: {task_kinds()}.",
    )
    p.add_argument("model", nargs="+", help="run folder(s), checkpoint folder(s), HF folder(s) or hub id(s)")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated task names (default: all)")
    p.add_argument("--out", default="runs/eval", type=Path, help="results folder (default runs/eval)")
    p.add_argument("--every", type=int, default=1, help="evaluate every k-th kept checkpoint (the last always)")
    p.add_argument("--revisions", default=None, metavar="PATTERN",
                   help="evaluate a hub model's published revisions instead: all, or globs such as step*,decay* "
                   "(learning curves by training tokens; ettin.eval.revisions)")
    p.add_argument("--limit", type=int, default=None, help="cap every example count (quick runs)")
    p.add_argument("--set", action="append", default=[], metavar="TASK.FIELD=VALUE",
                   help="override a task setting, e.g. piqa.limit=500 or cola.finetune.lr=3e-4 (repeatable)")
    p.add_argument("--data-dir", type=Path, default=None, help="task data root (default $ETTIN_DATA or ../shared/data)")
    p.add_argument("--role", default=None,
                   help="what the model is in the comparison (encoder, decoder, encoder-continued, decoder-continued, "
                   "encoder-from-decoder, encoder-from-decoder-mntp, decoder-from-encoder; default: its objective's "
                   "native role, encoder for mlm and decoder for clm); written to the results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=256, help="longest evaluation sequence in tokens")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--no-cache", action="store_true", help="recompute tasks even when cached results match")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=run_eval)
    try:
        from ettin.eval import report
    except ImportError:
        return
    if hasattr(report, "register"):
        report.register(subparsers)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def build_tasks(names: str, limit: int | None, overrides: list[str]) -> list:
    tasks = [get_task(n.strip()) for n in names.split(",") if n.strip()]
    if not tasks:
        raise ValueError("--tasks: no task named")
    if len({t.name for t in tasks}) != len(tasks):
        raise ValueError(f"--tasks: a task is named twice in {names!r}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        tasks = [with_limit(t, limit) for t in tasks]
    by_name = {t.name: t for t in tasks}
    for item in overrides:
        key, sep, value = item.partition("=")
        # the longest task name that prefixes the key (task names such as cls:data.tsv hold dots)
        task = max((n for n in by_name if key.startswith(n + ".")), key=len, default=None)
        if not sep or task is None:
            raise ValueError(f"--set {item!r}: expected TASK.FIELD=VALUE for a task in --tasks")
        override(by_name[task], key[len(task) + 1 :], value)
    return tasks


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from ettin.eval.runner import evaluate_target, precheck, resolve_targets

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = args.data_dir or default_data_dir()
    tasks = build_tasks(args.tasks, args.limit, args.set)
    if args.revisions:  # hub revisions, downloaded one at a time: the tasks are checked first
        for task in tasks:
            task.check(data_dir)
        from ettin.eval.revisions import run_revisions

        return run_revisions(args, tasks, data_dir)
    # Everything that can be checked is checked before any model work: the models exist, the task files parse.
    targets = [t for m in args.model for t in resolve_targets(m, args.every)]
    for target in targets:
        precheck(target)
    for task in tasks:
        task.check(data_dir)
    print(f"ettin eval: {len(targets)} checkpoint(s) x {len(tasks)} task(s) -> {args.out}", file=sys.stderr)
    for target in targets:
        evaluate_target(target, tasks, data_dir, args.out, seed=args.seed, device=args.device,
                        max_length=args.max_length, use_cache=not args.no_cache, role=args.role,
                        log=lambda s: print(s, file=sys.stderr))
    return 0
