"""`ettin finetune embed`: a bi-encoder trained and scored by sentence-transformers.

The model is the library's `Transformer` on the Hugging Face folder with `Pooling` on top: mean pooling for
encoders, the last real token for decoders (as the published retrieval recipe); trained by
`SentenceTransformerTrainer` with `CachedMultipleNegativesRankingLoss` (or `MultipleNegativesRankingLoss`,
`--loss mnrl`) on (query, passage) pairs, batches without duplicate texts (in-batch negatives must not be
positives). The saved folder loads back with `SentenceTransformer(path)`; that reloaded model is scored with
`InformationRetrievalEvaluator` on the BEIR folder, beside BM25 and the untuned model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from ettin.downstream import common

TASK = "embed"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model_arguments(p)
    common.add_retrieval_arguments(p)
    common.add_training_arguments(p, lr=5e-5, batch_size=64)
    p.add_argument("--loss", choices=("cmnrl", "mnrl"), default="cmnrl",
                   help="CachedMultipleNegativesRankingLoss (default) or MultipleNegativesRankingLoss")
    p.add_argument("--mini-batch-size", type=int, default=16, help="CachedMNRL's forward chunk (memory, not maths)")
    p.add_argument("--pooling", choices=("mean", "cls", "lasttoken"), default=None,
                   help="default: mean for encoders, lasttoken for decoders")


def build_model(folder: Path, objective: str, pooling: str | None, max_length: int, device: str):
    st = common.need("sentence_transformers", "ettin finetune embed")
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from ettin.downstream.load_report import LM_HEAD, expected_load_report

    with expected_load_report(unexpected=LM_HEAD):  # the body alone: the pre-training head is dropped
        transformer = Transformer(str(folder), max_seq_length=max_length)
    mode = pooling or ("mean" if objective == "mlm" else "lasttoken")
    return st.SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), mode)],
                                  device=device)


def run(args: argparse.Namespace) -> int:
    common.need("sentence_transformers", "ettin finetune embed")
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    device = common.device_of(args)
    col = common.load_collection(args.beir, args.query_limit)  # every input is checked before any model work
    pairs = common.load_pairs(args.pairs, args.query_field, args.passage_field, args.train_limit, args.seed,
                              args.split, exclude_beir=(args.beir, set(col.query_ids)))
    name = common.collection_name(args.beir)
    with tempfile.TemporaryDirectory(prefix="ettin-embed-") as work:
        src = common.resolve(args.model, Path(work), args.role)
        model = build_model(src.folder, src.objective, args.pooling, args.max_length, device)
        pooling = model[1].pooling_mode
        print(f"ettin finetune embed: {src.model['run']}/{src.model['checkpoint']} ({src.objective}, {pooling} "
              f"pooling), {len(pairs)} pairs, scored on {name} ({len(col.query_ids)} queries)", file=sys.stderr)
        start = time.perf_counter()
        untuned, _, _ = common.evaluate_embeddings(model, col)
        loss = (losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=args.mini_batch_size)
                if args.loss == "cmnrl" else losses.MultipleNegativesRankingLoss(model))
        settings = {"pairs": str(args.pairs), "n_pairs": len(pairs), "loss": args.loss, "pooling": pooling,
                    "epochs": args.epochs, "max_steps": args.max_steps, "batch_size": args.batch_size,
                    "lr": args.lr, "max_length": args.max_length, "seed": args.seed, "query_limit": args.query_limit}
        with common.atomic_folder(args.out) as tmp:
            targs = common.training_args(SentenceTransformerTrainingArguments, Path(work) / "trainer", args,
                                         batch_sampler=BatchSamplers.NO_DUPLICATES)
            trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=common.pairs_dataset(pairs),
                                                 loss=loss)
            trainer.train()
            model.save_pretrained(str(tmp))
            common.write_marker(tmp, "ettin finetune embed", args.model, settings)
    tuned = SentenceTransformer(str(args.out), device=device)  # what a user loads
    scores, ranking, reported = common.evaluate_embeddings(tuned, col)
    bm25 = common.bm25_ranking(col)
    task = common.retrieval_task(col, name, scores, ranking, bm25, settings, time.perf_counter() - start,
                                 untuned=untuned, model_folder=str(args.out), n_train=len(pairs))
    path = common.results_path(args.results, src.model)
    common.write_results(path, src.model, {f"{TASK}:{name}": task})
    common.print_scores(f"{TASK}:{name} ({len(col.query_ids)} queries, {len(col.doc_ids)} documents)", scores,
                        task["bm25"], "BM25")
    common.print_scores("  untuned model:", untuned, task["bm25"], "BM25")
    print(f"model: {args.out}\nresults: {path}")
    return 0
