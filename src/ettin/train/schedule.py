"""Learning-rate schedules of the three Ettin phases, as factors of the recipe's peak LR.

  warmup_stable        linear warmup from ~0 to lr_start, then constant (phase 1: the trapezoid's
                       decay is done by phases 2 and 3)
  one_minus_sqrt       lr_end + (lr_start - lr_end) * (1 - sqrt(t / T)), no warmup (phases 2 and 3)
  warmup_stable_decay  warmup, constant, then a 1-sqrt decay over the last decay_tokens (cross-objective)
  constant             lr_start throughout

Same shapes as bert24's WarmupStableDecayScheduler / OneMinusSqrtScheduler (reference section 3.3).
The loop sets the LR of every step from `factor(step)`; the step is stored in each checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WARMUP_START = 1e-10  # bert24 warms up from 1e-10, not 0 (a zero LR step would still move Adam's moments)


@dataclass(frozen=True)
class PhaseSchedule:
    kind: str
    total_steps: int
    warmup_steps: int = 0
    decay_steps: int = 0
    lr_start: float = 1.0
    lr_end: float = 1.0

    @classmethod
    def from_recipe(cls, recipe, phase) -> PhaseSchedule:
        per_step = recipe.tokens_per_step(phase)
        total = recipe.phase_steps(phase)
        warmup = min(total, math.ceil(phase.warmup_tokens / per_step)) if phase.warmup_tokens else 0
        decay = min(total - warmup, math.ceil(phase.decay_tokens / per_step)) if phase.decay_tokens else 0
        return cls(phase.schedule, total, warmup, decay, phase.lr_start, phase.end_factor)

    def _one_minus_sqrt(self, t: int, span: int) -> float:
        frac = min(1.0, t / max(1, span))
        return self.lr_end + (self.lr_start - self.lr_end) * (1.0 - math.sqrt(frac))

    def factor(self, step: int) -> float:
        """LR factor (of the recipe's peak LR) used for optimizer step `step` (0-based) of the phase."""
        if self.kind == "constant":
            return self.lr_start
        if self.kind == "one_minus_sqrt":
            return self._one_minus_sqrt(step, self.total_steps - 1)
        if step < self.warmup_steps:
            frac = (step + 1) / self.warmup_steps  # the last warmup step reaches the peak
            return self.lr_start * max(WARMUP_START, frac)
        if self.kind == "warmup_stable":
            return self.lr_start
        if self.kind == "warmup_stable_decay":
            decay_start = self.total_steps - self.decay_steps
            if step < decay_start or self.decay_steps == 0:
                return self.lr_start
            return self._one_minus_sqrt(step - decay_start, self.decay_steps - 1)
        raise ValueError(f"unknown schedule {self.kind!r}")

