import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from ettin.data.sources import BadRecords, DataError, SourceSpec, expand_files, iter_documents


def texts(spec, bad=None):
    return [d.text for d in iter_documents(spec, bad)]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_parse_strings_and_dicts():
    spec = SourceSpec.parse("data/*.jsonl:body")
    assert (spec.path, spec.text_field, spec.format) == ("data/*.jsonl", "body", "auto")
    spec = SourceSpec.parse("hf:org/name?config=en&split=validation&streaming=true&name=web")
    assert (spec.path, spec.format, spec.config, spec.split, spec.streaming, spec.name) == (
        "org/name", "hf", "en", "validation", True, "web",
    )  # fmt: skip
    assert SourceSpec.parse("mds:///data/shards").path == "/data/shards"
    assert SourceSpec.parse("corpus/?split_by=paragraph").split_by == "paragraph"
    assert SourceSpec.parse({"path": "x.txt", "split_by": "line"}).name == "x"
    assert SourceSpec.parse("a/b/books.txt.gz").name == "books"
    assert SourceSpec.parse("data/web/**/*.jsonl:body").name == "web"
    assert SourceSpec.parse("hf:org/name").name == "name"
    with pytest.raises(DataError, match="unknown key"):
        SourceSpec.parse({"path": "x", "colour": "red"})
    with pytest.raises(DataError, match="unknown format 'csv'"):
        SourceSpec.parse("x.csv?format=csv")
    with pytest.raises(DataError, match="not key=value"):
        SourceSpec.parse("x.jsonl?oops")


def test_jsonl_text_parquet_and_compression(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": "two", "x": 1}])
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "three"}) + "\n\n")  # a blank line is not a record
    (tmp_path / "c.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"four\n\nfive\nsix\n"))
    pq.write_table(pa.table({"text": ["seven", "eight"], "n": [1, 2]}), tmp_path / "d.parquet")
    (tmp_path / "notes.csv").write_text("ignored in folders")
    assert texts(str(tmp_path)) == ["one", "two", "three", "four\n\nfive\nsix\n", "seven", "eight"]
    assert texts(f"{tmp_path}/*.txt.zst?split_by=paragraph") == ["four", "five\nsix"]
    assert texts(f"{tmp_path}/c.txt.zst?split_by=line") == ["four", "five", "six"]
    locations = [d.location for d in iter_documents(f"{tmp_path}/c.txt.zst?split_by=paragraph")]
    assert locations == [f"{tmp_path}/c.txt.zst:1", f"{tmp_path}/c.txt.zst:3"]
    assert [d.location for d in iter_documents(str(tmp_path / "d.parquet"))][1].endswith("d.parquet:row 1")
    assert [p.name for p in expand_files(SourceSpec(f"{tmp_path}/**/*.jsonl*"))] == ["a.jsonl", "b.jsonl.gz"]


def test_other_text_field(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"body": "x"}, {"body": "y"}])
    pq.write_table(pa.table({"body": ["z"]}), tmp_path / "b.parquet")
    assert texts(f"{tmp_path}:body") == ["x", "y", "z"]
    with pytest.raises(DataError, match=r"b\.parquet: missing column 'text'"):
        texts(str(tmp_path / "b.parquet"))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"f\.jsonl:1: empty file"),
        (
            b'{"text": "ok"}\n{"text": "bad \xff byte"}\n',
            r"f\.jsonl:2: invalid UTF-8 \(byte 0xff at column 15\)",
        ),
        (b'{"text": "ok"}\n\n{"text": oops}\n', r"f\.jsonl:3: malformed JSON line"),
        (b'{"text": "ok"}\n{"body": "no text"}\n', r"f\.jsonl:2: missing field 'text'"),
        (b'{"text": 5}\n', r"f\.jsonl:1: field 'text' is not a string \(got int\)"),
        (b"[1, 2]\n", r"f\.jsonl:1: not a JSON object"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    (tmp_path / "f.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=message):
        texts(str(tmp_path / "f.jsonl"))


def test_bad_text_files(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match=r"empty\.txt:1: empty file"):
        texts(str(tmp_path / "empty.txt"))
    (tmp_path / "bad.txt").write_bytes(b"fine\nstill fine\nnot \xc3\x28 fine\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: invalid UTF-8 \(byte 0xc3 at column 5\)"):
        texts(str(tmp_path / "bad.txt"))
    with pytest.raises(DataError, match=r"bad\.txt:3: invalid UTF-8"):
        texts(f"{tmp_path}/bad.txt?split_by=paragraph")


def test_unknown_and_missing_sources(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"x\.csv: unknown file format"):
        texts(str(tmp_path / "x.csv"))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        texts(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="no files match"):
        texts(f"{tmp_path}/*.jsonl")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="folder holds no"):
        texts(str(tmp_path / "sub"))


def test_skip_bad_counts(tmp_path):
    lines = [b'{"text": "a"}', b'{"text": oops}', b'{"text": "b\xff"}', b'{"body": 1}', b'{"text": "c"}']
    (tmp_path / "f.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "g.jsonl").write_bytes(b"")
    bad = BadRecords(skip=True)
    assert texts(str(tmp_path), bad) == ["a", "c"]
    assert bad.counts == {"malformed JSON line": 1, "invalid UTF-8": 1,
                          "missing field 'text'": 1, "empty file": 1}  # fmt: skip
    assert bad.total == 4 and any("f.jsonl:2" in e for e in bad.examples)


def test_huggingface_dataset_from_local_files(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "hfdata"
    folder.mkdir()
    pq.write_table(pa.table({"content": ["alpha", "beta", "gamma"]}), folder / "train.parquet")
    for streaming in (False, True):
        spec = SourceSpec(path=str(folder), format="hf", text_field="content", streaming=streaming)
        docs = list(iter_documents(spec))
        assert [d.text for d in docs] == ["alpha", "beta", "gamma"]
        assert docs[2].location == f"hf:{folder}[train] row 2"
    with pytest.raises(DataError, match=r"row 0: missing field 'text'"):
        list(iter_documents(SourceSpec(path=str(folder), format="hf")))
    with pytest.raises(DataError, match="cannot load the dataset"):
        list(iter_documents(f"hf:{tmp_path}/no-such-dataset"))


def test_parquet_null_rows_are_bad_records(tmp_path):
    pq.write_table(pa.table({"text": ["a", None, "b"]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"n\.parquet:row 1: field 'text' is not a string \(got NoneType\)"):
        texts(str(tmp_path / "n.parquet"))
    bad = BadRecords(skip=True)
    assert texts(str(tmp_path / "n.parquet"), bad) == ["a", "b"] and bad.total == 1


def test_mds_sources(shared_data):
    text_docs = list(iter_documents(f"mds:{shared_data}/mds/text_zstd"))
    token_docs = list(iter_documents(str(shared_data / "mds" / "tokens_uint32")))  # index.json: auto-detected
    assert len(text_docs) == len(token_docs) == 400
    assert token_docs[0].text is None and token_docs[0].tokens.dtype.name == "uint32"
    assert "shard.00000.mds:sample 0" in text_docs[0].location
    named = list(iter_documents(f"mds:{shared_data}/mds/tokens_uint32:input_ids"))
    assert all((a.tokens == b.tokens).all() for a, b in zip(named, token_docs))
    with pytest.raises(DataError, match=r"sample 0: missing field 'body'"):
        list(iter_documents(f"mds:{shared_data}/mds/text_zstd:body"))
