"""The MDS reader against genuine shards written by mosaicml-streaming 0.13 (shared/data/mds)."""

import json
import shutil

import numpy as np
import pytest

from ettin.data.mds import decode_column, iter_mds_samples, read_index
from ettin.data.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def wikipedia(shared_data):
    with open(shared_data / "pretrain" / "wikipedia_vital_summaries_en.jsonl") as f:
        return [json.loads(line) for line, _ in zip(f, range(400))]


def test_text_zstd_shards_equal_the_source(shared_data, wikipedia):
    samples = [s for _, s in iter_mds_samples(shared_data / "mds" / "text_zstd")]
    assert len(samples) == 400
    assert [s["text"] for s in samples] == [r["text"] for r in wikipedia]
    assert [s["id"] for s in samples] == [str(r["id"]) for r in wikipedia]


def test_token_shards_equal_the_tokenizer(shared_data, wikipedia):
    samples = [s for _, s in iter_mds_samples(shared_data / "mds" / "tokens_uint32")]
    ids = [s["input_ids"] for s in samples]
    assert sum(len(x) for x in ids) == 42161
    assert all(x.dtype == np.uint32 and x.ndim == 1 for x in ids)
    tokenizer = load_tokenizer(shared_data / "modernbert_tokenizer").tokenizer
    encoded = tokenizer.encode_batch([r["text"] for r in wikipedia])  # with [CLS] ... [SEP], as stored
    assert all(np.array_equal(x, e.ids) for x, e in zip(ids, encoded))


def test_index_and_missing_shard(shared_data, tmp_path):
    index = read_index(shared_data / "mds" / "text_zstd")
    assert [s["samples"] for s in index["shards"]] == [128, 128, 134, 10]
    copy = tmp_path / "mds"
    shutil.copytree(shared_data / "mds" / "text_zstd", copy)
    (copy / "shard.00002.mds.zstd").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard\.00002\.mds\.zstd"):
        list(iter_mds_samples(copy))
    with pytest.raises(FileNotFoundError, match="no index.json"):
        read_index(tmp_path)


def test_decode_encodings():
    # Layouts from the MDS format documentation: [dtype: 1][ndim << 2 | shape dtype: 1][shape][values].
    values = np.arange(6, dtype=np.int16).reshape(2, 3)
    dynamic = bytes([17, (2 << 2) | 0]) + np.array([2, 3], np.uint8).tobytes() + values.tobytes()
    assert np.array_equal(decode_column("ndarray", dynamic), values)
    assert np.array_equal(decode_column("ndarray:int16:2,3", values.tobytes()), values)
    assert np.array_equal(decode_column("ndarray:int16", dynamic[1:]), values)
    assert decode_column("int", np.int64(-7).tobytes()) == -7
    assert decode_column("float32", np.float32(1.5).tobytes()) == 1.5
    assert decode_column("str_int", b"42") == 42
    assert decode_column("json", b'{"a": [1]}') == {"a": [1]}
    with pytest.raises(ValueError, match="'jpeg' is not supported"):
        decode_column("jpeg", b"")
