"""data.tokenizer as a Hugging Face hub id: read from the Hugging Face cache (downloaded there when online), and a
clear error when offline and not cached. The cache is built here in huggingface_hub's own layout; nothing is
downloaded."""

from __future__ import annotations

import json

import pytest

from conftest import hub_tokenizer_cache
from ettin.data.tokenizer import encoding_sha256, fetch_tokenizer, load_tokenizer

REPO = "answerdotai/ModernBERT-base"


@pytest.fixture
def hub_cache(tmp_path, shared_data, monkeypatch):
    """A Hugging Face cache holding REPO's tokenizer files (refs/main -> a snapshot), the hub offline."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    snap = hub_tokenizer_cache(cache, REPO)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snap


def test_a_hub_id_is_read_from_the_cache(hub_cache, shared_data):
    assert fetch_tokenizer(REPO) == hub_cache
    tok = load_tokenizer(REPO)
    assert tok.vocab_size == 50368 and (tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id) == (50281, 50282, 50283, 50284)
    assert encoding_sha256(tok.tokenizer) == encoding_sha256(shared_data / "modernbert_tokenizer")


def test_local_paths_are_not_taken_for_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert str(fetch_tokenizer("runs/tok")) == "runs/tok"  # an owner that is a folder here: a path, missing
    assert str(fetch_tokenizer("./a/b")) == "a/b"


def test_an_uncached_hub_id_offline_says_how_to_bring_it_in(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"owner/tokenizer: .*offline.*hf download owner/tokenizer tokenizer.json"):
        fetch_tokenizer("owner/tokenizer")


def test_dry_run_of_a_preset_names_the_uncached_tokenizer(tmp_path, monkeypatch, capsys):
    """The presets name the tokenizer by hub id; offline and not cached, --dry-run says so under data.tokenizer."""
    import huggingface_hub.constants

    from ettin.cli import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["train", "recipes/17m.yaml", "--dry-run", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"data.tokenizer: {REPO}: no such local path" in err and "hf download" in err


def test_prepare_with_a_hub_tokenizer(hub_cache, tmp_path, shared_data):
    """`ettin data prepare --tokenizer HUB_ID` tokenizes with the cached files and records that tokenizer."""
    from ettin.cli import main

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"Document number {i} about tokenizers."}) + "\n" for i in range(20)))
    out = tmp_path / "shards"
    assert main(["data", "prepare", "--source", str(docs), "--out", str(out), "--tokenizer", REPO, "--workers", "0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["sha256"] == load_tokenizer(shared_data / "modernbert_tokenizer").sha256
