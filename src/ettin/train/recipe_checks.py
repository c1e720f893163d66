"""What a recipe must satisfy: `validate` (every check that can fail before training starts) and `RecipeError`.

A leaf module (it imports no other recipe module), so `ettin.train.recipe` and `ettin.train.recipe_keys` both use it:
`SET_ELSEWHERE` is the one list of the model config fields `model.overrides` may not set, read by the recipe check and
by the override check of the command line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from ettin.config import OBJECTIVES, RUNTIME_KEYS, SIZES, SPECIAL_TOKEN_FIELDS, ModelConfig
from ettin.data.synthetic import SYNTHETIC_SPECIAL
from ettin.train.schedule import DECAY_SHAPES

if TYPE_CHECKING:
    from ettin.train.recipe_types import Recipe

SCHEDULES = ("warmup_stable", "one_minus_sqrt", "warmup_stable_decay", "constant")
TOKEN_UNITS = ("real", "slots")  # how a phase counts its budget (ettin.train.plan)
# model config fields a recipe sets elsewhere, refused under model.overrides with where they go: `Recipe.model_config`
# sets the objective, the tokenizer's vocabulary and special ids and the phase's RoPE thetas over any override (a
# test checks it), and how the model runs is a train setting
SET_ELSEWHERE = {
    "objective": "the objective is the run's: set the recipe's `objective` (or ettin train --objective) instead",
    "vocab_size": "the vocabulary is the tokenizer's (data.tokenizer; synthetic data: data.vocab_size): remove it",
    "global_rope_theta": "each phase sets its RoPE thetas: set phases.N.global_rope_theta instead",
    "local_rope_theta": "each phase sets its RoPE thetas: set phases.N.local_rope_theta instead",
    **dict.fromkeys(SPECIAL_TOKEN_FIELDS, "the special ids are the tokenizer's (data.tokenizer): remove it"),
    **{k: f"how the model runs, not the architecture: set train.{k} instead" for k in RUNTIME_KEYS},
}


class RecipeError(ValueError):
    """A recipe that cannot run: the message names the file and the field."""


def _check(ok: bool, source: str, where: str, message: str) -> None:
    if not ok:
        raise RecipeError(f"{source}: {where}: {message}")


def validate(r: Recipe) -> None:
    """Every check that can fail before training starts."""
    s = r.source_file
    _check(r.objective in OBJECTIVES, s, "objective", f"must be one of {OBJECTIVES}, got {r.objective!r}")
    _check(isinstance(r.seeds, int) and r.seeds >= 1, s, "seeds", f"must be an integer >= 1, got {r.seeds!r}")
    _check(r.model.size in SIZES, s, "model.size", f"unknown size {r.model.size!r}; known: {', '.join(SIZES)}")
    refused = sorted(set(r.model.overrides) & set(SET_ELSEWHERE))
    if refused:
        raise RecipeError(f"{s}: model.overrides.{refused[0]}: {SET_ELSEWHERE[refused[0]]}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    bad = sorted(set(r.model.overrides) - fields)
    _check(not bad, s, "model.overrides", f"unknown model config field(s) {bad}")
    _check(r.data.source in ("prepared", "synthetic"), s, "data.source", "must be 'prepared' or 'synthetic'")
    if r.data.source == "synthetic":
        _check(bool(r.data.vocab_size), s, "data.vocab_size", "synthetic data needs a vocab_size")
    else:
        _check(r.data.tokenizer is not None, s, "data.tokenizer", "prepared data needs a tokenizer")
    _check(0.0 <= r.data.holdout_fraction < 1.0, s, "data.holdout_fraction", "must be in [0, 1)")
    if r.data.prepare is not None:
        _check(bool(r.data.prepare.sources), s, "data.prepare.sources", "list the sources to prepare")
    t = r.train
    _check(t.lr > 0, s, "train.lr", f"must be positive, got {t.lr}")
    _check(t.weight_decay >= 0, s, "train.weight_decay", "must be >= 0")
    _check(all(0 <= b < 1 for b in t.betas), s, "train.betas", f"each in [0, 1), got {t.betas}")
    _check(t.eps > 0, s, "train.eps", "must be positive")
    _check(t.global_batch_size > 0, s, "train.global_batch_size", "must be positive")
    _check(0 < t.micro_batch_size, s, "train.micro_batch_size", "must be positive")
    _check(t.precision in ("fp32", "bf16"), s, "train.precision", f"fp32 or bf16, got {t.precision!r}")
    _check(t.distributed in ("auto", "none", "ddp", "fsdp"), s, "train.distributed",
           f"auto, none, ddp or fsdp, got {t.distributed!r}")
    _check(t.nan_policy in ("stop", "skip"), s, "train.nan_policy", f"stop or skip, got {t.nan_policy!r}")
    _check(t.log_every > 0, s, "train.log_every", "must be positive")
    _check(t.spike_guard in ("off", "skip", "stop"), s, "train.spike_guard",
           f"off, skip or stop, got {t.spike_guard!r}")
    _check(t.spike_window >= 2, s, "train.spike_window", f"must be >= 2 steps, got {t.spike_window}")
    _check(t.spike_sigmas > 0, s, "train.spike_sigmas", f"must be positive, got {t.spike_sigmas}")
    _check(t.data_workers is None or t.data_workers >= 0, s, "train.data_workers", "must be >= 0 (or null: auto)")
    from ettin.attention import BACKENDS

    _check(t.attn_backend in ("auto", *BACKENDS), s, "train.attn_backend",
           f"auto or one of {BACKENDS}, got {t.attn_backend!r}")
    _check(not (t.compile and t.attn_backend == "flex"), s, "train.attn_backend",
           "flex is compiled on its own (its block masks are built outside the blocks); with train.compile=true use "
           "auto, sdpa or flash, or set train.compile=false")
    _check(t.loss_chunk_size > 0, s, "train.loss_chunk_size", "must be positive")
    _check(t.keep_checkpoints >= 0, s, "train.keep_checkpoints", "must be >= 0 (0 keeps all)")
    _check(t.token_unit in TOKEN_UNITS, s, "train.token_unit", f"one of {TOKEN_UNITS}, got {t.token_unit!r}")
    _check(bool(r.phases), s, "phases", "a recipe needs at least one phase")
    names = [p.name for p in r.phases]
    _check(len(set(names)) == len(names), s, "phases", f"phase names must be unique, got {names}")
    for i, p in enumerate(r.phases):
        w = f"phases.{i} ({p.name})"
        _check(p.name.replace("_", "").replace("-", "").isalnum(), s, f"{w}.name", "letters, digits, - and _")
        _check(p.tokens > 0, s, f"{w}.tokens", "must be positive")
        _check(p.seq_len > 1, s, f"{w}.seq_len", "must be > 1")
        _check(0.0 <= p.mlm_probability < 1.0, s, f"{w}.mlm_probability", "must be in [0, 1)")
        _check(p.schedule in SCHEDULES, s, f"{w}.schedule", f"one of {SCHEDULES}, got {p.schedule!r}")
        _check(p.token_unit in (None, *TOKEN_UNITS), s, f"{w}.token_unit", f"one of {TOKEN_UNITS}")
        _check(p.decay_shape in (None, *DECAY_SHAPES), s, f"{w}.decay_shape", f"one of {DECAY_SHAPES}")
        _check(p.lr_start > 0 and p.end_factor >= 0, s, f"{w}.lr_start", "factors must be positive")
        _check(p.warmup_tokens + p.decay_tokens <= p.tokens, s, f"{w}.warmup_tokens",
               "warmup + decay exceed the phase's tokens")
        _check_schedule_settings(p, s, w)
        _check(r.batch_size(p) > 0 and r.micro_batch_size(p) > 0, s, f"{w}.global_batch_size", "positive")
        _check(p.global_rope_theta > 0 and p.local_rope_theta > 0, s, f"{w}.global_rope_theta", "positive")
        if r.data.source == "prepared" and r.data.mixtures:
            _check(p.mixture in r.data.mixtures, s, f"{w}.mixture",
                   f"{p.mixture!r} is not in data.mixtures ({sorted(r.data.mixtures)})")
            spec = r.data.mixtures[p.mixture]
            if isinstance(spec, str):
                found = Path(spec).exists() or (Path(s).parent / spec).exists()
                _check(found, s, f"data.mixtures.{p.mixture}", f"mixture file {spec} not found")
        try:
            r.model_config(p, r.data.vocab_size or 50368, special=SYNTHETIC_SPECIAL)  # shapes only
        except (ValueError, KeyError) as e:
            raise RecipeError(f"{s}: model (phase {p.name}): {e}") from None


# the phase settings each schedule reads (ettin.train.plan.phase_schedule); a set one it does not read is refused
_READS = {"warmup_stable": {"warmup_tokens"}, "one_minus_sqrt": {"decay_tokens", "decay_shape", "lr_end"},
          "warmup_stable_decay": {"warmup_tokens", "decay_tokens", "decay_shape", "lr_end"}, "constant": set()}


def _check_schedule_settings(p, s: str, w: str) -> None:
    unused = {"warmup_tokens": p.warmup_tokens != 0, "decay_tokens": p.decay_tokens != 0,
              "decay_shape": p.decay_shape is not None, "lr_end": p.lr_end is not None}
    for key, given in unused.items():
        _check(not given or key in _READS.get(p.schedule, {key}), s, f"{w}.{key}",
               f"the {p.schedule} schedule does not read it: remove it, or choose a schedule that does "
               f"({', '.join(k for k, reads in _READS.items() if key in reads)})")
