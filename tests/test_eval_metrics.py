"""Every evaluation metric against a small case worked out by hand (values in the comments)."""

import math

import numpy as np
import pytest

from ettin.eval import metrics


def test_accuracy():
    assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    with pytest.raises(ValueError):
        metrics.accuracy([1], [1, 0])


def test_mcc_known_confusion_matrix():
    # TP=5, FN=2, FP=1, TN=4: (5*4 - 1*2) / sqrt((5+1)(5+2)(4+1)(4+2)) = 18 / sqrt(1260)
    gold = [1] * 7 + [0] * 5
    pred = [1] * 5 + [0] * 2 + [1] * 1 + [0] * 4
    assert metrics.matthews_corrcoef(pred, gold) == pytest.approx(18 / math.sqrt(1260))
    assert metrics.matthews_corrcoef(gold, gold) == pytest.approx(1.0)
    assert metrics.matthews_corrcoef([1 - g for g in gold], gold) == pytest.approx(-1.0)
    assert metrics.matthews_corrcoef([1] * 12, gold) == 0.0  # constant predictor: undefined -> 0


def test_spearman_with_ties():
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]; centred dot 4.5, norms^2 4.5 and 5 -> 4.5 / sqrt(22.5)
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert metrics.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)


def test_pearson():
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.pearson([1, 2, 3], [1, 1, 1]) == 0.0


def test_ndcg_and_recall_on_three_documents():
    # relevance d1=1, d3=2; ranking d1, d2, d3. DCG = 1/log2(2) + 2/log2(4) = 2;
    # ideal d3, d1: 2/log2(2) + 1/log2(3). nDCG = 2 / (2 + 1/log2(3)).
    qrels = {"q1": {"d1": 1, "d3": 2}}
    run = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7}}
    out = metrics.ir_metrics(qrels, run, ["ndcg@10", "recall@2", "recall@100"])
    assert out["ndcg@10"] == pytest.approx(2 / (2 + 1 / math.log2(3)))
    assert out["recall@2"] == pytest.approx(0.5)
    assert out["recall@100"] == pytest.approx(1.0)
    # a query with no retrieved documents counts as zero, not as missing
    out = metrics.ir_metrics({**qrels, "q2": {"d2": 1}}, run, ["recall@100"])
    assert out["recall@100"] == pytest.approx(0.5)


def test_top_k_run():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    run = metrics.top_k_run(scores, ["a", "b"], ["x", "y", "z"], k=2)
    assert set(run["a"]) == {"y", "z"} and set(run["b"]) == {"x", "y"}


def test_acc_and_acc_norm():
    # item 1: "a" (1 byte) ll -2, "bbbb" (4 bytes) ll -4: acc picks 0, acc_norm -2 vs -1 picks 1 (gold)
    # item 2: "é" is 2 bytes: -3/2 = -1.5 vs "xyz" -3.3/3 = -1.1: acc picks 0 (gold), acc_norm picks 1
    out = metrics.multiple_choice([[-2.0, -4.0], [-3.0, -3.3]], [["a", "bbbb"], ["é", "xyz"]], [1, 0])
    assert out == {"acc": 0.5, "acc_norm": 0.5}
    out = metrics.multiple_choice([[-2.0, -4.0]], [["a", "bbbb"]], [1])
    assert out == {"acc": 0.0, "acc_norm": 1.0}


def test_perplexity():
    assert metrics.perplexity(3 * math.log(2), 3) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        metrics.perplexity(1.0, 0)


def test_generation_metrics():
    assert metrics.token_accuracy([1, 2, 9, 4], [1, 2, 3, 4]) == 0.75
    assert metrics.lcs_length("abcd", "acdef") == 3
    # LCS a c d = 3: P = 3/4, R = 3/5, F1 = 2 * 0.75 * 0.6 / 1.35
    assert metrics.rouge_l(list("abcd"), list("acdef")) == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert metrics.rouge_l([], ["a"]) == 0.0
    # chrF, order 2, beta 2, hyp "ab" vs ref "a bc" (whitespace ignored -> "abc"):
    # n=1: P 2/2, R 2/3; n=2: P 1/1, R 1/2 -> P 1, R 7/12; F2 = 5 * (7/12) / (4 + 7/12) = 35/55
    assert metrics.chrf("ab", "a bc", order=2) == pytest.approx(100 * 35 / 55)
    assert metrics.chrf("same text", "same text") == pytest.approx(100.0)
    assert metrics.chrf("xyz", "abc") == 0.0
