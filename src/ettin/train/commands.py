"""What the training commands share (`ettin train`, `ettin pair`: ettin.train.cli; `ettin continue`:
ettin.train.continued): the run flags, the recipe overrides of a command line, the --resume check, the rank count of
--plan / --dry-run, and the lines printed before and after a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ettin.config import ROLES
from ettin.train.recipe import RecipeError


def common_flags(p: argparse.ArgumentParser, none: str = "it holds none") -> None:
    """--resume / --resume-if-exists / --dry-run / --plan / --world-size (ettin train, pair and continue)."""
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help=f"continue from the newest checkpoint in --out (an error when {none})")
    resume.add_argument("--resume-if-exists", action="store_true",
                        help="continue when --out holds a checkpoint, else start there (idempotent re-runs)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved recipe and its plan (with the steps each budget takes at the data's "
                        "measured row fill when the data is ready), check that every file it names exists, "
                        "train nothing")
    p.add_argument("--plan", action="store_true",
                   help="print the resolved plan as one JSON object on stdout (budgets, batch split, schedule, "
                        "learning rates, masking, RoPE, dropout, optimizer per phase) and exit; reads no data")
    p.add_argument("--world-size", type=int, metavar="N",
                   help="--plan / --dry-run: the number of ranks to split the batch over (default: torchrun's "
                        "WORLD_SIZE, else 1)")


def flag_names(p: argparse.ArgumentParser) -> list[str]:
    return [s for action in p._actions for s in action.option_strings if s.startswith("--")]


def split_extras(args) -> list[str]:
    """The recipe overrides of a command line; anything else (an unknown flag, a stray word) is an error
    naming the valid flags. `args.extra`: what argparse did not recognise (ettin.cli.main)."""
    from ettin.io import UserError

    words = [*args.overrides, *getattr(args, "extra", [])]
    top = {"name", "seed", "seeds", "out_dir"}  # a --key=value without a dot must be one of these (not a flag name)
    overrides = []
    for word in words:
        key = word.removeprefix("--").split("=", 1)[0]
        is_flag = word.startswith("-") and ("=" not in word or ("." not in key and key not in top))
        if is_flag:
            raise UserError(f"unknown option {word.split('=', 1)[0]!r}; the options of ettin {args.command}: "
                            f"{', '.join(args.flags)} (recipe overrides are KEY=VALUE, e.g. train.lr=1e-3)")
        if "=" not in word or not key[:1].isalpha():
            raise RecipeError(f"unexpected argument {word!r}: overrides look like train.lr=1e-3")
        overrides.append(word)
    return overrides


def check_resume(args, runs: list[Path]) -> None:
    """--resume needs something to resume (any one of `runs`: the pair resumes as a whole)."""
    from ettin.train.resume import has_checkpoint

    if args.resume and not any(has_checkpoint(r) for r in runs):
        where = runs[0] if len(runs) == 1 else runs[0].parent
        state = "does not exist" if not where.exists() else "holds no complete checkpoint"
        raise RecipeError(f"--resume: {where} {state}, so there is nothing to resume; run without --resume to "
                          "start there, or with --resume-if-exists to resume only when there is")


def world_size(opts) -> int:
    from ettin.train import distributed as D

    world = opts.world_size if opts.world_size is not None else D.world_size_from_env()
    if world < 1:
        raise RecipeError(f"--world-size: must be >= 1, got {world}")
    return world


def print_plan(recipe, objectives: list[str], world_size: int) -> int:
    """--plan: the plan as one JSON object on stdout (a pair: {"encoder": plan, "decoder": plan})."""
    from ettin.train.plan import make_plan

    plans = {obj: make_plan(recipe, obj, world_size).to_json() for obj in objectives}
    out = plans[objectives[0]] if len(objectives) == 1 else {ROLES[o]: p for o, p in plans.items()}
    print(json.dumps(out, indent=2))
    return 0


def dry_run(recipe, objectives: list[str], world_size: int, out: Path) -> int:
    from ettin.train.plan import describe, make_plan
    from ettin.train.preflight import check_inputs

    print(recipe.to_yaml())
    print(f"out: {out}")
    for objective in objectives:
        plan = make_plan(recipe, objective, world_size)
        print(describe(plan, _measured_fills(plan)))
    found = check_inputs(recipe)  # raises, naming every missing input, after the plan is shown
    print("inputs: " + ("; ".join(found) if found else "none (synthetic data)"))
    return 0


def _measured_fills(plan) -> dict[str, float] | None:
    """Real tokens per slot of each real-token phase on its data, when the data is ready (else None)."""
    from ettin.data.mixture import MixtureError
    from ettin.data.ready import RecipeData
    from ettin.train.plan import measured_fill

    real = [p for p in plan.phases if p.token_unit == "real"]
    if not real:
        return None
    try:
        data = RecipeData.open(plan.recipe)
        return {p.name: measured_fill(data.phase_loader(plan.recipe.phases[p.index], plan.objective), p)
                for p in real}
    except (OSError, ValueError, MixtureError):
        return None  # not prepared yet: the plan says "if every row were full"


def print_results(out: Path, results) -> None:
    if not results:
        from ettin.train.checkpoint import latest_checkpoint

        print(f"  nothing to train: {out} has finished every phase of the recipe (newest checkpoint "
              f"{latest_checkpoint(out)}; final model {out / 'final'})", flush=True)
        return
    from ettin.train.checkpoint import read_meta

    for r in results:
        meta = read_meta(r.checkpoint)  # the phase's count as metrics.jsonl and the progress lines have it
        count = f", {meta['phase_tokens']:,} {meta.get('token_unit', 'real')} tokens" if "phase_tokens" in meta else ""
        print(f"  {r.phase}: {r.steps} steps{count}, loss {r.first_loss:.4f} -> {r.last_loss:.4f}"
              f"{f', {r.skipped} skipped' if r.skipped else ''}; checkpoint {r.checkpoint}")
    print(f"  final model: {out / 'final'}; metrics: {out / 'metrics.jsonl'}", flush=True)
