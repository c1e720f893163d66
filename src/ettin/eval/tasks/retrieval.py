"""Dense retrieval by contrastive fine-tuning, then nDCG@10 / recall@100 on a BEIR-format collection.

Training pairs come from the pretraining prose (training side only, never the held-out 2%): the query is
a Wikipedia article's "title: description", the passage its summary. The loss is InfoNCE with in-batch
negatives over cosine similarities (temperature 0.05, i.e. sentence-transformers' MNRL scale 20), the
published recipe's loss without its hard negatives. Encoders pool mean (or CLS), decoders the last real
token. Scores come from ranx; a BM25 baseline (rank-bm25, Okapi defaults) on the same collection is
reported beside them. BEIR layout: corpus.jsonl {_id, title, text}, queries.jsonl {_id, text},
qrels/test.tsv (query-id, corpus-id, score; score > 0 is relevant, the grade is nDCG's gain).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ettin.eval import metrics
from ettin.eval.tasks.common import (
    FinetuneSettings,
    Subject,
    TaskDataError,
    encode_pooled,
    finetune,
    pad_batch,
)
from ettin.eval.tasks.data import pretrain_documents, read_jsonl, read_tsv
from ettin.inference import pool


@dataclass
class RetrievalSettings:
    train_limit: int = 500  # query-passage pairs
    query_length: int = 32
    passage_length: int = 128
    temperature: float = 0.05
    pooling: str = "mean"  # encoders; decoders always pool the last real token
    query_limit: int = 10**6  # evaluation queries (all by default); the whole corpus is always searched
    metrics: tuple[str, ...] = ("ndcg@10", "recall@100")
    finetune: FinetuneSettings = field(default_factory=lambda: FinetuneSettings(epochs=1, batch_size=32))


@dataclass
class Collection:
    doc_ids: list[str]
    docs: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]


def load_beir(folder: Path, query_limit: int | None = None) -> Collection:
    if not Path(folder).is_dir():  # a path the user gave (beir:PATH): no data folder to blame
        raise TaskDataError(f"{folder}: no such folder (a BEIR folder holds corpus.jsonl, queries.jsonl and "
                            "qrels/test.tsv)")
    corpus = read_jsonl(folder / "corpus.jsonl", required=("_id", "text"))
    queries = read_jsonl(folder / "queries.jsonl", required=("_id", "text"))
    qrels_path = folder / "qrels" / "test.tsv"
    qrels: dict[str, dict[str, int]] = {}
    doc_set = {str(d["_id"]) for d in corpus}
    for row in read_tsv(qrels_path, header=True):
        try:
            q, d, score = row["query-id"], row["corpus-id"], int(float(row["score"]))
        except (KeyError, ValueError):
            raise TaskDataError(f"{qrels_path}:{row['_line']}: expected query-id, corpus-id, score") from None
        if d not in doc_set:
            raise TaskDataError(f"{qrels_path}:{row['_line']}: corpus-id {d!r} is not in corpus.jsonl")
        if score > 0:
            qrels.setdefault(q, {})[d] = score
    queries = [q for q in queries if str(q["_id"]) in qrels][:query_limit]
    return Collection(
        doc_ids=[str(d["_id"]) for d in corpus],
        docs=[f"{d.get('title', '')} {d['text']}".strip() for d in corpus],
        query_ids=[str(q["_id"]) for q in queries],
        queries=[q["text"] for q in queries],
        qrels={str(q["_id"]): qrels[str(q["_id"])] for q in queries},
    )


def about(settings: RetrievalSettings, data_dir: Path) -> str:
    """What `run` does before it scores, for the console (the collection's own queries are never trained on)."""
    f = settings.finetune
    return (f"fine-tunes the model first: {f.epochs} epoch(s) of contrastive training (in-batch negatives) on "
            f"{settings.train_limit} (title: description, summary) pairs from the training side of "
            f"{data_dir / 'pretrain'}/wikipedia*.jsonl, then ranks the collection, beside BM25 and a random ranking")


def training_pairs(data_dir: Path, limit: int, seed: int) -> list[tuple[str, str]]:
    """("title: description", summary) from the training side of the Wikipedia file, a seeded sample."""
    pairs = [
        (f"{d['title']}: {d['description']}", d["text"])
        for d in pretrain_documents(data_dir, held_out=False)
        if d["_file"].startswith("wikipedia") and d.get("title") and d.get("description") and d["text"]
    ]
    order = np.random.default_rng(seed).permutation(len(pairs))[:limit]
    return [pairs[i] for i in order]


def bm25_words(text: str) -> list[str]:
    """BM25's tokens of a text: lower-cased word characters (the baseline and the reranker's hard negatives)."""
    return re.findall(r"\w+", text.lower())


def bm25_index(texts: list[str]):
    """A rank-bm25 Okapi index over `texts` (an empty text gets a placeholder token: Okapi needs one)."""
    from rank_bm25 import BM25Okapi

    return BM25Okapi([bm25_words(t) or ["__empty__"] for t in texts])


_BM25_CACHE: dict[tuple, dict] = {}  # the baseline does not depend on the model: once a process


def bm25_scores(col: Collection) -> np.ndarray:
    bm25 = bm25_index(col.docs)
    return np.stack([bm25.get_scores(bm25_words(q)) for q in col.queries])  # (Q, D)


def _bm25_run(col: Collection, depth: int) -> dict:
    """BM25's top-`depth` run on the collection, scored once a process (both baselines below read it)."""
    key = ("run", tuple(col.doc_ids), tuple(col.docs), tuple(col.query_ids), tuple(col.queries), depth)
    if key not in _BM25_CACHE:
        _BM25_CACHE[key] = metrics.top_k_run(bm25_scores(col), col.query_ids, col.doc_ids, depth)
    return _BM25_CACHE[key]


def bm25_baseline(col: Collection, names: tuple[str, ...], depth: int) -> dict[str, float]:
    key = (tuple(col.doc_ids), tuple(col.docs), tuple(col.queries), names, depth)
    if key not in _BM25_CACHE:
        _BM25_CACHE[key] = metrics.ir_metrics(col.qrels, _bm25_run(col, depth), names)
    return dict(_BM25_CACHE[key])


def run(subject: Subject, data_dir: Path, collection: Path, settings: RetrievalSettings, seed: int) -> dict:
    col = load_beir(collection, settings.query_limit)
    pairs = training_pairs(data_dir, settings.train_limit, seed)
    pooling = subject.pooling(settings.pooling)
    q_train = [subject.pair(x, max_length=settings.query_length) for x in subject.encode_batch([q for q, _ in pairs])]
    p_train = [subject.pair(x, max_length=settings.passage_length)
               for x in subject.encode_batch([p for _, p in pairs])]

    def loss_fn(model, batch):
        q_ids, q_mask = pad_batch([q_train[i] for i in batch], subject.pad, subject.device)
        p_ids, p_mask = pad_batch([p_train[i] for i in batch], subject.pad, subject.device)
        q = F.normalize(pool(model.hidden_states(q_ids, q_mask), q_mask, pooling), dim=-1)  # (B, H)
        p = F.normalize(pool(model.hidden_states(p_ids, p_mask), p_mask, pooling), dim=-1)  # (B, H)
        logits = q @ p.T / settings.temperature  # (B, B): the diagonal holds the positives
        return F.cross_entropy(logits, torch.arange(len(batch), device=logits.device))

    model = finetune(subject, torch.nn.Identity(), len(pairs), loss_fn, settings.finetune, seed,
                     what="contrastive fine-tuning")
    docs = [subject.pair(x, max_length=settings.passage_length) for x in subject.encode_batch(col.docs)]
    queries = [subject.pair(x, max_length=settings.query_length) for x in subject.encode_batch(col.queries)]
    with torch.no_grad():
        d_emb = F.normalize(encode_pooled(subject, model, docs, pooling, "encoding the corpus").float(), dim=-1)  # (D, H)
        q_emb = F.normalize(encode_pooled(subject, model, queries, pooling, "encoding the queries").float(), dim=-1)  # (Q, H)
        dense = (q_emb @ d_emb.T).cpu().numpy()  # (Q, D)
    depth = max(int(m.split("@")[1]) for m in settings.metrics if "@" in m)
    ranked = metrics.top_k_run(dense, col.query_ids, col.doc_ids, depth)
    scores = metrics.ir_metrics(col.qrels, ranked, settings.metrics)
    bm25 = bm25_baseline(col, tuple(settings.metrics), depth)
    main = settings.metrics[0]
    per_query = metrics.ir_per_query(col.qrels, ranked, main)
    chance = random_baseline(col, main)
    bm25_query = bm25_per_query(col, main, depth)
    return {"main": main, **scores, "bm25": bm25, "n": len(col.query_ids), "corpus_size": len(col.doc_ids),
            "n_train": len(pairs), "pooling": pooling,
            "collection": collection.parent.name if collection.name == "beir" else collection.name,
            "baseline": float(np.mean(list(chance.values()))), "baseline_name": "random ranking",
            "per_example": {"score": [per_query[q] for q in col.query_ids],
                            "baseline": [chance[q] for q in col.query_ids],
                            "bm25": [bm25_query[q] for q in col.query_ids]}}


def random_baseline(col: Collection, metric: str) -> dict[str, float]:
    """The expected metric of a uniformly random ranking of the corpus, per query (exact: each of the top k
    ranks holds the corpus's mean gain). nDCG@k (linear gain, as ranx) and recall@k."""
    name, _, k_text = metric.partition("@")
    D, k = len(col.doc_ids), min(int(k_text or 10), len(col.doc_ids))
    out = {}
    for q in col.query_ids:
        gains = sorted(col.qrels[q].values(), reverse=True)
        if name == "ndcg":
            discounts = 1 / np.log2(np.arange(2, k + 2))
            ideal = float(np.dot(gains[:k], discounts[: len(gains[:k])]))
            out[q] = sum(gains) / D * float(discounts.sum()) / ideal
        elif name == "recall":
            out[q] = k / D
        else:
            raise ValueError(f"no random baseline for {metric!r} (ndcg@k, recall@k)")
    return out


def bm25_per_query(col: Collection, metric: str, depth: int) -> dict[str, float]:
    key = ("per-query", tuple(col.doc_ids), tuple(col.queries), metric, depth)
    if key not in _BM25_CACHE:
        _BM25_CACHE[key] = metrics.ir_per_query(col.qrels, _bm25_run(col, depth), metric)
    return dict(_BM25_CACHE[key])
