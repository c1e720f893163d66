"""The report's figures (matplotlib, Agg backend, PNG): bars and line panels, encoder and decoder in fixed colours.

Plain functions of already-collected numbers; deciding what to plot is the report's job (ettin.eval.report).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

COLORS = {"mlm": "#1f77b4", "clm": "#d62728", None: "#7f7f7f"}  # encoder blue, decoder red
NAMES = {"mlm": "encoder", "clm": "decoder", None: "model"}
MARKERS = {"mlm": "o", "clm": "s", None: "^"}
LINESTYLES = ("-", "--", ":", "-.")
DPI = 110


@dataclass
class BarPanel:
    """One task: a pair of bars (encoder, decoder) per size; None where that model was not evaluated."""

    title: str
    ylabel: str
    sizes: list[str]
    encoder: list[float | None]
    decoder: list[float | None]
    lower_is_better: bool = False


@dataclass
class Series:
    label: str
    objective: str | None  # "mlm" | "clm" | None: picks the colour
    xs: list[float]
    ys: list[float]
    linestyle: str = "-"
    marker: str | None = None


@dataclass
class LinePanel:
    title: str
    ylabel: str
    series: list[Series]
    xlabel: str = "training tokens"
    log_y: bool = False
    marks: list[tuple[float, str]] = field(default_factory=list)  # vertical lines (x, label): phase starts


def _grid(n: int, width: float = 4.4, height: float = 3.3):
    cols = min(3, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, out: Path, title: str | None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def bar_chart(panels: list[BarPanel], out: Path, title: str | None = None) -> Path:
    """Grouped bars, one panel per task, sizes along x, encoder and decoder side by side."""
    fig, axes = _grid(len(panels))
    width = 0.38
    for ax, panel in zip(axes, panels):
        xs = list(range(len(panel.sizes)))
        for offset, objective, values in (
            (-width / 2, "mlm", panel.encoder),
            (width / 2, "clm", panel.decoder),
        ):
            pts = [(x + offset, v) for x, v in zip(xs, values) if v is not None and math.isfinite(v)]
            if not pts:
                continue
            bars = ax.bar(
                [p[0] for p in pts],
                [p[1] for p in pts],
                width,
                color=COLORS[objective],
                label=NAMES[objective],
            )
            ax.bar_label(bars, labels=[f"{p[1]:.3g}" for p in pts], fontsize=7, padding=1)
        ax.set_xticks(xs, panel.sizes)
        ax.set_xlim(-0.9, len(xs) - 0.1)
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel + (" (lower is better)" if panel.lower_is_better else ""), fontsize=8)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    handles = [Patch(color=COLORS[o], label=NAMES[o]) for o in ("mlm", "clm")]
    axes[0].legend(handles=handles, loc="best", fontsize=7)
    return _save(fig, out, title)


def line_chart(panels: list[LinePanel], out: Path, title: str | None = None) -> Path:
    """One panel per metric: each series a line of y against x (training tokens), vertical marks labelled."""
    fig, axes = _grid(len(panels), width=5.0, height=3.5)
    for ax, panel in zip(axes, panels):
        for s in panel.series:
            pts = [(x, y) for x, y in zip(s.xs, s.ys) if y is not None and math.isfinite(y)]
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    color=COLORS.get(s.objective, "#7f7f7f"),
                    linestyle=s.linestyle,
                    marker=s.marker,
                    markersize=4,
                    linewidth=1.2,
                    label=s.label,
                    markerfacecolor="none" if s.objective == "clm" else None,
                )
        for x, label in panel.marks:
            ax.axvline(x, color="#555555", linestyle=":", linewidth=0.9)
            ax.annotate(
                label,
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -10),
                textcoords="offset points",
                fontsize=7,
                color="#555555",
            )
        if panel.log_y:
            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel, fontsize=8)
        ax.set_ylabel(panel.ylabel, fontsize=8)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))  # x is linear: tokens
        ax.grid(alpha=0.3)
        if any(s.xs for s in panel.series):
            ax.legend(fontsize=7)
    return _save(fig, out, title)
