"""`ettin train`, `ettin pair`, `ettin export-hf`, `ettin convert-objective`.

    ettin train recipes/tiny.yaml [--out runs/tiny] [--resume] [--dry-run | --plan] [train.lr=1e-3 --phases.0.tokens=2M]
    ettin pair recipes/tiny.yaml  [...]          # runs/<name>/encoder and runs/<name>/decoder
    ettin export-hf runs/tiny/checkpoints/decay-step0000120 out/      # or the run folder: its newest checkpoint
    ettin convert-objective runs/x/decoder --to mlm --out out/enc-from-dec
    ettin continue runs/tiny/encoder --data notes.jsonl --tokens 200k --out runs/notes   # ettin.train.continued

Under torchrun (`torchrun --nproc_per_node 8 -m ettin.cli train RECIPE`), one model trains on all ranks
(DDP or FSDP2 as the recipe says).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ettin.config import OBJECTIVES, ROLES
from ettin.io import atomic_write_json, read_json
from ettin.train import continued
from ettin.train.commands import (
    check_resume,
    common_flags,
    dry_run,
    flag_names,
    print_plan,
    print_results,
    split_extras,
    world_size,
)
from ettin.train.owndata import data_flags, own_data_overrides
from ettin.train.recipe import RecipeError, load_recipe

OBJECTIVE_DIRS = ROLES  # a pair's run folders: <out>/encoder, <out>/decoder
OVERRIDES_HELP = """recipe overrides are KEY=VALUE words (dotted paths into the recipe, values read as YAML; a leading -- is
allowed): train.lr=1e-3  phases.0.tokens=2M  phases.decay.tokens=1M  --model.size=17m
An unknown key is an error that lists the known ones."""
RESUME_HELP = """--resume refuses a recipe that differs from what the run folder trained (its recipe.yaml), naming each
changed key, except settings of how it runs (logging, checkpoint cadence, threads, precision, layout),
phases not yet started, and more tokens for the phase being trained when the learning rates of the steps
already trained stay the same; those are applied and recorded in <out>/history.jsonl."""


def _run_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("recipe", help="recipe YAML (recipes/*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. train.lr=1e-3")
    p.add_argument("--out", metavar="DIR", help=f"{what} (default: the recipe's out_dir/name, e.g. runs/tiny)")
    data_flags(p, "train on your own text instead of the recipe's data: .jsonl / .txt / .parquet files, folders or "
                  "globs, one mixture for every phase, prepared into <out>/data (ettin.train.owndata)")
    common_flags(p, "neither run holds one" if what.startswith("pair") else "it holds none")


def register(subparsers) -> None:
    kw = dict(formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
              epilog=f"{OVERRIDES_HELP}\n\n{RESUME_HELP}")
    text = "train one model through a recipe's phases"
    p = subparsers.add_parser("train", help=text, description=text, **kw)
    _run_flags(p, "run folder")
    p.add_argument("--objective", choices=OBJECTIVES,
                   help="mlm (an encoder) or clm (a decoder); default: the recipe's objective")
    p.set_defaults(func=cmd_train, takes_overrides=True, flags=flag_names(p))
    text = "train the encoder and the decoder: everything identical but the objective"
    p = subparsers.add_parser("pair", help=text, description=text, **kw)
    _run_flags(p, "pair folder: the runs go to DIR/encoder and DIR/decoder")
    p.add_argument("--seeds", type=int, metavar="K",
                   help="train K pairs, pre-training seeds seed .. seed+K-1, into DIR/seed-<s>/{encoder,decoder} "
                        "(default: the recipe's `seeds`, 1: DIR/encoder and DIR/decoder); within a pair the two "
                        "share the initialisation seed and the batch order, pairs differ in both and in the masks")
    p.add_argument("--parallel", action="store_true",
                   help="train the runs side by side as child processes, one CPU core each (logs in "
                        "<pair>/encoder/train.log and <pair>/decoder/train.log); default: one after the other "
                        "in this process")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="--parallel: at most N runs at once (default: the usable CPU cores)")
    p.set_defaults(func=cmd_pair, takes_overrides=True, flags=flag_names(p))

    text = "write a Hugging Face folder (config.json, model.safetensors, tokenizer) for a checkpoint"
    p = subparsers.add_parser("export-hf", help=text, description=text, allow_abbrev=False)
    p.add_argument("checkpoint", help="a checkpoint folder (meta.json), or a run folder: its newest checkpoint")
    p.add_argument("out", help="the folder to write (replaced if it exists)")
    p.set_defaults(func=cmd_export)
    text = ("the same weights with the other objective: an encoder checkpoint becomes a decoder folder (or back), "
            "to continue with a cross-objective recipe (recipes/cross/, model.init_from)")
    p = subparsers.add_parser("convert-objective", help="turn an encoder checkpoint into a decoder or back",
                              description=text, allow_abbrev=False)
    p.add_argument("checkpoint", help="a checkpoint folder (meta.json), or a run folder: its newest checkpoint")
    p.add_argument("--to", required=True, choices=OBJECTIVES,
                   help="the objective to convert to: mlm (encoder) or clm (decoder); must differ from the source's")
    p.add_argument("--out", required=True, metavar="DIR", help="the Hugging Face folder to write")
    p.set_defaults(func=cmd_convert)
    continued.register(subparsers)


def _load(args) -> tuple:
    overrides = split_extras(args)
    recipe = load_recipe(args.recipe, overrides)
    out = Path(args.out) if args.out else Path(recipe.out_dir) / recipe.name
    if getattr(args, "data", None):  # your own text: the overrides travel to a pair's child runs as any other
        overrides += own_data_overrides(recipe, args.data, out, args.field, args.split_by)
        recipe = load_recipe(args.recipe, overrides)
    objective = getattr(args, "objective", None)
    if objective:
        recipe = recipe.for_objective(objective)
    args.overrides = overrides
    return recipe, args, out


def cmd_train(args) -> int:
    recipe, opts, out = _load(args)
    if recipe.seeds != 1:
        raise RecipeError(f"{recipe.source_file}: seeds: {recipe.seeds} pre-training seeds are trained by `ettin pair` "
                          "(OUT/seed-<s>/...); `ettin train` trains one model: give seed=N (and seeds=1)")
    from ettin.train import distributed as D

    if opts.plan:
        return print_plan(recipe, [recipe.objective], world_size(opts))
    if opts.dry_run:
        return dry_run(recipe, [recipe.objective], world_size(opts), out)
    check_resume(opts, [out])
    from ettin.train.guard import TrainingStopped
    from ettin.train.loop import train
    from ettin.train.progress import run_banner

    try:
        with D.session() as info:
            if info.is_main:
                print(run_banner(recipe, info), flush=True)
            results = train(recipe, out, resume=opts.resume or opts.resume_if_exists)
    except TrainingStopped as e:  # a non-finite loss, or a loss spike under train.spike_guard=stop
        print(f"ettin train: stopped: {e}", file=sys.stderr)
        return 3
    if info.is_main:
        print_results(out, results)
    return 0


def pair_seeds(recipe) -> list[int]:
    """The pre-training seeds of a pair run: seed, seed + 1, ... (`seeds` of them)."""
    return [recipe.seed + i for i in range(recipe.seeds)]


def pair_folder(out: Path, recipe, seed: int) -> Path:
    """Where one seed's pair goes: OUT itself for a one-seed recipe, else OUT/seed-<s> (its encoder/ and decoder/)."""
    return out if recipe.seeds == 1 else out / f"seed-{seed}"


def cmd_pair(args) -> int:
    if args.seeds is not None:
        if args.seeds < 1:
            raise RecipeError(f"--seeds must be at least 1, got {args.seeds}")
        args.overrides = [*args.overrides, f"seeds={args.seeds}"]
    recipe, opts, out = _load(args)
    if opts.plan:
        return print_plan(recipe, list(OBJECTIVE_DIRS), world_size(opts))
    if opts.dry_run:
        return dry_run(recipe, list(OBJECTIVE_DIRS), world_size(opts), out)
    seeds = pair_seeds(recipe)
    folders = {s: pair_folder(out, recipe, s) for s in seeds}
    check_resume(opts, [f / sub for f in folders.values() for sub in OBJECTIVE_DIRS.values()])
    from ettin.train.preflight import check_inputs

    check_inputs(recipe)  # before the data set-up of --parallel (train() checks again in each run)
    if len(seeds) > 1:
        print(f"== {recipe.name}: {len(seeds)} pre-training seeds ({', '.join(map(str, seeds))}): a pair each, "
              f"in {out}/seed-<s>/{{encoder,decoder}}", flush=True)
    if opts.parallel:
        code = _pair_parallel(args, recipe, opts, folders)
    else:
        code = _pair_serial(args, recipe, opts, folders)
    if code == 0 and len(seeds) > 1:
        atomic_write_json(out / "seeds.json", {"seeds": seeds, "folders": {s: str(f) for s, f in folders.items()}})
    return code


def seed_overrides(recipe, seed: int) -> list[str]:
    """The overrides that make one seed's run of a several-seed pair recipe (`seeds` back to 1: a run trains one
    model); none for a one-seed recipe."""
    return [] if recipe.seeds == 1 else [f"seed={seed}", "seeds=1"]


def _pair_serial(args, recipe, opts, folders: dict[int, Path]) -> int:
    from ettin.train import distributed as D
    from ettin.train.guard import TrainingStopped
    from ettin.train.loop import train
    from ettin.train.progress import run_banner

    code = 0
    try:
        with D.session() as info:
            for seed, folder in folders.items():
                one = load_recipe(args.recipe, [*opts.overrides, *seed_overrides(recipe, seed)])
                if info.is_main:
                    print(run_banner(one, info), flush=True)
                for objective, sub in OBJECTIVE_DIRS.items():
                    if info.is_main:
                        print(f"== {recipe.name}: {sub} ({objective}), seed {seed} -> {folder / sub}", flush=True)
                    results = train(one, folder / sub, objective=objective,
                                    resume=opts.resume or opts.resume_if_exists)
                    if info.is_main:
                        print_results(folder / sub, results)
                if info.is_main:
                    code = _compare_fingerprints(folder) or code
    except TrainingStopped as e:
        print(f"ettin pair: stopped: {e}", file=sys.stderr)
        return 3
    return code


def _pair_parallel(args, recipe, opts, folders: dict[int, Path]) -> int:
    """Every (seed, objective) run as a child process, as many side by side as there are usable cores (one
    each; `--jobs` sets it), decoders first (the slower ones); logs in <pair>/<encoder|decoder>/train.log.
    The data set-up runs once, first, in this process."""
    from ettin.data.ready import ensure_data
    from ettin.jobs import Job, run_jobs, tail, usable_cores

    ensure_data(recipe)
    resume = ["--resume-if-exists"] if opts.resume or opts.resume_if_exists else []  # the pair resumes as a whole
    jobs = []
    for seed, folder in folders.items():
        for objective, sub in reversed(OBJECTIVE_DIRS.items()):  # the decoder first: its full-sequence loss
            cmd = [sys.executable, "-m", "ettin.cli", "train", args.recipe, "--objective", objective,  # is slower
                   "--out", str(folder / sub), *resume, *opts.overrides, *seed_overrides(recipe, seed),
                   "train.progress=false"]
            name = sub if len(folders) == 1 else f"seed-{seed}/{sub}"
            jobs.append(Job(name, cmd, folder / sub / "train.log"))
    lanes = opts.jobs or min(len(jobs), usable_cores())
    failed = run_jobs(jobs, lanes, show=lambda ln: " step " in ln or ln.startswith("phase "))
    for job in jobs:
        if job.log.is_file():
            print(f"-- {job.name}:\n" + tail(job.log, 6), end="", flush=True)
    if failed:
        print(f"ettin pair: {', '.join(j.name for j in failed)} failed (see train.log)", file=sys.stderr)
        return 1
    code = 0
    for folder in folders.values():
        code = _compare_fingerprints(folder) or code
    return code


def _compare_fingerprints(out: Path) -> int:
    """The pair's batch-order fingerprints (each run's fingerprints.json) compared, written to <out>/pair.json."""
    fingerprints = {sub: read_json(out / sub / "fingerprints.json") for sub in OBJECTIVE_DIRS.values()}
    same = fingerprints["encoder"] == fingerprints["decoder"]
    summary = {"same_batch_order": same, **fingerprints}
    atomic_write_json(out / "pair.json", summary)
    print(f"batch-order fingerprints {'match' if same else 'DIFFER'}: "
          + ", ".join(f"{k} {v['fingerprint']}" for k, v in fingerprints["encoder"].items()))
    return 0 if same else 1


def cmd_export(args) -> int:
    from ettin.train.checkpoint import export_hf, resolve_checkpoint

    source = resolve_checkpoint(args.checkpoint)
    out = export_hf(source, args.out)
    print(f"wrote {out} (from {source})")
    return 0


def cmd_convert(args) -> int:
    """Same weights, the other objective: an encoder-from-decoder loads as ModernBertForMaskedLM,
    a decoder-from-encoder as ModernBertDecoderForCausalLM. Continue training with a cross recipe."""
    from ettin.io import UserError
    from ettin.train.checkpoint import export_hf, read_meta, resolve_checkpoint

    source = resolve_checkpoint(args.checkpoint)
    objective = read_meta(source)["model_config"]["objective"]
    if objective == args.to:
        kind = {"mlm": "an encoder", "clm": "a decoder"}[objective]
        raise UserError(f"{source} is already {kind} ({objective}): --to {args.to} would change "
                        f"nothing; to export it as it is, run `ettin export-hf {source} {args.out}`")
    out = export_hf(source, args.out, objective=args.to)
    print(f"converted {objective} -> {args.to}: {out} (from {source})")
    return 0
