"""Commands run side by side on a few lanes (one CPU core each), as `ettin pair --parallel` and `ettin demo` run them.

    failed = run_jobs([Job("enc-0", cmd, log), Job("dec-0", cmd2, log2, after=("enc-0",))], lanes=2)

A job starts when a lane is free and every job it names in `after` has finished; jobs start in the order given
(put the longest first). Each job's output goes to its log file; while jobs run, the newest progress line of each
running job is printed as it changes, at most every `follow_interval` seconds. The first failure starts no new
job; the ones running finish, and the failures are returned (with their logs' tails for the message).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Job:
    name: str
    cmd: list[str]
    log: Path
    after: tuple[str, ...] = ()


def usable_cores() -> int:
    """The cores this process may run on (the affinity mask; a container's CPU set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def follow_interval(elapsed_s: float) -> float:
    """Seconds between progress lines: 2 s for the first 20 s, then a tenth of the time so far (a 10-minute run
    prints about every minute at the end), at most 60 s."""
    return min(60.0, max(2.0, elapsed_s / 10))


def _progress_line(log: Path, show: Callable[[str], bool]) -> str | None:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip() and show(ln)]
    except OSError:
        return None
    return lines[-1] if lines else None


def tail(log: Path, lines: int = 15) -> str:
    try:
        return "".join(log.read_text(errors="replace").splitlines(True)[-lines:])
    except OSError:
        return ""


def run_jobs(jobs: list[Job], lanes: int, show: Callable[[str], bool] = lambda ln: not ln.startswith("$"),
             poll_s: float = 0.5, echo: Callable[[str], None] = lambda s: print(s, flush=True)) -> list[Job]:
    """Run `jobs` at most `lanes` at a time (see the module docstring); returns the jobs that failed."""
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    unknown = {a for j in jobs for a in j.after} - set(names)
    if unknown:
        raise ValueError(f"jobs wait for unknown jobs: {sorted(unknown)}")
    lanes = max(1, lanes)
    waiting, running, done, failed = list(jobs), {}, set(), []
    shown: dict[str, str] = {}
    t0 = shown_at = time.monotonic()
    while waiting or running:
        while not failed and len(running) < lanes:
            ready = next((j for j in waiting if set(j.after) <= done), None)
            if ready is None:
                break
            waiting.remove(ready)
            ready.log.parent.mkdir(parents=True, exist_ok=True)
            f = open(ready.log, "a")
            f.write(f"$ {shlex.join(ready.cmd)}  ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
            f.flush()
            echo(f"$ {shlex.join(ready.cmd)}" + (f"  (log: {ready.log})" if lanes > 1 or len(jobs) > 1 else ""))
            running[ready.name] = (ready, subprocess.Popen(ready.cmd, stdout=f, stderr=subprocess.STDOUT), f)
        if not running:
            if failed or not waiting:
                break
            raise ValueError(f"jobs wait for one another: {[j.name for j in waiting]}")  # a cycle
        time.sleep(poll_s)
        for name, (job, proc, f) in list(running.items()):
            if proc.poll() is None:
                continue
            f.close()
            del running[name]
            if proc.returncode == 0:
                done.add(name)
            else:
                failed.append(job)
        now = time.monotonic()
        if running and now - shown_at >= follow_interval(now - t0):
            for name, (job, _, _) in running.items():
                line = _progress_line(job.log, show)
                if line and line != shown.get(name):
                    shown[name] = line
                    shown_at = now
                    echo(f"  [{name}] {line[:160]}")
    return failed
