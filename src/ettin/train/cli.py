"""`ettin train`, `ettin pair`, `ettin export-hf`, `ettin convert-objective`.

    ettin train recipes/tiny.yaml [--out runs/tiny] [--resume] [--dry-run] [train.lr=1e-3 --phases.0.tokens=2M]
    ettin pair recipes/tiny.yaml  [...]          # runs/<name>/encoder and runs/<name>/decoder
    ettin export-hf runs/tiny/checkpoints/decay-step0000120 out/
    ettin convert-objective runs/x/decoder/checkpoints/decay-step0000120 --to mlm --out out/enc-from-dec

Under torchrun (`torchrun --nproc_per_node 8 -m ettin.cli train RECIPE`), one model trains on all ranks
(DDP or FSDP2 as the recipe says).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ettin.train.recipe import RecipeError, describe, load_recipe

OBJECTIVE_DIRS = {"mlm": "encoder", "clm": "decoder"}


def register(subparsers) -> None:
    for name, func, text in (
        ("train", cmd_train, "train one model through a recipe's phases"),
        ("pair", cmd_pair, "train the encoder and the decoder: everything identical but the objective"),
    ):
        p = subparsers.add_parser(name, help=text, description=text)
        p.add_argument("recipe", help="recipe YAML (recipes/*.yaml)")
        p.add_argument("rest", nargs=argparse.REMAINDER,
                       help="--out DIR, --resume, --dry-run, --objective mlm|clm and dotted overrides key.path=value")
        p.set_defaults(func=func)
    p = subparsers.add_parser("export-hf", help="write a Hugging Face folder for a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.set_defaults(func=cmd_export)
    p = subparsers.add_parser("convert-objective", help="turn an encoder checkpoint into a decoder or back")
    p.add_argument("checkpoint")
    p.add_argument("--to", required=True, choices=("mlm", "clm"))
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_convert)


def _split_rest(rest: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our flags out of the remainder; everything else must be a dotted override."""
    flags = argparse.ArgumentParser(prog="ettin train", add_help=False)
    flags.add_argument("--out", default=None)
    flags.add_argument("--resume", action="store_true")
    flags.add_argument("--dry-run", action="store_true")
    flags.add_argument("--objective", choices=("mlm", "clm"), default=None)
    flags.add_argument("--parallel", action="store_true")
    known, others = flags.parse_known_args(rest)
    for item in others:
        if "=" not in item or not item.removeprefix("--")[:1].isalpha():
            raise RecipeError(f"unexpected argument {item!r}: overrides look like train.lr=1e-3")
    return known, others


def _load(args) -> tuple:
    opts, overrides = _split_rest(args.rest)
    recipe = load_recipe(args.recipe, overrides)
    if opts.objective:
        recipe.objective = opts.objective
    out = Path(opts.out) if opts.out else Path(recipe.out_dir) / recipe.name
    opts.overrides = overrides
    return recipe, opts, out


def cmd_train(args) -> int:
    recipe, opts, out = _load(args)
    from ettin.train import distributed as D

    if opts.dry_run:
        print(recipe.to_yaml())
        print(describe(recipe, D.world_size_from_env()))
        return 0
    from ettin.train.loop import NonFiniteLoss, train

    try:
        with D.session() as info:
            results = train(recipe, out, resume=opts.resume)
    except NonFiniteLoss as e:
        print(f"ettin train: stopped: {e}", file=sys.stderr)
        return 3
    if results and info.is_main:
        _print_results(out, results)
    return 0


def cmd_pair(args) -> int:
    recipe, opts, out = _load(args)
    if opts.dry_run:
        print(recipe.to_yaml())
        print(describe(recipe))
        return 0
    if opts.parallel:
        return _pair_parallel(args, recipe, opts, out)
    from ettin.train import distributed as D
    from ettin.train.loop import NonFiniteLoss, train

    fingerprints = {}
    try:
        with D.session() as info:
            for objective, sub in OBJECTIVE_DIRS.items():
                if info.is_main:
                    print(f"== {recipe.name}: {sub} ({objective}) -> {out / sub}", flush=True)
                results = train(recipe, out / sub, objective=objective, resume=opts.resume)
                if results and info.is_main:
                    _print_results(out / sub, results)
                fingerprints[sub] = json.loads((out / sub / "fingerprints.json").read_text())
    except NonFiniteLoss as e:
        print(f"ettin pair: stopped: {e}", file=sys.stderr)
        return 3
    return _compare_fingerprints(out, fingerprints) if info.is_main else 0


def _pair_parallel(args, recipe, opts, out: Path) -> int:
    """Encoder and decoder as two child processes side by side (e.g. one CPU core each); logs in
    <out>/<encoder|decoder>/train.log. The data set-up runs once, first, in this process."""
    import subprocess

    from ettin.train.batches import ensure_data

    ensure_data(recipe)
    procs = {}
    for objective, sub in OBJECTIVE_DIRS.items():
        (out / sub).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "ettin.cli", "train", args.recipe, "--objective", objective,
               "--out", str(out / sub), *(["--resume"] if opts.resume else []), *opts.overrides,
               "train.progress=false"]
        log = open(out / sub / "train.log", "w")
        print(f"== {recipe.name}: {sub} ({objective}) -> {out / sub} (log: {out / sub / 'train.log'})", flush=True)
        procs[sub] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    _follow(procs, out)
    failed = []
    for sub, (proc, log) in procs.items():
        if proc.wait() != 0:
            failed.append(sub)
        log.close()
        print(f"-- {sub}:\n" + "".join((out / sub / "train.log").read_text().splitlines(True)[-6:]), flush=True)
    if failed:
        print(f"ettin pair: {', '.join(failed)} failed (see train.log)", file=sys.stderr)
        return 1
    fingerprints = {sub: json.loads((out / sub / "fingerprints.json").read_text()) for sub in procs}
    return _compare_fingerprints(out, fingerprints)


def _follow(procs: dict, out: Path, every_s: float = 15.0) -> None:
    """While the children train, print each one's latest progress line every `every_s` seconds."""
    import time

    last: dict[str, str] = {}
    while any(proc.poll() is None for proc, _ in procs.values()):
        time.sleep(every_s)
        for sub in procs:
            lines = [ln for ln in (out / sub / "train.log").read_text(errors="replace").splitlines() if " step " in ln]
            if lines and lines[-1] != last.get(sub):
                last[sub] = lines[-1]
                print(f"  {sub}: {lines[-1]}", flush=True)


def _compare_fingerprints(out: Path, fingerprints: dict) -> int:
    same = fingerprints["encoder"] == fingerprints["decoder"]
    summary = {"same_batch_order": same, **fingerprints}
    (out / "pair.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"batch-order fingerprints {'match' if same else 'DIFFER'}: "
          + ", ".join(f"{k} {v['fingerprint']}" for k, v in fingerprints["encoder"].items()))
    return 0 if same else 1


def _print_results(out: Path, results) -> None:
    for r in results:
        print(f"  {r.phase}: {r.steps} steps, loss {r.first_loss:.4f} -> {r.last_loss:.4f}"
              f"{f', {r.skipped} skipped' if r.skipped else ''}; checkpoint {r.checkpoint}")
    print(f"  final model: {out / 'final'}; metrics: {out / 'metrics.jsonl'}", flush=True)


def cmd_export(args) -> int:
    from ettin.train.checkpoint import export_hf

    out = export_hf(args.checkpoint, args.out)
    print(f"wrote {out}")
    return 0


def cmd_convert(args) -> int:
    """Same weights, the other objective: an encoder-from-decoder loads as ModernBertForMaskedLM,
    a decoder-from-encoder as ModernBertDecoderForCausalLM. Continue training with a cross recipe."""
    from ettin.train.checkpoint import export_hf, read_meta

    source = read_meta(args.checkpoint)["model_config"]["objective"]
    out = export_hf(args.checkpoint, args.out, objective=args.to)
    print(f"converted {source} -> {args.to}: {out}")
    return 0
