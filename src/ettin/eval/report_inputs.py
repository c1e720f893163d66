"""Reading `ettin report`'s inputs: results JSON files, training logs (metrics.jsonl) and earlier report.json.

Results files are validated against docs/CONTRACTS.md ("Results"); a file that is not valid JSON or lacks
"model" / "tasks" is a ReportError naming it. Folders are searched recursively; a JSON met there counts as a
results file when it looks like one (HF config.json, tokenizer.json and checkpoint meta.json do not).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OBJECTIVES = {"mlm": "encoder", "clm": "decoder"}
REPORT_FORMAT = "ettin-report/1"


class ReportError(ValueError):
    """Bad report input; the message names the file."""


@dataclass
class Result:
    """One evaluated checkpoint: the results file as read (merged when one checkpoint spans files)."""

    source: str
    model: dict[str, Any]
    settings: dict[str, Any]
    tasks: dict[str, dict[str, Any]]

    @property
    def objective(self) -> str:
        return self.model["objective"]

    @property
    def size(self) -> str:
        return str(self.model.get("size", "?"))

    @property
    def run(self) -> str:
        return str(self.model.get("run", "?"))

    @property
    def position(self) -> tuple[float, float, bool]:
        """Sort key for 'later in training': tokens, then step, a 'final' export last among equals."""
        tokens, step = self.model.get("tokens"), self.model.get("step")
        return (
            as_number(tokens, -1.0),
            as_number(step, -1.0),
            "final" in str(self.model.get("checkpoint", "")),
        )

    def key(self) -> tuple:
        m = self.model
        return (self.run, self.objective, self.size, str(m.get("checkpoint")), str(m.get("sha256")))

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "model": self.model, "settings": self.settings, "tasks": self.tasks}


@dataclass
class TrainingLog:
    source: str  # the metrics.jsonl path
    objective: str | None
    size: str | None
    rows: list[dict[str, Any]]  # phase, step, tokens, loss (lr when logged)

    @property
    def label(self) -> str:
        name = OBJECTIVES.get(self.objective or "", "model")
        return f"{name} ({self.size or '/'.join(Path(self.source).parts[-3:-1])})"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "objective": self.objective, "size": self.size, "rows": self.rows}


@dataclass
class Inputs:
    results: list[Result]
    logs: list[TrainingLog]
    title: str | None = None  # an earlier report's title, when rebuilding from its report.json


def as_number(x: Any, default: float | None = None) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else default


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None


def parse_result(data: Any, source: str | Path) -> Result:
    """Validate one results file (docs/CONTRACTS.md); a clear error naming the file and field otherwise."""
    if not isinstance(data, dict) or "model" not in data or "tasks" not in data:
        missing = (
            "a JSON object"
            if not isinstance(data, dict)
            else " and ".join(repr(k) for k in ("model", "tasks") if k not in data)
        )
        raise ReportError(f"{source}: not an ettin results file: missing {missing}")
    model, tasks, settings = data["model"], data["tasks"], data.get("settings", {})
    if not isinstance(model, dict) or model.get("objective") not in OBJECTIVES:
        got = model.get("objective") if isinstance(model, dict) else model
        raise ReportError(f"{source}: model.objective must be 'mlm' or 'clm', got {got!r}")
    if not isinstance(tasks, dict):
        raise ReportError(f"{source}: 'tasks' must be an object of task name -> metrics")
    for name, task in tasks.items():
        if not isinstance(task, dict):
            raise ReportError(f"{source}: tasks.{name} must be an object of metrics")
        if "error" in task or "skipped" in task:
            continue  # a task the evaluation could not run: listed, not compared
        main = task.get("main")
        if not isinstance(main, str) or as_number(task.get(main)) is None:
            raise ReportError(
                f"{source}: tasks.{name}: 'main' must name a numeric metric of the task, got {main!r}"
            )
    if not isinstance(settings, dict):
        raise ReportError(f"{source}: 'settings' must be an object")
    return Result(str(source), model, settings, tasks)


def _walk(root: Path, match) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and d not in ("checkpoints", "tensorboard", "__pycache__")
        )
        found += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".") and match(f)]
    return found


def _is_results_shaped(data: Any) -> bool:
    """A JSON met while recursing is taken as a results file if it looks like one (tokenizer.json, HF
    config.json and meta.json do not); one that looks like one must then be valid."""
    if not isinstance(data, dict):
        return False
    return "tasks" in data or (isinstance(data.get("model"), dict) and "objective" in data["model"])


def read_log(path: Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}:{lineno}: not valid JSON ({e})") from None
        if not isinstance(rec, dict) or as_number(rec.get("tokens")) is None:
            raise ReportError(f"{path}:{lineno}: a training log record needs a numeric 'tokens'")
        loss = as_number(rec.get("loss"))
        if loss is None or not math.isfinite(loss):
            continue
        row = {
            "phase": str(rec.get("phase", "train")),
            "step": rec.get("step"),
            "tokens": rec["tokens"],
            "loss": loss,
        }
        if as_number(rec.get("lr")) is not None:
            row["lr"] = rec["lr"]
        rows.append(row)
    return rows


def _merge(results: list[Result]) -> list[Result]:
    """One Result per checkpoint: identical duplicates dropped, task sets split over files joined."""
    merged: dict[tuple, Result] = {}
    for r in results:
        have = merged.get(r.key())
        if have is None:
            merged[r.key()] = Result(r.source, r.model, r.settings, dict(r.tasks))
            continue
        for name, task in r.tasks.items():
            if name in have.tasks and have.tasks[name] != task:
                raise ReportError(
                    f"{r.source}: task {name!r} of checkpoint {r.model.get('checkpoint')} differs "
                    f"from the one in {have.source}; pass one of them"
                )
            have.tasks[name] = task
        if r.source not in have.source.split(" + "):
            have.source += f" + {r.source}"
    return list(merged.values())


def _checkpoint_path(r: Result) -> Path | None:
    """The evaluated checkpoint's folder when it is on this machine (model.path, else model.checkpoint)."""
    for key in ("path", "checkpoint"):
        p = Path(str(r.model.get(key, "")))
        if r.model.get(key) and p.exists():
            return p
    return None


def _log_identity(log_path: Path, results: list[Result]) -> tuple[str | None, str | None]:
    """(objective, size) of a run folder: from a results file evaluated there, else checkpoint meta, else name."""
    run_dir = log_path.parent.resolve()
    for r in results:
        ckpt = _checkpoint_path(r)
        if ckpt is not None and run_dir in ckpt.resolve().parents:
            return r.objective, r.size
    for meta in sorted(run_dir.glob("checkpoints/*/meta.json")):
        data = read_json(meta)
        if isinstance(data, dict) and data.get("run_objective") in OBJECTIVES:
            return data["run_objective"], None
    for r in results:  # a run named like its folder: "demo/encoder" or "demo-encoder" for runs/demo/encoder
        names = (
            f"{run_dir.parent.name}/{run_dir.name}",
            f"{run_dir.parent.name}-{run_dir.name}",
            run_dir.name,
        )
        if r.run in names[:2] or (r.run == run_dir.name and r.run not in OBJECTIVES.values()):
            return r.objective, r.size
    by_name = {v: k for k, v in OBJECTIVES.items()}
    return by_name.get(run_dir.name), None


def collect(paths: Sequence[str | Path]) -> Inputs:
    """Read every results file and training log under `paths` (files or folders, or an earlier report.json)."""
    results: list[Result] = []
    logs: list[TrainingLog] = []
    log_paths: list[Path] = []
    title = None
    for p in map(Path, paths):
        if not p.exists():
            raise ReportError(f"{p}: no such file or folder")
        if p.is_file() and p.name.endswith(".jsonl"):
            log_paths.append(p)
        elif p.is_file():
            data = read_json(p)
            if isinstance(data, dict) and data.get("format") == REPORT_FORMAT:
                title = title or data.get("title")
                results += [parse_result(r, r.get("source", p)) for r in data.get("results", [])]
                logs += [
                    TrainingLog(g["source"], g.get("objective"), g.get("size"), g["rows"])
                    for g in data.get("training", [])
                ]
            else:
                results.append(parse_result(data, p))
        else:
            for f in _walk(p, lambda name: name.endswith(".json")):
                data = read_json(f)
                if isinstance(data, dict) and data.get("format") == REPORT_FORMAT:
                    continue  # an earlier report inside the folder: its inputs are here already
                if _is_results_shaped(data):
                    results.append(parse_result(data, f))
            log_paths += _walk(p, lambda name: name == "metrics.jsonl")
    results = _merge(results)
    for r in results:  # the log of the run an evaluated checkpoint came from
        ckpt = _checkpoint_path(r)
        for d in (ckpt, *ckpt.parents[:3]) if ckpt is not None else ():
            if (d / "metrics.jsonl").is_file():
                log_paths.append(d / "metrics.jsonl")
                break
    seen = {Path(g.source).resolve() for g in logs}
    for lp in log_paths:
        if lp.resolve() in seen:
            continue
        seen.add(lp.resolve())
        objective, size = _log_identity(lp, results)
        logs.append(TrainingLog(str(lp), objective, size, read_log(lp)))
    for g in logs:  # `ettin pair` siblings (runs/<pair>/{encoder,decoder}) share a size
        if g.size or Path(g.source).parent.name not in OBJECTIVES.values():
            continue
        pair_dir = Path(g.source).resolve().parent.parent
        g.size = next(
            (h.size for h in logs if h.size and Path(h.source).resolve().parent.parent == pair_dir), None
        )
    if not results and not logs:
        raise ReportError(f"no results files or training logs found in {', '.join(map(str, paths))}")
    return Inputs(results, logs, title)
