"""`ettin mteb MODEL --tasks ...`: MTEB v2 (the `mteb` package: `mteb.get_tasks`, `mteb.get_benchmark`,
`mteb.evaluate`) on an embedding model.

Models: an `ettin finetune embed` output or any sentence-transformers folder (loaded as saved, with its own
pooling), a hub id (`SentenceTransformer(id)`), or an ettin checkpoint, run folder or Hugging Face folder,
embedded as `ettin finetune embed` embeds it (sentence-transformers' Transformer + Pooling: `--pooling`, default
mean for encoders and the last token for decoders). A folder written by `ettin finetune embed` names the model it
was fine-tuned from, and the scores go into that model's results file, beside its `embed:<collection>` entry.

Tasks: `beir:FOLDER` is a local BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) run as an MTEB
retrieval task, offline: the collection ettin reads everywhere (ettin.eval.tasks.retrieval.load_beir: the judged
queries, documents as "title text"), judgements binary (score > 0 relevant, as ettin's other retrieval scores;
Cranfield's codes 1-4 rank relevance inversely, so they are not gains). Any other name is an MTEB task
(`NFCorpus`, `SciFact`, ...), and `--benchmark NAME` (e.g. "MTEB(eng, v2)", the paper's) adds a benchmark's tasks;
their data come from the hub (online). Names are checked against mteb's registry before any model work.

Progress: every encode call mteb makes (a task's queries, its documents) counts its sentences on stderr, with an
estimate at this size after the first batch, then counts and eta, and a closing 100% line (`counted`).

Results: one `mteb:<task>` entry per task (`mteb:<collection>` for beir:FOLDER) in the results file `ettin report`
reads. A local collection's entry is a retrieval entry like `embed:<collection>`'s: `ndcg@10` (main), `mrr@10`,
`recall@100` computed by mteb's own metric code (pytrec_eval) on the ranking mteb produced, unrounded (mteb's
TaskResult rounds to 5 decimals: that figure is kept as `mteb_scores`), per-query nDCG@10 and BM25 beside it. On
the same model and collection its nDCG@10 equals the sentence-transformers evaluator's figure that
`ettin finetune embed` reports (tested to 1e-6), with one difference: exactly tied scores. pytrec_eval orders tied
documents by id descending, sentence-transformers by id ascending, so a query whose top 10 holds a tie (or is cut
inside one) can score differently; the entry counts them (`tie_sensitive_queries`). Trained models rarely tie;
tiny random ones do (an untrained encoder's [CLS] vectors nearly coincide). Hub tasks keep the task's main score (`ndcg@10` for
retrieval), every score mteb reports, and no per-query data; a benchmark adds `mteb:<benchmark>`: the mean over
its tasks (main), per task type and over types.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ettin.downstream import common, compat
from ettin.eval.progress import Progress, task_label
from ettin.io import UserError, hub_offline, is_hub_id, read_json

K_VALUES = (10, 100)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an `ettin finetune embed` output or sentence-transformers folder, a hub id, or an "
                   "ettin checkpoint, run folder or Hugging Face folder (embedded with --pooling)")
    p.add_argument("--tasks", default="", help="comma-separated: beir:FOLDER (a local BEIR folder, offline) or MTEB "
                   "task names (online)")
    p.add_argument("--benchmark", action="append", default=[], help="an MTEB benchmark's tasks, e.g. "
                   "\"MTEB(eng, v2)\" (online; repeatable)")
    p.add_argument("--pooling", choices=("mean", "cls", "lasttoken"), default=None,
                   help="ettin and Hugging Face models: default mean for encoders, lasttoken for decoders")
    p.add_argument("--max-length", type=int, default=512, help="ettin and Hugging Face models: longest input")
    p.add_argument("--batch-size", type=int, default=32, help="encoding batch size")
    p.add_argument("--query-limit", type=int, default=None, help="beir:FOLDER: score the first N judged queries")
    p.add_argument("--results", type=Path, default=Path("runs/downstream"),
                   help="results folder, <results>/<run>/<checkpoint>.json (default runs/downstream)")
    p.add_argument("--role", default=None, help="the model's role in the report (default encoder for mlm, "
                   "decoder for clm)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


# ------------------------------------------------------------------------------------------------ tasks
def local_task(col, name: str):
    """An MTEB retrieval task holding a loaded collection (test split, binary judgements), built by
    ettin.downstream.compat (it sets AbsTaskRetrieval's data layout, checking mteb's private names first: called by
    `plan`, before any model work; hub tasks use none)."""
    return compat.local_retrieval_task(col, name)


def plan(args) -> tuple[dict, list, list]:
    """({entry name: (collection, MTEB task)} for beir:FOLDER, [hub MTEB tasks], [benchmarks]), checked before
    any model work."""
    import mteb

    local, hub_names = {}, []
    for item in (t.strip() for t in args.tasks.split(",")):
        if item.startswith("beir:"):
            name = common.collection_name(Path(item[5:]).expanduser())
            if name in local:  # one entry, one task and one predictions file per name
                raise UserError(f"--tasks: two collections named {name} ({item}); give each folder its own name")
            col = common.load_collection(Path(item[5:]).expanduser(), args.query_limit)
            local[name] = (col, local_task(col, name))
        elif item:
            hub_names.append(item)
    benchmarks = []
    for name in args.benchmark:
        try:
            benchmarks.append(mteb.get_benchmark(name))
        except (KeyError, ValueError) as e:
            raise UserError(f"--benchmark {name!r}: not one of mteb's benchmarks ({e})") from None
    try:
        hub = list(mteb.get_tasks(tasks=hub_names)) if hub_names else []
    except KeyError as e:
        raise UserError(f"--tasks: {e.args[0] if e.args else e}") from None
    for bench in benchmarks:
        hub += [t for t in bench.tasks if t.metadata.name not in {h.metadata.name for h in hub}]
    if not local and not hub:
        raise UserError("ettin mteb: no task: give --tasks (beir:FOLDER or MTEB task names) or --benchmark")
    if hub and hub_offline():
        names = ", ".join(t.metadata.name for t in hub[:5]) + (" ..." if len(hub) > 5 else "")
        raise UserError(f"ettin mteb: {names} read data from the Hugging Face hub, which is offline here "
                        "(HF_DATASETS_OFFLINE / HF_HUB_OFFLINE); offline, use beir:FOLDER")
    return local, hub, benchmarks


# ----------------------------------------------------------------------------------------------- models
def is_st_folder(path: Path) -> bool:
    return (Path(path) / "modules.json").is_file()


def load_model(args, work: Path):
    """(SentenceTransformer, results record, how it was built) for the model argument."""
    from sentence_transformers import SentenceTransformer

    from ettin.downstream import embed

    device = common.device_of(args)
    source = Path(args.model).expanduser()
    if is_st_folder(source):
        model = SentenceTransformer(str(source), device=device)
        return model, st_record(source, work, args.role), {"model_folder": str(source)}
    if not source.exists() and is_hub_id(args.model) and args.pooling is None:
        model = SentenceTransformer(args.model, device=device)  # a hub model, with its own modules
        return model, common.resolve(args.model, work, args.role).model, {"model_folder": args.model}
    src = common.resolve(args.model, work, args.role)
    model = embed.build_model(src.folder, src.objective, args.pooling, args.max_length, device)
    return model, src.model, {"pooling": model[1].pooling_mode}


def st_record(folder: Path, work: Path, role: str | None) -> dict:
    """The results record a sentence-transformers folder's scores go under: the model `ettin finetune embed`
    fine-tuned (named in the folder's marker) when it can be found, else the folder itself."""
    from ettin.config import ROLES
    from ettin.eval.runner import checkpoint_sha256

    marker = folder / common.MARKER
    if marker.is_file():
        source = read_json(marker).get("source")
        try:
            return common.resolve(str(source), work, role).model
        except (UserError, FileNotFoundError) as e:
            print(f"ettin mteb: {folder} was fine-tuned from {source}, which is not found here ({e}); its scores go "
                  "under the folder itself", file=sys.stderr)
    objective = common.hf_objective(folder) if (folder / "config.json").is_file() else "mlm"
    return {"run": folder.resolve().name, "role": role or ROLES[objective], "objective": objective,
            "checkpoint": "sentence-transformers", "phase": None, "step": None, "tokens": None,
            "sha256": checkpoint_sha256(folder), "path": str(folder.resolve()), "source": str(folder)}


# ----------------------------------------------------------------------------------------------- scoring
def local_scores(col, ranking: dict[str, dict[str, float]]) -> dict[str, float]:
    """ndcg@10, mrr@10, recall@100 of mteb's ranking by mteb's own metric code, unrounded."""
    qrels = {q: dict.fromkeys(col.qrels[q], 1) for q in col.query_ids}
    per, mrr = compat.retrieval_scores({q: ranking.get(q, {}) for q in col.query_ids}, qrels, list(K_VALUES))
    return {"ndcg@10": float(np.mean([per[q]["ndcg_cut_10"] for q in col.query_ids])),
            "mrr@10": float(mrr["MRR@10"]),
            "recall@100": float(np.mean([per[q]["recall_100"] for q in col.query_ids]))}


def trec_order(ranking: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The ranking with its ties broken as pytrec_eval (mteb) breaks them, document id descending, written as
    scores -rank, so that code breaking ties otherwise (sentence-transformers: id ascending) sees mteb's order."""
    return {q: {d: -float(i) for i, (d, _) in enumerate(sorted(docs.items(), key=lambda kv: (kv[1], kv[0]),
                                                                  reverse=True))}
            for q, docs in ranking.items()}


def tie_sensitive(ranking: dict[str, dict[str, float]], k: int = 10) -> int:
    """Queries whose top k holds tied scores or is cut inside a tie: their nDCG@k depends on how ties are broken."""
    count = 0
    for docs in ranking.values():
        top = sorted(docs.values(), reverse=True)[: k + 1]
        count += len(set(top[:k])) < len(top[:k]) or (len(top) > k and top[k - 1] == top[k])
    return count


def ranking_of(task, predictions: Path) -> dict[str, dict[str, float]]:
    """The ranking mteb wrote for `task` into `predictions`, a folder of this task alone: the file of its exact name
    (`{task name}_predictions.json`, mteb 2's AbsTask.prediction_file_name in mteb/abstasks/abstask.py), else the
    folder's one JSON file; never another task's whose name starts alike (scifact and scifact-small)."""
    path = Path(predictions) / f"{task.metadata.name}_predictions.json"
    files = [path] if path.is_file() else sorted(Path(predictions).glob("*.json"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "nothing"
        raise RuntimeError(f"mteb wrote no predictions for {task.metadata.name} in {predictions} (found {found})")
    return read_json(files[0])["default"]["test"]


KINDS = {"query": "queries", "document": "documents"}  # mteb's PromptType values -> what a progress line counts


def _batch_rows(args: tuple, output) -> int:
    """Sentences in one forward batch of a SentenceTransformer (its output's embeddings, else its input ids)."""
    for features in (output, args[0] if args else None):
        if isinstance(features, Mapping):  # a dict, or transformers' BatchEncoding
            for key in ("sentence_embedding", "input_ids", "attention_mask"):
                if key in features:
                    return len(features[key])
    return 0


def counted(model):
    """A SentenceTransformer as mteb wraps one (mteb's public SentenceTransformerEncoderWrapper, so the same encode
    path and model meta), each encode call a progress step (ettin.eval.progress) over its sentences, counted after
    every forward batch of the model: an estimate at this size, counts, eta and a closing 100% line on stderr."""
    from mteb.models import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer

    if not isinstance(model, SentenceTransformer):
        return model

    class CountedEncoder(SentenceTransformerEncoderWrapper):
        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            kind = KINDS.get(getattr(prompt_type, "value", None), "texts")
            with Progress(f"encoding {task_metadata.name} {kind}:", len(inputs.dataset), "sentences") as step:
                hook = self.model.register_forward_hook(lambda module, args, out: step.update(_batch_rows(args, out)))
                try:
                    return super().encode(inputs, task_metadata=task_metadata, hf_split=hf_split,
                                          hf_subset=hf_subset, prompt_type=prompt_type, **kwargs)
                finally:
                    hook.remove()

    return CountedEncoder(model)


def evaluate(model, tasks: list, batch_size: int, predictions: Path | None = None) -> list:
    import mteb

    result = mteb.evaluate(counted(model), tasks, cache=None, prediction_folder=predictions, show_progress_bar=False,
                           encode_kwargs={"batch_size": batch_size}, overwrite_strategy="always")
    return list(result.task_results)


def reported(task_result) -> dict:
    scores = task_result.scores
    return {split: [{k: v for k, v in s.items() if isinstance(v, (int, float)) and not k.startswith("nauc_")}
                    for s in subsets] for split, subsets in scores.items()}


def hub_entry(task, tr, settings: dict, seconds: float, extra: dict) -> dict:
    main = task.metadata.main_score
    name = "ndcg@10" if main == "ndcg_at_10" else main
    value = float(tr.get_score())
    return common.task_record("retrieval" if task.metadata.type == "Retrieval" else "mteb", name, {name: value},
                              None, "none", 0, settings, seconds, mteb_task=task.metadata.name,
                              task_type=task.metadata.type, mteb_scores=reported(tr), **extra)


def benchmark_entry(bench, tasks: dict[str, dict], settings: dict, seconds: float) -> dict:
    """The benchmark's mean over its tasks (main), per task type and over the types."""
    import mteb

    rows = {t.metadata.name: (t.metadata.type, tasks[f"mteb:{t.metadata.name}"]) for t in bench.tasks
            if f"mteb:{t.metadata.name}" in tasks}
    by_type: dict[str, list[float]] = {}
    for kind, rec in rows.values():
        by_type.setdefault(kind, []).append(rec[rec["main"]])
    means = {k: float(np.mean(v)) for k, v in sorted(by_type.items())}
    values = {"average": float(np.mean([r[r["main"]] for _, r in rows.values()])),
              "mean_by_type": float(np.mean(list(means.values())))}
    return common.task_record("mteb", "average", values, None, "none", len(rows), settings, seconds,
                              by_type=means, tasks=sorted(rows), complete=len(rows) == len(bench.tasks),
                              mteb=mteb.__version__)


def run(args: argparse.Namespace) -> int:
    common.need("mteb", "ettin mteb")
    common.need("sentence_transformers", "ettin mteb")
    import mteb

    local, hub, benchmarks = plan(args)  # every input is checked before any model work
    tasks: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ettin-mteb-") as work:
        model, record, how = load_model(args, Path(work))
        settings = {"mteb": mteb.__version__, "batch_size": args.batch_size, "max_length": args.max_length,
                    "query_limit": args.query_limit, "model": str(args.model), **how}
        print(f"ettin mteb: {args.model} on {', '.join([*local, *(t.metadata.name for t in hub)])}", file=sys.stderr)
        for i, (name, (col, task)) in enumerate(local.items()):
            start = time.perf_counter()
            predictions = Path(work) / "predictions" / str(i)  # a folder per task: only its own file is there
            with task_label(f"{record['run']}/{record['checkpoint']} mteb:{name}"):  # progress lines
                (tr,) = evaluate(model, [task], args.batch_size, predictions)
            ranking = ranking_of(task, predictions)
            scores = local_scores(col, ranking)
            tasks[f"mteb:{name}"] = common.retrieval_task(  # per query: mteb's ranking, mteb's tie order
                col, name, scores, trec_order(ranking), common.bm25_ranking(col), settings,
                time.perf_counter() - start, mteb_scores=reported(tr), mteb_task=name,
                tie_sensitive_queries=tie_sensitive(ranking), **how)
        if hub:
            start = time.perf_counter()
            with task_label(f"{record['run']}/{record['checkpoint']} mteb"):
                results = {tr.task_name: tr for tr in evaluate(model, hub, args.batch_size)}
            seconds = time.perf_counter() - start
            for task in hub:
                if task.metadata.name in results:
                    tasks[f"mteb:{task.metadata.name}"] = hub_entry(task, results[task.metadata.name], settings,
                                                                    seconds, how)
            for bench in benchmarks:
                tasks[f"mteb:{bench.name}"] = benchmark_entry(bench, tasks, settings, seconds)
    path = common.results_path(args.results, record)
    common.write_results(path, record, tasks)
    for key, t in tasks.items():
        beside = f"   ({t['baseline_name']} {t['baseline']:.4f})" if t.get("baseline") is not None else ""
        print(f"{key:<28} {t['main']} {t[t['main']]:.4f}{beside}")
    print(f"results: {path}")
    return 0
