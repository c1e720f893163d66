"""`ettin lm-eval`: lm-evaluation-harness, any task of its registry, for both objectives.

Tasks (`--tasks`, comma-separated):
  piqa, sst2      ettin's two local configs (lm_eval_tasks/: lm-eval's own `piqa` and GLUE `sst2` with their data
                  read from --data-dir), offline: `piqa` (1,838 validation items; acc, acc_norm, acc_bytes) and
                  `sst2` (the 872 GLUE dev sentences, "positive"/"negative"; acc).
  ettin-paper     the paper's decoder table: PAPER_TASKS, each a task of the installed harness's registry.
  any other name  a task, group or tag of the harness's registry (its data come from the hub: online), or of the
                  user's task YAMLs (`--include-path DIR`, repeatable; a YAML may read local files, e.g.
                  `dataset_path: json` with `dataset_kwargs: {data_files: ...}`, and then runs offline).
Every name is checked against the registry, and every task's config is read (without its data) before any
model work: unknown names, generation tasks given to an encoder, and hub data while the hub is offline
(HF_DATASETS_OFFLINE / HF_HUB_OFFLINE) are refused with the task named. Zero-shot unless --num-fewshot.
While the harness runs, each request type's requests are counted on stderr with an estimate, eta and a closing
100% line (ettin.downstream.lmeval_progress).

Models: a decoder runs as the harness's own `hf` model (HFLM) on the exported folder, with add_bos_token=True as
in the paper. Its tokenizer's template (`[CLS] A [SEP]`, the encoders') is replaced, for the harness only, by
`[CLS] A`: [CLS] is these decoders' BOS, which the harness prepends, and a trailing [SEP] would break its split of
the joint context+continuation encoding. An encoder runs through the same harness and configs as `ettin-mlm`
(ettin.downstream.lmeval_mlm), registered with lm-eval, which scores continuations by masked
pseudo-log-likelihood with ettin's own scoring function: it takes every log-likelihood and multiple-choice task;
generation tasks (`generate_until`) are refused (in `ettin-paper`, TriviaQA is left out for encoders, and the
results say so).

Agreement with ettin's own `piqa` task (`ettin eval MODEL --tasks piqa`): the same items, prompt and choices,
and for each objective the same likelihood ([CLS] context choice for decoders, the PLL above for encoders), so
per-item log-likelihoods agree to float precision; ettin's `acc_norm` divides by the choice's UTF-8 bytes, which
lm-eval calls `acc_bytes` (its `acc_norm` divides by characters). Tested in tests/test_downstream_lmeval.py.

Results: one entry per harness task in the file `ettin report` reads: `lm-eval:piqa` / `lm-eval:sst2` for the
local configs, `lm-eval:<task>` for every other task (a group's member tasks each), with the main metric per item
(`per_example.score`) and, for multiple-choice tasks, chance beside it (SST-2: the majority class of the training
split); `lm-eval:ettin-paper` holds the suite's average of main metrics. The harness's own results (without
samples) go beside the file as <checkpoint>.lm-eval.json.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from ettin.downstream import common, compat
from ettin.eval.progress import task_label
from ettin.io import UserError, atomic_write_json, hub_offline

TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
LOCAL = {  # ettin name -> (harness task, main metric, files under --data-dir)
    "piqa": ("piqa_local", "acc_norm", ("piqa/validation.jsonl",)),
    "sst2": ("sst2_local", "acc", ("sst2/train.tsv", "sst2/dev.tsv")),
}
PAPER = "ettin-paper"
# The paper's decoder table (lm-evaluation-harness at commit 867413f, `--model hf`, add_bos_token=True, batch 8;
# reference notes section 6.1): column -> the task's name in the installed harness's registry (0.4.13), checked
# by tests/test_downstream_lmeval.py. ARC is ARC-Challenge and WSC the 273 Winograd schemas: the paper's 14M-160M
# baselines (ARC 21-24, WSC 52-58) fit those and not ARC-Easy / SuperGLUE WSC; few-shot counts are not stated
# (zero-shot here) and neither is acc against acc_norm (both are in the results; the main one is acc_norm where
# the task has it).
PAPER_TASKS = {"ARC": "arc_challenge", "HellaSwag": "hellaswag", "LAMBADA": "lambada_openai",
               "OpenBookQA": "openbookqa", "PIQA": "piqa", "SciQ": "sciq", "SIQA": "social_iqa",
               "TriviaQA": "triviaqa", "WinoGrande": "winogrande", "WSC": "wsc273"}
GENERATION = "generate_until"
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")  # `datasets` builders that read local files


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an ettin checkpoint, a run folder (its latest checkpoint), a Hugging Face "
                   "folder or a hub id; decoders run as lm-eval's `hf` model, encoders as `ettin-mlm`")
    p.add_argument("--tasks", default="piqa,sst2",
                   help=f"comma-separated: {', '.join(LOCAL)} (local, offline), {PAPER} (the paper's decoder "
                   "suite), or any task / group / tag of the harness's registry or of --include-path "
                   "(default piqa,sst2)")
    p.add_argument("--include-path", type=Path, action="append", default=[],
                   help="a folder (or YAML file) of your own lm-eval task configs (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="score the first N items of each task")
    p.add_argument("--num-fewshot", type=int, default=0, help="in-context examples (default 0)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="data root of the local tasks (default $ETTIN_DATA or ../shared/data)")
    p.add_argument("--results", type=Path, default=Path("runs/downstream"),
                   help="results folder, <results>/<run>/<checkpoint>.json (default runs/downstream)")
    p.add_argument("--role", default=None, help="the model's role in the report (default encoder for mlm, "
                   "decoder for clm)")
    p.add_argument("--batch-size", type=int, default=8, help="decoders: the harness's batch size (default 8, "
                   "the paper's)")
    p.add_argument("--max-length", type=int, default=512, help="encoders: tokens per scored window (default 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


# ----------------------------------------------------------------------------------------------- task names
def task_manager(data_dir: Path, include: list[Path] = ()):
    """lm-eval's TaskManager over its registry, ettin's local configs and the user's --include-path."""
    for path in include:
        if not Path(path).exists():
            raise UserError(f"--include-path {path}: no such folder or file")
    return _task_manager(str(Path(data_dir).resolve()), tuple(str(Path(p).resolve()) for p in include))


@functools.lru_cache(maxsize=4)
def _task_manager(data_dir: str, include: tuple[str, ...]):
    from lm_eval.tasks import (
        TaskManager,  # indexing the registry's YAML files takes seconds: once per process
    )

    return TaskManager(include_path=[str(TASK_DIR), *include], metadata={"data_dir": data_dir})


def requested(text: str, tm) -> list[tuple[str, str]]:
    """(what the user asked for, harness name) per name in --tasks; `ettin-paper` expands to PAPER_TASKS."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError(f"--tasks: no task named in {text!r}")
    out = []
    for name in dict.fromkeys(names):
        if name == PAPER:
            out += [(PAPER, t) for t in PAPER_TASKS.values()]
        elif name in LOCAL:
            out.append((name, LOCAL[name][0]))
        elif name in tm.task_index:
            out.append((name, name))
        else:
            close = difflib.get_close_matches(name, tm.all_tasks, n=5)
            raise UserError(f"--tasks: {name!r} is not a task, group or tag of lm-eval's registry, ettin's local "
                            f"tasks ({', '.join(LOCAL)}), {PAPER}, or --include-path"
                            + (f"; close: {', '.join(close)}" if close else ""))
    return out


def leaf_configs(tm, name: str, _seen: frozenset = frozenset()) -> dict[str, dict]:
    """{task: its config} of every task a registry name stands for (a group's and a tag's members), read from
    the YAML files without loading any data or resolving any function."""
    entry = tm.task_index.get(name)
    if entry is None or name in _seen:
        return {name: {}}
    seen = _seen | {name}
    kind = compat.task_kind(entry)
    if kind == "tag":
        return {k: v for member, e in sorted(tm.task_index.items()) if name in e.tags
                for k, v in leaf_configs(tm, member, seen).items()}
    cfg = compat.read_task_yaml(entry.yaml_path) if entry.yaml_path else (entry.cfg or {})
    if kind != "group":
        return {name: dict(cfg or {})}
    out: dict[str, dict] = {}
    children = cfg.get("task", [])
    for child in children if isinstance(children, list) else [children]:
        if isinstance(child, dict):  # an inline task config
            out.update(leaf_configs(tm, child["task"], seen) if child.get("task") in tm.task_index
                       else {str(child.get("task")): child})
        else:
            out.update(leaf_configs(tm, str(child), seen))
    return out


def plan(asked: list[tuple[str, str]], tm, objective: str) -> tuple[list[str], dict[str, dict], list[str]]:
    """(harness names to run, {leaf task: config}, tasks left out): refuses what cannot run (see the module
    docstring) before any model work."""
    run, configs, left_out = [], {}, []
    for given, name in asked:
        leaves = leaf_configs(tm, name)
        generation = sorted(t for t, c in leaves.items() if c.get("output_type") == GENERATION)
        if objective == "mlm" and generation:
            if given == PAPER:  # the suite without its generation task, said so in the results
                left_out += generation
                continue
            raise UserError(f"--tasks {given}: {', '.join(generation)} generate text (output_type "
                            f"{GENERATION}); an encoder (ettin-mlm) scores log-likelihoods only: drop "
                            f"{'it' if len(generation) == 1 else 'them'}")
        if hub_offline():
            hub = sorted(t for t, c in leaves.items() if not c.get("custom_dataset") and c.get("dataset_path")
                         and c["dataset_path"] not in LOCAL_BUILDERS and not Path(c["dataset_path"]).exists())
            if hub:
                paths = ", ".join(f"{t} ({leaves[t]['dataset_path']})" for t in hub[:5])
                raise UserError(f"--tasks {given}: {paths}{' ...' if len(hub) > 5 else ''} read(s) data from the "
                                "Hugging Face hub, which is offline here (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE); "
                                "run online, or give local task YAMLs with --include-path")
        run.append(name)
        configs.update(leaves)
    return list(dict.fromkeys(run)), configs, left_out


def check_files(data_dir: Path, asked: list[tuple[str, str]]) -> None:
    for given, _ in asked:
        for rel in LOCAL[given][2] if given in LOCAL else ():
            if not (data_dir / rel).is_file():
                raise UserError(f"{given}: task file {data_dir / rel} not found (set --data-dir or $ETTIN_DATA)")


def peek_objective(source: str) -> str:
    """mlm | clm of a model argument, read from its files without exporting or loading it."""
    from ettin.eval.runner import resolve_targets

    try:
        target = resolve_targets(str(source))[-1]
    except FileNotFoundError as e:
        raise UserError(f"model {source}: {e}") from None
    if target.kind == "checkpoint":
        from ettin.train.checkpoint import read_meta

        objective = read_meta(target.path).get("model_config", {}).get("objective")
        if objective in ("mlm", "clm"):
            return objective
    return common.hf_objective(Path(target.path))


# ------------------------------------------------------------------------------------------------ models
def decoder_lm(folder: Path, device: str, batch_size: int):
    """lm-eval's HFLM on the folder, its tokenizer adding [CLS] (BOS) only (see the module docstring), its requests
    counted (ettin.downstream.lmeval_progress)."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    bos = tok.bos_token or tok.cls_token
    if bos is None:
        raise UserError(f"{folder}: the tokenizer has neither a BOS nor a [CLS] token to start a sequence with")
    tok.bos_token = bos
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.sep_token
    from ettin.downstream.lmeval_progress import CountedHFLM

    return CountedHFLM(pretrained=str(folder), tokenizer=tok, backend="causal", device=device,
                       batch_size=batch_size, dtype="float32", add_bos_token=True)


def encoder_lm(folder: Path, device: str, max_length: int):
    from ettin.downstream.lmeval_mlm import EttinMLM  # registers "ettin-mlm" with lm-eval

    return EttinMLM(pretrained=str(folder), device=device, max_length=max_length)


def harness(lm, names: list[str], tm, args) -> dict:
    """lm_eval.simple_evaluate on the tasks, with per-item samples."""
    import lm_eval

    return lm_eval.simple_evaluate(model=lm, tasks=names, num_fewshot=args.num_fewshot, limit=args.limit,
                                   task_manager=tm, log_samples=True, random_seed=args.seed,
                                   numpy_random_seed=args.seed, torch_random_seed=args.seed,
                                   fewshot_random_seed=args.seed)


# ----------------------------------------------------------------------------------------------- results
def _majority_label(data_dir: Path) -> int:
    from ettin.downstream.lm_eval_tasks import loaders  # the same reader as the task

    counts = Counter(r["label"] for r in loaders._tsv(data_dir / "sst2" / "train.tsv"))
    return counts.most_common(1)[0][0]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def main_metric(task: str, metrics: dict) -> str:
    """The local configs' metric; otherwise acc_norm, acc or exact_match, whichever the task reports first."""
    for local, main, _ in LOCAL.values():
        if task == local:
            return main
    return next((m for m in ("acc_norm", "acc", "exact_match") if m in metrics), min(metrics))


def task_entry(task: str, out: dict, data_dir: Path, settings: dict, seconds: float, model_type: str) -> dict:
    """The results entry for one harness task: its metrics, per-item main metric and baseline."""
    raw = out["results"][task]
    metrics = {k.split(",")[0]: float(v) for k, v in raw.items()
               if "," in k and not k.split(",")[0].endswith("_stderr") and _number(v)}
    stderr = {k.split(",")[0]: float(v) for k, v in raw.items() if k.split(",")[0].endswith("_stderr") and _number(v)}
    if not metrics:
        raise UserError(f"lm-eval task {task}: the harness reported no numeric metric ({sorted(raw)})")
    main = main_metric(task, metrics)
    output_type = out.get("configs", {}).get(task, {}).get("output_type")
    samples = sorted(out.get("samples", {}).get(task, []), key=lambda s: s["doc_id"])
    per_example, baseline, baseline_name, extra = {}, None, "none", {}
    if samples and all(_number(s.get(main)) for s in samples):
        per_example["score"] = [float(s[main]) for s in samples]
    if task == LOCAL["sst2"][0]:
        majority = _majority_label(data_dir)
        per_example["baseline"] = [float(int(s["target"]) == majority) for s in samples]
        baseline_name = f"majority class of the training split ({['negative', 'positive'][majority]})"
    elif output_type == "multiple_choice" and samples:
        per_example["baseline"] = [1.0 / len(s["arguments"]) for s in samples]
        baseline_name = "chance"
    if "baseline" in per_example:
        baseline = sum(per_example["baseline"]) / len(per_example["baseline"])
    if output_type in ("multiple_choice", "loglikelihood") and samples:
        extra["logliks"] = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    n = len(samples) or int(out.get("n-samples", {}).get(task, {}).get("effective", 0))
    return common.task_record("multiple_choice" if output_type == "multiple_choice" else "lm-eval", main, metrics,
                              baseline, baseline_name, n, settings, seconds,
                              per_example=per_example if "score" in per_example else None, stderr=stderr,
                              harness_task=task, output_type=output_type, model_type=model_type,
                              harness=f"lm-eval {out.get('versions', {}).get(task, '')}".strip(), **extra)


def result_name(task: str) -> str:
    local = {v[0]: k for k, v in LOCAL.items()}
    return f"lm-eval:{local.get(task, task)}"


def paper_entry(tasks: dict[str, dict], left_out: list[str], settings: dict, seconds: float) -> dict | None:
    """The suite's average of main metrics (the paper's Avg column), over the tasks that ran."""
    ran = {col: tasks[result_name(t)] for col, t in PAPER_TASKS.items() if result_name(t) in tasks}
    if not ran:
        return None
    scores = {col: t[t["main"]] for col, t in ran.items()}
    average = sum(scores.values()) / len(scores)
    return common.task_record("lm-eval", "average", {"average": average}, None, "none", len(scores), settings,
                              seconds, columns=scores, tasks=dict(PAPER_TASKS), left_out=left_out,
                              complete=len(scores) == len(PAPER_TASKS))


def run(args: argparse.Namespace) -> int:
    common.need("lm_eval", "ettin lm-eval")
    compat.check("lm_eval")  # the private names ettin reads are there (else one clear line, before any work)
    from ettin.eval.tasks.data import default_data_dir

    data_dir = Path(args.data_dir or default_data_dir())
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    objective = peek_objective(args.model)  # every input is checked before any model work
    tm = task_manager(data_dir, args.include_path)
    asked = requested(args.tasks, tm)
    names, _, left_out = plan(asked, tm, objective)
    check_files(data_dir, asked)
    device = common.device_of(args)
    with tempfile.TemporaryDirectory(prefix="ettin-lm-eval-") as work:
        src = common.resolve(args.model, Path(work), args.role)
        start = time.perf_counter()
        if src.objective == "clm":
            lm, model_type = decoder_lm(src.folder, device, args.batch_size), "hf"
        else:
            lm, model_type = encoder_lm(src.folder, device, args.max_length), "ettin-mlm"
        print(f"ettin lm-eval: {src.model['run']}/{src.model['checkpoint']} ({src.objective}) as lm-eval's "
              f"`{model_type}` model on {', '.join(names)}"
              + (f" ({', '.join(left_out)} left out: encoders do not generate)" if left_out else ""), file=sys.stderr)
        with task_label(f"{src.model['run']}/{src.model['checkpoint']} lm-eval"):  # progress lines per call
            out = harness(lm, names, tm, args)
        seconds = time.perf_counter() - start
    import lm_eval

    settings = {"num_fewshot": args.num_fewshot, "limit": args.limit, "data_dir": str(data_dir), "seed": args.seed,
                "model_type": model_type, "lm_eval": lm_eval.__version__,
                "include_path": [str(p) for p in args.include_path],
                **({"batch_size": args.batch_size, "add_bos_token": True} if model_type == "hf"
                   else {"max_length": args.max_length})}
    tasks = {result_name(t): task_entry(t, out, data_dir, settings, seconds, model_type)
             for t in sorted(out.get("samples", {})) if t in out["results"]}
    if any(given == PAPER for given, _ in asked):
        paper = paper_entry(tasks, left_out, settings, seconds)
        if paper is not None:
            tasks[f"lm-eval:{PAPER}"] = paper
    path = common.results_path(args.results, src.model)
    common.write_results(path, src.model, tasks)
    raw = {k: out[k] for k in ("results", "groups", "configs", "versions", "n-shot", "higher_is_better",
                               "n-samples") if k in out}
    atomic_write_json(path.with_name(f"{path.stem}.lm-eval.json"), json.loads(json.dumps(raw, default=str)))
    for key, t in tasks.items():
        others = ", ".join(f"{m} {t[m]:.4f}" for m in ("acc", "acc_norm", "acc_bytes") if m in t and m != t["main"])
        beside = f"   ({t['baseline_name']} {t['baseline']:.4f})" if t.get("baseline") is not None else ""
        print(f"{key:<22} {t['main']} {t[t['main']]:.4f}{beside}{'   ' + others if others else ''}   n={t['n']}")
    print(f"results: {path}")
    return 0
