"""`ettin finetune sparse`: SPLADE on an encoder's MLM head, trained and scored by sentence-transformers.

The model is a `SparseEncoder` of the library's `Transformer` with `transformer_task="fill-mask"` (the masked-LM
head, what the deprecated `MLMTransformer` wraps) and `SpladePooling` (max over tokens of log(1 + relu(logits))).
The loss is `SpladeLoss`: `SparseMultipleNegativesRankingLoss` (in-batch negatives) plus the FLOPS regulariser on
queries and documents (the library's default regulariser, weights as its examples: 5e-5 queries, 3e-5
documents). A decoder has no MLM head to reuse: refused before any work. The saved folder loads back with
`SparseEncoder(path)`; that model is scored with `SparseInformationRetrievalEvaluator` beside BM25, with the mean
number of active (non-zero) dimensions of queries and documents.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from ettin.downstream import common

TASK = "sparse"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_model_arguments(p)
    common.add_retrieval_arguments(p)
    common.add_training_arguments(p, lr=2e-5, batch_size=32)
    p.add_argument("--query-regularizer", type=float, default=5e-5, help="FLOPS weight on queries (default 5e-5)")
    p.add_argument("--document-regularizer", type=float, default=3e-5,
                   help="FLOPS weight on documents (default 3e-5)")


def build_model(folder: Path, max_length: int, device: str):
    st = common.need("sentence_transformers", "ettin finetune sparse")
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    mlm = Transformer(str(folder), transformer_task="fill-mask", max_seq_length=max_length)
    return st.SparseEncoder(modules=[mlm, SpladePooling(pooling_strategy="max")], device=device)


def _active(reported: dict) -> dict:
    return {f"{side}_active_dims": next(v for k, v in reported.items() if k.endswith(f"{side}_active_dims"))
            for side in ("query", "corpus")}


def run(args: argparse.Namespace) -> int:
    common.need("sentence_transformers", "ettin finetune sparse")
    from sentence_transformers import SparseEncoder, SparseEncoderTrainer, SparseEncoderTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sparse_encoder import losses

    device = common.device_of(args)
    col = common.load_collection(args.beir, args.query_limit)
    pairs = common.load_pairs(args.pairs, args.query_field, args.passage_field, args.train_limit, args.seed,
                              args.split, exclude_beir=(args.beir, set(col.query_ids)))
    name = common.collection_name(args.beir)
    with tempfile.TemporaryDirectory(prefix="ettin-sparse-") as work:
        src = common.resolve(args.model, Path(work), args.role, need=(
            "mlm", f"sparse: {args.model} is a decoder (clm): SPLADE reuses an encoder's masked-LM head, which a "
                   "decoder does not have; give an encoder"))
        model = build_model(src.folder, args.max_length, device)
        print(f"ettin finetune sparse: {src.model['run']}/{src.model['checkpoint']}, {len(pairs)} pairs, scored on "
              f"{name} ({len(col.query_ids)} queries)", file=sys.stderr)
        start = time.perf_counter()
        untuned, _, untuned_reported = common.evaluate_embeddings(model, col, sparse=True)
        loss = losses.SpladeLoss(model, loss=losses.SparseMultipleNegativesRankingLoss(model),
                                 query_regularizer_weight=args.query_regularizer,
                                 document_regularizer_weight=args.document_regularizer)
        settings = {"pairs": str(args.pairs), "n_pairs": len(pairs), "epochs": args.epochs,
                    "max_steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr,
                    "max_length": args.max_length, "seed": args.seed, "query_limit": args.query_limit,
                    "query_regularizer": args.query_regularizer, "document_regularizer": args.document_regularizer}
        with common.atomic_folder(args.out) as tmp:
            targs = common.training_args(SparseEncoderTrainingArguments, Path(work) / "trainer", args,
                                         batch_sampler=BatchSamplers.NO_DUPLICATES)
            SparseEncoderTrainer(model=model, args=targs, train_dataset=common.pairs_dataset(pairs), loss=loss).train()
            model.save_pretrained(str(tmp))
            common.write_marker(tmp, "ettin finetune sparse", args.model, settings)
    tuned = SparseEncoder(str(args.out), device=device)  # what a user loads
    scores, ranking, reported = common.evaluate_embeddings(tuned, col, sparse=True)
    active = _active(reported)
    task = common.retrieval_task(col, name, scores, ranking, common.bm25_ranking(col), settings,
                                 time.perf_counter() - start, untuned=untuned | _active(untuned_reported),
                                 vocabulary_size=int(tuned.get_embedding_dimension()), model_folder=str(args.out),
                                 n_train=len(pairs), **active)
    path = common.results_path(args.results, src.model)
    common.write_results(path, src.model, {f"{TASK}:{name}": task})
    common.print_scores(f"{TASK}:{name} ({len(col.query_ids)} queries, {len(col.doc_ids)} documents)", scores,
                        task["bm25"], "BM25")
    print(f"  active dimensions: queries {active['query_active_dims']:.1f}, documents "
          f"{active['corpus_active_dims']:.1f} of {task['vocabulary_size']}")
    common.print_scores("  untuned model:", untuned, task["bm25"], "BM25")
    print(f"model: {args.out}\nresults: {path}")
    return 0
