"""Documents -> instances: Ettin chunking (min length, skip, backfill) and packing, and the index cache."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ettin.data.instances import InstanceConfig, build_index, chunk_document, load_or_build_index
from ettin.data.shards import TokenDataset, write_token_dataset


def coverage(index, lengths):
    """How many times each token of each document appears in the instances."""
    counts = [np.zeros(n, dtype=np.int64) for n in lengths]
    for doc, a, b in index.spans.tolist():
        counts[doc][a:b] += 1
    return counts


def test_chunking_follows_the_reference_rules():
    # seq_len 18 -> pieces of C = 16; min_len 8 (-m), skip_below 4 (-a), like -c 1024 -m 512 -a 128 scaled down
    cfg = InstanceConfig(mode="chunk", min_len=8, skip_below=4, backfill=False).resolved(18)
    assert chunk_document(40, 0, 18, cfg)[0] == [(0, 16), (16, 32), (32, 40)]  # tail of 8 >= min_len: kept
    chunks, acc = chunk_document(38, 0, 18, cfg)  # tail of 6 < min_len, no backfill: dropped
    assert chunks == [(0, 16), (16, 32)] and acc["skipped"] == 6
    chunks, acc = chunk_document(35, 0, 18, cfg)  # tail of 3 < skip_below: dropped
    assert chunks == [(0, 16), (16, 32)] and acc["skipped"] == 3
    assert chunk_document(5, 0, 18, cfg)[0] == [(0, 5)]  # a short document is kept whole
    strict = InstanceConfig(mode="chunk", min_len=8, skip_below=4, enforce_min_first=True).resolved(18)
    assert chunk_document(3, 0, 18, strict)[0] == []  # ... unless enforce_min_first and under skip_below

    dup = InstanceConfig(
        mode="chunk", min_len=8, skip_below=4, backfill=True, backfill_duplicates=True
    ).resolved(18)
    chunks, acc = chunk_document(38, 0, 18, dup)  # tail of 6 borrows the previous 10 tokens again
    assert chunks == [(0, 16), (16, 32), (22, 38)] and acc["duplicated"] == 10

    nodup = InstanceConfig(mode="chunk", min_len=8, skip_below=4, backfill=True).resolved(18)
    for doc in range(50):  # the boundary moves back by r in [0, 16 - 6): nothing lost or duplicated
        chunks, acc = chunk_document(38, doc, 18, nodup)
        (a0, b0), (a1, b1), (a2, b2) = chunks
        assert (a0, b0, a1, b2) == (0, 16, 16, 38) and b1 == a2 and 22 < b1 <= 32
        assert acc == {"skipped": 0, "duplicated": 0}


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 120), min_size=1, max_size=25),
    seq_len=st.integers(6, 40),
    min_frac=st.floats(0, 1),
    skip_frac=st.floats(0, 1),
    backfill=st.booleans(),
    duplicates=st.booleans(),
)
def test_chunking_never_loses_or_duplicates_tokens_except_as_counted(
    lengths, seq_len, min_frac, skip_frac, backfill, duplicates
):
    cap = seq_len - 2
    cfg = InstanceConfig(
        mode="chunk",
        min_len=int(min_frac * cap),
        skip_below=int(skip_frac * cap),
        backfill=backfill,
        backfill_duplicates=duplicates,
    )
    index = build_index(np.array(lengths), seq_len, cfg)
    assert len(index) == len(index.spans)  # one span per instance
    spans = index.spans
    assert np.all(spans[:, 2] - spans[:, 1] <= cap) and np.all(spans[:, 2] > spans[:, 1])
    assert np.all(index.lengths <= seq_len)
    counts = coverage(index, lengths)
    total = sum(lengths)
    covered = sum(int((c > 0).sum()) for c in counts)
    extra = sum(int(np.clip(c - 1, 0, None).sum()) for c in counts)
    assert total - covered == index.stats["skipped_tokens"]
    assert extra == index.stats["duplicated_tokens"]
    if not (backfill and duplicates):
        assert extra == 0
    # a document's first piece always survives (unless enforce_min_first): short documents are kept whole
    for doc, n in enumerate(lengths):
        if n:
            assert counts[doc][0] == 1


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 100), min_size=1, max_size=40),
    seq_len=st.integers(4, 48),
    open_rows=st.integers(1, 6),
)
def test_packing_keeps_every_token_once_and_fits_rows(lengths, seq_len, open_rows):
    index = build_index(np.array(lengths), seq_len, InstanceConfig(mode="pack", open_rows=open_rows))
    counts = coverage(index, lengths)
    assert all(np.all(c == 1) for c in counts)  # no token lost, none duplicated
    assert np.all(index.lengths <= seq_len)
    for i in range(len(index)):
        spans = index.spans_of(i)
        assert len(spans) >= 1
        assert int((spans[:, 2] - spans[:, 1] + 2).sum()) == index.lengths[i]
    # pieces of one document keep their order across the index
    for doc in range(len(lengths)):
        starts = index.spans[index.spans[:, 0] == doc, 1]
        assert np.all(np.diff(starts) > 0)


def test_packing_fills_rows_better_than_one_document_per_row():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 300, size=500)
    packed = build_index(lengths, 512, InstanceConfig(mode="pack"))
    fill = packed.lengths.sum() / (len(packed) * 512)
    assert fill > 0.95 and len(packed) < len(lengths) / 2


@pytest.fixture(scope="module")
def moby(shared_data, tmp_path_factory):
    """The first 30 chapters of Moby-Dick with the ModernBERT tokenizer, as a prepared TokenDataset."""
    from ettin.data.tokenizer import load_tokenizer

    tok = load_tokenizer(shared_data / "modernbert_tokenizer")
    lines = (shared_data / "pretrain" / "moby_dick_chapters.jsonl").read_text().splitlines()[:30]
    docs = tok.encode_batch([json.loads(line)["text"] for line in lines])
    folder = write_token_dataset(tmp_path_factory.mktemp("moby"), {"moby": docs}, tok.vocab_size)
    return TokenDataset(folder), docs


def test_reference_chunking_of_real_text_reassembles_each_document(moby):
    ds, docs = moby
    # the reference's -c 1024 -m 512 -a 128 --backfill --backfill_no_duplicates, at 256 tokens
    index = build_index(ds.doc_lengths, 256, InstanceConfig(mode="chunk"))
    assert index.config.min_len == 128 and index.config.skip_below == 32
    for doc, original in enumerate(docs):
        pieces = [ds[d][a:b] for d, a, b in index.spans.tolist() if d == doc]
        rebuilt = np.concatenate(pieces).astype(np.int64)
        assert np.array_equal(rebuilt, original[: len(rebuilt)])  # in order, nothing duplicated
        assert len(original) - len(rebuilt) < 32  # only a tail under skip_below may be dropped
    assert index.stats["content_tokens"] + index.stats["skipped_tokens"] == sum(map(len, docs))


def test_index_is_cached_atomically_and_reused(moby, tmp_path):
    ds, _ = moby
    cfg = InstanceConfig(mode="pack")
    first = load_or_build_index(ds, 128, cfg, cache_dir=tmp_path)
    folders = [p for p in tmp_path.iterdir()]
    assert [p.name for p in folders] == [first.key] and not any(p.name.startswith(".") for p in folders)
    assert {p.name for p in folders[0].iterdir()} == {"spans.npy", "offsets.npy", "meta.json"}
    again = load_or_build_index(ds, 128, cfg, cache_dir=tmp_path)
    assert np.array_equal(first.spans, again.spans) and np.array_equal(first.offsets, again.offsets)
    assert again.stats == first.stats
    # another seq_len, mode or document range is another index
    assert load_or_build_index(ds, 256, cfg, cache_dir=tmp_path).key != first.key
    assert load_or_build_index(ds, 128, InstanceConfig(), cache_dir=tmp_path).key != first.key
    part = load_or_build_index(ds, 128, cfg, doc_range=(5, 10), cache_dir=tmp_path)
    assert part.key != first.key and set(part.spans[:, 0].tolist()) == set(range(5, 10))


def test_default_cache_sits_next_to_the_shards(moby):
    ds, _ = moby
    index = load_or_build_index(ds, 64, InstanceConfig(mode="chunk"))
    assert (ds.path / "instances" / index.key / "meta.json").exists()


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="instances.mode"):
        InstanceConfig(mode="stream")
    with pytest.raises(ValueError, match="seq_len"):
        build_index(np.array([3]), 2, InstanceConfig())


def test_read_only_dataset_folders_are_never_written(moby, tmp_path, monkeypatch):
    ds, _ = moby
    monkeypatch.setenv("ETTIN_CACHE", str(tmp_path / "cache"))
    before = sorted(map(str, ds.path.rglob("*")))
    mode = ds.path.stat().st_mode
    ds.path.chmod(0o555)  # like ../shared (root ignores the bit, the cache code does not)
    try:
        index = load_or_build_index(ds, 96, InstanceConfig(mode="pack"))
    finally:
        ds.path.chmod(mode)
    assert sorted(map(str, ds.path.rglob("*"))) == before
    assert (tmp_path / "cache" / "instances" / index.key / "meta.json").exists()
