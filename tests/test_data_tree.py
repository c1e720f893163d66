"""`ettin data prepare-tree`: a downloaded MDS tree (genuine MDS shards, laid out as the published datasets' merged
roots are) -> one prepared source per MDS folder, and a mixture that reads every instance once."""

from __future__ import annotations

import json
import shutil

import pytest

from ettin.cli import main
from ettin.data.mixture import load_mixture
from ettin.data.shards import read_manifest
from ettin.data.tree import leaf_folders, match


@pytest.fixture
def tree(tmp_path, shared_data):
    """root/train/{books (pre-tokenized), arxiv (text, zstd)} and a merged root index over both, as
    make_recursive_root.py writes it (shard basenames with their sub-folder), plus a hidden download cache."""
    root = tmp_path / "raw"
    shutil.copytree(shared_data / "mds" / "tokens_uint32", root / "train" / "books")
    shutil.copytree(shared_data / "mds" / "text_zstd", root / "train" / "arxiv")
    merged = []
    for sub in ("arxiv", "books"):
        for shard in json.loads((root / "train" / sub / "index.json").read_text())["shards"]:
            shard = dict(shard, raw_data=dict(shard["raw_data"], basename=f"{sub}/{shard['raw_data']['basename']}"))
            if shard.get("zip_data"):
                shard["zip_data"] = dict(shard["zip_data"], basename=f"{sub}/{shard['zip_data']['basename']}")
            merged.append(shard)
    (root / "train" / "index.json").write_text(json.dumps({"version": 2, "shards": merged}))
    (root / ".cache" / "x").mkdir(parents=True)
    (root / ".cache" / "x" / "index.json").write_text(json.dumps({"version": 2, "shards": [{"raw_data": {"basename": "s"}}]}))
    return root


def test_leaves_are_the_folders_holding_shards(tree):
    assert leaf_folders(tree) == [tree / "train" / "arxiv", tree / "train" / "books"]


def test_two_folders_for_one_preset_source_keep_their_own_names(tree, tmp_path):
    from ettin.data.tree import folder_names

    shutil.copytree(tree / "train" / "books", tree / "extra" / "books")
    like = tmp_path / "like.yaml"
    like.write_text("name: x\nsources:\n  - {name: books, path: a, tokens: 1}\n  - {name: arxiv, path: b, tokens: 1}\n")
    names = folder_names(tree, like)
    assert names == {tree / "extra" / "books": "extra__books", tree / "train" / "arxiv": "arxiv",
                     tree / "train" / "books": "train__books"}


def test_names_match_the_preset_sources():
    names = ["train__arxiv", "train__books", "train__dclm-dolmino", "train__misc"]
    assert match(names, ["arxiv", "books", "dclm_dolmino", "code_repos"]) == {
        "train__arxiv": "arxiv", "train__books": "books", "train__dclm-dolmino": "dclm_dolmino", "train__misc": None}


def test_prepare_tree_writes_a_mixture_reading_every_row_once(tree, tmp_path, shared_data, capsys):
    args = ["data", "prepare-tree", str(tree), "--out", str(tmp_path / "prep"), "--mixture", str(tmp_path / "mix.yaml"),
            "--like", "recipes/data/ettin_decay.yaml", "--tokenizer", str(shared_data / "modernbert_tokenizer"),
            "--workers", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # named as the preset's sources, so that recipes/data/ettin_decay.yaml's paths ($ETTIN_DATA/decay/<source>) find them
    books = read_manifest(tmp_path / "prep" / "books")
    # pre-tokenized: the ids are copied, not re-tokenized (42,161 ids, less a [CLS] and a [SEP] for each of 400 docs)
    assert books["complete"] and books["documents"] == 400 and books["num_tokens"] == 42161 - 2 * 400
    arxiv = read_manifest(tmp_path / "prep" / "arxiv")
    assert arxiv["documents"] == 400 and arxiv["num_tokens"] == books["num_tokens"]  # the same texts, tokenized here
    mixture = load_mixture(tmp_path / "mix.yaml")
    assert mixture.phase == "decay" and mixture.instances is not None and mixture.instances.mode == "chunk"
    assert mixture.draw == "once" and [s.name for s in mixture.sources] == ["arxiv", "books"]
    assert f"{books['num_tokens']:,} tokens" in mixture.sources[1].notes
    assert "books (13.8%)" in out and "preset sources with no folder here: code_repos" in out
    # a second run, two folders at a time, finds every folder complete and writes the same mixture
    before = (tmp_path / "mix.yaml").read_text()
    shards = {p: p.stat().st_mtime_ns for p in (tmp_path / "prep").rglob("shard-*.npy")}
    assert main(args + ["--jobs", "2"]) == 0 and "[2/2]" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "prep").rglob("shard-*.npy")} == shards  # nothing redone
    assert (tmp_path / "mix.yaml").read_text() == before


def test_an_empty_tree_is_refused(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    code = main(["data", "prepare-tree", str(tmp_path / "raw"), "--out", str(tmp_path / "p"), "--mixture", "m.yaml"])
    assert code != 0 and "no MDS folder" in capsys.readouterr().err


def test_the_mixture_draws_each_instance_once(tree, tmp_path, shared_data):
    from ettin.data.loader import PhaseLoader
    from ettin.data.tokenizer import load_tokenizer
    from ettin.data.tree import prepare_tree, tree_mixture, write_mixture

    tok = load_tokenizer(shared_data / "modernbert_tokenizer")
    sources = prepare_tree(tree, tmp_path / "prep", tok, workers=0, log=lambda m: None)
    write_mixture(tree_mixture(sources), tmp_path / "mix.yaml")
    loader = PhaseLoader(load_mixture(tmp_path / "mix.yaml"), tok, 256, 8, 0, "pretrain", "mlm",
                         cache_dir=tmp_path / "cache")
    assert [(s["name"], s["epochs"]) for s in loader.plan.summary()] == [("train__arxiv", 1.0), ("train__books", 1.0)]


@pytest.mark.parametrize("extra, source_extra, message", [
    ({}, {"tokens": 5}, r"sources\[0\]\.tokens: not used with `draw: once`"),
    ({"total_tokens": 10}, {}, r"total_tokens: not used with `draw: once`"),
    ({"draw": "twice"}, {}, r"draw: must be one of budget, once"),
])
def test_draw_once_refuses_what_it_would_ignore(extra, source_extra, message):
    from ettin.data.mixture import MixtureError, mixture_from_dict

    data = {"name": "m", "draw": "once", "sources": [{"name": "a", "path": "x", **source_extra}], **extra}
    with pytest.raises(MixtureError, match=message):
        mixture_from_dict(data, "m.yaml")
