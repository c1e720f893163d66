"""`ettin report RUN_OR_RESULTS... --out DIR`: the encoder and the decoder side by side.

Inputs: results JSON files (one per evaluated checkpoint, docs/CONTRACTS.md "Results"), found by recursing
into the folders given; training logs (metrics.jsonl) in those folders or beside the evaluated checkpoints;
or the report.json of an earlier report, which rebuilds that report without re-running anything.

Outputs in --out: report.md, report.html (self-contained: the PNGs inlined as data: URIs), the PNGs, and
report.json (every results file with its settings, seeds and checkpoint hashes, plus the training logs).

The direction verdicts come from one fixed rule, stated in the report itself (see `compare_values` and
`family_verdict`); nothing in them is tuned to a particular outcome.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ettin.eval import published
from ettin.eval.report_doc import Doc, write_html, write_markdown, write_text
from ettin.eval.report_inputs import (  # noqa: F401  (re-exported: the report's public API)
    OBJECTIVES,
    REPORT_FORMAT,
    Inputs,
    ReportError,
    Result,
    TrainingLog,
    as_number,
    collect,
    parse_result,
    read_log,
)

DEFAULT_TITLE = "Encoder versus decoder"
FAMILIES = (
    "classification",
    "retrieval",
    "multiple choice",
    "generation",
    "language modelling",
    "bias",
    "other",
)
GLUE = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax", "glue", "sst")
MULTIPLE_CHOICE = (
    "piqa",
    "arc",
    "hellaswag",
    "openbookqa",
    "obqa",
    "sciq",
    "siqa",
    "socialiqa",
    "winogrande",
    "wsc",
    "copa",
    "mmlu",
    "commonsenseqa",
    "boolq",
)
RETRIEVAL = ("retriev", "cranfield", "beir", "msmarco", "nfcorpus", "scifact", "fiqa", "trec")
# A metric naming one of these measures something the two objectives define differently.
OBJECTIVE_SPECIFIC = (
    "perplexity",
    "ppl",
    "pseudo",
    "masked",
    "mlm",
    "clm",
    "next_token",
    "nll",
    "loss",
    "bits",
    "bpb",
)
LOWER_IS_BETTER = ("perplexity", "ppl", "loss", "nll", "bpb", "bits", "error", "wer", "cer")
PROPORTIONS = ("accuracy", "acc", "acc_norm", "exact_match", "male", "female", "neutral")
# Result fields that describe the run of a task rather than measure the model (ints are counts, also left out).
META_KEYS = (
    "main",
    "n",
    "seed",
    "seconds",
    "pooling",
    "error",
    "skipped",
    "settings",
    "family",
    "method",
    "example",
    "collection",
    "mask_probability",
    "num_parameters",
)
# The task families as ettin.eval.tasks names them, in this report's words.
FAMILY_NAMES = {"multiple_choice": "multiple choice", "language_modeling": "language modelling"}
Z95 = 1.96


# ----------------------------------------------------------------------------------- families, verdicts


def task_family(task: str, result: dict[str, Any]) -> str:
    """The family a results file names (ettin.eval.tasks writes it), else one guessed from the task's name."""
    named = FAMILY_NAMES.get(result.get("family"), result.get("family"))
    if named in FAMILIES:
        return named
    t = re.sub(r"[^a-z0-9]", "", task.lower())
    main = str(result.get("main", "")).lower()
    if t.startswith(GLUE):
        return "classification"
    if any(w in t for w in ("winogender", "gender", "bias")):
        return "bias"
    if any(w in t for w in RETRIEVAL) or main.startswith(("ndcg", "recall@", "mrr", "map@")):
        return "retrieval"
    if t.startswith(MULTIPLE_CHOICE):
        return "multiple choice"
    if "generat" in t or "continuation" in t:
        return "generation"
    if t.startswith(("lm", "perplexity", "ppl", "heldout", "wikitext", "language")) or "perplexity" in main:
        return "language modelling"
    if main in ("acc", "acc_norm"):
        return "multiple choice"
    return "other"


def metric_values(task: dict[str, Any]) -> dict[str, float]:
    """The task's numeric metrics, nested objects flattened one level (bm25.ndcg@10); counts (integers),
    timings and settings left out."""
    out: dict[str, float] = {}
    main = task.get("main")
    for key, value in task.items():
        if key in META_KEYS and key != main:
            continue
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            name = key if sub is None else f"{key}.{sub}"
            low = name.lower()
            if (
                as_number(v) is None
                or (isinstance(v, int) and name != main)
                or key.startswith("n_")
                or low.endswith(("_s", "stderr"))
                or "seconds" in low
            ):
                continue
            out[name] = float(v)
    return dict(sorted(out.items(), key=lambda kv: kv[0] != main))  # main first, otherwise as written


def is_baseline(metric: str) -> bool:
    """A number of the data, not of the model (BM25, majority class, chance): the same for both objectives."""
    low = metric.lower()
    return "baseline" in low or low.startswith(("bm25", "chance", "majority", "random"))


def higher_is_better(metric: str) -> bool:
    return not any(w in metric.lower() for w in LOWER_IS_BETTER)


def not_comparable(family: str, enc_metric: str, dec_metric: str) -> str | None:
    """Why an encoder number and a decoder number must not be ranked against each other (None: they may)."""
    if enc_metric != dec_metric:
        return f"the encoder reports {enc_metric}, the decoder {dec_metric}: different measures"
    if family == "language modelling" or any(w in enc_metric.lower() for w in OBJECTIVE_SPECIFIC):
        return (
            "objective-specific: perplexity predicts a token from its left context, pseudo-perplexity and "
            "masked accuracy from both sides; the numbers measure different things"
        )
    if family == "bias":
        return "a bias rate has no better direction"
    if is_baseline(enc_metric):
        return "a baseline: the same for both models"
    return None


def standard_error(task: dict[str, Any], metric: str) -> float | None:
    """The reported `<metric>_stderr`, else the binomial one for a proportion over the task's n examples."""
    se = as_number(task.get(f"{metric}_stderr"))
    if se is not None:
        return se
    value, n = as_number(task.get(metric)), task.get("n")
    if metric.split(".")[-1].lower() in PROPORTIONS or metric.lower().endswith("rate"):
        if value is not None and 0.0 <= value <= 1.0 and isinstance(n, int) and n > 0:
            return math.sqrt(value * (1.0 - value) / n)
    return None


def compare_values(
    enc: float,
    dec: float,
    higher_better: bool = True,
    enc_se: float | None = None,
    dec_se: float | None = None,
) -> tuple[str, str]:
    """('encoder' | 'decoder' | 'tie', the rule applied). A tie: |difference| within 1.96 combined standard
    errors when both are known, otherwise equal at the 4 decimals the tables print."""
    diff = enc - dec
    if enc_se is not None and dec_se is not None:
        bound = Z95 * math.sqrt(enc_se**2 + dec_se**2)
        rule = f"|Δ| {abs(diff):.4f} vs 1.96·SE {bound:.4f}"
        tie = abs(diff) <= bound
    else:
        rule = "no error estimate: equal at 4 decimals is a tie"
        tie = round(enc, 4) == round(dec, 4)
    if tie:
        return "tie", rule
    return ("encoder" if (diff > 0) == higher_better else "decoder"), rule


def family_verdict(expected: str | None, winners: Sequence[str]) -> str:
    """holds: every compared task went the published way; does not hold: none did; mixed: some did."""
    if expected is None or not winners:
        return "not comparable"
    agree = sum(w == expected for w in winners)
    return "holds" if agree == len(winners) else "does not hold" if agree == 0 else "mixed"


@dataclass
class Comparison:
    family: str
    task: str
    size: str
    metric: str
    encoder: float | None
    decoder: float | None
    is_main: bool  # the task's main metric
    winner: str | None  # "encoder" | "decoder" | "tie"; None when not compared
    note: str  # the rule applied, or why not compared
    in_verdict: bool = False  # counted in the family's direction verdict


def size_key(size: str) -> tuple:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmbt]?)", size.lower())
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
    return (0, float(m.group(1)) * scale[m.group(2)], "") if m else (1, 0.0, size)


def final_results(results: list[Result]) -> dict[tuple[str, str], Result]:
    """(size, objective) -> the result of that run's last checkpoint; one run per size and objective."""
    runs: dict[tuple[str, str], dict[str, list[Result]]] = {}
    for r in results:
        runs.setdefault((r.size, r.objective), {}).setdefault(r.run, []).append(r)
    out = {}
    for (size, objective), by_run in runs.items():
        if len(by_run) > 1:
            raise ReportError(
                f"several {OBJECTIVES[objective]} runs of size {size!r} ({', '.join(sorted(by_run))}): "
                "a report pairs one encoder with one decoder per size; report them separately"
            )
        out[(size, objective)] = max(next(iter(by_run.values())), key=lambda r: r.position)
    return out


def _find(metrics: dict[str, float], word: str) -> str | None:
    names = [k for k in metrics if word in re.split(r"[^a-z]+", k.lower())]
    return min(names, key=len) if names else None


def comparisons(results: list[Result]) -> list[Comparison]:
    """Every metric of every task at each size, from each run's last checkpoint, encoder against decoder."""
    finals = final_results(results)
    sizes = sorted({s for s, _ in finals}, key=size_key)
    tasks: dict[str, str] = {}
    for r in finals.values():
        for name, task in r.tasks.items():
            tasks.setdefault(name, task_family(name, task))
    out = []
    for name, family in sorted(tasks.items(), key=lambda kv: (FAMILIES.index(kv[1]), kv[0])):
        for size in sizes:
            enc_r, dec_r = finals.get((size, "mlm")), finals.get((size, "clm"))
            enc_t = enc_r.tasks.get(name, {}) if enc_r else {}
            dec_t = dec_r.tasks.get(name, {}) if dec_r else {}
            if not enc_t and not dec_t:
                continue
            enc_m, dec_m = metric_values(enc_t), metric_values(dec_t)
            mains = (enc_t.get("main"), dec_t.get("main"))
            if all(mains) and mains[0] != mains[1]:  # different measures: one main row each, never ranked
                note = not_comparable(family, *mains)
                out += [
                    Comparison(
                        family, name, size, str(mains[0]), enc_m.get(mains[0]), None, True, None, note, True
                    ),
                    Comparison(
                        family, name, size, str(mains[1]), None, dec_m.get(mains[1]), True, None, note, True
                    ),
                ]
                enc_m.pop(mains[0], None)
                dec_m.pop(mains[1], None)
                mains = (None, None)
            neutral = (_find(enc_m, "neutral") or _find(dec_m, "neutral")) if family == "bias" else None
            for metric in dict.fromkeys([*enc_m, *dec_m]):
                enc, dec = enc_m.get(metric), dec_m.get(metric)
                is_main = metric in mains
                in_verdict = (
                    metric == neutral if family == "bias" else is_main
                )  # bias: the finding is on neutral
                winner, note = None, not_comparable(family, metric, metric)
                if enc is None or dec is None:
                    note = f"only the {'encoder' if dec is None else 'decoder'} reports it"
                elif not (math.isfinite(enc) and math.isfinite(dec)):
                    winner, note = None, "not a finite number"
                elif note is None or metric == neutral:
                    winner, note = compare_values(
                        enc,
                        dec,
                        higher_is_better(metric),
                        standard_error(enc_t, metric),
                        standard_error(dec_t, metric),
                    )
                    if metric == neutral:
                        note = "higher neutral-pronoun rate counts as ahead; " + note
                out.append(
                    Comparison(family, name, size, metric, enc, dec, is_main, winner, note, in_verdict)
                )
    return out


def directions(comps: list[Comparison]) -> list[dict[str, Any]]:
    """Per family: the published direction against the measured one, over the main-metric comparisons."""
    out = []
    for family in FAMILIES:
        rows = [c for c in comps if c.family == family and (c.is_main or c.in_verdict)]
        if not rows:
            continue
        pub = published.DIRECTIONS.get(family, {})
        expected = pub.get("ahead")
        compared = [c for c in rows if c.winner is not None and c.in_verdict]
        winners = [c.winner for c in compared]
        out.append(
            {
                "family": family,
                "published": expected,
                "claim": pub.get("claim", "no published finding"),
                "source": pub.get("source", ""),
                "compared": len(compared),
                "encoder_ahead": winners.count("encoder"),
                "decoder_ahead": winners.count("decoder"),
                "ties": winners.count("tie"),
                "verdict": family_verdict(expected, winners),
                "details": [c.__dict__ for c in rows],
            }
        )
    return out


# ----------------------------------------------------------------------------------------------- output


def to_report_json(inputs: Inputs, title: str) -> dict[str, Any]:
    comps = comparisons(inputs.results) if inputs.results else []
    return {
        "format": REPORT_FORMAT,
        "title": title,
        "checkpoints": [
            {
                "objective": r.objective,
                "size": r.size,
                "run": r.run,
                "checkpoint": r.model.get("checkpoint"),
                "sha256": r.model.get("sha256"),
                "tokens": r.model.get("tokens"),
                "seed": r.settings.get("seed"),
            }
            for r in inputs.results
        ],
        "directions": directions(comps),
        "results": [r.to_json() for r in inputs.results],
        "training": [g.to_json() for g in inputs.logs],
    }


def build_report(paths: Sequence[str | Path], out: str | Path, title: str | None = None) -> dict:
    """Read the inputs, write report.md, report.html, report.json and the PNGs into `out`; returns the JSON.
    The title defaults to the rebuilt report's, else DEFAULT_TITLE."""
    from ettin.eval.report_sections import build_document  # the document layout, with the plots

    inputs = collect(paths)
    title = title or inputs.title or DEFAULT_TITLE
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = to_report_json(inputs, title)
    doc: Doc = build_document(inputs, data, out)
    write_markdown(doc, out / "report.md")
    write_html(doc, out / "report.html", title)
    write_text(out / "report.json", json.dumps(data, indent=1, sort_keys=False, allow_nan=True) + "\n")
    return data


def cmd_report(args: argparse.Namespace) -> int:
    try:
        data = build_report(args.inputs, args.out, args.title)
    except ReportError as e:
        print(f"ettin report: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(f"report: {out / 'report.md'}, {out / 'report.html'} ({len(data['results'])} checkpoints)")
    for d in data["directions"]:
        print(f"  {d['family']}: published {d['published'] or '-'} ahead; measured: {d['verdict']}")
    return 0


def register_report(subparsers) -> None:
    text = "put evaluated encoders and decoders side by side: Markdown + HTML report with plots"
    p = subparsers.add_parser("report", help=text, description=text)
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="RUN_OR_RESULTS",
        help="run folders, eval folders, results JSON files, metrics.jsonl files or a report.json",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--title", default=None, help=f"report title (default: {DEFAULT_TITLE!r}, or the rebuilt report's)"
    )
    p.set_defaults(func=cmd_report)


register = register_report  # the name ettin.eval.cli looks for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ettin")
    register_report(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
