"""The report's layout: which sections, tables and figures, in which order (ettin.eval.report gathers the data).

Sections: the direction verdicts, results per task family (table + bars), learning curves across kept
checkpoints, training loss, the published Ettin numbers, provenance (checkpoints, hashes, settings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ettin.eval import plots, published
from ettin.eval.report import (
    FAMILIES,
    OBJECTIVES,
    Comparison,
    Inputs,
    comparisons,
    final_results,
    higher_is_better,
    size_key,
)
from ettin.eval.report_doc import Doc, fmt

RULE = (
    "Rule (fixed in code, `ettin.eval.report.compare_values` / `family_verdict`): per task and size the main "
    "metric of each run's last checkpoint is compared when both objectives report the same metric and it "
    "means the same thing for both. A difference within 1.96 combined standard errors (binomial for "
    "accuracies over the task's n examples, or a reported `<metric>_stderr`) is a **tie**; a metric "
    "without an error estimate ties only when equal at the 4 decimals shown. A family **holds** when "
    "every compared task goes the published way, **does not hold** when none does, **mixed** otherwise, "
    "and is **not comparable** when nothing could be compared. Ties count against the published direction."
)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def _letters(notes: list[str]) -> dict[str, str]:
    return {note: chr(ord("a") + i) if i < 26 else str(i) for i, note in enumerate(dict.fromkeys(notes))}


def _verdict_detail(d: dict[str, Any]) -> str:
    """Which way a verdict other than 'holds' went, from the counts."""
    agree = d["encoder_ahead"] if d["published"] == "encoder" else d["decoder_ahead"]
    against = d["compared"] - agree - d["ties"]
    if d["verdict"] == "mixed":
        return f" ({agree} of {d['compared']} the published way)"
    if d["verdict"] == "does not hold":
        return (
            " (ties only)"
            if d["ties"] == d["compared"]
            else " (reversed)"
            if against == d["compared"]
            else " (reversed or tied)"
        )
    return ""


def direction_section(data: dict[str, Any]) -> Doc:
    doc: Doc = [("h", 2, "Does the published direction hold?"), ("p", RULE)]
    rows = []
    for d in data["directions"]:
        pub = f"{d['published']} ahead" if d["published"] else "—"
        rows.append(
            [
                d["family"],
                pub,
                d["compared"],
                d["encoder_ahead"],
                d["decoder_ahead"],
                d["ties"],
                f"**{d['verdict']}**" + _verdict_detail(d),
            ]
        )
    if not rows:
        return doc + [("p", "No task results to compare.")]
    doc.append(
        (
            "table",
            [
                "family",
                "published",
                "compared",
                "encoder ahead",
                "decoder ahead",
                "ties",
                "verdict (as measured)",
            ],
            rows,
        )
    )
    for d in data["directions"]:
        items = []
        for c in d["details"]:
            values = f"encoder {fmt(c['encoder'])} vs decoder {fmt(c['decoder'])}"
            what = (
                f"**{c['winner']}**" + (" ahead" if c["winner"] != "tie" else "")
                if c["winner"]
                else "not compared"
            )
            items.append(f"{c['task']} ({c['size']}, {c['metric']}): {values}: {what} ({c['note']})")
        doc += [
            ("h", 3, f"{d['family']}: {d['verdict']}"),
            ("p", f"Published: {d['claim']} [{d['source']}]."),
            ("ul", items),
        ]
    return doc


def _bar_panels(comps: list[Comparison], sizes: list[str]) -> list[plots.BarPanel]:
    panels = []
    keys = list(dict.fromkeys((c.task, c.metric) for c in comps))
    for task, metric in keys:
        rows = {c.size: c for c in comps if (c.task, c.metric) == (task, metric)}
        title = task if sum(k[0] == task for k in keys) == 1 else f"{task}: {metric}"
        panels.append(
            plots.BarPanel(
                title,
                metric,
                sizes,
                [rows[s].encoder if s in rows else None for s in sizes],
                [rows[s].decoder if s in rows else None for s in sizes],
                lower_is_better=not higher_is_better(metric),
            )
        )
    return panels


def family_sections(comps: list[Comparison], out: Path) -> Doc:
    doc: Doc = [("h", 2, "Results by task family")]
    sizes = sorted({c.size for c in comps}, key=size_key)
    for family in FAMILIES:
        rows = [c for c in comps if c.family == family]
        if not rows:
            continue
        letters = _letters([c.note for c in rows if c.winner is None])
        table = []
        for c in rows:
            enc, dec = fmt(c.encoder), fmt(c.decoder)
            if c.winner == "encoder":
                enc = f"**{enc}**"
            elif c.winner == "decoder":
                dec = f"**{dec}**"
            diff = fmt(c.encoder - c.decoder) if c.winner else "—"
            ahead = c.winner or f"not compared ({letters[c.note]})"
            role = " (main)" if c.is_main else " (direction)" if c.in_verdict else ""
            table.append([c.task, c.size, c.metric + role, enc, dec, diff, ahead])
        doc += [
            ("h", 3, family),
            ("table", ["task", "size", "metric", "encoder", "decoder", "Δ enc − dec", "ahead"], table),
        ]
        if letters:
            doc.append(("ul", [f"({letter}) {note}" for note, letter in letters.items()]))
        charted = [
            c
            for c in rows
            if (c.is_main or c.in_verdict)
            and (c.winner is not None or c.note.startswith(("only the", "a bias")))
        ]
        if charted:
            png = plots.bar_chart(
                _bar_panels(charted, sizes), out / f"bars-{_slug(family)}.png", title=family
            )
            doc.append(
                (
                    "img",
                    str(png),
                    f"{family}: main metric per task, encoder (blue) and decoder (red) "
                    "at each size, last checkpoints",
                )
            )
    return doc


def learning_curves(inputs: Inputs, out: Path) -> Doc:
    runs: dict[tuple[str, str], list] = {}
    for r in inputs.results:
        runs.setdefault((r.size, r.objective), []).append(r)
    if not any(len(v) > 1 for v in runs.values()):
        return []
    tasks = dict.fromkeys(name for r in inputs.results for name in r.tasks)
    sizes = sorted({s for s, _ in runs}, key=size_key)
    use_tokens = all(r.model.get("tokens") is not None for r in inputs.results)
    panels = []
    for task in tasks:
        series, metrics = [], []
        for (size, objective), rs in sorted(
            runs.items(), key=lambda kv: (size_key(kv[0][0]), kv[0][1] != "mlm")
        ):
            pts = sorted(
                ((r.position, r.tasks[task]) for r in rs if "main" in r.tasks.get(task, {})),
                key=lambda p: p[0],
            )
            if len(pts) < 2:
                continue
            metric = pts[0][1]["main"]
            metrics.append(metric)
            xs = [p[0][0] if use_tokens else p[0][1] for p in pts]
            series.append(
                plots.Series(
                    f"{OBJECTIVES[objective]} {size} ({metric})",
                    objective,
                    xs,
                    [p[1][metric] for p in pts],
                    plots.LINESTYLES[sizes.index(size) % 4],
                    plots.MARKERS[objective],
                )
            )
        if series:
            log_y = any(not higher_is_better(m) for m in metrics) and all(y > 0 for s in series for y in s.ys)
            title = task if len(set(metrics)) == 1 else f"{task} (different measures, not compared)"
            panels.append(
                plots.LinePanel(
                    title,
                    " / ".join(dict.fromkeys(metrics)),
                    series,
                    "training tokens" if use_tokens else "step",
                    log_y,
                )
            )
    if not panels:
        return []
    png = plots.line_chart(panels, out / "learning-curves.png", title="Main metric across kept checkpoints")
    return [
        ("h", 2, "Learning curves"),
        (
            "p",
            "Each evaluated checkpoint of each run: the task's main metric against training "
            f"{'tokens' if use_tokens else 'steps'}, encoder and decoder on the same axes.",
        ),
        (
            "img",
            str(png),
            "main metric per task across checkpoints (encoder blue, decoder red; line style "
            "per size); perplexity-type panels on a log scale",
        ),
    ]


def loss_curves(inputs: Inputs, out: Path) -> Doc:
    logs = [g for g in inputs.logs if g.rows]
    if not logs:
        return []
    groups: dict[str, list] = {}
    for g in logs:
        groups.setdefault(g.size or "runs", []).append(g)
    panels = []
    for size, gs in sorted(groups.items(), key=lambda kv: size_key(kv[0])):
        series, marks = [], {}
        for g in sorted(gs, key=lambda g: (g.objective != "mlm", g.objective or "")):
            series.append(
                plots.Series(g.label, g.objective, [r["tokens"] for r in g.rows], [r["loss"] for r in g.rows])
            )
            phases = list(dict.fromkeys(r["phase"] for r in g.rows))
            for phase in phases[1:]:
                start = min(r["tokens"] for r in g.rows if r["phase"] == phase)
                marks.setdefault((phase, round(start, -3)), start)
        panels.append(
            plots.LinePanel(
                f"training loss ({size})",
                "loss",
                series,
                marks=[(x, phase) for (phase, _), x in marks.items()],
            )
        )
    png = plots.line_chart(panels, out / "loss-curves.png", title="Training loss")
    sources = [
        f"{g.label}: `{g.source}` ({len(g.rows)} records, phases {', '.join(dict.fromkeys(r['phase'] for r in g.rows))})"
        for g in sorted(logs, key=lambda g: (size_key(g.size or ""), g.objective != "mlm"))
    ]
    return [
        ("h", 2, "Training loss"),
        (
            "p",
            "From each run's metrics.jsonl; dotted lines mark where a phase starts. The MLM and CLM "
            "losses are cross-entropies of different prediction tasks, so their levels are not compared.",
        ),
        ("ul", sources),
        ("img", str(png), "training loss against tokens (encoder blue, decoder red)"),
    ]


def published_section() -> Doc:
    def rows(table, columns):
        out = []
        for name, values in table:
            bold = name.startswith("Ettin")
            cells = [f"{v:.1f}" for v in values]
            out.append([f"**{name}**" if bold else name, *([f"**{c}**" for c in cells] if bold else cells)])
        return out

    names = ", ".join(f"{k} = {v}" for k, v in published.DECODER_COLUMN_NAMES.items() if k != v)
    return [
        ("h", 2, "Published Ettin numbers (reference)"),
        (
            "p",
            f"Source: {published.SOURCE}. Scores in %, read from the paper's tables; they come from "
            "full-scale training and are a reference point, not a target for these runs.",
        ),
        ("ul", [f"{family}: {d['claim']} [{d['source']}]" for family, d in published.DIRECTIONS.items()]),
        ("h", 3, "Encoders (paper section 6.2 table)"),
        (
            "table",
            ["model", *published.ENCODER_COLUMNS],
            rows(published.ENCODER_ROWS, published.ENCODER_COLUMNS),
        ),
        ("h", 3, "Decoders (paper section 6.3 table, lm-evaluation-harness)"),
        ("p", f"Columns: {names}."),
        (
            "table",
            ["model", *published.DECODER_COLUMNS],
            rows(published.DECODER_ROWS, published.DECODER_COLUMNS),
        ),
    ]


def provenance_section(inputs: Inputs) -> Doc:
    rows, skipped, settings, task_settings = [], [], {}, {}
    finals = {id(r) for r in final_results(inputs.results).values()} if inputs.results else set()
    for r in sorted(inputs.results, key=lambda r: (size_key(r.size), r.objective != "mlm", r.position)):
        m = r.model
        rows.append(
            [
                OBJECTIVES[r.objective],
                r.size,
                r.run,
                str(m.get("checkpoint", "—")) + (" **(last)**" if id(r) in finals else ""),
                m.get("phase", "—"),
                fmt(m.get("step")),
                fmt(m.get("tokens")),
                f"`{m.get('sha256', '—')}`",
                fmt(r.settings.get("seed")),
                f"`{r.source}`",
            ]
        )
        skipped += [
            f"{OBJECTIVES[r.objective]} {r.size} {m.get('checkpoint')}: {name}: "
            f"{t.get('error') or t.get('skipped')}"
            for name, t in r.tasks.items()
            if "main" not in t
        ]
        settings.setdefault(json.dumps(r.settings, indent=1, sort_keys=True), []).append(
            f"{OBJECTIVES[r.objective]} {r.size} {m.get('checkpoint')}"
        )
        for name, t in r.tasks.items():
            if isinstance(t.get("settings"), dict):
                task_settings.setdefault(f"{name}: {json.dumps(t['settings'], sort_keys=True)}", None)
    doc: Doc = [
        ("h", 2, "Provenance"),
        (
            "p",
            "Every evaluated checkpoint, with its hash and seed. report.json holds each results file "
            "verbatim; `ettin report report.json --out DIR` rebuilds this report without re-running.",
        ),
        (
            "table",
            [
                "model",
                "size",
                "run",
                "checkpoint",
                "phase",
                "step",
                "tokens",
                "sha256",
                "seed",
                "results file",
            ],
            rows,
        ),
    ]
    for i, (text, users) in enumerate(settings.items(), 1):
        doc += [("p", f"Settings {i}, used by: {'; '.join(users)}"), ("code", text)]
    if task_settings:
        doc += [("p", "Task settings (each distinct one):"), ("code", "\n".join(sorted(task_settings)))]
    if skipped:
        doc += [("p", "Tasks the evaluation could not run:"), ("ul", skipped)]
    return doc


def build_document(inputs: Inputs, data: dict[str, Any], out: Path) -> Doc:
    comps = comparisons(inputs.results) if inputs.results else []
    finals = final_results(inputs.results) if inputs.results else {}
    lasts = [
        f"{OBJECTIVES[o]} {s}: `{r.model.get('checkpoint')}` ({fmt(r.model.get('tokens'))} tokens)"
        for (s, o), r in sorted(finals.items(), key=lambda kv: (size_key(kv[0][0]), kv[0][1] != "mlm"))
    ]
    doc: Doc = [
        ("h", 1, data["title"]),
        (
            "p",
            f"Evaluated checkpoints: {len(inputs.results)}; training logs: {len(inputs.logs)}. "
            "Encoder = MLM, decoder = CLM; tables use each run's last evaluated checkpoint:",
        ),
        ("ul", lasts or ["no evaluated checkpoints"]),
    ]
    lone = sorted({s for s, o in finals if (s, "clm" if o == "mlm" else "mlm") not in finals}, key=size_key)
    if lone:
        doc.append(
            (
                "p",
                f"Only one objective was evaluated at size {', '.join(lone)}: an encoder and a decoder "
                "are paired by the size their results name (model.size), so those rows stand alone.",
            )
        )
    doc += direction_section(data)
    if comps:
        doc += family_sections(comps, out)
    doc += learning_curves(inputs, out)
    doc += loss_curves(inputs, out)
    doc += published_section()
    if inputs.results:
        doc += provenance_section(inputs)
    return doc
