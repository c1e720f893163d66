"""Learning-rate schedules of the Ettin phases: a factor of the recipe's peak LR as a function of the phase's
position, the tokens trained in the phase before a step (real tokens, or slots: rows x seq_len, as the phase
counts them; `ettin.train.plan`).

  warmup_stable        linear warmup from 1e-10 to lr_start, then constant (phase 1: the published trapezoid's
                       decay is done by phases 2 and 3)
  one_minus_sqrt       lr_end + (lr_start - lr_end) * (1 - sqrt(t / T)) over the last `decay` tokens (the whole
                       phase by default), no warmup (phases 2 and 3)
  warmup_stable_decay  warmup, constant, then a decay over the last `decay` tokens: linear, as the published
                       trainer's (cross-objective), or 1-sqrt (`decay_shape`)
  constant             lr_start throughout

As the published trainer computes them (orionw/bert24 src/scheduler.py: WarmupStableDecayScheduler, lines
76-117: warmup `LinearScheduler(alpha_i=1e-10, alpha_f=1.0, t_max=t_warmup)`, then 1.0, then
`1 - fraction * (1 - alpha_f)`; OneMinusSqrtScheduler, lines 230-268: `alpha_f + (1 - alpha_f) * (1 -
sqrt(fraction))`), with Composer's time: the LR of a batch is computed from the timestamp before it, in the
unit of `max_duration` (tokens; real tokens under `count_padding_tokens: false`). So the first step of a warmup
runs at 1e-10 x the peak, and the last step of a decay sits just above lr_end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WARMUP_START = 1e-10  # bert24 warms up from alpha_i=1e-10, not 0
DECAY_SHAPES = ("1-sqrt", "linear")


@dataclass(frozen=True)
class PhaseSchedule:
    kind: str
    total: int  # the phase's budget (tokens, in the phase's unit)
    warmup: int = 0  # tokens of linear warmup
    decay: int = 0  # tokens of the final decay (one_minus_sqrt, warmup_stable_decay)
    lr_start: float = 1.0
    lr_end: float = 1.0
    shape: str | None = None  # of the decay: "1-sqrt" | "linear"; None: the schedule has none

    @property
    def decay_start(self) -> float:
        """The position where the decay begins (inf: the schedule has no decay)."""
        return self.total - self.decay if self.shape is not None else math.inf

    def factor(self, position: float) -> float:
        """LR factor (of the recipe's peak LR) of the step that starts at `position` tokens into the phase."""
        if self.kind == "constant":
            return self.lr_start
        if position < self.warmup:
            return self.lr_start * (WARMUP_START + (1.0 - WARMUP_START) * position / self.warmup)
        if position < self.decay_start or self.decay <= 0:
            return self.lr_start
        frac = min(1.0, (position - self.decay_start) / self.decay)
        if self.shape == "linear":
            return self.lr_start - (self.lr_start - self.lr_end) * frac
        return self.lr_end + (self.lr_start - self.lr_end) * (1.0 - math.sqrt(frac))

    def agrees_until(self, other: PhaseSchedule, position: float) -> bool:
        """Whether the two schedules give the same factor at every position below `position` (exactly: the
        pieces are compared, not samples), so a run that has trained that far may switch to `other`."""
        if position <= 0:
            return True
        if (self.kind == "constant") != (other.kind == "constant") or self.lr_start != other.lr_start:
            return False
        if self.kind == "constant":
            return True
        if self.warmup != other.warmup:
            return False
        if min(self.decay_start, other.decay_start) >= position:  # neither has begun its decay yet
            return True
        return (self.decay_start, self.decay, self.shape, self.lr_end) == (
            other.decay_start, other.decay, other.shape, other.lr_end)
