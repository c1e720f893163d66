"""Run a list of tasks on a model, a checkpoint, or every (k-th) kept checkpoint of a training run.

Targets:
  runs/<name>/                        every kept checkpoint (list_checkpoints), or every k-th (the last always)
  runs/<pair>/                        both runs/<pair>/encoder and runs/<pair>/decoder (`ettin pair` layout)
  runs/<name>/checkpoints/<ckpt>/     one DCP checkpoint (tokenizer.json from the run folder)
  a Hugging Face folder or hub id     config.json + model.safetensors + tokenizer.json
Results: one JSON per evaluated checkpoint (docs/CONTRACTS.md), at <out>/<run>/<checkpoint>.json:
  {"model": {run, role, objective, size, checkpoint, phase, step, tokens, sha256, num_parameters},
   "settings": {seed, max_length, device, ...}, "tasks": {name: {"main": metric, metric: value, "n": ...,
   "family": ..., "settings": {...}, "seconds": ...}}}
Caching: a task is skipped when the file already holds it for the same checkpoint hash (sha256 of the
checkpoint's files), the same seed / max_length and the same task settings. The file is rewritten atomically
after every task, so an interrupted run loses at most the task in progress.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ettin.config import ROLES  # a model's default role in a comparison: its native one
from ettin.eval.progress import task_label
from ettin.eval.summary import summary_line
from ettin.eval.tasks import TaskSpec
from ettin.eval.tasks.common import Subject
from ettin.io import atomic_write_json, is_hub_id, read_json, read_tokenizer


@dataclass
class Target:
    """One model to evaluate."""

    run: str
    checkpoint: str
    path: Path  # checkpoint folder or Hugging Face folder
    kind: str  # "checkpoint" | "hf"
    tokenizer: Path | None
    meta: dict = field(default_factory=dict)  # phase, step, tokens (checkpoints)


def _run_name(run_dir: Path) -> str:
    run_dir = run_dir.resolve()
    if re.fullmatch(r"seed-\d+", run_dir.parent.name):  # several seeds: <out>/seed-<s>/<run>
        return f"{run_dir.parent.parent.name}-{run_dir.parent.name}-{run_dir.name}"
    if run_dir.name in ("encoder", "decoder"):  # `ettin pair` layout: runs/<pair>/{encoder,decoder}
        return f"{run_dir.parent.name}-{run_dir.name}"
    return run_dir.name


def _checkpoint_api():
    try:
        from ettin.train import checkpoint
    except ImportError as e:  # the training area is optional for evaluating Hugging Face folders
        raise FileNotFoundError(f"evaluating training checkpoints needs ettin.train.checkpoint ({e})") from e
    return checkpoint


def _checkpoint_target(ckpt: Path, run: str) -> Target:
    api = _checkpoint_api()
    meta = api.read_meta(ckpt)
    tok = api.find_tokenizer(ckpt)
    info = {k: meta.get(k) for k in ("phase", "step", "tokens")}
    info["seed"] = (meta.get("data_position") or {}).get("seed")  # the run's seed: init, batch order and masks
    return Target(run=run, checkpoint=ckpt.name, path=ckpt, kind="checkpoint", tokenizer=tok, meta=info)


def resolve_targets(model_or_run: str, every: int = 1) -> list[Target]:
    """The models behind a CLI argument, checked to exist (no model is loaded yet)."""
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    p = Path(model_or_run).expanduser()
    if p.is_dir() and (p / "meta.json").is_file():  # one checkpoint
        return [_checkpoint_target(p, _run_name(p.resolve().parent.parent))]
    if p.is_dir() and ((p / "checkpoints").is_dir() or (p / "recipe.yaml").is_file()):  # a run folder
        ckpts = _checkpoint_api().list_checkpoints(p) if (p / "checkpoints").is_dir() else []
        if ckpts:
            picked = [c for i, c in enumerate(ckpts) if i % every == 0 or i == len(ckpts) - 1]
            return [_checkpoint_target(c, _run_name(p)) for c in picked]
        if (p / "final" / "config.json").is_file():
            return [Target(_run_name(p), "final", p / "final", "hf", p / "final" / "tokenizer.json")]
        raise FileNotFoundError(f"{p}: a run folder without kept checkpoints or a final/ export")
    pair = [p / side for side in ("encoder", "decoder") if (p / side / "checkpoints").is_dir()]
    if p.is_dir() and pair and not (p / "checkpoints").is_dir():  # `ettin pair` folder: both runs
        return [t for side in pair for t in resolve_targets(str(side), every)]
    seeds = sorted((d for d in p.glob("seed-*") if re.fullmatch(r"seed-\d+", d.name) and d.is_dir()),
                   key=lambda d: int(d.name[5:])) if p.is_dir() else []
    if seeds and not (p / "checkpoints").is_dir():  # `ettin pair --seeds K` folder: every seed's pair
        return [t for d in seeds for t in resolve_targets(str(d), every)]
    if p.is_dir() and (p / "config.json").is_file():  # a Hugging Face folder
        info = {}
        if (p / "ettin_checkpoint.json").is_file():  # written by export_hf
            info = read_json(p / "ettin_checkpoint.json")
        beside = p.resolve().parent  # <run>/final: named as the run's checkpoints are (a pair's: <pair>-encoder)
        run = _run_name(beside) if (beside / "checkpoints").is_dir() else info.get("run") or p.resolve().name
        return [Target(run, "final" if info else p.resolve().name, p, "hf",
                       p / "tokenizer.json", {k: info.get(k) for k in ("phase", "step", "tokens", "seed") if k in info})]
    if p.exists():
        raise FileNotFoundError(f"{p}: not a checkpoint (meta.json), a run folder (checkpoints/) or a "
                                "Hugging Face folder (config.json)")
    text = str(model_or_run)
    if not is_hub_id(text):
        raise FileNotFoundError(f"{model_or_run}: no such folder (not a checkpoint, run folder or model folder; a "
                                "hub id is owner/name)")
    from ettin.hf import resolve_path  # a hub id: downloads when online, fails clearly when offline

    try:
        folder = resolve_path(text)
    except Exception as e:
        raise FileNotFoundError(f"{text}: not a local folder, and the hub could not provide it ({e})") from e
    return [Target(text.replace("/", "--"), "hub", folder, "hf", folder / "tokenizer.json")]


def precheck(target: Target) -> None:
    """Cheap checks before any work: the tokenizer exists and its ids fit the model's vocabulary."""
    if target.tokenizer is None or not Path(target.tokenizer).is_file():
        raise FileNotFoundError(f"{target.path}: no tokenizer.json found for this model")
    size = read_tokenizer(target.tokenizer)[0].get_vocab_size()
    if target.kind == "checkpoint":
        vocab = _checkpoint_api().read_meta(target.path).get("model_config", {}).get("vocab_size")
    else:
        vocab = read_json(Path(target.path) / "config.json").get("vocab_size")
    if vocab is not None and size > vocab:
        raise ValueError(f"{target.path}: the tokenizer has {size} ids but the model's vocabulary has only {vocab}: "
                         "they do not belong together")


def checkpoint_sha256(path: Path) -> str:
    """sha256 over the relative names and bytes of the checkpoint's weight and config files."""
    h = hashlib.sha256()
    path = Path(path)
    files = sorted(f for f in path.rglob("*") if f.is_file() and (not f.name.startswith(".") or f.name == ".metadata"))
    for f in files:
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_subject(target: Target, device: str, max_length: int) -> Subject:
    if target.tokenizer is None or not Path(target.tokenizer).is_file():
        raise FileNotFoundError(f"{target.path}: no tokenizer.json found for this model")
    tokenizer, _ = read_tokenizer(target.tokenizer)
    if target.kind == "checkpoint":
        model = _checkpoint_api().load_model(target.path)
    else:
        from ettin.hf import from_pretrained

        model = from_pretrained(target.path)
    max_length = min(max_length, model.config.max_position_embeddings)
    return Subject(model, tokenizer, torch.device(device), max_length=max_length)


def _size_name(cfg) -> str:
    from ettin.config import SIZES, preset

    for name in SIZES:
        p = preset(name)
        if (p.num_layers, p.hidden_size, p.intermediate_size, p.num_heads) == (
                cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_heads):
            return name
    return f"{cfg.num_parameters() / 1e6:.0f}m"


def results_path(out_dir: Path, target: Target) -> Path:
    """<out>/<run>/<checkpoint>.json, or beside it when another model's results hold that name (`ettin.io.results_file`)."""
    from ettin.io import results_file

    return results_file(out_dir, target.run, target.checkpoint, target.path)


def load_results(out_dir: Path) -> list[dict]:
    """Every results JSON under out_dir, ordered by run, then training tokens (for reports and plots)."""
    found = []
    for f in sorted(Path(out_dir).rglob("*.json")):
        try:
            obj = read_json(f)
        except ValueError:  # not JSON: not a results file
            continue
        if isinstance(obj, dict) and {"model", "tasks"} <= obj.keys():
            obj["_path"] = str(f)
            found.append(obj)
    return sorted(found, key=lambda r: (r["model"].get("run", ""), r["model"].get("tokens") or 0))


# sources that read results but do not compute them: a change there keeps cached results valid
NOT_IN_RESULTS = {"demo.py", "cli.py", "jobs.py", "eval/cli.py", "eval/compare.py", "eval/curves.py", "eval/inputs.py",
                  "eval/report.py", "eval/plots.py", "eval/published.py", "eval/summary.py"}


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A digest of the ettin package's Python sources: cached task results computed by other code (a fixed task, a
    changed model) are recomputed, not reused."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if rel in NOT_IN_RESULTS or rel.startswith("downstream/"):  # downstream commands never write eval's results
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def evaluate_target(target: Target, tasks: list[TaskSpec], data_dir: Path, out_dir: Path, seed: int = 0,
                    device: str = "cpu", max_length: int = 256, use_cache: bool = True, role: str | None = None,
                    log=print) -> dict:
    """Evaluate one target on `tasks`, reusing cached task results (unless use_cache is False)."""
    path = results_path(out_dir, target)
    sha = checkpoint_sha256(target.path)
    settings = {"seed": seed, "max_length": max_length, "data_dir": str(data_dir), "code": code_fingerprint()}
    try:
        results = read_json(path) if path.is_file() else {}
    except ValueError:
        results = {}  # a damaged cache file is rebuilt
    before = results.get("settings", {})
    if results.get("model", {}).get("sha256") != sha or any(before.get(k) != settings[k]
                                                            for k in ("seed", "max_length", "code")):
        results = {}  # another checkpoint, run settings or code under the same name: start over
    cached = results.get("tasks", {}) if use_cache else {}
    if role and results.get("model") and results["model"].get("role") != role:
        results["model"]["role"] = role
        atomic_write_json(path, results)
    todo = [t for t in tasks if cached.get(t.name, {}).get("settings") != t.settings_dict()]
    for t in tasks:
        if t not in todo:
            log(f"  {target.run}/{target.checkpoint} {t.name}: cached")
    if not todo:
        return results
    subject = load_subject(target, device, max_length)
    cfg = subject.model.config
    results["model"] = {
        "run": target.run, "role": role or ROLES[cfg.objective], "objective": cfg.objective, "size": _size_name(cfg),
        "checkpoint": target.checkpoint,
        "phase": target.meta.get("phase"), "step": target.meta.get("step"), "tokens": target.meta.get("tokens"),
        "seed": target.meta.get("seed"),
        "sha256": sha, "num_parameters": subject.model.num_parameters(),
        "path": str(Path(target.path).resolve()),  # the model's identity (ettin.io.results_file): whatever the spelling
        **target.meta.get("record", {}),  # e.g. a hub revision's name, commit and estimated tokens
    }
    results["settings"] = settings | {"device": device, "torch": torch.__version__,
                                      "max_length_used": subject.max_length}
    results.setdefault("tasks", {})
    for t in todo:
        if t.about is not None:
            log(f"  {target.run}/{target.checkpoint} {t.name}: {t.about(data_dir)}")
        start = time.perf_counter()
        torch.manual_seed(seed)
        with task_label(f"{target.run}/{target.checkpoint} {t.name}", log):  # long steps say how they go
            out = t.run(subject, data_dir, seed)
        out |= {"family": t.family, "settings": t.settings_dict(), "seconds": round(time.perf_counter() - start, 2)}
        results["tasks"][t.name] = out
        atomic_write_json(path, results)
        log(f"  {target.run}/{target.checkpoint} {t.name}: {summary_line(out)}")
    return results
