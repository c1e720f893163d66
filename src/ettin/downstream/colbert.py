"""`ettin finetune colbert`: a ColBERT (multi-vector, late-interaction) retriever trained and scored by PyLate.

Why an isolated environment: PyLate 1.6.0 pins sentence-transformers==5.3.0, transformers<=5.3.0 and fast-plaid
(whose wheels pin one torch each: 1.4.6.2110 needs torch==2.11.0, a CUDA build of several GB here), while ettin runs
transformers 5.24 and sentence-transformers 6. The command therefore creates, on first use, a virtual environment
of its own with PyLate's pins (`colbert-env.txt` beside this file, every package at an exact version) and the CPU
wheel torch==2.13.0, and runs PyLate there in a subprocess (colbert_worker.py). PyLate itself is installed without
its dependencies, so fast-plaid is left out: PyLate imports fast_plaid only when a PLAID index is built, and this
command uses PyLate's Voyager index (HNSW over the token vectors, then exact MaxSim on the candidates) instead.
The environment lives in $ETTIN_COLBERT_ENV, else ~/.cache/ettin/colbert-env-<hash of the pins> (shared by every
checkout on the machine); it is built under a temporary name and renamed when complete, so an interrupted build
leaves nothing that looks ready. See docs/downstream.md for its cost.

Split of work: this process (ettin's environment) reads and checks every input, exports an ettin checkpoint,
writes the job, and scores the rankings PyLate returns with the same sentence-transformers IR evaluator code as
`ettin finetune embed`, beside BM25 (common.retrieval_task); the worker (PyLate's environment) builds
`models.ColBERT` on the Hugging Face folder, scores the untuned model, trains with `losses.CachedContrastive`,
saves the folder, reloads it with `models.ColBERT(path)` and ranks the collection with PyLate's index and
retriever.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ettin.downstream import common
from ettin.io import UserError, read_json

TASK = "colbert"
HERE = Path(__file__).resolve().parent
PINS = HERE / "colbert-env.txt"  # PyLate's environment, every package pinned (torch apart)
WORKER = HERE / "colbert_worker.py"
TORCH = "torch==2.13.0"  # the CPU wheel on this project's machines; installed with its own dependencies
READY = "ettin-colbert-env.json"  # written last into a complete environment


# ------------------------------------------------------------------------------------------ environment
def pins_digest() -> str:
    h = hashlib.sha256(PINS.read_bytes() + TORCH.encode() + f"{sys.version_info[:2]}".encode())
    return h.hexdigest()[:12]


def env_path() -> Path:
    if os.environ.get("ETTIN_COLBERT_ENV"):
        return Path(os.environ["ETTIN_COLBERT_ENV"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ettin" / f"colbert-env-{pins_digest()}"


def env_python(env: Path) -> Path:
    return env / "bin" / "python"


def env_ready(env: Path) -> bool:
    try:
        return read_json(env / READY).get("pins") == pins_digest() and env_python(env).exists()
    except (OSError, ValueError):
        return False


def build_steps(env: Path) -> list[list[str]]:
    """The commands that make the environment at `env`: a venv of this Python, torch (with its dependencies),
    every pin without dependencies (so PyLate's fast-plaid requirement is not followed), an import check."""
    python = str(env_python(env))
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    return [[sys.executable, "-m", "venv", str(env)], [*pip, TORCH], [*pip, "--no-deps", "-r", str(PINS)],
            [python, "-I", "-c", "import pylate.models, pylate.indexes, pylate.retrieve, voyager, torch"]]


def ensure_env(env: Path | None = None, log=print) -> Path:
    """The interpreter of PyLate's environment, created first if missing (under a lock: one builder at a time)."""
    env = Path(env or env_path())
    if env_ready(env):
        return env_python(env)
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f".{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if env_ready(env):  # another process built it while this one waited
            return env_python(env)
        if env.exists() and not (env / READY).is_file():  # never replace a folder this command did not make
            raise UserError(f"--colbert-env {env}: exists and is not an environment built by ettin finetune "
                            "colbert; choose a new path")
        log(f"ettin finetune colbert: creating PyLate's environment at {env} (once; about 5 minutes and 1.6 GB: "
            f"{TORCH}, PyLate and its pins from {PINS.name})")
        tmp = Path(tempfile.mkdtemp(prefix=f".{env.name}.tmp-", dir=env.parent))
        start = time.perf_counter()
        try:
            for cmd in build_steps(tmp):
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if proc.returncode != 0:
                    tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
                    raise UserError(f"creating PyLate's environment failed (exit {proc.returncode}) at: "
                                    f"{' '.join(cmd)}\n{tail}")
            (tmp / READY).write_text(json.dumps({"pins": pins_digest(), "torch": TORCH,
                                                 "seconds": round(time.perf_counter() - start, 1)}) + "\n")
            if env.exists():  # an environment of older pins
                shutil.rmtree(env)
            os.replace(tmp, env)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log(f"ettin finetune colbert: environment ready in {time.perf_counter() - start:.0f}s")
    return env_python(env)


# ------------------------------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model_arguments(p)
    common.add_retrieval_arguments(p)
    common.add_training_arguments(p, lr=5e-5, batch_size=32)
    p.add_argument("--query-length", type=int, default=32, help="queries' length in tokens, [MASK]-expanded "
                   "(PyLate's query_length; default 32)")
    p.add_argument("--embedding-size", type=int, default=128, help="dimension of each token vector (default 128)")
    p.add_argument("--loss", choices=("cached", "contrastive"), default="cached",
                   help="PyLate's CachedContrastive (default) or Contrastive loss, in-batch negatives")
    p.add_argument("--mini-batch-size", type=int, default=16, help="CachedContrastive's forward chunk")
    p.add_argument("--temperature", type=float, default=1.0, help="the losses' temperature (PyLate's default 1.0)")
    p.add_argument("--colbert-env", type=Path, default=None,
                   help="PyLate's environment (default $ETTIN_COLBERT_ENV or ~/.cache/ettin/colbert-env-HASH); "
                   "created on first use")


def run(args: argparse.Namespace) -> int:
    device = common.device_of(args)
    col = common.load_collection(args.beir, args.query_limit)  # every input is checked before any model work
    pairs = common.load_pairs(args.pairs, args.query_field, args.passage_field, args.train_limit, args.seed,
                              args.split, exclude_beir=(args.beir, set(col.query_ids)))
    evaluator = common.ir_evaluator(col)  # needs sentence-transformers here too (the downstream extra)
    name = common.collection_name(args.beir)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="ettin-colbert-") as work:
        work = Path(work)
        src = common.resolve(args.model, work, args.role)
        python = ensure_env(args.colbert_env, log)
        log(f"ettin finetune colbert: {src.model['run']}/{src.model['checkpoint']} ({src.objective}), "
            f"{len(pairs)} pairs, scored on {name} ({len(col.query_ids)} queries, {len(col.doc_ids)} documents)")
        settings = {"pairs": str(args.pairs), "n_pairs": len(pairs), "loss": args.loss, "epochs": args.epochs,
                    "max_steps": args.max_steps, "batch_size": args.batch_size, "mini_batch_size": args.mini_batch_size,
                    "lr": args.lr, "temperature": args.temperature, "document_length": args.max_length,
                    "query_length": args.query_length, "embedding_size": args.embedding_size, "seed": args.seed,
                    "query_limit": args.query_limit, "index": "pylate.indexes.Voyager", "k": common.DEPTH}
        (work / "pairs.json").write_text(json.dumps(pairs))
        start = time.perf_counter()
        with common.atomic_folder(args.out) as tmp:
            job = {"model": str(src.folder), "out": str(tmp), "result": str(work / "result.json"),
                   "work": str(work), "pairs": str(work / "pairs.json"), "seed": args.seed, "device": device,
                   "corpus": {"ids": col.doc_ids, "texts": [d if d.strip() else "-" for d in col.docs]},
                   "queries": {"ids": col.query_ids, "texts": col.queries}, "k": common.DEPTH,
                   "encode_batch_size": 32, "document_length": args.max_length, "query_length": args.query_length,
                   "embedding_size": args.embedding_size,
                   "train": {k: settings[k] for k in ("loss", "epochs", "max_steps", "batch_size", "mini_batch_size",
                                                      "lr", "temperature")}}
            (work / "job.json").write_text(json.dumps(job))
            proc = subprocess.run([str(python), "-I", str(WORKER), str(work / "job.json")])
            if proc.returncode != 0:
                raise UserError(f"PyLate's worker failed (exit {proc.returncode}; its traceback is above); "
                                f"nothing was written to {args.out}")
            result = read_json(work / "result.json")
            common.write_marker(tmp, "ettin finetune colbert", args.model,
                                settings | {"versions": result["versions"]})
    scores = common.ranking_metrics(evaluator, result["tuned"])
    untuned = common.ranking_metrics(evaluator, result["untuned"])
    bm25 = common.bm25_ranking(col)
    task = common.retrieval_task(col, name, scores, result["tuned"], bm25, settings, time.perf_counter() - start,
                                 untuned=untuned, model_folder=str(args.out), n_train=len(pairs),
                                 train_loss=result["train_loss"], steps=result["steps"], versions=result["versions"],
                                 phase_seconds={k: round(v, 1) for k, v in result["seconds"].items()})
    path = common.results_path(args.results, src.model)
    common.write_results(path, src.model, {f"{TASK}:{name}": task})
    common.print_scores(f"{TASK}:{name} ({len(col.query_ids)} queries, {len(col.doc_ids)} documents)", scores,
                        task["bm25"], "BM25")
    common.print_scores("  untuned model:", untuned, task["bm25"], "BM25")
    print(f"model: {args.out}  (pylate.models.ColBERT({str(args.out)!r}) in {python.parent.parent})\n"
          f"results: {path}")
    return 0
