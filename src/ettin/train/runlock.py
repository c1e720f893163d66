"""One writer per run folder, and no rank training on after its launcher is gone.

`hold(run_dir)`: the main rank holds `<run_dir>/run.lock` for as long as it trains: an exclusive `flock` on the
file (released by the kernel when the process ends, however it ends) and, inside it, who holds it (host, process,
start time, command). A second launch into the folder while the holder lives is refused with an error that names
the holder; on exit the file is emptied. A file that still names a holder but holds no `flock` was left by a
process that is gone (a node failure, SIGKILL): it is taken over with a message naming that holder. On a shared file system the `flock` is the file system's (NFSv4
and Lustre with `flock` mounts honour it across hosts; a mount without lock support makes every launch take over).

`watch_launcher()`: torchrun starts every rank in a session of its own, so killing the launcher alone (a job
scheduler's cancel that reaches only it, a lost login shell) leaves the ranks training, orphaned, beside the requeued
job. Each rank watches its parent process and stops when it changes: KeyboardInterrupt in the main thread (the
loop's clean-up runs: the data workers stop, the lock is released), then a hard exit if the main thread is stuck in
a collective.
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ettin.io import UserError, read_json

LOCK = "run.lock"
WATCH_SECONDS = 2.0  # how often a rank looks at its parent
GRACE_SECONDS = 30.0  # after asking the main thread to stop, how long before the process exits hard


_HELD: set[int] = set()  # the descriptors of the locks this process holds


def _drop_in_child() -> None:
    """In a forked child (a DataLoader worker): let go of the parent's lock descriptors. A flock belongs to the open
    file description, which a fork shares: a worker that outlived a SIGKILLed parent by the seconds its watchdog
    takes would otherwise keep the run folder locked against the relaunch."""
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_in_child)


class RunLocked(UserError):
    """Another live process is training into the run folder."""


def _describe(holder: dict) -> str:
    return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {holder.get('started', '?')}"
            + (f", command: {holder['command']}" if holder.get("command") else ""))


def _read(path: Path) -> dict:
    try:  # a lock file being written (empty, or cut short) or gone: no holder to name
        return read_json(path)
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def hold(run_dir: str | Path, log=print) -> Iterator[Path]:
    """Hold `run_dir/run.lock` for the block (see the module's docstring). Raises RunLocked when a live process
    holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    _HELD.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{run_dir} is being written by another run ({_describe(_read(path))}); wait for it to "
                            f"end or stop it, or train into another --out. A run that is gone leaves {path} "
                            "without a lock, and the next launch takes it over.") from None
        previous = _read(path)
        if previous.get("pid"):
            log(f"{path}: taking over from a run that ended without releasing it ({_describe(previous)})")
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):  # released: the file stays (unlinking it would let two launches
                os.ftruncate(fd, 0)  # lock two inodes) and names no holder; the flock goes with the descriptor
    finally:
        _HELD.discard(fd)
        os.close(fd)


def watch_launcher(log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> threading.Thread | None:
    """Under torchrun: a daemon thread that stops this rank when its parent (the launcher's agent) is gone.
    Returns the thread, or None when not launched by torchrun."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_SECONDS)
        rank = os.environ.get("RANK", "?")
        log(f"rank {rank}: the launcher (pid {parent}) is gone; stopping this rank instead of training on alone")
        _thread.interrupt_main()
        time.sleep(GRACE_SECONDS)
        log(f"rank {rank}: still running {GRACE_SECONDS:g} s later (blocked in a collective?); exiting")
        os._exit(1)

    thread = threading.Thread(target=watch, name="ettin-launcher-watch", daemon=True)
    thread.start()
    return thread
