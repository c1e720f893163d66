"""The console line of one evaluated task: the main figure beside its baseline, both designs where a task has two,
BM25 beside a retrieval score. It reads a task's result (docs/CONTRACTS.md, "Results"); it computes nothing.

    sst2: accuracy: probe P, finetune F; baseline B (majority class of the training rows) (n=N, Ts)
    cranfield: ndcg@10 S; baseline B (random ranking), BM25 M (n=N, Ts)
    lm: masked_accuracy A, masked_perplexity P; baseline masked_accuracy A0, masked_perplexity P0 (unigram model of
        the training side); held-out: the last 2% of the documents of FILES in DIR (n=N, Ts)
A baseline is always in the units of the figures it sits beside (a task's `baseline_metrics` where its `baseline`
is in other units, as lm's unigram log-likelihood).
"""

from __future__ import annotations

from typing import Any


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def summary_line(out: dict[str, Any]) -> str:
    """`<metric>: <design> <value>, ...; baseline <value> (<name>)[, BM25 <value>][; held-out: <text>] (n=..., ...s)`."""
    main = out["main"]
    designs = out.get("designs") or {}
    if len(designs) > 1 and "metric" in out:  # classification: every design, the main one first
        figure = f"{out['metric']}: " + ", ".join(f"{name} {_number(d.get('value'))}" for name, d in designs.items())
    else:
        figure = f"{main} {_number(out.get(main))}"
    beside = []
    named = f" ({out['baseline_name']})" if out.get("baseline_name") else ""
    units = out.get("baseline_metrics") or {}
    if units:  # the baseline in the figure's own units: every metric it has, measured on the model and on it
        figure = ", ".join(f"{k} {_number(out.get(k))}" for k in units)
        beside.append("baseline " + ", ".join(f"{k} {_number(v)}" for k, v in units.items()) + named)
    elif "baseline" in out:
        beside.append(f"baseline {_number(out['baseline'])}{named}")
    bm25 = out.get("bm25")
    if isinstance(bm25, dict) and main in bm25:
        beside.append(f"BM25 {_number(bm25[main])}")
    held_out = f"; held-out: {out['held_out']}" if out.get("held_out") else ""  # the text a held-out task scored
    tail = [f"n={out.get('n')}"] + ([f"{out['seconds']:.1f}s"] if isinstance(out.get("seconds"), (int, float)) else [])
    return f"{figure}" + (f"; {', '.join(beside)}" if beside else "") + f"{held_out} ({', '.join(tail)})"
