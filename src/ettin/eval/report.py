"""`ettin report INPUTS... --out DIR [--title T]`: the controlled comparison, written up.

INPUTS are eval folders and results JSON files (docs/CONTRACTS.md "Results"), run folders (their metrics.jsonl
training logs: a log belongs to the role whose results' model.path lies in that run folder), or the report.json
of an earlier report, which holds all of these and rebuilds the same report without re-running anything.
A model's role comes from its results (model.role; older files: encoder for mlm, decoder for clm); a role's
final checkpoint is the one with the most training tokens, the earlier ones give its learning curves.

The comparison is ettin.eval.compare's (findings, learned, bias_profile) and ettin.eval.curves' (each claim over
training tokens); ettin.eval.inputs gathers the inputs; this module lays them out as Markdown, converts that to HTML with the PNGs inlined, and writes report.md, report.html, the PNGs
and report.json into --out, each atomically, only once every input has been read.
"""

from __future__ import annotations

import argparse
import base64
import html
import inspect
import json
import math
import sys
from pathlib import Path

from ettin.eval import compare, curves, plots, published
from ettin.eval.inputs import FORMAT, ROLE_ORDER, ReportError, collect, number, seed_groups, seed_of
from ettin.io import atomic_write_bytes

DEFAULT_TITLE = "Encoder versus decoder"
VERDICTS = {"not testable": "not testable at this scale", "not run": "not run (no results for these models)"}
CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
       "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;"
       "vertical-align:top;text-align:left}th{background:#f3f3f3}img{max-width:100%}code{font-size:0.9em}")


# ---------------------------------------------------------------------------------------------- the numbers
def _guarded(what: str, sources: list[str], fn):
    try:
        return fn()
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ReportError(f"{what} of {', '.join(sources)}: {type(e).__name__}: {e}") from e


def metric_name(task: dict, design: str | None) -> str:
    """What compare's figure of a task measures: the metric, neutral rate (bias), loglik (language modelling)."""
    if design:
        return task.get("metric", task["main"])
    return {"bias": "neutral rate", "language_modeling": "loglik"}.get(task.get("family"), task["main"])


def figures(by_seed_results: dict[int, dict]) -> list[dict]:
    """Every task (and classification design) that each seed of one role was evaluated on: value (mean over the
    seeds), 95% interval (Multi-Bootstrap over seeds and examples), per-seed values, baseline."""
    out = []
    first = next(iter(by_seed_results.values()))
    paths = [r.get("_path", "?") for r in by_seed_results.values()]
    for name, task in first["tasks"].items():
        if not all(name in r["tasks"] for r in by_seed_results.values()):
            continue
        for design in task.get("designs") or [None]:
            row = {"task": name, "design": design, "label": compare.Measure(name, design).label,
                   "metric": metric_name(task, design), "main": task["main"],
                   "main_value": float(sum(number(r["tasks"][name][task["main"]]) for r in by_seed_results.values())
                                       / len(by_seed_results))}
            if all("per_example" in r["tasks"][name] for r in by_seed_results.values()):
                measure = compare.Measure(name, design)
                tasks = {seed: r["tasks"][name] for seed, r in by_seed_results.items()}
                fig = _guarded(row["label"], paths, lambda t=tasks, m=measure: compare.model_figure(t, m))
            else:  # an older results file: no intervals
                row["metric"] = task.get("metric", task["main"]) if design else task["main"]
                fig = {"value": task["designs"][design]["value"] if design else task[task["main"]],
                       "baseline": task.get("baseline"), "baseline_name": task.get("baseline_name")}
            out.append(row | {"baseline_name": task.get("baseline_name")} | fig)
    return out


def finals_by_seed(results: dict[str, list[dict]]) -> dict[str, dict[int, dict]]:
    """{role: {seed: the final checkpoint's results}} (final: the most training tokens)."""
    return {role: {seed: rs_s[-1] for seed, rs_s in seed_groups(rs).items()} for role, rs in results.items()}


def build(paths, title: str | None = None) -> dict:
    """Everything report.json holds, as it holds it (a rebuild from it renders the same report)."""
    inp = collect(paths)
    checkpoints = {role: seed_groups(rs) for role, rs in inp["results"].items()}
    finals = finals_by_seed(inp["results"])
    if not finals:
        raise ReportError(f"no results files found in {', '.join(map(str, paths))}")
    sources = [r.get("_path", "?") for fs in finals.values() for r in fs.values()]
    data = {"format": FORMAT, "title": title or inp["title"] or DEFAULT_TITLE, "results": inp["results"],
            "training": inp["training"], "unmatched_logs": inp["unmatched_logs"], "same_model": inp["same_model"],
            "findings": _guarded("the findings", sources, lambda: compare.findings(finals)),
            "curves": _guarded("the claims over training tokens", sources, lambda: curves.curves(checkpoints)),
            "learned": _guarded("the learned-something bar", sources, lambda: compare.learned(finals)),
            "detail": {role: figures(fs) for role, fs in finals.items()},
            "bias": {role: _guarded("the WinoGender profile", [r.get("_path", "?") for r in fs.values()],
                                    lambda fs=fs: compare.bias_profile(fs))
                     for role, fs in finals.items()
                     if all("per_example" in r["tasks"].get("winogender", {}) for r in fs.values())}}
    return json.loads(json.dumps(data))


# -------------------------------------------------------------------------------------------------- layout
def _f(x, signed: bool = False, digits: int = 3) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "—"
    if not math.isfinite(x):
        return "n/a"
    return f"{x:{'+' if signed else ''},.{digits}f}"


def _fi(fig: dict, signed: bool = False) -> str:
    iv = fig.get("interval")
    return _f(fig.get("value"), signed) + (f" [{_f(iv[0], signed)}, {_f(iv[1], signed)}]" if iv else "")


def _table(header: list[str], rows: list[list]) -> list[str]:
    cell = [[str(c).replace("|", "\\|").replace("\n", " ") for c in r] for r in [header, *rows]]
    return ["| " + " | ".join(cell[0]) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in cell[1:]), ""]


def _tokens(res: dict) -> str:
    t = res["model"].get("tokens")
    return plots.human(t) if isinstance(t, (int, float)) else "?"


def _seeds_text(k: int) -> str:
    return "1 seed" if k == 1 else f"{k} seeds"


def _measurement(row: dict) -> str:
    """One task row of a claim (or of the encoder - decoder tasks): figures, difference, spread, power, verdict."""
    a, b = row["favoured"], row["other"]
    spread = f", between-seed sd {_f(row['seed_sd'])}" if row.get("seed_sd") is not None else ""
    text = (f"{row['label']}, {row['metric']}, n = {row['n']}, {_seeds_text(row['seeds'])}: {a} {_fi(row['models'][a])} "
            f"vs {b} {_fi(row['models'][b])}; difference "
            f"{_fi({'value': row['difference'], 'interval': row['interval']}, signed=True)}{spread}; "
            f"detectable ±{_f(row['detectable'])}")
    if row.get("published_effect") is not None:
        could = "could have seen it" if row.get("could_detect") else "could not have seen it"
        text += f" against a published {_f(row['published_effect'])} ({could})"
    if row.get("verdict") is None:
        return text
    if row["verdict"] != "not testable":
        return text + f": *{row['verdict']}*"
    below = [r for r in (a, b) if not row["models"][r].get("above_baseline")]
    name = row["models"][below[0]].get("baseline_name") or "its baseline"
    return text + f": *not testable at this scale* ({' and '.join(below)} not shown above the baseline: {name})"


def _learning_panels(results: dict) -> list[dict]:
    """Each task's main metric over kept checkpoints: one panel per task, a line per role and seed."""
    panels: dict[tuple, dict] = {}
    for role, rs in results.items():
        for seed, rs_s in seed_groups(rs).items():
            if len(rs_s) < 2:  # one checkpoint (the continued runs, whose tokens count from their start): no curve
                continue
            for res in rs_s:
                tokens = number(res["model"].get("tokens"))
                for name, task in res["tasks"].items():
                    value = number(task[task["main"]])
                    if math.isfinite(tokens) and math.isfinite(value):
                        p = panels.setdefault((name, task["main"]), {"title": name, "ylabel": task["main"],
                                                                     "series": {}})
                        lines = p["series"].setdefault(role, {})
                        xs, ys = lines.setdefault(seed, ([], []))
                        xs.append(tokens)
                        ys.append(value)
    for p in panels.values():
        p["series"] = {role: list(lines.values()) for role, lines in p["series"].items()}
    return [p for p in panels.values() if max(len(xs) for ls in p["series"].values() for xs, _ in ls) > 1]


def render(data: dict) -> tuple[str, dict[str, bytes]]:
    """(report.md, {png name: bytes}) from report.json's contents."""
    results, findings = data["results"], data["findings"]
    finals = finals_by_seed(results)
    colours = {r: plots.PALETTE[i % len(plots.PALETTE)] for i, r in enumerate(dict.fromkeys([*ROLE_ORDER, *results]))}
    pngs: dict[str, bytes] = {}
    md = [f"# {data['title']}", "", "Final checkpoints compared (each listed under Inputs): " + "; ".join(
        f"{role}, {_seeds_text(len(fs))}" + (f" ({', '.join(map(str, fs))})" if len(fs) > 1 else "")
        + f", {_tokens(next(iter(fs.values())))} tokens" for role, fs in finals.items()) + ".", "", "## Findings", ""]
    if findings.get("one_run"):
        md += [f"**One run per model.** {compare.ONE_RUN_NOTE}", ""]
    ran = [c for c in findings["claims"] if c["verdict"] != "not run"]
    if ran or not findings.get("tasks"):
        md += _table(["#", "claim", "published evidence", "our measurement (95% intervals; detectable difference at "
                      "80% power)", "verdict"],
                     [[c["id"], c["text"], c["published"], "<br>".join(_measurement(r) for r in c["rows"])
                       or "not measured", f"**{VERDICTS.get(c['verdict'], c['verdict'])}**"]
                      for c in findings["claims"]])
    if findings.get("tasks"):
        md += ["### Every other task both models were evaluated on: encoder - decoder", "",
               "No published claim fixes a direction for these, so they carry an interval and the detectable "
               "difference but no verdict." + ("" if ran else " None of the published claims' tasks was run."), ""]
        md += _table(["task", "measurement"], [[r["label"], _measurement(r)] for r in findings["tasks"]])
    md += [f"**Rule.** {findings['rule']}", ""]
    rows = [r | {"label": f"C{c['id']} {r['label']}: {r['favoured']} - {r['other']}"}
            for c in findings["claims"] for r in c["rows"]]
    rows += [r | {"label": f"{r['label']}: {r['favoured']} - {r['other']}", "verdict": "no claim"}
             for r in findings.get("tasks", [])]
    if rows:
        pngs["findings.png"] = plots.forest(rows)
        md += ["![Findings: each task row's difference (favoured - other) with its 95% interval, by verdict]"
               "(findings.png)", ""]
    missing = [f"claim {c['id']}: {', '.join(c['missing'])}" for c in findings["claims"] if c["missing"]]
    if missing:
        md += ["Not measured (a model or a task missing):", "", *(f"- {m}" for m in missing), ""]
    md += _claims_over_tokens(data.get("curves") or [], pngs)

    gain = inspect.signature(compare.learned).parameters["min_gain"].default
    md += ["## Did each model learn something?", "", f"SST-2 (its better design) at least {gain:.2f} above the "
           "majority class, and held-out loglik (nats per token) above the unigram model's, both on the final "
           "checkpoints (the mean over pre-training seeds).", ""]
    learned_rows = []
    for row in data["learned"]:
        s, lm = row.get("sst2", {}), row.get("lm", {})
        passed = [part["passed"] for part in (s, lm) if part]
        learned_rows.append([row["role"], row.get("seeds", 1), s.get("design", "—"), _fi(s) if s else "—",
                             _f(s.get("baseline")), _f(s.get("gain"), signed=True), _fi(lm) if lm else "—",
                             _f(lm.get("baseline")), ("yes" if all(passed) else "no") if passed else "not measured"])
    md += _table(["model", "seeds", "SST-2 design", "SST-2 accuracy", "majority class", "gain", "held-out loglik",
                  "unigram", "learned something"], learned_rows)

    md += ["## Detail", "", "### Final checkpoints, every task", "",
           "Each cell: the value (mean over pre-training seeds) [95% interval over seeds and test examples]; the "
           "baseline; each seed's value and their spread; for fine-tuning the spread over fine-tuning seeds.", ""]
    keys = list(dict.fromkeys((f["label"], f["metric"]) for figs in data["detail"].values() for f in figs))
    cells = {(role, f["label"], f["metric"]): f for role, figs in data["detail"].items() for f in figs}
    table = []
    for label, metric in keys:
        figs = [cells.get((role, label, metric)) for role in data["detail"]]
        base = next((f["baseline_name"] for f in figs if f and f.get("baseline_name")), "—")
        table.append([label, metric, base, *(_detail_cell(f) for f in figs)])
    md += _table(["task", "measure", "baseline", *data["detail"]], table)
    if data["bias"]:
        md += ["### WinoGender", "", "Share of items where the model picks the male, female or neutral pronoun, "
               "and the male skew (male - female), each with its 95% interval.", ""]
        md += _table(["model", "male", "female", "neutral", "male skew"],
                     [[role, *(_fi(p[k], signed=k == "male_skew") for k in ("male", "female", "neutral", "male_skew"))]
                      for role, p in data["bias"].items()])
    md += ["### Learning curves", ""]
    panels = _learning_panels(results)
    if panels:
        pngs["learning-curves.png"] = plots.lines(panels, colours, "training tokens")
        md += ["Each task's main metric on every kept checkpoint that was evaluated (a line per pre-training seed).",
               "", "![Learning curves: one panel per task, main metric against training tokens](learning-curves.png)",
               ""]
        if any(r["model"].get("tokens_estimated") for rs in results.values() for r in rs):
            md += ["Hub revisions (`ettin eval HUB_ID --revisions`) carry no token count: their training tokens are "
                   "estimated from their step numbers (ettin.eval.revisions).", ""]
    else:
        md += ["One evaluated checkpoint per role: no learning curves.", ""]
    md += ["### Training loss", ""]
    series = {role: [([r["tokens"] for r in log["rows"]], [r.get("loss_avg", r.get("loss")) for r in log["rows"]])
                     for log in logs if log["rows"]] for role, logs in data["training"].items()}
    series = {role: lines for role, lines in series.items() if lines}
    native = {k: v for k, v in series.items() if k in ("encoder", "decoder")}  # the rest start from a native model
    panels = [{"title": t, "ylabel": "loss (nats per predicted token)", "series": p}
              for t, p in (("pre-training", native), ("continued training (tokens after the start)",
                                                      {k: v for k, v in series.items() if k not in native})) if p]
    if series:
        pngs["loss-curves.png"] = plots.lines(panels, colours, "training tokens")
        md += ["Encoders predict masked tokens, decoders the next token: the two losses are not the same task. A line "
               "per pre-training seed.", "", "![Training loss against tokens, one line per role](loss-curves.png)", ""]
    md += [f"- {role}, seed {log['seed']}: `{log['path']}`, {len(log['rows'])} records"
           for role, logs in data["training"].items() for log in logs]
    md += [f"- not matched to any evaluated model: `{p}`" for p in data["unmatched_logs"]]
    md += ["" if data["training"] or data["unmatched_logs"] else "No training logs given.", ""]

    md += ["### Published Ettin numbers", "", f"Source: {published.SOURCE}. Scores in %; reference only, "
           "at the published scale.", ""]
    md += _table(["model", *published.ENCODER_COLUMNS], [[n, *v] for n, v in published.ENCODER_ROWS])
    md += _table(["model", *published.DECODER_COLUMNS], [[n, *v] for n, v in published.DECODER_ROWS])
    md += [f"Decoder columns: {published.DECODER_NOTE}.", "", "### Inputs", ""]
    md += _table(["role", "seed", "checkpoint", "tokens", "sha256", "results file"],
                 [[role, seed_of(r), f"{r['model'].get('run')}/{r['model'].get('checkpoint')}",
                   _f(r["model"].get("tokens"), digits=0), str(r["model"].get("sha256") or "—")[:12],
                   f"`{r.get('_path', '?')}`"] for role, rs in results.items() for r in rs])
    md += [f"- `{m['export']}` is the export of {m['role']} {m['run']}/{m['checkpoint']} (its ettin_checkpoint.json "
           "says so): one model, its results merged into the checkpoint's"
           + (f" (added: {', '.join(m['added'])})" if m["added"] else "")
           + (f"; for {', '.join(m['kept'])} the checkpoint's own results are used (the export's differ)"
              if m["kept"] else "") for m in data.get("same_model", [])]
    return "\n".join(md), pngs


def _claims_over_tokens(rows: list[dict], pngs: dict[str, bytes]) -> list[str]:
    """One small figure per claim: its rows' differences against training tokens, with the seed band."""
    md = ["### Each claim over training tokens", ""]
    if not rows:
        return md + ["No claim's models were evaluated at more than one kept checkpoint: no curves.", ""]
    md += ["Each panel: the difference (favoured - other) on every kept checkpoint, the mean over pre-training seeds "
           "(line), their range (band), filled where both models are above their baselines (the row is testable "
           "there) and open where not; the dotted line marks where the row becomes testable for good.", ""]
    for claim in dict.fromkeys(c["claim"] for c in rows):
        group = [c for c in rows if c["claim"] == claim]
        name = f"claim-{claim}-over-tokens.png"
        text = next((c.text for c in compare.CLAIMS if c.id == claim), "")
        pngs[name] = plots.claim_curves(group, f"Claim {claim}: {text}")
        pairs = {(c["favoured"], c["other"]) for c in group}  # name the models where a claim compares several pairs
        where = "; ".join(f"{c['label']}" + (f" ({c['favoured']} - {c['other']})" if len(pairs) > 1 else "") + ": "
                          + (f"testable from {plots.human(c['first_testable'])} tokens"
                             if c["first_testable"] is not None else "never testable")
                          for c in group)
        md += [f"![Claim {claim} over training tokens: {where}]({name})", "", f"Claim {claim}: {where}.", ""]
    return md


def _detail_cell(fig: dict | None) -> str:
    if fig is None:
        return "—"
    parts = [_fi(fig)]
    if fig.get("baseline") is not None:
        parts.append(f"baseline {_f(fig['baseline'])}")
    if fig.get("per_seed") and len(fig["per_seed"]) > 1:
        parts.append(f"seeds {', '.join(_f(s) for s in fig['per_seed'])} (sd {_f(fig.get('seed_sd'))})")
    if fig.get("finetune_seeds"):
        parts.append(f"fine-tuning seeds sd {_f(fig.get('finetune_sd'))}")
    if not fig["design"] and fig["main"] != fig["metric"]:
        parts.append(f"{fig['main']} {_f(fig['main_value'])}")
    return "<br>".join(parts)


# -------------------------------------------------------------------------------------------------- output
def to_html(md: str, pngs: dict[str, bytes], title: str) -> str:
    import markdown

    body = markdown.markdown(md, extensions=["tables"])
    for name, png in pngs.items():
        body = body.replace(f'src="{name}"', f'src="data:image/png;base64,{base64.b64encode(png).decode()}"')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def build_report(paths, out, title: str | None = None) -> dict:
    """Read the inputs and write report.md, report.html, the PNGs and report.json into `out`; returns the JSON."""
    data = build(paths, title)
    md, pngs = render(data)
    page = to_html(md, pngs, data["title"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        atomic_write_bytes(out / name, png)
    atomic_write_bytes(out / "report.md", (md + "\n").encode())
    atomic_write_bytes(out / "report.html", page.encode())
    atomic_write_bytes(out / "report.json", (json.dumps(data, indent=1) + "\n").encode())
    atomic_write_bytes(out / "findings.json", (json.dumps(data["findings"], indent=1) + "\n").encode())
    return data


def cmd_report(args: argparse.Namespace) -> int:
    data = build_report(args.inputs, args.out, args.title)
    roles = ", ".join(f"{role} ({len(rs)} checkpoints, {_seeds_text(len(seed_groups(rs)))})"
                      for role, rs in data["results"].items())
    print(f"report: {Path(args.out) / 'report.md'}, {Path(args.out) / 'report.html'}; {roles}")
    for c in data["findings"]["claims"]:
        print(f"  claim {c['id']} ({c['text']}): {VERDICTS.get(c['verdict'], c['verdict'])}")
    return 0


def register(subparsers) -> None:
    text = "the encoder/decoder comparison as a report: findings with intervals, figures, Markdown + HTML"
    p = subparsers.add_parser("report", help=text, description=text)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="eval folders, results JSON files, run folders (training logs) or an earlier report.json")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--title", default=None, help=f"report title (default: the rebuilt report's, else {DEFAULT_TITLE!r})")
    p.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ettin")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except ReportError as e:
        print(f"ettin report: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
