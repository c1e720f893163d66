"""`ettin finetune rerank`: a cross-encoder reranker trained and scored by sentence-transformers.

The model is a `CrossEncoder` on the library's `Transformer` in its sequence-classification task (one relevance
logit from the Hugging Face class's newly initialised head; a decoder's pools its last real token) trained by `CrossEncoderTrainer` with `BinaryCrossEntropyLoss` on (query, passage, label)
rows: each pair's passage is a positive, and each query gets `--negatives` hard negatives mined with BM25 from the
training corpus (the pair file's passages: the best BM25 matches that are not one of the query's positives); the
positive class is weighted by the number of negatives. The saved folder loads back with `CrossEncoder(path)`;
that model reranks BM25's top 100 of every scored query of the BEIR folder, and the reranked lists are scored by
the same IR evaluator code as BM25's (recall@100 is BM25's by construction: the same 100 documents).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ettin.downstream import common

TASK = "rerank"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model_arguments(p)
    common.add_retrieval_arguments(p)
    common.add_training_arguments(p, lr=2e-5, batch_size=32)
    p.add_argument("--negatives", type=int, default=3, help="BM25 hard negatives per training query (default 3)")
    p.add_argument("--depth", type=int, default=common.DEPTH, help="BM25 candidates reranked per query (default 100)")


def build_model(folder: Path, max_length: int, device: str):
    """A CrossEncoder on the sequence-classification class of the folder (one logit), for both objectives: a
    decoder pools its last real token. (Given a causal-LM folder, CrossEncoder(path) would instead score the
    logits of the tokens "yes" / "no", which needs an instruction-tuned model and a tokenizer that has them.)"""
    st = common.need("sentence_transformers", "ettin finetune rerank")
    from sentence_transformers.cross_encoder.modules import Transformer

    from ettin.downstream.load_report import LM_HEAD, NEW_HEAD, expected_load_report

    with expected_load_report(unexpected=LM_HEAD, missing=NEW_HEAD):  # the LM head dropped, the classifier new
        module = Transformer(str(folder), transformer_task="sequence-classification", config_kwargs={"num_labels": 1},
                             max_seq_length=max_length)
    return st.CrossEncoder(modules=[module], device=device)


def bm25_negatives(pairs: list[tuple[str, str]], k: int) -> list[dict]:
    """(query, passage, label) rows: every pair as a positive, and per query the k best BM25 passages of the
    training corpus that are not among its positives (rank-bm25 Okapi, ettin's word split)."""
    from ettin.eval.tasks.retrieval import bm25_index, bm25_words

    passages = list(dict.fromkeys(p for _, p in pairs))
    positives: dict[str, set[str]] = {}
    for q, p in pairs:
        positives.setdefault(q, set()).add(p)
    bm25 = bm25_index(passages)
    rows = [{"query": q, "passage": p, "label": 1.0} for q, p in pairs]
    for q, pos in positives.items():
        scores = bm25.get_scores(bm25_words(q))
        order = np.argsort(-scores, kind="stable")
        picked = [passages[i] for i in order[: k + len(pos)] if passages[i] not in pos][:k]
        rows += [{"query": q, "passage": p, "label": 0.0} for p in picked]
    return rows


def rerank(model, col, candidates: dict[str, dict[str, float]], batch_size: int = 64) -> dict[str, dict[str, float]]:
    """The model's scores of each query's candidate documents (a ranking in the evaluator's format)."""
    docs = dict(zip(col.doc_ids, col.docs))
    queries = dict(zip(col.query_ids, col.queries))
    keys = [(q, d) for q in col.query_ids for d in candidates.get(q, {})]
    scores = model.predict([[queries[q], docs[d]] for q, d in keys], batch_size=batch_size, show_progress_bar=False)
    out: dict[str, dict[str, float]] = {q: {} for q in col.query_ids}
    for (q, d), s in zip(keys, np.asarray(scores, dtype=np.float64).reshape(-1)):
        out[q][d] = float(s)
    return out


def run(args: argparse.Namespace) -> int:
    common.need("sentence_transformers", "ettin finetune rerank")
    import torch
    from sentence_transformers import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    if args.negatives < 1 or args.depth < 1:
        raise ValueError("--negatives and --depth must be >= 1")
    device = common.device_of(args)
    col = common.load_collection(args.beir, args.query_limit)
    pairs = common.load_pairs(args.pairs, args.query_field, args.passage_field, args.train_limit, args.seed,
                              args.split, exclude_beir=(args.beir, set(col.query_ids)))
    name = common.collection_name(args.beir)
    rows = bm25_negatives(pairs, args.negatives)
    n_neg = sum(r["label"] == 0.0 for r in rows)
    with tempfile.TemporaryDirectory(prefix="ettin-rerank-") as work:
        src = common.resolve(args.model, Path(work), args.role)
        model = build_model(src.folder, args.max_length, device)
        if model.tokenizer.pad_token is None:
            raise ValueError(f"{src.folder}: the tokenizer has no pad token; a cross-encoder batches padded pairs")
        print(f"ettin finetune rerank: {src.model['run']}/{src.model['checkpoint']} ({src.objective}), "
              f"{len(pairs)} positives + {n_neg} BM25 negatives, reranking BM25's top {args.depth} on {name} "
              f"({len(col.query_ids)} queries)", file=sys.stderr)
        start = time.perf_counter()
        dataset = common.need("datasets").Dataset.from_list(rows)
        loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(args.negatives)))
        settings = {"pairs": str(args.pairs), "n_pairs": len(pairs), "negatives": args.negatives,
                    "n_negatives": n_neg, "depth": args.depth, "epochs": args.epochs, "max_steps": args.max_steps,
                    "batch_size": args.batch_size, "lr": args.lr, "max_length": args.max_length, "seed": args.seed,
                    "query_limit": args.query_limit}
        with common.atomic_folder(args.out) as tmp:
            targs = common.training_args(CrossEncoderTrainingArguments, Path(work) / "trainer", args)
            CrossEncoderTrainer(model=model, args=targs, train_dataset=dataset, loss=loss).train()
            model.save_pretrained(str(tmp))
            common.write_marker(tmp, "ettin finetune rerank", args.model, settings)
    tuned = CrossEncoder(str(args.out), device=device)  # what a user loads
    bm25 = common.bm25_ranking(col, args.depth)
    ranking = rerank(tuned, col, bm25)
    scores = common.ranking_metrics(common.ir_evaluator(col), ranking)
    task = common.retrieval_task(col, name, scores, ranking, bm25, settings, time.perf_counter() - start,
                                 model_folder=str(args.out), n_train=len(rows))
    path = common.results_path(args.results, src.model)
    common.write_results(path, src.model, {f"{TASK}:{name}": task})
    common.print_scores(f"{TASK}:{name} (BM25's top {args.depth} reranked; {len(col.query_ids)} queries, "
                        f"{len(col.doc_ids)} documents)", scores, task["bm25"], "BM25 alone")
    print(f"model: {args.out}\nresults: {path}")
    return 0
