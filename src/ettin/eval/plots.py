"""The report's figures (matplotlib, Agg, PNG bytes): a forest plot of the findings and panels of lines.

Plain functions of numbers the report has already gathered; one measure per axis, every axis labelled.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

DPI = 110
VERDICT_STYLE = {  # colour, marker, filled
    "reproduced": ("#2ca02c", "o", True),
    "reversed": ("#d62728", "s", True),
    "inconclusive": ("#ff7f0e", "D", True),
    "not testable": ("#9e9e9e", "o", False),
    "no claim": ("#1f77b4", "^", True),  # a task outside the claims: an interval, no verdict
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def human(x: float, _pos=None) -> str:
    """Tick label for a count: 1.5B, 200M, 10k."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def forest(rows: list[dict]) -> bytes:
    """One line per task row: the difference (favoured - other) with its 95% interval, a line at 0, marker and
    colour by verdict. Rows are grouped into one panel per metric, so that each x axis carries one measure.
    rows: {label, metric, difference, interval, verdict}."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    groups = [[r for r in rows if r["metric"] == m] for m in metrics]
    fig, axes = plt.subplots(len(groups), 1, squeeze=False, figsize=(8, 0.9 + 0.42 * len(rows) + 0.7 * len(groups)),
                             gridspec_kw={"height_ratios": [len(g) + 1.2 for g in groups]})
    for ax, metric, group in zip(axes[:, 0], metrics, groups):
        for y, r in enumerate(reversed(group)):
            colour, marker, filled = VERDICT_STYLE.get(r["verdict"], VERDICT_STYLE["not testable"])
            lo, hi = r["interval"]
            d = r["difference"]
            ax.errorbar([d], [y], xerr=[[max(0.0, d - lo)], [max(0.0, hi - d)]], fmt=marker, color=colour,
                        mfc=colour if filled else "white", ms=7, capsize=4, lw=1.6)
        ax.axvline(0.0, color="black", lw=0.9)
        ax.set_yticks(range(len(group)), [r["label"] for r in reversed(group)], fontsize=8)
        ax.set_ylim(-0.7, len(group) - 0.3)
        ax.set_xlabel(f"difference in {metric} (favoured - other), 95% interval", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.grid(axis="x", alpha=0.3)
    present = {r["verdict"] for r in rows}
    handles = [Line2D([], [], color=c, marker=m, mfc=c if f else "white", ls="", label=v)
               for v, (c, m, f) in VERDICT_STYLE.items() if v in present or v != "no claim"]
    axes[0, 0].legend(handles=handles, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.02), ncol=4, frameon=False)
    fig.tight_layout()
    return _png(fig)


def _count_axes(ax, title: str, xlabel: str, ylabel: str, fontsize: int) -> None:
    """A panel whose x axis is a count (tokens): title, labels a point smaller, ticks two, a light grid."""
    ax.set_title(title, fontsize=fontsize)
    ax.set_xlabel(xlabel, fontsize=fontsize - 1)
    ax.set_ylabel(ylabel, fontsize=fontsize - 1)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.xaxis.set_major_formatter(FuncFormatter(human))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.tick_params(labelsize=fontsize - 2)
    ax.grid(alpha=0.3)


def lines(panels: list[dict], colours: dict[str, str], xlabel: str) -> bytes:
    """Small panels, one measure each: panels [{title, ylabel, series: {name: (xs, ys) or [(xs, ys), ...]}}]; a
    line per series (several for a list: one per seed, the same colour and style), coloured by name; x is a count
    (tokens). One legend for the figure."""
    names = list(dict.fromkeys(n for p in panels for n in p["series"]))
    style = {n: (MARKERS[i % len(MARKERS)], ("-", "--", "-.", ":")[i % 4]) for i, n in enumerate(names)}
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    size = (7.0, 4.0) if len(panels) == 1 else (4.2 * cols, 3.1 * nrows + 0.5)
    fig, axes = plt.subplots(nrows, cols, squeeze=False, figsize=size)
    for ax, panel in zip(axes.flat, panels):
        for name, value in panel["series"].items():
            several = isinstance(value, list)
            for xs, ys in value if several else [value]:
                ax.plot(xs, ys, marker=style[name][0] if len(xs) < 30 else None, ls=style[name][1], ms=4,
                        lw=1.1 if several and len(value) > 1 else 1.5, alpha=0.75 if several and len(value) > 1 else 1,
                        color=colours.get(name), label=name)
        _count_axes(ax, panel["title"], xlabel, panel["ylabel"], fontsize=10)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colours.get(n), ls=style[n][1], lw=2, label=n) for n in names]
    if len(panels) == 1:
        axes[0, 0].legend(handles=handles, fontsize=9)
        fig.tight_layout()
    else:
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
        fig.legend(handles=handles, loc="upper center", ncol=min(4, len(names)), fontsize=9, frameon=False)
    return _png(fig)


def claim_curves(curves: list[dict], title: str) -> bytes:
    """One claim over training tokens: a panel per task row (one measure per axis), the mean difference over
    pre-training seeds (line), the seeds' range (band), markers filled where the row is testable (both models
    above their baselines) and open where not, a line at 0 and a dotted line where the row becomes testable.
    curves: compare.curves' entries of one claim."""
    cols = min(3, len(curves))
    nrows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(nrows, cols, squeeze=False, figsize=(max(6.4, 3.9 * cols), 2.9 * nrows + 0.9))
    for ax, c in zip(axes.flat, curves):
        pts = c["points"]
        xs = [p["tokens"] for p in pts]
        ys = [p["difference"] for p in pts]
        ax.fill_between(xs, [p["band"][0] for p in pts], [p["band"][1] for p in pts], color="#1f77b4", alpha=0.2,
                        lw=0, label="range over seeds")
        ax.plot(xs, ys, color="#1f77b4", lw=1.6)
        for p in pts:
            ax.plot([p["tokens"]], [p["difference"]], marker="o", ms=6, color="#1f77b4",
                    mfc="#1f77b4" if p["testable"] else "white")
        ax.axhline(0.0, color="black", lw=0.8)
        if c.get("first_testable") is not None:
            ax.axvline(c["first_testable"], color="#2ca02c", ls=":", lw=1.4)
        k = max(p.get("seeds", 1) for p in pts)
        _count_axes(ax, f"{c['label']} ({k} seed{'s' if k != 1 else ''})", "training tokens",
                    f"{c['favoured']} - {c['other']}\n{c['metric']}", fontsize=9)
    for ax in axes.flat[len(curves):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color="#1f77b4", lw=1.6, label="mean over seeds"),
               plt.Rectangle((0, 0), 1, 1, color="#1f77b4", alpha=0.2, label="range over seeds"),
               Line2D([], [], color="#1f77b4", marker="o", ls="", label="testable"),
               Line2D([], [], color="#1f77b4", marker="o", mfc="white", ls="", label="not testable"),
               Line2D([], [], color="#2ca02c", ls=":", label="testable from here")]
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / fig.get_figheight()),
               ncol=3 if cols == 1 else 5, fontsize=7, frameon=False)
    return _png(fig)
