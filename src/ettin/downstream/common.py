"""What every downstream command shares: which model a CLI argument names, training pairs, a BEIR collection
scored with sentence-transformers' information-retrieval evaluator beside BM25, model folders written
atomically, and results JSONs in the format `ettin report` reads.

Models (`resolve`): an ettin DCP checkpoint (meta.json; exported on the fly with ettin.train.checkpoint's
exporter), a run folder (its latest checkpoint, else its final/ export), a Hugging Face folder, or a hub id
(downloaded when online). Run folders and hub ids are resolved by ettin.eval.runner.resolve_targets, the one
place that knows those layouts.

Results (`write_results`): one JSON per source model, `<results>/<run>/<checkpoint>.json`, the layout of
`ettin eval` (docs/CONTRACTS.md "Results"); each command adds its task (`embed:cranfield`, `sft`, ...) to the
file of the same model. A retrieval task holds the main metric per query in `per_example.score` and BM25's in
`per_example.baseline`, so the report draws intervals and tests the model against BM25.

Retrieval scoring: the collection is ettin.eval.tasks.retrieval.load_beir's; every ranking (the model's, BM25's,
a reranked BM25 list) is scored by the same `InformationRetrievalEvaluator.compute_metrics` (binary relevance:
every judged document with score > 0 counts; nDCG@10, MRR@10, recall@100), over all queries and per query.
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ettin.io import UserError, atomic_dir, read_json, read_jsonl

EXTRA_HINT = "pip install 'ettin[downstream]'"
IR_METRICS = ("ndcg@10", "mrr@10", "recall@100")
DEPTH = 100  # the deepest cut-off: candidates kept per query (BM25's list that rerank reorders)
MARKER = "ettin_downstream.json"  # written into every model folder a command saves (what made it, from what)


def need(module: str, command: str = "this command"):
    """Import a library of the downstream extra, or fail with the install line."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.split(".")[0] != e.name.split(".")[0]:
            raise
        raise UserError(f"{command} needs {module.split('.')[0]}, which is not installed: {EXTRA_HINT}") from None


# -------------------------------------------------------------------------------------------------- models
@dataclass
class Resolved:
    folder: Path  # a Hugging Face folder (config.json, weights, tokenizer)
    objective: str  # "mlm" | "clm"
    model: dict  # the results' "model" record


def hf_objective(folder: Path) -> str:
    """mlm for encoders, clm for decoders, from a Hugging Face config.json."""
    cfg_file = Path(folder) / "config.json"
    try:
        cfg = read_json(cfg_file)
    except (OSError, ValueError) as e:  # read_json's messages name the file
        raise UserError(f"a model's config.json cannot be read: {e}") from None
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") == "modernbert-decoder" or cfg.get("is_decoder") \
            or any(str(a).endswith("ForCausalLM") for a in archs):
        return "clm"
    return "mlm"


def resolve(source: str, workdir: Path, role: str | None = None,
            need: tuple[str, str] | None = None) -> Resolved:
    """The Hugging Face folder, objective and results record of a model argument (see the module docstring).
    An ettin checkpoint is exported into `workdir`. `need` = (objective, message): any other objective is refused
    with the message, before a checkpoint is exported."""
    from ettin.config import ROLES
    from ettin.eval.runner import checkpoint_sha256, resolve_targets

    try:
        targets = resolve_targets(str(source))
    except FileNotFoundError as e:
        raise UserError(f"model {source}: {e}") from None
    runs = sorted({t.run for t in targets})
    if len(runs) > 1:
        raise UserError(f"model {source}: holds several runs ({', '.join(runs)}); pass one of them "
                        f"(e.g. {source}/encoder)")
    target = targets[-1]  # a run folder: its latest checkpoint
    if target.kind == "checkpoint":
        from ettin.train.checkpoint import export_hf, read_meta

        _check_objective(read_meta(target.path).get("model_config", {}).get("objective"), need)
        folder = export_hf(target.path, Path(workdir) / f"{target.run}-{target.checkpoint}-hf")
    else:
        folder = Path(target.path)
    if not (folder / "config.json").is_file():
        raise UserError(f"model {source}: {folder} has no config.json")
    objective = hf_objective(folder)
    _check_objective(objective, need)
    model = {"run": target.run, "role": role or ROLES[objective], "objective": objective,
             "checkpoint": target.checkpoint, **{k: target.meta.get(k) for k in ("phase", "step", "tokens")},
             "sha256": checkpoint_sha256(target.path), "path": str(Path(target.path).resolve()), "source": str(source)}
    return Resolved(folder, objective, model)


def _check_objective(objective: str | None, need: tuple[str, str] | None) -> None:
    if need is not None and objective is not None and objective != need[0]:
        raise UserError(need[1])


def resolve_model(source: str, workdir: Path) -> tuple[Path, str]:
    """(Hugging Face folder, "mlm" | "clm") for a checkpoint, run folder, Hugging Face folder or hub id."""
    r = resolve(source, workdir)
    return r.folder, r.objective


# ------------------------------------------------------------------------------------------ output folders
@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `out` to write into; on success it replaces `out` in one rename, on failure
    it is removed (no half-written folder under the final name). An existing `out` is replaced only if it is
    empty or an earlier command's output (holds MARKER)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise UserError(f"--out {out}: exists and is not a model folder written by ettin finetune; "
                        "choose a new folder")
    with atomic_dir(out, replace=True) as tmp:
        yield tmp


def write_marker(folder: Path, command: str, source: str, settings: dict) -> None:
    (Path(folder) / MARKER).write_text(json.dumps({"command": command, "source": source, "settings": settings},
                                                  indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------------------------- results
def results_path(results_dir: Path, model: dict) -> Path:
    """<results>/<run>/<checkpoint>.json, or beside it when another model's results hold that name (two fine-tuned
    runs of one name): results of different models never collide (`ettin.io.results_file`)."""
    from ettin.io import results_file

    return results_file(results_dir, str(model["run"]), str(model["checkpoint"]), model["path"])


def write_results(path: Path, model: dict, tasks: dict[str, dict], settings: dict | None = None) -> dict:
    """Add `tasks` to the results JSON at `path` (atomically), keeping the tasks already there for the same
    model (same run, checkpoint and sha256); a file about another model is replaced."""
    from ettin.io import atomic_write_json

    path = Path(path)
    old: dict = {}
    if path.is_file():
        try:
            old = read_json(path)
        except ValueError:
            old = {}
    same = isinstance(old.get("model"), dict) and all(old["model"].get(k) == model.get(k)
                                                      for k in ("run", "checkpoint", "sha256"))
    obj = {"model": dict(model), "settings": (old.get("settings", {}) if same else {}) | (settings or {}),
           "tasks": (old.get("tasks", {}) if same else {}) | tasks}
    atomic_write_json(path, obj)
    return obj


def task_record(family: str, metric: str, values: dict, baseline: float, baseline_name: str, n: int,
                settings: dict, seconds: float, per_example: dict | None = None, **extra) -> dict:
    """One task's entry in the results (the fields `ettin report` and ettin.eval.compare read)."""
    rec = {"main": metric, "family": family, "metric": metric, **values, "value": values[metric],
           "baseline": baseline, "baseline_name": baseline_name, "n": n, **extra,
           "settings": json.loads(json.dumps(settings, default=str)), "seconds": round(seconds, 2)}
    if per_example is not None:
        rec["per_example"] = per_example
    return rec


def print_scores(title: str, scores: dict, baseline: dict, baseline_name: str) -> None:
    print(title)
    for name, value in scores.items():
        base = baseline.get(name)
        beside = f"   ({baseline_name} {base:.4f})" if isinstance(base, float) else ""
        print(f"  {name:<14} {value:.4f}{beside}")


# --------------------------------------------------------------------------------------------------- pairs
def _rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise UserError(f"{path}: cannot be read as Parquet ({e})") from None
    if path.suffix not in (".jsonl", ".json"):
        raise UserError(f"{path}: pair files are JSONL (.jsonl) or Parquet (.parquet)")
    return read_jsonl(path)


def _beir_pairs(folder: Path, exclude: set[str]) -> list[dict]:
    """(query, relevant document) rows of a BEIR folder's judged queries, leaving out the `exclude` ids."""
    col = load_collection(folder)
    docs = dict(zip(col.doc_ids, col.docs))
    rows = [{"query": text, "passage": docs[d]} for q, text in zip(col.query_ids, col.queries) if q not in exclude
            for d in sorted(col.qrels[q]) if docs[d]]
    if not rows:
        raise UserError(f"beir:{folder}: no training queries left: every judged query is scored "
                        "(score fewer with --query-limit)")
    return rows


def load_pairs(source: str, query_field: str = "query", passage_field: str = "passage", limit: int | None = None,
               seed: int = 0, split: str = "train", exclude_beir: tuple[Path, set[str]] | None = None
               ) -> list[tuple[str, str]]:
    """(query, passage) pairs from a JSONL / Parquet file, `beir:FOLDER` (judged queries with each relevant
    document; the queries in `exclude_beir` of the same folder are left out), or what `datasets.load_dataset`
    reads (a hub name, or a local folder of data files); a seeded sample of `limit`. Every row must hold both fields as non-empty text."""
    where = str(source)
    if where.startswith("beir:"):
        folder = beir_folder(Path(where[5:]).expanduser())
        skip = exclude_beir[1] if exclude_beir and beir_folder(exclude_beir[0]).resolve() == folder.resolve() else set()
        rows, query_field, passage_field = _beir_pairs(folder, skip), "query", "passage"
    elif Path(where).expanduser().is_file():
        rows = _rows(Path(where).expanduser())
    elif not Path(where).expanduser().exists() and (where.startswith((".", "/", "~"))
                                                     or Path(where).suffix in (".jsonl", ".json", ".parquet")):
        raise UserError(f"--pairs {where}: no such file")
    else:
        datasets = need("datasets", "--pairs NAME")
        try:
            rows = list(datasets.load_dataset(str(Path(where).expanduser()) if Path(where).expanduser().exists()
                                              else where, split=split))
        except Exception as e:  # offline, unknown name, no such split
            raise UserError(f"--pairs {where}: not a pair file, and `datasets` could not load it ({e})") from None
    if not rows:
        raise UserError(f"--pairs {where}: no pairs (the file is empty)")
    fields = sorted(k for k in rows[0] if k != "_line")
    for name, flag in ((query_field, "--query-field"), (passage_field, "--passage-field")):
        if name not in rows[0]:
            raise UserError(f"--pairs {where}: no field {name!r} ({flag}); fields: {', '.join(fields)}")
    pairs = []
    for i, row in enumerate(rows):
        q, p = row.get(query_field), row.get(passage_field)
        for name, value in ((query_field, q), (passage_field, p)):
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"--pairs {where}: row {row.get('_line', i + 1)}: field {name!r} is missing "
                                "or not a non-empty string")
        pairs.append((q, p))
    if limit is not None and limit < len(pairs):
        order = np.random.default_rng(seed).permutation(len(pairs))[:limit]
        pairs = [pairs[i] for i in sorted(order)]
    return pairs


def pairs_dataset(pairs: list[tuple[str, str]]):
    """A `datasets.Dataset` with the (anchor, positive) columns the sentence-transformers losses read."""
    datasets = need("datasets")
    return datasets.Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})


# ---------------------------------------------------------------------------------------------- collections
def beir_folder(path: Path) -> Path:
    """A BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv), or a collection folder holding beir/."""
    path = Path(path)
    if (path / "beir").is_dir() and not (path / "corpus.jsonl").is_file():
        path = path / "beir"
    if not path.is_dir():
        raise UserError(f"--beir {path}: no such folder")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        if not (path / name).is_file():
            raise UserError(f"--beir {path}: no {name} (a BEIR folder holds corpus.jsonl, queries.jsonl and "
                            "qrels/test.tsv)")
    return path


def load_collection(path: Path, query_limit: int | None = None):
    """ettin.eval.tasks.retrieval's Collection of a BEIR folder: the judged queries (the first `query_limit`)."""
    from ettin.eval.tasks.retrieval import load_beir

    col = load_beir(beir_folder(path), query_limit)
    if not col.query_ids:
        raise UserError(f"--beir {path}: no judged query (qrels/test.tsv has no score > 0)")
    return col


def collection_name(path: Path) -> str:
    path = beir_folder(path)
    return path.parent.name if path.name == "beir" else path.name


def ir_evaluator(col, sparse: bool = False, batch_size: int = 32, name: str = "beir"):
    """sentence-transformers' IR evaluator (or its sparse subclass) on a collection, at IR_METRICS' cut-offs."""
    if sparse:
        ev = need("sentence_transformers.sparse_encoder.evaluation").SparseInformationRetrievalEvaluator
    else:
        ev = need("sentence_transformers.sentence_transformer.evaluation").InformationRetrievalEvaluator
    return ev(queries=dict(zip(col.query_ids, col.queries)), corpus=dict(zip(col.doc_ids, col.docs)),
              relevant_docs={q: set(col.qrels[q]) for q in col.query_ids}, mrr_at_k=[10], ndcg_at_k=[10],
              accuracy_at_k=[1], precision_recall_at_k=[DEPTH], map_at_k=[DEPTH], batch_size=batch_size,
              name=name, write_csv=False, write_predictions=True)


def ranking_metrics(evaluator, ranking: dict[str, dict[str, float]]) -> dict[str, float]:
    """IR_METRICS of a ranking (query id -> {doc id: score}), computed by the evaluator's own code."""
    hits = [[{"corpus_id": d, "score": float(s)} for d, s in ranking.get(q, {}).items()]
            for q in evaluator.queries_ids]
    out = evaluator.compute_metrics(hits)
    return {m: float(out[f"{m.split('@')[0]}@k"][int(m.split("@")[1])]) for m in IR_METRICS}


def per_query(col, ranking: dict, metric: str = IR_METRICS[0]) -> list[float]:
    """The metric per query in the collection's query order, each from the evaluator's own code on that query
    alone (so their mean is the evaluator's figure, ties broken as it breaks them)."""
    from ettin.eval.tasks.retrieval import Collection

    out = []
    for q, text in zip(col.query_ids, col.queries):
        one = ir_evaluator(Collection([], [], [q], [text], {q: col.qrels[q]}))
        out.append(ranking_metrics(one, {q: ranking.get(q, {})})[metric])
    return out


def bm25_ranking(col, depth: int = DEPTH) -> dict[str, dict[str, float]]:
    """BM25's top `depth` per query (ettin.eval.tasks.retrieval's BM25: rank-bm25 Okapi over words)."""
    from ettin.eval.metrics import top_k_run
    from ettin.eval.tasks.retrieval import bm25_scores

    return top_k_run(bm25_scores(col), col.query_ids, col.doc_ids, depth)


def evaluate_embeddings(model, col, sparse: bool = False, batch_size: int = 32) -> tuple[dict, dict, dict]:
    """Run the library's IR evaluator on a SentenceTransformer / SparseEncoder: (IR_METRICS, the ranking it
    produced, every metric the evaluator returned)."""
    evaluator = ir_evaluator(col, sparse=sparse, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="ettin-ir-") as tmp:
        reported = evaluator(model, output_path=tmp)
        files = sorted(Path(tmp).glob("*predictions*.jsonl"))
        if not files:
            raise RuntimeError(f"the IR evaluator wrote no predictions in {tmp}")
        ranking = {str(row["query_id"]): {str(h["corpus_id"]): float(h["score"]) for h in row["results"]}
                   for row in read_jsonl(files[0], error=RuntimeError)}
    return ranking_metrics(evaluator, ranking), ranking, {k: float(v) for k, v in reported.items()}


def retrieval_task(col, name: str, scores: dict, ranking: dict, baseline_ranking: dict, settings: dict,
                   seconds: float, baseline_name: str = "BM25", **extra) -> dict:
    """The results entry of a retrieval score: IR_METRICS, BM25's beside them, per-query main metric."""
    evaluator = ir_evaluator(col)
    bm25 = ranking_metrics(evaluator, baseline_ranking)
    main = IR_METRICS[0]
    return task_record("retrieval", main, scores, bm25[main], baseline_name, len(col.query_ids), settings,
                       seconds, per_example={"score": per_query(col, ranking), "baseline": per_query(col, baseline_ranking)},
                       bm25=bm25, collection=name, corpus_size=len(col.doc_ids), **extra)


# -------------------------------------------------------------------------------------------- command line
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every downstream command takes: the model, the output folder, results, role, seed."""
    p.add_argument("model", help="an ettin checkpoint, a run folder (its latest checkpoint), a Hugging Face "
                   "folder or a hub id")
    p.add_argument("--out", type=Path, required=True, help="the model folder to write (replaced atomically)")
    p.add_argument("--results", type=Path, default=Path("runs/downstream"),
                   help="results folder, <results>/<run>/<checkpoint>.json (default runs/downstream)")
    p.add_argument("--role", default=None, help="the model's role in the report (default encoder for mlm, "
                   "decoder for clm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def add_training_arguments(p: argparse.ArgumentParser, lr: float, batch_size: int) -> None:
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (-1: epochs)")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--max-length", type=int, default=256, help="longest input in tokens")


def add_retrieval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="training pairs: a JSONL / Parquet file, beir:FOLDER (its judged "
                   "queries not scored, each with its relevant documents), or a `datasets` name or local data folder")
    p.add_argument("--query-field", default="query", help="the pair file's query field (default query)")
    p.add_argument("--passage-field", default="passage", help="the pair file's passage field (default passage)")
    p.add_argument("--split", default="train", help="the split of a `datasets` name (default train)")
    p.add_argument("--train-limit", type=int, default=None, help="use a seeded sample of this many pairs")
    p.add_argument("--beir", type=Path, default=Path("../shared/data/retrieval/cranfield"),
                   help="the BEIR folder to score on (default ../shared/data/retrieval/cranfield)")
    p.add_argument("--query-limit", type=int, default=None, help="score the first N judged queries only")


def device_of(args) -> str:
    if args.device:
        return args.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def training_args(cls, output_dir: Path, args, **extra):
    """A sentence-transformers TrainingArguments class filled from the command line (no checkpoints, no hub)."""
    return cls(output_dir=str(output_dir), num_train_epochs=args.epochs, max_steps=args.max_steps,
               per_device_train_batch_size=args.batch_size, learning_rate=args.lr, warmup_steps=0.1,
               seed=args.seed, data_seed=args.seed, logging_steps=10, save_strategy="no", report_to="none",
               use_cpu=device_of(args) == "cpu", disable_tqdm=True, **extra)
