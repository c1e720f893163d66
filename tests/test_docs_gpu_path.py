"""docs/real-sizes.md, section 2, followed on CPU: downloaded MDS trees (genuine MDS shards standing in for the hub
datasets) -> `ettin data prepare-tree` per phase -> `ettin train recipes/150m.yaml --dry-run`, which checks the
tokenizer, every phase's mixture and its prepared sources before any long work. The commands are the page's, with
the page's folder layout ($ETTIN_DATA/<phase folder>/<source>)."""

from __future__ import annotations

import shutil

import pytest

from ettin.cli import main

PHASES = {"pretrain": "pretraining", "extension": "extension", "decay": "decay"}  # mixture key -> folder


@pytest.fixture
def ettin_data(tmp_path, shared_data, monkeypatch):
    data = tmp_path / "ettin-data"
    monkeypatch.setenv("ETTIN_DATA", str(data))
    for folder in PHASES.values():  # `hf download ... --local-dir $ETTIN_DATA/raw/<phase>`: one source, books
        shutil.copytree(shared_data / "mds" / "tokens_uint32", data / "raw" / folder / "train" / "books")
    return data


def test_the_documented_path_reaches_a_clean_dry_run(ettin_data, tmp_path, shared_data, capsys):
    tok = str(shared_data / "modernbert_tokenizer")  # `hf download answerdotai/ModernBERT-base ... --local-dir`
    overrides = [f"data.tokenizer={tok}"]
    for key, folder in PHASES.items():
        mixture = ettin_data / f"{folder}-as-published.yaml"
        assert main(["data", "prepare-tree", str(ettin_data / "raw" / folder), "--out", str(ettin_data / folder),
                     "--like", f"recipes/data/ettin_{key}.yaml",
                     "--mixture", str(mixture), "--tokenizer", tok]) == 0
        assert (ettin_data / folder / "books" / "manifest.json").is_file()  # named as the preset's source
        overrides.append(f"data.mixtures.{key}={mixture}")
    capsys.readouterr()
    # the published mixture, as downloaded: everything is there
    assert main(["train", "recipes/150m.yaml", "--dry-run", "--out", str(tmp_path / "run"), *overrides]) == 0
    # the paper's table (the presets' mixtures): books is found where the preset looks; the sources not downloaded
    # are named, each with its recipe file
    assert main(["train", "recipes/150m.yaml", "--dry-run", "--out", str(tmp_path / "run"), overrides[0]]) == 2
    err = capsys.readouterr().err
    assert "sources[dclm].path" in err and "sources[books]" not in err
