"""The loss-spike guard (train.spike_guard: off | skip | stop), in the manner of OLMo-core's skip-step optimizer
(allenai/OLMo-core src/olmo_core/optim/skip_step_optimizer.py, `SkipStepOptimizer`: rolling_interval_length 128,
sigma_factor 6, a step skipped when its loss's z-score over the window exceeds the factor) and llm-foundry's
loss-spike callback (stop and say so).

A step's loss is a spike when the window holds `window` earlier losses and the loss exceeds their mean by more than
`sigmas` of their standard deviations. A spike does not join the window (a run of spikes keeps being measured
against the steps before it; OLMo-core keeps every loss, and judges from 20 or half a window on); every other
finite loss does. Only the loss is judged, not the gradient norm (which the logs carry). The window is part of a
checkpoint's meta, so a resumed run judges its next steps against the same history as the uninterrupted one.

`skip` needs each step's loss before the optimizer steps: one device-to-host read a step (as nan_policy=skip).
`stop` reads nothing extra: it judges the steps of a logging window when they are read back, and stops before the
next checkpoint is written, naming the step (up to log_every - 1 later steps are already applied then).

The presets leave it off: the published runs had no such guard (bert24's Composer config logs the gradient norm,
log_grad_norm, and StableAdamW clips each update, but nothing skips or stops on a loss spike), and a skipped
step would make a run differ from the published recipe.
"""

from __future__ import annotations

import math
from collections import deque


class TrainingStopped(RuntimeError):
    """A guard stopped the run (a loss spike here, a non-finite loss in the loop): `ettin train` exits with 3."""


class LossSpike(TrainingStopped):
    """A loss spike under train.spike_guard=stop."""


class SpikeGuard:
    def __init__(self, window: int, sigmas: float, history: list[float] | None = None) -> None:
        self.window, self.sigmas = window, sigmas
        self.history: deque[float] = deque(history or [], maxlen=window)

    def limit(self) -> float:
        """The loss above which the next step is a spike (inf until the window is full)."""
        if len(self.history) < self.window:
            return math.inf
        mean = sum(self.history) / len(self.history)
        var = sum((x - mean) ** 2 for x in self.history) / (len(self.history) - 1)
        return mean + self.sigmas * math.sqrt(var)

    def check(self, loss: float) -> bool:
        """Whether `loss` is a spike; a finite loss that is not one joins the window. Non-finite losses are
        train.nan_policy's, not the guard's: they neither count as spikes nor join."""
        if not math.isfinite(loss):
            return False
        if loss > self.limit():
            return True
        self.history.append(loss)
        return False

    def describe(self, loss: float) -> str:
        n = len(self.history)
        mean = sum(self.history) / n if n else math.nan
        return (f"loss {loss:.4f} is above {self.limit():.4f}, the mean of the last {n} steps' losses ({mean:.4f}) "
                f"plus {self.sigmas:g} standard deviations")

    def state(self) -> list[float]:
        return list(self.history)
