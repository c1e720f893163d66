"""Evaluation metrics: plain functions of predictions and references, each tested on a hand-checked case.

Classification: accuracy, Matthews correlation (CoLA), Spearman / Pearson (STS-B, through scipy).
Retrieval: nDCG@k and recall@k through `ranx` (an established IR-metrics library), plus a run builder.
Multiple choice: acc and length-normalised acc_norm from per-choice log-likelihoods, as lm-eval computes them.
Language modelling: perplexity from a summed negative log-likelihood.
Generation: position-wise token accuracy, ROUGE-L (token LCS F1) and chrF (character n-gram F-beta).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np


def accuracy(pred: Sequence, gold: Sequence) -> float:
    if len(pred) != len(gold):
        raise ValueError(f"accuracy: {len(pred)} predictions for {len(gold)} references")
    if not len(gold):
        raise ValueError("accuracy: no examples")
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def matthews_corrcoef(pred: Sequence[int], gold: Sequence[int]) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K); 0.0 when undefined."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    labels, inverse = np.unique(np.concatenate([gold, pred]), return_inverse=True)
    k = len(labels)
    conf = np.bincount(inverse[: len(gold)] * k + inverse[len(gold) :], minlength=k * k).reshape(k, k).astype(np.float64)
    t_k, p_k = conf.sum(axis=1), conf.sum(axis=0)  # true / predicted counts per class (conf[true, predicted])
    c, s = np.trace(conf), conf.sum()
    denom = math.sqrt((s * s - np.dot(p_k, p_k)) * (s * s - np.dot(t_k, t_k)))
    return 0.0 if denom == 0 else float((c * s - np.dot(t_k, p_k)) / denom)


def _correlation(fn, x: Sequence[float], y: Sequence[float]) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"correlation: need two equal-length sequences of >= 2 values, got {len(x)} and {len(y)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0  # a constant sequence: undefined, reported as no correlation
    return float(fn(x, y).statistic)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import pearsonr

    return _correlation(pearsonr, x, y)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (scipy: average ranks for ties)."""
    from scipy.stats import spearmanr

    return _correlation(spearmanr, x, y)


def ir_metrics(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metrics: Sequence[str]
) -> dict[str, float]:
    """Score a run with ranx, e.g. metrics=("ndcg@10", "recall@100").

    qrels: query id -> {doc id: graded relevance > 0}; run: query id -> {doc id: score}. nDCG uses the
    relevance grade as the gain (ranx's default, as trec_eval). Queries missing from the run score 0.
    """
    from ranx import Qrels, Run, evaluate

    run = {q: dict(run.get(q, {})) for q in qrels}
    for docs in run.values():
        if not docs:  # ranx rejects empty rankings; a dummy document scores 0 on every metric
            docs["__none__"] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba type-safety chatter
        scores = evaluate(Qrels(qrels), Run(run), list(metrics), make_comparable=True)
    if isinstance(scores, float | np.floating):
        scores = {metrics[0]: scores}
    return {name: float(value) for name, value in scores.items()}


def ir_per_query(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metric: str) -> dict[str, float]:
    """One ranx metric per query (query id -> value), e.g. for bootstrap intervals over queries."""
    from ranx import Qrels, Run, evaluate

    run = {q: dict(run.get(q, {})) or {"__none__": 0.0} for q in qrels}
    qr = Qrels(qrels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = evaluate(qr, Run(run), metric, return_mean=False, make_comparable=True)
    return {q: float(v) for q, v in zip(qr.keys(), np.atleast_1d(values))}


def top_k_run(scores: np.ndarray, query_ids: Sequence[str], doc_ids: Sequence[str], k: int) -> dict:
    """Turn a (Q, D) score matrix into a ranx-style run of the k best documents per query."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (Q, k), unordered
    return {
        q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(query_ids)
    }


def multiple_choice(
    loglikelihoods: Sequence[Sequence[float]], choices: Sequence[Sequence[str]], gold: Sequence[int]
) -> dict[str, float]:
    """acc: argmax of the summed log-likelihood; acc_norm: argmax of log-likelihood / UTF-8 byte length.

    As lm-eval's `acc` / `acc_norm` (its `completion_len` is the choice string's length; the strings here
    are ASCII-dominant, and bytes are what its documentation names).
    """
    if not (len(loglikelihoods) == len(choices) == len(gold)):
        raise ValueError("multiple_choice: loglikelihoods, choices and gold differ in length")
    hits, hits_norm = [], []
    for ll, ch, g in zip(loglikelihoods, choices, gold):
        ll = np.asarray(ll, dtype=np.float64)
        lengths = np.array([max(len(c.encode("utf-8")), 1) for c in ch], dtype=np.float64)
        hits.append(int(np.argmax(ll)) == g)
        hits_norm.append(int(np.argmax(ll / lengths)) == g)
    return {"acc": float(np.mean(hits)), "acc_norm": float(np.mean(hits_norm))}


def perplexity(total_nll: float, num_tokens: int) -> float:
    if num_tokens <= 0:
        raise ValueError("perplexity: no tokens scored")
    return float(math.exp(total_nll / num_tokens))


def token_accuracy(pred: Sequence[int], ref: Sequence[int]) -> float:
    """Fraction of reference positions whose token the prediction reproduces at the same position."""
    if not ref:
        raise ValueError("token_accuracy: empty reference")
    return sum(p == r for p, r in zip(pred, ref)) / len(ref)


def lcs_length(a: Sequence, b: Sequence) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: Sequence, ref: Sequence) -> float:
    """ROUGE-L F1 over tokens: LCS-based precision and recall (Lin 2004, beta = 1)."""
    if not pred or not ref:
        return 0.0
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(pred), lcs / len(ref)
    return 2 * p * r / (p + r)


def _char_ngrams(text: str, n: int) -> Counter:
    text = "".join(text.split())  # chrF ignores whitespace
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(hyp: str, ref: str, order: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF (Popovic 2015) on a 0-100 scale: character n-gram precision and recall, each averaged
    over n = 1..order (orders the hypothesis or reference is too short for are left out), then F-beta."""
    precisions, recalls = [], []
    for n in range(1, order + 1):
        h, r = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        if not h or not r:
            continue
        match = sum((h & r).values())
        precisions.append(match / sum(h.values()))
        recalls.append(match / sum(r.values()))
    if not precisions:
        return 0.0
    p, r = float(np.mean(precisions)), float(np.mean(recalls))
    if p + r == 0:
        return 0.0
    return 100 * (1 + beta**2) * p * r / (beta**2 * p + r)
