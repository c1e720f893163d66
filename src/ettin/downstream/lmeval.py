"""`ettin lm-eval`: lm-evaluation-harness on local task files, offline, for both objectives.

Tasks (the configs in lm_eval_tasks/, lm-eval's own `piqa` and GLUE `sst2` with their data read from
--data-dir): `piqa` (1,838 validation items; acc, acc_norm, acc_bytes) and `sst2` (the 872 GLUE dev sentences,
zero-shot "positive"/"negative"; acc). Zero-shot unless --num-fewshot.

Models: a decoder runs as the harness's own `hf` model (HFLM) on the exported folder. Its tokenizer's template
(`[CLS] A [SEP]`, the encoders') is replaced, for the harness only, by `[CLS] A`: [CLS] is these decoders' BOS,
which the harness prepends (add_bos_token), and a trailing [SEP] would break its split of the joint
context+continuation encoding. An encoder runs through the same harness and configs as `ettin-mlm`
(ettin.downstream.lmeval_mlm), registered with lm-eval, which scores continuations by masked
pseudo-log-likelihood with ettin's own scoring function.

Agreement with ettin's own `piqa` task (`ettin eval MODEL --tasks piqa`): the same items, prompt and choices,
and for each objective the same likelihood ([CLS] context choice for decoders, the PLL above for encoders), so
per-item log-likelihoods agree to float precision and the accuracies agree except on items whose two choices
score within that precision; ettin's `acc_norm` divides by the choice's UTF-8 bytes, which lm-eval calls
`acc_bytes` (its `acc_norm` divides by characters). Tested in tests/test_downstream_lmeval.py.

Results: one task per harness task, `lm-eval:piqa` / `lm-eval:sst2`, in the file `ettin report` reads, with the
per-item metric and its baseline (chance for PIQA; for SST-2 the majority class of the training split); the
harness's own results (without samples) beside it as <checkpoint>.lm-eval.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from ettin.downstream import common
from ettin.io import UserError

TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
TASKS = {  # ettin name -> (harness task, main metric, files under --data-dir)
    "piqa": ("piqa_local", "acc_norm", ("piqa/validation.jsonl",)),
    "sst2": ("sst2_local", "acc", ("sst2/train.tsv", "sst2/dev.tsv")),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an ettin checkpoint, a run folder (its latest checkpoint), a Hugging Face "
                   "folder or a hub id; decoders run as lm-eval's `hf` model, encoders as `ettin-mlm`")
    p.add_argument("--tasks", default="piqa,sst2", help=f"comma-separated, of {', '.join(TASKS)} (default both)")
    p.add_argument("--limit", type=int, default=None, help="score the first N items of each task")
    p.add_argument("--num-fewshot", type=int, default=0, help="in-context examples (default 0)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="task data root (default $ETTIN_DATA or ../shared/data)")
    p.add_argument("--results", type=Path, default=Path("runs/downstream"),
                   help="results folder, <results>/<run>/<checkpoint>.json (default runs/downstream)")
    p.add_argument("--role", default=None, help="the model's role in the report (default encoder for mlm, "
                   "decoder for clm)")
    p.add_argument("--batch-size", type=int, default=16, help="decoders: the harness's batch size")
    p.add_argument("--max-length", type=int, default=512, help="encoders: tokens per scored window (default 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def task_names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise UserError(f"--tasks: unknown task(s) {unknown or text!r}; known: {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


def check_files(data_dir: Path, names: list[str]) -> None:
    for name in names:
        for rel in TASKS[name][2]:
            if not (data_dir / rel).is_file():
                raise UserError(f"{name}: task file {data_dir / rel} not found (set --data-dir or $ETTIN_DATA)")


def decoder_lm(folder: Path, device: str, batch_size: int):
    """lm-eval's HFLM on the folder, its tokenizer adding [CLS] (BOS) only (see the module docstring)."""
    from lm_eval.models.huggingface import HFLM
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
    return HFLM(pretrained=str(folder), tokenizer=tok, backend="causal", device=device, batch_size=batch_size,
                dtype="float32", add_bos_token=True)


def encoder_lm(folder: Path, device: str, max_length: int):
    from ettin.downstream.lmeval_mlm import EttinMLM  # registers "ettin-mlm" with lm-eval

    return EttinMLM(pretrained=str(folder), device=device, max_length=max_length)


def harness(lm, names: list[str], data_dir: Path, args) -> dict:
    """lm_eval.simple_evaluate on the local task configs, with per-item samples."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASK_DIR), metadata={"data_dir": str(data_dir.resolve())})
    return lm_eval.simple_evaluate(model=lm, tasks=[TASKS[n][0] for n in names], num_fewshot=args.num_fewshot,
                                   limit=args.limit, task_manager=manager, log_samples=True,
                                   random_seed=args.seed, numpy_random_seed=args.seed, torch_random_seed=args.seed,
                                   fewshot_random_seed=args.seed)


def _majority_label(data_dir: Path) -> int:
    from ettin.downstream.lm_eval_tasks import loaders  # noqa: F401  (the same reader as the task)

    counts = Counter(r["label"] for r in loaders._tsv(data_dir / "sst2" / "train.tsv"))
    return counts.most_common(1)[0][0]


def task_entry(name: str, out: dict, data_dir: Path, settings: dict, seconds: float, model_type: str) -> dict:
    """The results entry for one harness task: its metrics, per-item main metric and baseline."""
    task, main, _ = TASKS[name]
    metrics = {k.split(",")[0]: float(v) for k, v in out["results"][task].items()
               if "," in k and not k.split(",")[0].endswith("_stderr") and isinstance(v, (int, float))}
    stderr = {k.split(",")[0]: float(v) for k, v in out["results"][task].items()
              if k.split(",")[0].endswith("_stderr") and isinstance(v, (int, float))}
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    score = [float(s[main]) for s in samples]
    if name == "sst2":
        majority = _majority_label(data_dir)
        baseline = [float(int(s["target"]) == majority) for s in samples]
        baseline_name = f"majority class of the training split ({['negative', 'positive'][majority]})"
    else:
        baseline = [1.0 / len(s["arguments"]) for s in samples]
        baseline_name = "chance"
    logliks = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    return common.task_record("multiple_choice", main, metrics, sum(baseline) / len(baseline), baseline_name,
                              len(samples), settings, seconds, per_example={"score": score, "baseline": baseline},
                              stderr=stderr, harness_task=task, model_type=model_type,
                              harness=f"lm-eval {out.get('versions', {}).get(task, '')}".strip(), logliks=logliks)


def run(args: argparse.Namespace) -> int:
    common.need("lm_eval", "ettin lm-eval")
    from ettin.eval.tasks.data import default_data_dir

    names = task_names(args.tasks)
    data_dir = Path(args.data_dir or default_data_dir())
    check_files(data_dir, names)  # every input is checked before any model work
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    device = common.device_of(args)
    with tempfile.TemporaryDirectory(prefix="ettin-lm-eval-") as work:
        src = common.resolve(args.model, Path(work), args.role)
        start = time.perf_counter()
        if src.objective == "clm":
            lm, model_type = decoder_lm(src.folder, device, args.batch_size), "hf"
        else:
            lm, model_type = encoder_lm(src.folder, device, args.max_length), "ettin-mlm"
        print(f"ettin lm-eval: {src.model['run']}/{src.model['checkpoint']} ({src.objective}) as lm-eval's "
              f"`{model_type}` model on {', '.join(names)}", file=sys.stderr)
        out = harness(lm, names, data_dir, args)
        seconds = time.perf_counter() - start
    import lm_eval

    settings = {"num_fewshot": args.num_fewshot, "limit": args.limit, "data_dir": str(data_dir), "seed": args.seed,
                "model_type": model_type, "lm_eval": lm_eval.__version__,
                **({"batch_size": args.batch_size} if model_type == "hf" else {"max_length": args.max_length})}
    tasks = {f"lm-eval:{n}": task_entry(n, out, data_dir, settings, seconds, model_type) for n in names}
    path = common.results_path(args.results, src.model)
    common.write_results(path, src.model, tasks)
    raw = {k: out[k] for k in ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples")
           if k in out}
    from ettin.io import atomic_write_json

    atomic_write_json(path.with_name(f"{path.stem}.lm-eval.json"), json.loads(json.dumps(raw, default=str)))
    for key, t in tasks.items():
        others = ", ".join(f"{m} {t[m]:.4f}" for m in ("acc", "acc_norm", "acc_bytes") if m in t and m != t["main"])
        print(f"{key:<14} {t['main']} {t[t['main']]:.4f}   ({t['baseline_name']} {t['baseline']:.4f})"
              f"{'   ' + others if others else ''}   n={t['n']}")
    print(f"results: {path}")
    return 0
