"""`ettin continue MODEL --data FILE... --tokens N --out DIR`: continued pre-training of any checkpoint on your text.

MODEL is an ettin checkpoint, a run folder (its newest checkpoint), an exported Hugging Face folder, or (online) a hub
id with `--revision`. The command builds a one-phase recipe and trains it with the loop of `ettin train`, so
`--plan`, `--dry-run` and `--resume` are that command's; the recipe it ran is `DIR/recipe.yaml`, which
`ettin train DIR/recipe.yaml --out OTHER` trains again.

  tokenizer   the model's own (its run's tokenizer.json, or the folder's); the files are tokenized with it into
              DIR/shards (`ettin data prepare`), and `model.init_from` refuses data tokenized otherwise
  objective   the model's: mlm for an encoder, clm for a decoder; `--mntp` trains an encoder with masked next-token
              prediction instead (from a decoder: the published encoder-from-decoder variant)
  model       the checkpoint's shape, RoPE thetas, dropout and context, unchanged; rows of `--seq-len` tokens
              (default: the model's context, at most 1024), documents packed into rows
  schedule    the published cross-objective phase's shape (recipes/cross/_base.yaml): linear warmup over the first
              6% of the tokens, constant, then a linear decay over the last 20% to 0.02x the peak; the peak is half
              the size's published pre-training peak (recipes/<size>.yaml), where both published continuations
              start (the cross phase's peak, the decay phase's first step; `PEAK_LR`). `--lr` sets another peak.
  masking     15% for mlm and mntp, as the published decay and cross-objective phases
  held out    the last `--holdout` (5%) of every file's documents are never trained on; they are scored under the
              objective before and after training (`ettin.train.heldout`), and both figures printed at the end
              and written to DIR/continued.json
Anything else is a recipe override, as `ettin train` takes them (`train.lr=1e-4 phases.0.warmup_tokens=2k`).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ettin.config import SIZES, ModelConfig, preset
from ettin.io import read_json
from ettin.train import commands
from ettin.train.owndata import data_flags, data_sources, mixture
from ettin.train.recipe import RecipeError, apply_override, parse_tokens, recipe_from_dict
from ettin.train.recipe_checks import SET_ELSEWHERE

WARMUP_SHARE = 3 / 50  # the cross-objective phase: 3B tokens of warmup in 50B
DECAY_SHARE = 10 / 50  # ... and a linear decay over its last 10B
LR_END = 0.02  # of the peak, as the decay and cross-objective phases end
PEAK_SHARE = 0.5  # of the pre-training peak: where the cross-objective and decay phases start
MLM_PROBABILITY = 0.15  # the decay and cross-objective phases' masking rate
HOLDOUT = 0.05  # a user's corpus is small: 2% of a few hundred documents would be a handful
MAX_SEQ_LEN = 1024  # the published pre-training context; longer rows on request (--seq-len)
# the pre-training peak learning rate of each size preset with a recipe (recipes/<size>.yaml's train.lr, which
# tests/test_continue.py checks against this table), in the package: an installed one has no recipes/ folder
PEAK_LR = {"17m": 3e-3, "32m": 3e-3, "68m": 3e-3, "150m": 8e-4, "400m": 5e-4, "1b": 5e-4, "tiny": 3e-3, "demo": 3e-3}


@dataclass
class Start:
    """The model to continue: its weights (`init_from`), configuration and tokenizer."""

    init_from: Path  # a checkpoint folder (meta.json) or a Hugging Face folder (config.json)
    kind: str  # "checkpoint" | "hf"
    config: ModelConfig
    tokenizer: Path
    given: str  # what the command line said


def register(subparsers) -> None:
    text = "continue pre-training any checkpoint on your own text files (one phase, the model's tokenizer)"
    p = subparsers.add_parser("continue", help=text, description=text, allow_abbrev=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("model", help="an ettin checkpoint, a run folder (its newest checkpoint), a Hugging Face folder, "
                                 "or a hub id (online; --revision)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. train.lr=1e-4")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE",
                   help="your text: .jsonl / .txt / .parquet files, folders or globs (ettin data prepare's sources)")
    data_flags(p)
    p.add_argument("--tokens", required=True, help="training tokens (real tokens: 200k, 5M, 1B)")
    p.add_argument("--out", required=True, metavar="DIR", help="the run folder (shards in DIR/shards)")
    p.add_argument("--revision", help="a hub id's revision (branch, tag or commit)")
    p.add_argument("--mntp", action="store_true",
                   help="train an encoder by masked next-token prediction (a decoder becomes an encoder)")
    p.add_argument("--lr", type=float, help="the peak learning rate (default: half the size's published peak)")
    p.add_argument("--seq-len", type=int, help="tokens a row (default: the model's context, at most 1024)")
    p.add_argument("--batch-size", type=int, default=16, help="rows a step (default 16)")
    p.add_argument("--micro-batch-size", type=int, help="rows a forward pass (default: the batch)")
    p.add_argument("--holdout", type=float, default=HOLDOUT,
                   help=f"the share of every file's documents held out and scored (default {HOLDOUT})")
    p.add_argument("--seed", type=int, default=0, help="the data order and masking seed (default 0)")
    commands.common_flags(p)
    p.set_defaults(func=cmd_continue, takes_overrides=True, flags=commands.flag_names(p))


# ------------------------------------------------------------------------------------------- the start


def resolve_start(model: str, revision: str | None = None) -> Start:
    """What MODEL names, checked: a checkpoint, a run folder's newest checkpoint, a Hugging Face folder or a hub id."""
    from ettin.hf import config_from_hf, resolve_path
    from ettin.io import is_hub_id
    from ettin.train.checkpoint import META, read_meta, resolve_checkpoint
    from ettin.train.preflight import init_tokenizer

    path = Path(model).expanduser()
    if path.exists() or not is_hub_id(model):
        if revision:
            raise RecipeError(f"--revision {revision}: for hub ids only; {model} is a local path")
        if not path.exists():
            raise FileNotFoundError(f"{model}: no such folder (a checkpoint, run folder or Hugging Face folder)")
        if (path / "config.json").is_file() and not (path / META).is_file():
            kind = "hf"
        else:
            path, kind = resolve_checkpoint(path), "checkpoint"
    else:
        path, kind = resolve_path(model, revision), "hf"  # online: the hub's snapshot folder
    tokenizer = init_tokenizer(path)
    if tokenizer is None:
        raise FileNotFoundError(f"{model}: no tokenizer.json beside the model ({path}); ettin continue tokenizes "
                                "your text with the model's own tokenizer")
    if kind == "checkpoint":
        config = ModelConfig.from_dict(read_meta(path)["model_config"])
    else:
        from ettin.data.tokenizer import load_tokenizer

        raw = read_json(path / "config.json")  # errors name the file
        config = config_from_hf(raw, mask_token_id=load_tokenizer(tokenizer).mask_id)
    return Start(path, kind, config, tokenizer, model)


def size_name(config: ModelConfig) -> str | None:
    """The size preset with this shape, if any."""
    shape = (config.num_layers, config.hidden_size, config.intermediate_size, config.num_heads)
    for name in SIZES:
        p = preset(name)
        if (p.num_layers, p.hidden_size, p.intermediate_size, p.num_heads) == shape:
            return name
    return None


# ------------------------------------------------------------------------------------------- the recipe


def continue_recipe(start: Start, args) -> dict:
    """The one-phase recipe of `ettin continue`, as a dict for `recipe_from_dict` (see the module docstring)."""
    import torch


    cfg = start.config
    objective = "mlm" if args.mntp else cfg.objective
    try:
        tokens = parse_tokens(args.tokens)
    except ValueError as e:
        raise RecipeError(f"--tokens: {e}") from None
    if tokens <= 0:
        raise RecipeError(f"--tokens: must be positive, got {args.tokens}")
    size = size_name(cfg)
    peak = PEAK_LR.get(size)
    if args.lr is None and peak is None:
        raise RecipeError(f"{start.given}: its shape matches no size preset with a published recipe, so there is no "
                          "published peak to start from; give --lr")
    seq_len = args.seq_len or min(cfg.max_position_embeddings, MAX_SEQ_LEN)
    if not 2 < seq_len <= cfg.max_position_embeddings:
        raise RecipeError(f"--seq-len {seq_len}: the model's context is {cfg.max_position_embeddings} tokens")
    out = Path(args.out)
    shards = out / "shards"
    sources = data_sources(args.data, args.field, args.split_by)
    mix = mixture(sources, shards, "continue", "pack")
    # the checkpoint's shape, dropout and context; not what the recipe sets elsewhere (its objective, RoPE thetas, the
    # tokenizer's vocabulary and ids: the same values, from the phase and the data)
    overrides = {k: v for k, v in cfg.to_dict().items() if k not in SET_ELSEWHERE and (k != "extra" or v)}
    batch = args.batch_size
    raw = {
        "name": out.name, "objective": objective, "seed": args.seed, "out_dir": str(out.parent),
        "model": {"size": size or "tiny", "overrides": overrides, "init_from": str(start.init_from)},
        "data": {"tokenizer": str(start.tokenizer), "vocab_size": cfg.vocab_size, "holdout_fraction": args.holdout,
                 "mixtures": {"continue": mix},
                 "prepare": {"out": str(shards), "sources": sources}},
        "train": {"lr": args.lr if args.lr is not None else PEAK_SHARE * peak, "global_batch_size": batch,
                  "micro_batch_size": args.micro_batch_size or batch,
                  "precision": "bf16" if torch.cuda.is_available() else "fp32",
                  "save_every_tokens": max(1, math.ceil(tokens / 4)), "keep_checkpoints": 2, "log_every": 5,
                  "mntp": bool(args.mntp)},
        "phases": [{"name": "continue", "tokens": tokens, "seq_len": seq_len,
                    "global_rope_theta": cfg.global_rope_theta, "local_rope_theta": cfg.local_rope_theta,
                    "mlm_probability": MLM_PROBABILITY, "mixture": "continue", "schedule": "warmup_stable_decay",
                    "warmup_tokens": round(WARMUP_SHARE * tokens), "decay_tokens": round(DECAY_SHARE * tokens),
                    "decay_shape": "linear", "lr_start": 1.0, "lr_end": LR_END}],
    }
    if objective == "clm":  # a decoder recipe sets no masking (ettin.data.ready.unusable_keys)
        del raw["phases"][0]["mlm_probability"], raw["train"]["mntp"]
    return raw


def build(args) -> tuple:
    """(recipe, start, out) of a command line; every override applied and the recipe validated."""
    start = resolve_start(args.model, args.revision)
    raw = continue_recipe(start, args)
    for text in commands.split_extras(args):
        apply_override(raw, text, "ettin continue")
    return recipe_from_dict(raw, "ettin continue"), start, Path(args.out)


# ------------------------------------------------------------------------------------------- the command


def cmd_continue(args) -> int:
    try:
        return _continue(args)
    except RecipeError as e:  # the recipe is this command's own: name its flag, not the key it set
        raise RecipeError(re.sub(r"data\.prepare\.sources\.\d+", "--data", str(e))) from None


def _continue(args) -> int:
    recipe, start, out = build(args)
    if args.plan:
        return commands.print_plan(recipe, [recipe.objective], commands.world_size(args))
    if args.dry_run:
        return commands.dry_run(recipe, [recipe.objective], commands.world_size(args), out)
    commands.check_resume(args, [out])
    from ettin.train.resume import has_checkpoint

    if has_checkpoint(out) and not (args.resume or args.resume_if_exists):
        raise RecipeError(f"{out} already holds checkpoints: pass --resume to continue them, or another --out")
    from ettin.data.ready import ensure_data
    from ettin.train.checkpoint import latest_checkpoint, load_model
    from ettin.train.guard import TrainingStopped
    from ettin.train.loop import train
    from ettin.train.preflight import check_inputs

    check_inputs(recipe)
    existed = out.exists()
    try:
        ensure_data(recipe, log=lambda m: print(m, file=sys.stderr))
    except Exception:
        if not existed:  # bad input: leave no folder behind that this command made
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    print(f"ettin continue: {start.given} ({start.kind} {start.init_from}, {recipe.objective}"
          f"{' + mntp' if recipe.train.mntp else ''}) on {', '.join(args.data)}; tokenizer {start.tokenizer}",
          flush=True)
    held, before = _held_out_before(recipe)
    if held.training_tokens:
        tokens = recipe.phases[0].tokens
        print(f"data: {held.training_tokens:,} tokens to train on ({sum(held.documents.values())} documents held out); "
              f"{tokens:,} tokens read them about {tokens / held.training_tokens:.1f} times", flush=True)
    try:
        results = train(recipe, out, resume=args.resume or args.resume_if_exists)
    except TrainingStopped as e:
        print(f"ettin continue: stopped: {e}", file=sys.stderr)
        return 3
    commands.print_results(out, results)
    after = _score(recipe, held, load_model(latest_checkpoint(out)))
    _report(out, recipe, start, held, before, after)
    return 0


def _held_out_before(recipe) -> tuple:
    from ettin.data.ready import RecipeData
    from ettin.model import EttinModel
    from ettin.train.checkpoint import (
        load_initial_weights,  # the loop's own start, so "before" is what trains
    )
    from ettin.train.heldout import held_out_rows

    held = held_out_rows(recipe, recipe.phases[0])
    if not held.rows:
        return held, None
    data = RecipeData.open(recipe)
    model = EttinModel(recipe.model_config(recipe.phases[0], data.vocab_size, recipe.objective, data.special_ids))
    load_initial_weights(recipe.model.init_from, model)
    return held, _score(recipe, held, model)


def _score(recipe, held, model) -> dict | None:
    import torch

    from ettin.data.collate import collation_objective
    from ettin.data.tokenizer import load_tokenizer
    from ettin.train.heldout import score

    if not held.rows:
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    phase = recipe.phases[0]
    return score(model.to(device), held, load_tokenizer(recipe.data.tokenizer),
                 collation_objective(recipe.objective, recipe.train.mntp), phase.seq_len, phase.mlm_probability,
                 recipe.seed, device)


def _report(out: Path, recipe, start: Start, held, before: dict | None, after: dict | None) -> None:
    from ettin.io import atomic_write_json

    objective = "mntp" if recipe.train.mntp else recipe.objective
    masked = f", {recipe.phases[0].mlm_probability:.0%} masked, the same masks before and after" \
        if objective != "clm" else ""
    record = {"model": start.given, "init_from": str(start.init_from), "objective": objective,
              "held_out": {"fraction": recipe.data.holdout_fraction, "documents": held.documents,
                           "documents_available": held.available, "tokens": held.tokens},
              "before": before, "after": after, "final": str(out / "final")}
    atomic_write_json(out / "continued.json", record)
    if before is None or after is None:
        print("held out: no documents (data.holdout_fraction is 0, or every file is too short): nothing scored")
    else:
        docs = sum(held.documents.values())
        print(f"held-out log-likelihood ({objective}, {docs} documents of {held.available} held out, "
              f"{held.tokens:,} tokens, {after['predicted']:,} predicted{masked}): "
              f"{-before['loss']:.4f} -> {-after['loss']:.4f} nats a predicted token "
              f"(perplexity {before['perplexity']:.1f} -> {after['perplexity']:.1f})")
    print(f"transformers: {out / 'final'} (AutoModelFor"
          f"{'MaskedLM' if recipe.objective == 'mlm' else 'CausalLM'}.from_pretrained); record: "
          f"{out / 'continued.json'}", flush=True)


__all__ = ["Start", "build", "continue_recipe", "register", "resolve_start"]
