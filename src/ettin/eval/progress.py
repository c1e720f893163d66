"""Progress of a long evaluation step, so that work never looks like a hang (issue 31): one plain line per update,
as training's progress prints in logs, e.g.

    <run>/<checkpoint> <task>: encoding 3,667 rows, about 0:10:28 at this size (5.8 rows/s over the first 64)
    <run>/<checkpoint> <task>: encoding 1,024/3,667 rows, 5.9 rows/s, eta 0:07:28
    <run>/<checkpoint> <task>: encoding 3,667/3,667 rows (100%), 6.1 rows/s, 0:10:01 in all

The estimate is said once, after the first update, when the step looks longer than QUIET_S; afterwards a line
comes at most every EVERY_S seconds and every 10% of the step, whichever is rarer, and `finish` (or the end of a
`with Progress(...)` block) closes a step that said anything with its count, share and time. A step shorter than
QUIET_S prints nothing. The runner names the model and task of the lines (`task_label`); steps only count.

A step inside another's `with` block (ettin-mlm's scoring inside an lm-eval request batch) counts silently: the
outer step speaks for both.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Callable, Iterator

QUIET_S = 5.0  # steps expected to take less say nothing
EVERY_S = 10.0  # at most one line this often ...
EVERY_SHARE = 0.1  # ... and per this share of the step

_LABEL: contextvars.ContextVar[tuple[str, Callable[[str], None]] | None] = contextvars.ContextVar("label", default=None)
_OUTER: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("outer", default=None)


def now() -> float:
    """The clock of every progress line (a function, so that tests can advance it)."""
    return time.monotonic()


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def task_label(label: str, log: Callable[[str], None] = _stderr) -> Iterator[None]:
    """Within the block, progress lines start with `label` (model and task) and go to `log`."""
    token = _LABEL.set((label, log))
    try:
        yield
    finally:
        _LABEL.reset(token)


def clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


class Progress:
    """Counts one step's work (`total` of `unit`) and says how it goes; `update(n)` after each piece, `finish()` at
    the end (or use it as a context manager, which also silences steps nested inside it)."""

    def __init__(self, what: str, total: int, unit: str = "rows"):
        self.what, self.total, self.unit = what, int(total), unit
        label, self._log = _LABEL.get() or ("", _stderr)
        self._prefix = f"  {label}: " if label else "  "
        self._quiet = _OUTER.get() is not None  # inside another step's block: that step speaks
        self.done = 0
        self._t0 = now()
        self._said: tuple[float, int] | None = None  # (time, count) of the last line; None: nothing said yet
        self._token: contextvars.Token | None = None

    def __enter__(self) -> Progress:
        self._token = _OUTER.set(self)
        return self

    def __exit__(self, kind, error, tb) -> None:
        if self._token is not None:
            _OUTER.reset(self._token)
            self._token = None
        if kind is None:
            self.finish()

    def finish(self) -> None:
        """The closing line (count, share of the total, rate, time in all) of a step that said anything."""
        if self._said is None or self._quiet:
            return
        elapsed = max(now() - self._t0, 1e-9)
        share = f"{100 * self.done / self.total:.0f}%" if self.total else "?"
        self._log(f"{self._prefix}{self.what} {self.done:,}/{self.total:,} {self.unit} ({share}), "
                  f"{_rate(self.done / elapsed)} {self.unit}/s, {clock(elapsed)} in all")
        self._said = None  # said once

    def update(self, n: int = 1) -> None:
        self.done += n
        t = now()
        elapsed = t - self._t0
        if self._quiet or self.done <= 0 or self.done >= self.total or elapsed <= 0:
            return
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate
        if self._said is None:
            if elapsed + eta >= QUIET_S:
                self._log(f"{self._prefix}{self.what} {self.total:,} {self.unit}, about {clock(elapsed + eta)} at this "
                          f"size ({_rate(rate)} {self.unit}/s over the first {self.done:,})")
                self._said = (t, self.done)
            return
        if t - self._said[0] >= EVERY_S and self.done - self._said[1] >= EVERY_SHARE * self.total:
            self._log(f"{self._prefix}{self.what} {self.done:,}/{self.total:,} {self.unit}, {_rate(rate)} "
                      f"{self.unit}/s, eta {clock(eta)}")
            self._said = (t, self.done)
