"""What the user sees: a progress bar, metrics.jsonl, TensorBoard (wandb optional), loss-curve PNGs.

MFU = achieved model FLOPs / (devices x peak FLOP/s). Model FLOPs per step (forward + backward = 3x
forward, 2 FLOPs per multiply-add):
  body  6 x (non-embedding block parameters) x tokens
  attn  12 x layers x H x (attended keys per query) x tokens   (global: seq_len, or seq_len/2 causal;
                                                              local: the window)
  head  6 x (H^2 + V x H) x predicted tokens                   (MLM predicts only masked positions)
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ettin.io import atomic_path

# Peak dense FLOP/s per device for MFU when the recipe gives none (bf16 tensor cores on GPUs).
_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}
CPU_PEAK = 200e9  # the 2-core development machine's measured fp32 matmul rate (issue 2)


def guess_peak_flops(device) -> float:
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device)
        for key, value in _PEAKS.items():
            if key in name:
                return value
        return 100e12
    return CPU_PEAK


def step_flops(config, tokens: int, predicted: int, seq_len: int) -> float:
    """Model FLOPs of one optimizer step over `tokens` input tokens and `predicted` loss positions."""
    H, inter, L, V = config.hidden_size, config.intermediate_size, config.num_layers, config.vocab_size
    body_params = L * (4 * H * H + 3 * H * inter)
    attended = 0.0
    for kind in config.layer_types:
        if kind == "full_attention":
            attended += seq_len / 2 if config.causal else seq_len
        else:
            left, right = config.window
            attended += min(seq_len, left + right + 1) if not config.causal else min(seq_len, left + 1)
    return 6.0 * body_params * tokens + 12.0 * H * attended * tokens + 6.0 * (H * H + V * H) * predicted


class Progress:
    """One per phase. Only the main rank writes; other ranks get a silent instance. Progress is counted in the
    phase's budget unit (real tokens, or slots; ettin.train.plan): the bar, the ETA and the phase's share."""

    def __init__(
        self,
        run_dir: Path,
        phase: str,
        budget: int,
        start: int,
        enabled: bool,
        bar: bool = True,
        tensorboard: bool = True,
        wandb_run: Any = None,
        peak_flops: float = CPU_PEAK,
        devices: int = 1,
        later_tokens: int = 0,
        unit: str = "real",
    ):
        """`budget`, `start`: the phase's budget and the position it starts from; `later_tokens`: the budgets of
        the phases after this one (for the whole run's ETA)."""
        self.enabled = enabled
        self.phase = phase
        self.budget = budget
        self.unit = unit
        self.peak = peak_flops * devices
        self.run_dir = Path(run_dir)
        self.later_tokens = later_tokens
        self._t0 = time.perf_counter()
        self._last = (self._t0, start)
        self._start = start
        self._bar = self._tb = None
        self._wandb = wandb_run
        self._metrics = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open_metrics(self.run_dir / "metrics.jsonl")
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=budget, initial=start, desc=phase, unit="tok", unit_scale=True,
                             dynamic_ncols=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency, but a stripped install should still train
                self._tb = None

    def log(self, position: int, record: dict[str, Any], flops: float, tokens_in_window: int) -> dict[str, Any]:
        """`position`: the phase's tokens so far (its budget unit); `tokens_in_window`: the real tokens since the
        last log. Adds tokens_per_s (real) and mfu of the logging window, eta_s (this phase) and eta_run_s (every
        phase left), both at the phase's mean rate so far."""
        now = time.perf_counter()
        dt = max(1e-9, now - self._last[0])
        moved = position - self._last[1]
        self._last = (now, position)
        rate = (position - self._start) / max(1e-9, now - self._t0)  # budget tokens per second
        record = dict(record)
        record["tokens_per_s"] = tokens_in_window / dt
        record["data_wait_share"] = min(1.0, record.get("data_wait", 0.0) / dt)  # of the window's wall time
        record["mfu"] = flops / dt / self.peak if self.peak else math.nan
        record["eta_s"] = max(0, self.budget - position) / max(rate, 1e-9)
        record["eta_run_s"] = record["eta_s"] + self.later_tokens / max(rate, 1e-9)
        if not self.enabled:
            return record
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for key in ("loss", "loss_avg", "lr", "grad_norm", "tokens_per_s", "mfu"):
                if key in record:
                    self._tb.add_scalar(f"{self.phase}/{key}", record[key], record["tokens"])
        if self._wandb is not None:
            self._wandb.log({f"{self.phase}/{k}": v for k, v in record.items() if isinstance(v, (int, float))})
        status = status_text(record, self.later_tokens > 0)
        if self._bar is not None:
            self._bar.update(moved)
            self._bar.set_postfix_str(status, refresh=False)
        else:  # no bar (logs, parallel runs): one plain line per logging step
            print(f"{self.phase} step {record['step']} {_human(position)}/{_human(self.budget)} {self.unit} tokens "
                  f"{status}", flush=True)
        return record

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
        if self._metrics is not None:
            self._metrics.close()


def status_text(record: dict[str, Any], later_phases: bool = False) -> str:
    """The progress line of one logging step: tokens so far, loss, learning rate, gradient norm, speed, MFU and
    the ETA of the phase (and of the whole run when phases follow)."""
    eta = f"eta {_clock(record['eta_s'])} phase"
    if later_phases:
        eta += f", {_clock(record['eta_run_s'])} run"
    wait = f" data {100 * record['data_wait_share']:.0f}%" if "data_wait_share" in record else ""
    norm = f" gnorm {record['grad_norm']:.3g}" if "grad_norm" in record else ""
    return (f"tok {_human(record['tokens'])} loss {record['loss']:.4f} lr {record['lr']:.3g}{norm} "
            f"{_human(record['tokens_per_s'])}tok/s mfu {100 * record['mfu']:.1f}%{wait} {eta}")


def run_banner(recipe, info) -> str:
    """What a run starts with: how many processes, on what, with which parallel strategy."""
    import torch.distributed as dist

    from ettin.train.distributed import strategy

    mode = strategy(recipe.train.distributed, info.world_size)
    if mode == "none":
        return f"training on 1 process ({info.device.type}); no data parallelism"
    backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else "?"
    name = {"ddp": "DDP (replicated weights)", "fsdp": "FSDP2 (sharded weights)"}.get(mode, mode)
    return (f"training on {info.world_size} ranks ({backend}, {info.device.type}): {name}; "
            f"train.distributed={recipe.train.distributed}")


def open_metrics(path: Path):
    """Append mode; a line cut short by a crash (a killed run) is dropped first."""
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
    return open(path, "a")


def _human(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curve(run_dir: str | Path, out: str | Path | None = None, title: str | None = None) -> Path:
    """PNG of the training loss (mean over each logging window) against tokens, one line per phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    out = Path(out) if out else run_dir / "loss_curve.png"
    fig, ax = plt.subplots(figsize=(7, 4))
    for phase in dict.fromkeys(r["phase"] for r in rows):
        pts = [(r["tokens"], r.get("loss_avg", r["loss"])) for r in rows
               if r["phase"] == phase and math.isfinite(r.get("loss_avg", r["loss"]))]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=phase, linewidth=1)
    ax.set_xlabel("tokens")
    ax.set_ylabel("training loss")
    ax.set_title(title or run_dir.name)
    ax.grid(alpha=0.3)
    if rows:
        ax.legend()
    fig.tight_layout()
    with atomic_path(out, fsync=False) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out
