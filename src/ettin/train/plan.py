"""The resolved plan of a run: what each phase trains, computed once from a recipe and used everywhere.

The loop (budgets, batch sizes, schedule, save cadence), `--dry-run`, `--plan` (one JSON object) and the progress
line all read this, so what a run prints is what it trains.

Budgets are counted as the published trainer counted them (every Ettin YAML sets `count_padding_tokens: false`;
orionw/bert24 main.py lines 244-245 and 269-270: `get_num_tokens_in_batch_unpadded` = `attention_mask.sum()`):
**real tokens**, the positions of a batch that hold a token ([CLS] and [SEP] included, padding excluded; for MLM
every real token, not only the masked ones). A phase ends at the first step whose cumulative real tokens reach
its budget; warmup and decay are positions in real tokens (`ettin.train.schedule`). Rows are not packed in the
published recipe, so a 1,024-token row holds about 615 real tokens on the published data, and a phase takes
about 1.7x the steps that `tokens / (rows x seq_len)` would say. `token_unit: slots` counts rows x seq_len
instead (every position, padding included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ettin.train.recipe import Recipe, RecipeError
from ettin.train.schedule import PhaseSchedule


@dataclass(frozen=True)
class PhasePlan:
    index: int
    name: str
    seq_len: int
    global_batch: int  # rows per optimizer step, all ranks together
    micro_batch: int  # rows per forward on one rank
    accumulation: int  # micro-batches per step on one rank: global_batch = world x micro_batch x accumulation
    tokens: int  # the budget, in `token_unit`
    token_unit: str  # "real" | "slots"
    schedule: PhaseSchedule
    save_every_tokens: int  # 0: only at the phase's end
    mlm_probability: float  # 0.0: the objective masks nothing (clm), as the published decoder YAMLs say
    global_rope_theta: float
    local_rope_theta: float
    mixture: str

    @property
    def slots_per_step(self) -> int:
        return self.global_batch * self.seq_len

    def step_tokens(self, real_tokens: int) -> int:
        """What a step of `real_tokens` real tokens adds to the phase's budget count."""
        return real_tokens if self.token_unit == "real" else self.slots_per_step

    def expected_steps(self, fill: float = 1.0) -> int:
        """Steps to the budget when rows hold `fill` real tokens per slot on average (slots: fill is ignored)."""
        fill = 1.0 if self.token_unit == "slots" else fill
        return max(1, math.ceil(self.tokens / max(1e-9, fill * self.slots_per_step)))

    def saves_between(self, before: int, after: int) -> bool:
        """Whether a checkpoint is due for a step that moved the count from `before` to `after`."""
        return after >= self.tokens or (
            self.save_every_tokens > 0 and after // self.save_every_tokens > before // self.save_every_tokens)

    def to_json(self, peak_lr: float) -> dict[str, Any]:
        s = self.schedule
        return {
            "name": self.name, "seq_len": self.seq_len, "global_batch": self.global_batch,
            "micro_batch": self.micro_batch, "accumulation": self.accumulation, "tokens": self.tokens,
            "token_unit": self.token_unit, "schedule": s.kind, "warmup_tokens": s.warmup,
            "decay_tokens": s.decay if s.shape else 0, "decay_shape": s.shape,
            "lr_start": peak_lr * s.factor(s.warmup) if s.warmup < s.total else peak_lr * s.lr_start,
            "lr_end": peak_lr * s.factor(s.total), "mlm_probability": self.mlm_probability,
            "global_rope_theta": self.global_rope_theta, "local_rope_theta": self.local_rope_theta,
            "mixture": self.mixture, "save_every_tokens": self.save_every_tokens,
            "steps_if_rows_full": self.expected_steps(1.0),
        }


@dataclass(frozen=True)
class Plan:
    recipe: Recipe  # resolved for `objective`
    objective: str
    world_size: int
    phases: tuple[PhasePlan, ...]

    def to_json(self) -> dict[str, Any]:
        r, t = self.recipe, self.recipe.train
        from ettin.data.synthetic import SYNTHETIC_SPECIAL

        # the shapes and settings only: any vocabulary and special ids do (the data's are read at training)
        config = r.model_config(r.phases[0], r.data.vocab_size or 50368, self.objective, special=SYNTHETIC_SPECIAL)
        return {
            "recipe": r.name, "source": r.source_file, "objective": self.objective, "world_size": self.world_size,
            "model": {"size": r.model.size, "layers": config.num_layers, "hidden_size": config.hidden_size,
                      "intermediate_size": config.intermediate_size, "heads": config.num_heads,
                      "attention_output_dropout": config.attention_output_dropout,
                      "attention_dropout": config.attention_dropout,
                      "init": {"std": config.initializer_range, "cutoff_factor": config.initializer_cutoff_factor},
                      "init_from": r.model.init_from},
            "optimizer": {"name": "StableAdamW", "lr": t.lr, "betas": list(t.betas), "eps": t.eps,
                          "weight_decay": t.weight_decay},
            "precision": t.precision, "seed": r.seed, "mntp": t.mntp,
            "phases": [p.to_json(t.lr) for p in self.phases],
        }


def phase_schedule(phase, token_budget: int) -> PhaseSchedule:
    """A phase's schedule (`phase`: a recipe PhaseSection)."""
    shape = phase.decay_shape
    decay = phase.decay_tokens
    if phase.schedule == "one_minus_sqrt":
        shape, decay = shape or "1-sqrt", decay or token_budget  # t_decay: max_duration in the published YAMLs
    elif phase.schedule == "warmup_stable_decay" and decay > 0:
        shape = shape or "linear"  # the published trainer's WarmupStableDecayScheduler decays linearly
    else:
        shape, decay = None, 0
    warmup = phase.warmup_tokens if phase.schedule in ("warmup_stable", "warmup_stable_decay") else 0
    return PhaseSchedule(phase.schedule, token_budget, warmup, decay, phase.lr_start, phase.end_factor, shape)


def make_plan(recipe: Recipe, objective: str | None = None, world_size: int = 1) -> Plan:
    """The plan of `recipe` trained as `objective` (default: the recipe's) on `world_size` ranks. Raises
    RecipeError, naming the phase and the numbers, when the batch does not split evenly over the ranks."""
    objective = objective or recipe.objective
    r = recipe.for_objective(objective)
    s = r.source_file
    phases = []
    for i, p in enumerate(r.phases):
        where = f"{s}: phases.{i} ({p.name})"
        rows, micro = r.batch_size(p), r.micro_batch_size(p)
        per_rank, left = divmod(rows, world_size)
        if left or per_rank == 0:
            raise RecipeError(f"{where}: global batch {rows} rows does not split over {world_size} ranks "
                              f"(every rank must run the same number of micro-batches); use a multiple of "
                              f"{world_size} rows or another number of ranks")
        micro = min(micro, per_rank)
        accumulation, left = divmod(per_rank, micro)
        if left:
            fits = [m for m in range(1, per_rank + 1) if per_rank % m == 0 and m <= micro][-3:]
            raise RecipeError(f"{where}: {per_rank} rows per rank ({rows} over {world_size}) are not a whole number "
                              f"of micro-batches of {micro}: world {world_size} x micro-batch {micro} x "
                              f"accumulation must equal {rows}; a micro-batch of {' or '.join(map(str, fits))} fits")
        unit = p.token_unit or r.train.token_unit
        phases.append(PhasePlan(
            index=i, name=p.name, seq_len=p.seq_len, global_batch=rows, micro_batch=micro,
            accumulation=accumulation, tokens=p.tokens, token_unit=unit, schedule=phase_schedule(p, p.tokens),
            save_every_tokens=r.train.save_every_tokens,
            mlm_probability=p.mlm_probability if (objective == "mlm" or r.train.mntp) else 0.0,
            global_rope_theta=p.global_rope_theta, local_rope_theta=p.local_rope_theta, mixture=p.mixture,
        ))
    return Plan(r, objective, world_size, tuple(phases))


def measured_fill(source, phase: PhasePlan, max_steps: int = 64, max_rows: int = 1 << 16) -> float:
    """Mean real tokens per slot over the first steps of a phase's loader (`global_tokens(step)`): the fill the
    expected step count uses. Reads only the instance index, not the tokens."""
    steps = max(1, min(max_steps, max_rows // max(1, phase.global_batch)))
    real = sum(source.global_tokens(k) for k in range(steps))
    return real / (steps * phase.slots_per_step)


def describe(plan: Plan, fills: dict[str, float] | None = None) -> str:
    """The `--dry-run` summary: per phase, the budget, the batch split, the schedule and the save cadence; with
    `fills` (measured real tokens per slot by phase name), the steps that the budget takes on that data."""
    r, t = plan.recipe, plan.recipe.train
    lines = [f"recipe {r.name} ({r.source_file}): objective {plan.objective}, model {r.model.size}, seed {r.seed}",
             f"optimizer StableAdamW lr {t.lr:g} wd {t.weight_decay:g} betas {tuple(t.betas)} eps {t.eps:g} "
             f"(fully decoupled); precision {t.precision}; distributed {t.distributed} on {plan.world_size} rank(s)"]
    for p in plan.phases:
        j = p.to_json(t.lr)
        fill = (fills or {}).get(p.name)
        steps = (f"{p.expected_steps(fill):,} steps at the data's measured fill {fill:.1%}" if fill is not None
                 else f"{p.expected_steps():,} steps if every row were full")
        decay = f", {j['decay_shape']} decay over {j['decay_tokens']:,}" if j["decay_shape"] else ""
        lines.append(
            f"  phase {p.name}: {p.tokens:,} {p.token_unit} tokens ({steps}); batch {p.global_batch} x seq "
            f"{p.seq_len} = {p.slots_per_step:,} slots a step ({plan.world_size} rank(s) x micro-batch "
            f"{p.micro_batch} x {p.accumulation} accumulation); {p.schedule.kind}: warmup {j['warmup_tokens']:,}"
            f"{decay}, lr {j['lr_start']:.3g} -> {j['lr_end']:.3g}; rope {p.global_rope_theta:g}/"
            f"{p.local_rope_theta:g}; mlm {p.mlm_probability}; mixture {p.mixture}; checkpoint "
            + (f"every {p.save_every_tokens:,} tokens" if p.save_every_tokens else "at the end"))
    units = sorted({p.token_unit for p in plan.phases})
    lines.append(f"total {sum(p.tokens for p in plan.phases):,} {'/'.join(units)} tokens")
    return "\n".join(lines)
