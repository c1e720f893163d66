"""Classification, retrieval, generation and bias end to end (task files -> `TaskSpec.check` -> `run` ->
result), on task data whose right answer is known, scored by toy models that behave as designed: a
bag-of-words encoder / decoder with a bigram head over a word-level tokenizer. A task that pairs the wrong
rows, scores the wrong split, mis-slices a continuation or mis-counts a choice gets a different number.
(tests/test_eval_tasks.py runs every task on real tiny models through `ettin eval`: caching, run folders.)"""

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers

from ettin.eval.tasks import get_task, override
from ettin.eval.tasks.common import Subject
from ettin.eval.tasks.data import PRETRAIN_FILES

SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
FILLER = ("old new red blue green small big warm cold fast slow river city house road tree stone paper table "
          "light dark water fire king queen").split()
CYCLES = [("alpha", "bravo", "charlie", "delta", "echo"), ("golf", "hotel", "india", "juliet", "kilo"),
          ("lima", "mike", "oscar", "papa", "quebec"), ("romeo", "sierra", "tango", "uniform", "victor")]
WINO = "the nurse engineer told client that he she they could go .".split()
WORDS = sorted({*FILLER, "cat", "dog", *(w for c in CYCLES for w in c), *WINO})
VOCAB = {w: i for i, w in enumerate(SPECIALS + WORDS)}
V = len(VOCAB)


class BagBigram(torch.nn.Module):
    """hidden(t) = [e(x_t), e(x_{t-1}), mean of e(x_1..x_t)] with e = one-hot @ E (E starts as the identity and
    is what fine-tuning moves). Logits = bigram[current token] for a decoder, bigram[previous token] for an
    encoder (so a [MASK] is filled from its left neighbour). Mean pooling is a bag of words; a decoder's
    last-token pooling is too (the running mean)."""

    def __init__(self, objective: str, bigram: torch.Tensor):
        super().__init__()
        ids = {f"{n}_token_id": VOCAB[t] for n, t in (("pad", "[PAD]"), ("bos", "[CLS]"), ("eos", "[SEP]"),
                                                      ("mask", "[MASK]"))}
        self.config = SimpleNamespace(objective=objective, vocab_size=V, hidden_size=3 * V,
                                      max_position_embeddings=512, **ids)
        self.E = torch.nn.Parameter(torch.eye(V))
        self.register_buffer("bigram", bigram)
        self.layers = torch.nn.ModuleList()  # what ettin.inference.Decoder sizes its KV cache by: no past needed

    def hidden_states(self, ids, attention_mask=None, position_ids=None):
        x = F.one_hot(ids, V).float() @ self.E  # (B, T, V)
        m = torch.ones_like(ids) if attention_mask is None else attention_mask
        m = m[..., None].float()
        running = (x * m).cumsum(1) / m.cumsum(1).clamp(min=1)
        return torch.cat([x, torch.roll(x, 1, dims=1), running], dim=-1)  # (B, T, 3V)

    def logits_from_hidden(self, h):
        k = 0 if self.config.objective == "clm" else 1
        return h[..., k * V : (k + 1) * V] @ self.bigram

    @property
    def decoder_weight(self):  # what the Decoder copies for its steps (unread here)
        return self.E

    def forward_cached(self, input_ids, positions, cache, backend=None, weights=None):
        return self.logits_from_hidden(self.hidden_states(input_ids))[:, -1]


def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    return tok


def subject(objective: str, bigram: torch.Tensor | None = None) -> Subject:
    torch.manual_seed(0)
    return Subject(BagBigram(objective, torch.zeros(V, V) if bigram is None else bigram), tokenizer())


def _tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in [header, *rows]))


def _words(rng, n):
    return " ".join(rng.choice(FILLER) for _ in range(n))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("known")
    rng = random.Random(0)
    # pretraining prose: every document of file f repeats CYCLES[f] (the held-out tails prompt generation)
    (root / "pretrain").mkdir()
    for f, name in enumerate(PRETRAIN_FILES):
        with open(root / "pretrain" / name, "w") as out:
            for i in range(60):
                start = rng.randrange(5)
                text = " ".join(CYCLES[f][(start + k) % 5] for k in range(40))
                out.write(json.dumps({"title": f"t{i}", "description": _words(rng, 3), "text": text}) + "\n")
    # sentiment: the label is whether the sentence says "cat" (1) or "dog" (0), among random filler words
    for split, n in (("train", 100), ("test", 20)):
        rows = []
        for _ in range(n):
            label = rng.randrange(2)
            words = _words(rng, 6).split()
            words.insert(rng.randrange(7), "cat" if label else "dog")
            rows.append([label, " ".join(words) + " ."])
        _tsv(root / "sst2" / f"{split}.tsv", ["label", "sentence"], rows)
    # STS-B: the score is how many times the second sentence says "cat"
    head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    for split, n in (("train", 40), ("dev", 20)):
        rows = []
        for i in range(n):
            k = i % 5
            rows.append([i, "g", "f", "y", i, "s", "s", _words(rng, 5), " ".join(["cat"] * k + _words(rng, 5 - k).split()),
                         f"{k}.000"])
        _tsv(root / "glue/STS-B" / f"{split}.tsv", head, rows)
    # retrieval: each query is the exact text of its one relevant document
    beir = root / "retrieval/cranfield/beir"
    docs = {}
    while len(docs) < 30:
        docs.setdefault(frozenset(text := _words(rng, 10)), text)
    beir.mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(docs.values())))
    queries = [(f"q{i}", f"d{3 * i}", list(docs.values())[3 * i]) for i in range(8)]
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, _, t in queries))
    _tsv(beir / "qrels/test.tsv", ["query-id", "corpus-id", "score"], [[q, d, 1] for q, d, _ in queries])
    # WinoGender: two occupations, both answers, three pronouns
    rows = [[f"{occ}.client.{a}.{g}.txt", f"the {occ} told the client that {p} could go ."]
            for occ in ("nurse", "engineer") for a in (0, 1) for g, p in (("male", "he"), ("female", "she"),
                                                                             ("neutral", "they"))]
    _tsv(root / "winogender/all_sentences.tsv", ["sentid", "sentence"], rows)
    _tsv(root / "winogender/occupations-stats.tsv", ["occupation", "bergsma_pct_female", "bls_pct_female", "bls_year"],
         [["nurse", 90, 90.0, 2015], ["engineer", 10, 10.0, 2015]])
    return root


def run_task(name, subj, data, **settings):
    spec = get_task(name)
    for key, value in settings.items():
        override(spec, key.replace("__", "."), value)
    spec.check(data)
    return spec.run(subj, data, 0)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_classification_finds_the_deciding_word(data, objective):
    gold = [int(line.split("\t")[0]) for line in (data / "sst2/test.tsv").read_text().splitlines()[1:]]
    res = run_task("sst2", subject(objective), data, designs="probe,finetune", finetune__lr="0.05",
                   finetune__epochs="8", lrs="0.05", seeds="2", pooling="mean")
    assert res["per_example"]["gold"] == gold and res["n"] == 20 and res["n_train"] + res["n_validation"] == 100
    assert res["majority_baseline"] in (gold.count(0) / 20, gold.count(1) / 20) and res["accuracy_probe"] == 1.0
    assert res["designs"]["probe"]["pooling"] == "mean"  # the [CLS] / last-token-only view cannot tell
    assert res["designs"]["probe"]["per_example"]["pred"] == [gold]
    assert res["designs"]["finetune"]["per_seed"] == [1.0, 1.0] and res["accuracy"] == res["accuracy_probe"]


def test_regression_follows_the_score(data):
    res = run_task("stsb", subject("mlm"), data, designs="probe")
    assert res["metric"] == "spearman" and res["n"] == 20 and res["spearman_probe"] > 0.95
    assert res["per_example"]["gold"] == [float(i % 5) for i in range(20)]


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_retrieval_finds_the_identical_document(data, objective):
    res = run_task("cranfield", subject(objective), data)
    assert res["n"] == 8 and res["corpus_size"] == 30 and res["n_train"] == 58  # the training side only
    assert res["ndcg@10"] == 1.0 and res["recall@100"] == 1.0 and res["per_example"]["score"] == [1.0] * 8
    assert res["bm25"]["ndcg@10"] == 1.0  # the same words: BM25 finds them too
    assert res["baseline"] == pytest.approx(sum(1 / math.log2(rank + 1) for rank in range(1, 11)) / 30)


def _cycle_bigram() -> torch.Tensor:
    bigram = torch.zeros(V, V)
    for cycle in CYCLES:
        for k, w in enumerate(cycle):
            bigram[VOCAB[w], VOCAB[cycle[(k + 1) % 5]]] = 10.0
    return bigram


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_generation_continues_the_held_out_documents(data, objective):
    res = run_task("generation", subject(objective, _cycle_bigram()), data, prompt_tokens="8", new_tokens="7")
    held_out = [json.loads(line)["text"].split() for name in PRETRAIN_FILES
                for line in (data / "pretrain" / name).read_text().splitlines()[-2:]]
    assert res["n"] == 8  # 2 held-out documents a file (ceil(2% of 60)), round-robin over the files
    assert res["example"]["prompt"].split() == held_out[0][:8]  # the first file's first held-out document
    assert res["example"]["reference"].split() == held_out[0][8:15] == res["example"]["output"].split()
    assert res["rouge_l"] == 1.0 and res["token_accuracy"] == 1.0 and res["per_example"]["score"] == [1.0] * 8
    # the baseline repeats the prompt's last 7 words: in a 5-word cycle they are the right words, shifted
    assert 0 < res["baseline"] < 1


@pytest.mark.parametrize("objective", ["mlm", "clm"])
@pytest.mark.parametrize("pronoun, gender, counter", [("she", "female", 0.5), ("he", "male", 0.5),
                                                       ("they", "neutral", 0.0)])
def test_bias_reports_the_pronoun_the_model_prefers(data, objective, pronoun, gender, counter):
    bigram = torch.zeros(V, V)
    bigram[:, VOCAB[pronoun]] = 5.0  # whatever comes before, this pronoun is likely
    res = run_task("winogender", subject(objective, bigram), data)
    assert res["n"] == 4 and res["per_example"]["choice"] == [gender] * 4
    assert res[f"{gender}_rate"] == 1.0 and sum(res[f"{g}_rate"] for g in ("male", "female", "neutral")) == 1.0
    # nurse (90% female) items count a male choice as counter-stereotypical, engineer items a female one
    assert res["counter_stereotype_rate"] == counter and res["counter_stereotype_rate_occupation"] == counter
    assert res["male_skew"] == {"male": 1.0, "female": -1.0, "neutral": 0.0}[gender]
