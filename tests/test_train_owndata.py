"""`ettin train|pair RECIPE --data FILE...`: a pair on your own text is one command (ettin.train.owndata)."""

import json

from ettin.cli import main
from ettin.train.checkpoint import list_checkpoints, read_meta
from ettin.train.owndata import own_data_overrides
from ettin.train.recipe import load_recipe

SHORT = ["phases.0.tokens=12k", "phases.0.warmup_tokens=2k", "phases.1.tokens=4k", "phases.2.tokens=4k",
         "train.save_every_tokens=0"]


def _corpus(tmp_path, shared_data):
    lines = (shared_data / "pretrain" / "sotu_addresses.jsonl").read_text().splitlines()[:12]
    path = tmp_path / "speeches.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_pair_on_your_own_text_is_one_command(tmp_path, shared_data, monkeypatch):
    """The tiny recipe, whose mixtures name the demo's four sources, trains an encoder and a decoder on one file:
    a tokenizer trained on the file's training side, shards of it, every phase reading it, both models on one batch
    order. (The old pattern, data.vars pointing at one's shards, failed on a single corpus: the mixtures' subsets.)"""
    monkeypatch.chdir(tmp_path)
    corpus = _corpus(tmp_path, shared_data)
    out = tmp_path / "mine"
    assert main(["pair", str(_tiny()), "--data", str(corpus), "--out", str(out),
                 *SHORT, "train.progress=false"]) == 0
    assert (out / "data" / "tokenizer" / "tokenizer.json").is_file()
    for sub in ("encoder", "decoder"):
        ckpts = list_checkpoints(out / sub)
        assert [read_meta(c)["phase"] for c in ckpts] == ["pretrain", "extension", "decay"]
        stored = (out / sub / "recipe.yaml").read_text()
        assert str(corpus) in stored and "wikipedia" not in stored  # the recipe it ran names your file only
    fp = [json.loads((out / sub / "fingerprints.json").read_text()) for sub in ("encoder", "decoder")]
    assert fp[0] == fp[1]


def _tiny():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"


def test_a_recipe_with_its_own_tokenizer_keeps_it(tmp_path, shared_data):
    """A recipe that names a tokenizer and trains none (the presets: ModernBERT's) tokenizes your text with it."""
    recipe = load_recipe(_tiny(), ["data.prepare.tokenizer_vocab_size=null"])
    overrides = own_data_overrides(recipe, [str(_corpus(tmp_path, shared_data))], tmp_path / "run")
    assert not any(o.startswith("data.tokenizer=") for o in overrides)
    again = load_recipe(_tiny(), ["data.prepare.tokenizer_vocab_size=null", *overrides])
    assert again.data.tokenizer == recipe.data.tokenizer
    assert set(again.data.mixtures) == {ph.mixture for ph in recipe.phases}
    assert again.data.prepare.sources == [f"{tmp_path / 'speeches.jsonl'}?split_by=paragraph"]
