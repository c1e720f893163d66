import json
import os
import pickle

import numpy as np
import pytest

import ettin.data.prepare as prepare_module
from ettin.cli import main
from ettin.data.prepare import PrepareConfig, prepare
from ettin.data.shards import TokenDataset, read_manifest, write_token_dataset
from ettin.data.sources import DataError
from ettin.data.tokenizer import load_tokenizer

FILES = ("gutenberg_books", "moby_dick_chapters", "sotu_addresses", "wikipedia_vital_summaries_en")


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    return load_tokenizer(shared_data / "modernbert_tokenizer")


@pytest.fixture
def corpus(shared_data, tmp_path):
    """A few documents of each pretraining file (short ones from the long files), one JSONL per source."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, n in zip(FILES, (6, 8, 3, 60)):
        with open(shared_data / "pretrain" / f"{name}.jsonl") as f:
            lines = [line for line, _ in zip(f, range(n))]
        (folder / f"{name}.jsonl").write_text("".join(lines))
    return folder


def sources(corpus):
    return [str(corpus / f"{name}.jsonl") for name in FILES]


def direct(tokenizer, corpus):
    """Every document tokenized one by one, without special tokens, in source order."""
    ids = []
    for path in sources(corpus):
        with open(path) as f:
            ids += [tokenizer.encode(json.loads(line)["text"]) for line in f]
    return ids


def config(out, **kw):
    kw = {"workers": 0, "shard_tokens": 2000, "batch_docs": 2} | kw  # small shards: many of them
    return PrepareConfig(out=out, **kw)


def test_read_back_equals_direct_tokenization(tokenizer, corpus, tmp_path):
    manifest = prepare(sources(corpus), tokenizer, config(tmp_path / "out"))
    ds = TokenDataset(tmp_path / "out")
    expected = direct(tokenizer, corpus)
    assert len(ds) == len(expected) == 77
    assert [d.tolist() for d in ds] == expected
    assert [ds[i].tolist() for i in (0, 30, -1)] == [expected[0], expected[30], expected[-1]]
    assert ds.num_tokens == manifest["num_tokens"] == sum(map(len, expected))
    assert ds.doc_lengths.tolist() == [len(x) for x in expected]
    assert ds.dtype == np.uint16 and len(ds.shards) > 10  # several shards per source
    assert list(ds.source_ranges) == list(FILES) and ds.source_ranges["moby_dick_chapters"] == (6, 14)
    assert [s["documents"] for s in manifest["sources"]] == [6, 8, 3, 60]
    assert manifest["tokenizer"]["sha256"] == tokenizer.sha256
    ds.verify()


def test_worker_processes_give_identical_shards(tokenizer, corpus, tmp_path):
    threads = prepare(sources(corpus)[:2], tokenizer, config(tmp_path / "a", workers=0))
    processes = prepare(sources(corpus)[:2], tokenizer, config(tmp_path / "b", workers=2))
    assert [s["tokens_sha256"] for s in threads["shards"]] == [
        s["tokens_sha256"] for s in processes["shards"]
    ]


def _interrupt_after(monkeypatch, shards):
    calls = {"n": 0}
    real = prepare_module.write_shard

    def failing(*args, **kw):
        if calls["n"] == shards:
            raise KeyboardInterrupt("simulated interruption")
        calls["n"] += 1
        return real(*args, **kw)

    monkeypatch.setattr(prepare_module, "write_shard", failing)


@pytest.mark.parametrize("stop_after, workers", [(0, 0), (3, 0), (7, 0), (9, 2)])
def test_resume_after_interruption_never_double_counts(
    tokenizer, corpus, tmp_path, monkeypatch, stop_after, workers
):
    # A bad line in the middle of a source: skipped and counted exactly once across the two runs.
    wiki = corpus / "wikipedia_vital_summaries_en.jsonl"
    lines = wiki.read_text().splitlines(keepends=True)
    wiki.write_text("".join(lines[:30] + ["{broken\n"] + lines[30:]))
    reference = prepare(sources(corpus), tokenizer, config(tmp_path / "ref", skip_bad=True))

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, stop_after)
        with pytest.raises(KeyboardInterrupt):
            prepare(sources(corpus), tokenizer, config(out, skip_bad=True, workers=workers))
    partial = read_manifest(out)
    assert not partial["complete"] and len(partial["shards"]) == stop_after
    with pytest.raises(ValueError, match="did not finish"):
        TokenDataset(out)
    (out / "shard-09999.tokens.npy").write_bytes(b"left over by a crash")  # unrecorded: removed on resume
    (out / ".manifest.json.tmp-123").write_bytes(b"{")

    resumed = prepare(sources(corpus), tokenizer, config(out, skip_bad=True))
    assert resumed["complete"]
    for key in ("documents", "num_tokens"):
        assert resumed[key] == reference[key]
    assert [s["skipped"] for s in resumed["sources"]] == [s["skipped"] for s in reference["sources"]]
    assert resumed["sources"][3]["skipped"] == {"malformed JSON line": 1}
    assert [s["tokens_sha256"] for s in resumed["shards"]] == [
        s["tokens_sha256"] for s in reference["shards"]
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "ref").iterdir())


def test_rerun_is_noop_and_changes_are_detected(tokenizer, corpus, tmp_path, shared_data):
    out = tmp_path / "out"
    first = prepare(sources(corpus), tokenizer, config(out))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert prepare(sources(corpus), tokenizer, config(out)) == first
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    other = load_tokenizer(shared_data / "gpt2_tokenizer")
    with pytest.raises(DataError, match="another tokenizer"):
        prepare(sources(corpus), other, config(out))
    with pytest.raises(DataError, match="other sources"):
        prepare(sources(corpus)[:2], tokenizer, config(out))
    moby = corpus / "moby_dick_chapters.jsonl"
    moby.write_text(moby.read_text() + json.dumps({"text": "One more chapter."}) + "\n")
    with pytest.raises(DataError, match=r"source 'moby_dick_chapters' changed.*moby_dick_chapters\.jsonl"):
        prepare(sources(corpus), tokenizer, config(out))
    redone = prepare(sources(corpus), tokenizer, config(out, overwrite=True))
    assert redone["sources"][1]["documents"] == 9 and redone["documents"] == first["documents"] + 1
    assert len(TokenDataset(out)) == redone["documents"]


def test_a_moved_mtime_with_the_same_bytes_is_not_a_change(tokenizer, corpus, tmp_path):
    """Copies and checkouts move modification times: same bytes still count as the same source (sha256 in the
    manifest), while a same-size edit is still caught."""
    out = tmp_path / "out"
    first = prepare(sources(corpus), tokenizer, config(out))
    moby = corpus / "moby_dick_chapters.jsonl"
    st = moby.stat()
    os.utime(moby, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = prepare(sources(corpus), tokenizer, config(out))
    assert again["shards"] == first["shards"] and again["num_tokens"] == first["num_tokens"]
    assert read_manifest(out)["sources"][1]["fingerprint"][str(moby)][1] == st.st_mtime_ns + 10**9  # refreshed
    text = moby.read_text()
    i = text.index("e")  # one character replaced by another of the same byte length
    moby.write_text(text[:i] + "a" + text[i + 1 :])
    assert moby.stat().st_size == st.st_size
    with pytest.raises(DataError, match=r"source 'moby_dick_chapters' changed"):
        prepare(sources(corpus), tokenizer, config(out))


def test_bad_input_leaves_nothing_that_looks_complete(tokenizer, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "fine"}\n{"text": "also fine"}\n{"title": "no text"}\n')
    out = tmp_path / "out"
    assert main(["data", "prepare", "--source", str(bad), "--out", str(out), "--workers", "0"]) == 2
    assert "bad.jsonl:3: missing field 'text'" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        TokenDataset(out)

    assert (
        main(["data", "prepare", "--source", str(bad), "--out", str(out), "--workers", "0", "--skip-bad"])
        == 0
    )
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["documents"] == 2
    assert manifest["sources"][0]["skipped"] == {"missing field 'text'": 1}
    assert "skipped 1 x missing field 'text'" in capsys.readouterr().out

    (tmp_path / "empty.txt").write_text("")
    assert (
        main(["data", "prepare", "--source", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o2")]) == 2
    )
    assert "empty.txt:1: empty file" in capsys.readouterr().err
    assert main(["data", "prepare", "--source", "nowhere/*.jsonl", "--out", str(tmp_path / "o3")]) == 2
    assert main(["data", "prepare", "--source", "x.jsonl?format=xml", "--out", str(tmp_path / "o4")]) == 2
    assert "unknown format 'xml'" in capsys.readouterr().err


def test_refuses_a_foreign_folder(tokenizer, corpus, tmp_path):
    (tmp_path / "mine.txt").write_text("not a dataset")
    with pytest.raises(DataError, match="not empty"):
        prepare(sources(corpus)[:1], tokenizer, config(tmp_path))
    assert (tmp_path / "mine.txt").exists()


def test_mds_tokens_and_text_prepare_the_same(tokenizer, shared_data, tmp_path):
    from_text = prepare([f"mds:{shared_data}/mds/text_zstd"], tokenizer, config(tmp_path / "t"))
    from_ids = prepare([f"mds:{shared_data}/mds/tokens_uint32"], tokenizer, config(tmp_path / "i"))
    assert from_ids["num_tokens"] == from_text["num_tokens"] == 42161 - 2 * 400  # [CLS]/[SEP] stripped
    assert [s["tokens_sha256"] for s in from_ids["shards"]] == [
        s["tokens_sha256"] for s in from_text["shards"]
    ]


def test_cli_info(tokenizer, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "prepare", "--source", sources(corpus)[1], "--out", str(out), "--workers", "0"]) == 0
    assert main(["data", "info", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "all 1 shards match" in text and "moby_dick_chapters" in text
    tokens = out / "shard-00000.tokens.npy"
    os.chmod(tokens, 0o644)
    data = bytearray(tokens.read_bytes())
    data[-1] ^= 1
    tokens.write_bytes(bytes(data))
    assert main(["data", "info", str(out), "--verify"]) == 2
    assert "checksum does not match" in capsys.readouterr().err


def test_write_token_dataset_helper_and_pickling(tmp_path):
    write_token_dataset(tmp_path, {"a": [[1, 2], [3]], "b": [[70000]]}, vocab_size=70016)
    ds = TokenDataset(tmp_path)
    assert ds.dtype == np.uint32 and [d.tolist() for d in ds] == [[1, 2], [3], [70000]]
    assert ds.source_ranges == {"a": (0, 2), "b": (2, 3)}
    blob = pickle.dumps(ds)
    assert len(blob) < 500 and pickle.loads(blob)[2].tolist() == [70000]  # by path, not by content
    with pytest.raises(IndexError):
        ds[3]


@pytest.mark.slow
def test_all_of_pretrain_matches_direct_tokenization(tokenizer, shared_data, tmp_path):
    """Done-when: prepare all of shared/data/pretrain, read it back, compare with direct tokenization."""
    paths = [str(shared_data / "pretrain" / f"{name}.jsonl") for name in FILES]
    manifest = prepare(paths, tokenizer, PrepareConfig(out=tmp_path / "out", workers=2))
    ds = TokenDataset(tmp_path / "out")
    ds.verify()
    expected_total = 0
    index = 0
    for path in paths:
        with open(path) as f:
            texts = [json.loads(line)["text"] for line in f]
        for encoding in tokenizer.tokenizer.encode_batch(texts, add_special_tokens=False):
            assert ds[index].tolist() == encoding.ids
            expected_total += len(encoding.ids)
            index += 1
    assert len(ds) == index == 10033 + 233 + 135 + 668
    assert ds.num_tokens == manifest["num_tokens"] == expected_total
