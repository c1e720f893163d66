"""The inputs of `ettin report`: eval folders, results files, run folders (training logs) and earlier report.json
files, read into {role: [results]} and {role: [training logs]}, every bad input named (ReportError).

A model's role comes from its results (model.role; older files: encoder for mlm, decoder for clm), its pre-training
seed from model.seed (0 when absent); a log belongs to the role and seed whose results' model.path lies in its run
folder. ettin.eval.report lays out what this gathers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ettin.config import ROLES as NATIVE_ROLES
from ettin.eval.runner import load_results
from ettin.io import read_json
from ettin.train.progress import read_metrics

FORMAT = "ettin-report/3"
REBUILDS = ("ettin-report/2", FORMAT)  # the results inside are the same; findings are recomputed
ROLE_ORDER = ("encoder", "decoder", "encoder-continued", "decoder-continued", "encoder-from-decoder",
              "encoder-from-decoder-mntp", "decoder-from-encoder")
LOG_KEYS = ("phase", "step", "tokens", "loss", "loss_avg", "lr")


class ReportError(ValueError):
    """Bad report input; the message names the file."""


def _read_json(path: Path):
    try:
        return read_json(path)
    except (OSError, ValueError) as e:  # read_json's messages name the file
        raise ReportError(f"cannot be read as JSON: {e}") from e


def number(x, default: float = math.nan) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else default


def _role(res: dict) -> str:
    """The model's role in the comparison, from its results file (never from folder names)."""
    where, model, tasks = res.get("_path", "a results file"), res.get("model"), res.get("tasks")
    if not isinstance(model, dict) or not isinstance(tasks, dict):
        raise ReportError(f"{where}: not a results file: 'model' and 'tasks' must be objects")
    for name, task in tasks.items():
        if not isinstance(task, dict) or task.get("main") not in task:
            raise ReportError(f"{where}: tasks.{name}: no value for its main metric")
    role = model.get("role") or NATIVE_ROLES.get(model.get("objective"))
    if not isinstance(role, str):
        raise ReportError(f"{where}: no model.role, and model.objective {model.get('objective')!r} is not mlm or clm")
    return role


def _run_dir(model_path) -> Path | None:
    """The run folder of an evaluated checkpoint (<run>/checkpoints/<ckpt>, or <run>/final)."""
    if not isinstance(model_path, str) or not model_path:
        return None
    p = Path(os.path.normpath(model_path))
    return p.parent.parent if p.parent.name == "checkpoints" else p.parent


def _in_run(log: Path, run: Path) -> bool:
    here = log.parent.resolve()
    if run.exists() and run.resolve() == here:
        return True  # a recorded relative path may have been relative to another folder: match its tail
    return not run.is_absolute() and ".." not in run.parts and here.parts[-len(run.parts):] == run.parts


def _read_log(path: Path) -> dict:
    try:
        rows = read_metrics(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot be read as a training log ({e})") from e
    keep = [{k: r[k] for k in LOG_KEYS if k in r} for r in rows if isinstance(r, dict)]
    return {"path": str(path), "rows": [r for r in keep if math.isfinite(number(r.get("tokens")))
                                        and math.isfinite(number(r.get("loss_avg", r.get("loss"))))]}


def _merged(first: dict, other: dict) -> dict:
    """One checkpoint's results from several files (`ettin eval`'s and `ettin finetune`'s): their tasks together.
    A task in both must hold the same record; two different measurements of one task are not merged silently."""
    tasks = dict(first["tasks"])
    for name, rec in other["tasks"].items():
        if name in tasks and tasks[name] != rec:
            raise ReportError(f"task {name!r} of checkpoint {first['model'].get('checkpoint')} "
                              f"(run {first['model'].get('run')}) is in {first.get('_path', 'a report.json')} and "
                              f"{other.get('_path', 'a report.json')} with different results: report one of them")
        tasks[name] = rec
    return first | {"tasks": tasks}


def _one_model(rs: list[dict]) -> tuple[list[dict], list[dict]]:
    """A checkpoint and its export (`final/`, whose ettin_checkpoint.json names the run, phase and step it came from)
    are one model: their results become one, the checkpoint's record kept for a task both hold. Returns (results,
    what was merged: {run, seed, checkpoint, export, added, kept})."""
    def ident(r: dict) -> tuple | None:
        m = r["model"]
        return None if m.get("phase") is None or m.get("step") is None else (m.get("run"), seed_of(r), m["phase"],
                                                                                 m["step"])

    out, merged, by_ident = [], [], {}
    for r in rs:
        if r["model"].get("checkpoint") != "final" and ident(r) is not None:
            by_ident.setdefault(ident(r), r)
    for r in rs:
        base = by_ident.get(ident(r)) if r["model"].get("checkpoint") == "final" else None
        if base is None:
            out.append(r)
            continue
        added = [t for t in r["tasks"] if t not in base["tasks"]]
        kept = [t for t in r["tasks"] if t in base["tasks"] and r["tasks"][t] != base["tasks"][t]]
        base["tasks"] = base["tasks"] | {t: r["tasks"][t] for t in added}
        merged.append({"run": base["model"].get("run"), "seed": seed_of(base), "checkpoint":
                       base["model"].get("checkpoint"), "export": r["model"].get("path"), "added": added, "kept": kept})
    return out, merged


def seed_of(res: dict) -> int:
    """The pre-training seed of an evaluated model (its run's `seed`; 0 for results that do not record it)."""
    seed = res.get("model", {}).get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def seed_groups(rs: list[dict]) -> dict[int, list[dict]]:
    """One role's results (ordered by seed, then tokens) as {seed: [results by tokens]}."""
    out: dict[int, list[dict]] = {}
    for r in rs:
        out.setdefault(seed_of(r), []).append(r)
    return out


def collect(paths) -> dict:
    """{title, results: {role: [results, by seed then tokens]}, training: {role: [{seed, path, rows}]},
    unmatched_logs, same_model: the exports merged with their checkpoints}."""
    results, given_logs, saved, title, unmatched = [], [], {}, None, []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*.json")):
                _read_json(f)  # load_results skips a damaged file: name it instead
            results += load_results(p)
            given_logs += sorted(p.rglob("metrics.jsonl"))
        elif p.is_file() and p.name.endswith(".jsonl"):
            given_logs.append(p)
        elif p.is_file():
            obj = _read_json(p)
            if isinstance(obj, dict) and str(obj.get("format", "")).startswith("ettin-report/"):
                if obj["format"] not in REBUILDS:
                    raise ReportError(f"{p}: a {obj['format']} report; this version rebuilds {', '.join(REBUILDS)} only: "
                                      "report the results files instead")
                title = title or obj.get("title")
                results += [r for rs in obj.get("results", {}).values() for r in rs]
                saved = {f"{role}/{log.get('seed', 0)}": log for role, ls in obj.get("training", {}).items()
                         for log in ([ls] if isinstance(ls, dict) else ls)} | saved
                unmatched += obj.get("unmatched_logs", [])
            elif isinstance(obj, dict) and {"model", "tasks"} <= obj.keys():
                results.append(obj | {"_path": str(p)})
            else:
                raise ReportError(f"{p}: neither a results file ('model' and 'tasks') nor a report.json")
        else:
            raise ReportError(f"{p}: no such file or folder")
    by_role: dict[str, dict] = {}
    for res in results:
        m = res["model"] if isinstance(res.get("model"), dict) else {}
        key = (m.get("run"), m.get("checkpoint"), m["sha256"]) if m.get("sha256") else res.get("_path")
        same = by_role.setdefault(_role(res), {})
        same[key] = _merged(same[key], res) if key in same else res
    ordered, same_model = {}, []
    for role in sorted(by_role, key=lambda r: (ROLE_ORDER.index(r) if r in ROLE_ORDER else len(ROLE_ORDER), r)):
        rs, merged = _one_model([dict(r) for r in by_role[role].values()])
        same_model += [m | {"role": role} for m in merged]
        rs = sorted(rs, key=lambda r: (seed_of(r), number(r["model"].get("tokens"), -1),
                                       number(r["model"].get("step"), -1)))
        for seed in dict.fromkeys(map(seed_of, rs)):
            runs = sorted({str(r["model"].get("run")) for r in rs if seed_of(r) == seed})
            if len(runs) > 1:
                raise ReportError(f"role {role}: results of several runs of pre-training seed {seed} "
                                  f"({', '.join(runs)}); a report compares one run per role and seed (give each its "
                                  "role with `ettin eval --role`)")
        ordered[role] = rs
    homes = {(role, seed_of(r)): set() for role, rs in ordered.items() for r in rs}
    for role, rs in ordered.items():
        for r in rs:
            if d := _run_dir(r["model"].get("path")):
                homes[(role, seed_of(r))].add(d)
    training: dict[tuple, dict] = {}
    for log in dict.fromkeys(Path(os.path.abspath(f)) for f in given_logs):
        owners = [key for key, dirs in homes.items() if any(_in_run(log, d) for d in dirs)]
        if not owners:
            unmatched.append(str(log))
        for key in owners:
            training.setdefault(key, _read_log(log))
    for key, dirs in homes.items():  # a report.json's logs, then the logs beside the evaluated checkpoints
        if key not in training and f"{key[0]}/{key[1]}" in saved:
            training[key] = saved[f"{key[0]}/{key[1]}"]
        for d in sorted(dirs):
            if key not in training and (d / "metrics.jsonl").is_file():
                training[key] = _read_log(d / "metrics.jsonl")
    logs: dict[str, list] = {}
    for (role, seed), log in sorted(training.items(), key=lambda kv: (list(ordered).index(kv[0][0]), kv[0][1])):
        logs.setdefault(role, []).append(log | {"seed": seed})
    return {"title": title, "results": ordered, "training": logs, "unmatched_logs": sorted(set(unmatched)),
            "same_model": same_model}
