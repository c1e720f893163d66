"""Tiny random ettin models for the downstream tests: a 512-id byte-level BPE trained on Cranfield's abstracts
(with ModernBERT's `[CLS] A [SEP]` template), and for each objective a run folder holding one DCP checkpoint and
an exported Hugging Face folder. Built in seconds, offline."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from ettin.config import preset
from ettin.model import EttinModel

SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]


def tokenizer(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def forbid_exports(monkeypatch) -> None:
    """Make exporting a checkpoint an error: for tests that a command refuses a model before exporting it."""
    from ettin.train import checkpoint

    def no_export(*args, **kwargs):
        raise AssertionError("exported a checkpoint the command refuses")

    monkeypatch.setattr(checkpoint, "export_hf", no_export)


def build(root: Path, beir: Path) -> SimpleNamespace:
    """root/{mlm,clm}-run (checkpoints/stable-step0000010 + tokenizer.json) and root/{mlm,clm}-hf."""
    from ettin.train.checkpoint import export_hf, save_checkpoint

    texts = [json.loads(line)["text"] for line in open(beir / "corpus.jsonl", encoding="utf-8")]
    tok = tokenizer(texts)
    ids = {f"{n}_token_id": tok.token_to_id(t) for n, t in
           (("pad", "[PAD]"), ("bos", "[CLS]"), ("eos", "[SEP]"), ("mask", "[MASK]"))}
    out = SimpleNamespace(root=root, tok=tok, runs={}, hf={}, ckpt={})
    for objective in ("mlm", "clm"):
        torch.manual_seed(0)
        cfg = preset("tiny", objective, vocab_size=tok.get_vocab_size(), max_position_embeddings=512, **ids)
        run = root / f"{objective}-run"
        run.mkdir(parents=True)
        tok.save(str(run / "tokenizer.json"))
        ckpt = save_checkpoint(run, "stable-step0000010", EttinModel(cfg), None,
                               {"run": run.name, "phase": "stable", "step": 10, "tokens": 10_000,
                                "model_config": cfg.to_dict()})
        out.runs[objective], out.ckpt[objective] = run, ckpt
        out.hf[objective] = export_hf(ckpt, root / f"{objective}-hf")
    return out


def beir_subset(src: Path, dst: Path, queries: int = 20, docs: int = 200) -> Path:
    """A smaller BEIR folder: the first `queries` judged queries, their judged documents and the first `docs`
    documents of the corpus (every kept judgement points into the kept corpus)."""
    rows = [line.rstrip("\n").split("\t") for line in open(src / "qrels" / "test.tsv", encoding="utf-8")]
    header, rows = rows[0], rows[1:]
    keep_q = list(dict.fromkeys(q for q, _, s in rows if int(s) > 0))[:queries]
    judged = {d for q, d, _ in rows if q in keep_q}
    corpus = [json.loads(line) for line in open(src / "corpus.jsonl", encoding="utf-8")]
    kept = [d for i, d in enumerate(corpus) if i < docs or d["_id"] in judged]
    (dst / "qrels").mkdir(parents=True)
    with open(dst / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(d) + "\n" for d in kept)
    with open(dst / "queries.jsonl", "w", encoding="utf-8") as f:
        f.writelines(line for line in open(src / "queries.jsonl", encoding="utf-8")
                     if json.loads(line)["_id"] in keep_q)
    with open(dst / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        f.writelines("\t".join(r) + "\n" for r in rows if r[0] in keep_q)
    return dst
