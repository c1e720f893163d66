"""A reader for MosaicML streaming (MDS) shards, the format the published Ettin data uses.

The `mosaicml-streaming` library is an optional extra (`pip install ettin[mds]`): version 0.13 pins
transformers<5 and imports torchvision. This module reads local MDS folders without it, following the
library's documented format (version 2):

    index.json                       {"version": 2, "shards": [{"column_names", "column_encodings",
                                      "column_sizes", "compression", "raw_data", "zip_data", "samples"}, ...]}
    shard.NNNNN.mds[.zstd|.gz|...]   [num_samples: u32][offsets: (num_samples + 1) x u32][samples]
    sample                           [u32 size per variable-size column][column bytes, in column order]

Folders may nest (an index.json with shards under sub-folders named by "raw_data.basename"). When the
library is importable and ETTIN_MDS_READER=streaming, its `LocalDataset` is used instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ettin.io import read_json

_SCALARS = {
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "float16": np.float16, "float32": np.float32, "float64": np.float64,
}  # fmt: skip
_NDARRAY_DTYPES = {8: "uint8", 9: "int8", 16: "uint16", 17: "int16", 18: "float16", 32: "uint32",
                   33: "int32", 34: "float32", 64: "uint64", 65: "int64", 66: "float64"}  # fmt: skip
_SHAPE_DTYPES = {0: np.uint8, 1: np.uint16, 2: np.uint32, 3: np.uint64}


def decode_column(encoding: str, data: bytes):
    """Decode one column value from its MDS encoding (the text encodings and numeric ones; no images/pickle)."""
    if encoding == "str":
        return data.decode("utf-8")
    if encoding == "bytes":
        return data
    if encoding == "int":
        return int(np.frombuffer(data, np.int64)[0])
    if encoding in _SCALARS:
        return np.frombuffer(data, _SCALARS[encoding])[0]
    if encoding in ("str_int", "str_float"):
        return (int if encoding == "str_int" else float)(data.decode("utf-8"))
    if encoding == "json":
        return json.loads(data.decode("utf-8"))
    if encoding.startswith("ndarray"):
        return _decode_ndarray(encoding, data)
    raise ValueError(f"MDS encoding {encoding!r} is not supported by ettin's reader (install ettin[mds])")


def _decode_ndarray(encoding: str, data: bytes) -> np.ndarray:
    # "ndarray", "ndarray:<dtype>" or "ndarray:<dtype>:<d0,d1,...>"; what the header leaves out is in the data.
    parts = encoding.split(":")
    index = 0
    if len(parts) > 1 and parts[1]:
        dtype = parts[1]
    else:
        dtype = _NDARRAY_DTYPES[data[index]]
        index += 1
    if len(parts) > 2 and parts[2]:
        shape = tuple(int(d) for d in parts[2].split(","))
    else:
        byte = data[index]
        index += 1
        ndim, shape_dtype = byte >> 2, _SHAPE_DTYPES[byte % 4]
        size = ndim * np.dtype(shape_dtype).itemsize
        shape = tuple(int(d) for d in np.frombuffer(data[index : index + size], shape_dtype))
        index += size
    return np.frombuffer(data[index:], dtype).reshape(shape)


def _decompress(algorithm: str, data: bytes) -> bytes:
    name = algorithm.split(":")[0]
    if name == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if name == "gz":
        import gzip

        return gzip.decompress(data)
    if name == "bz2":
        import bz2

        return bz2.decompress(data)
    raise ValueError(f"MDS compression {algorithm!r} is not supported by ettin's reader (install ettin[mds])")


def _read_shard(folder: Path, info: dict) -> bytes:
    raw = folder / info["raw_data"]["basename"]
    if raw.exists():  # the library leaves decompressed copies next to the zipped ones
        return raw.read_bytes()
    zipped = info.get("zip_data")
    if not info.get("compression") or not zipped:
        raise FileNotFoundError(f"{raw}: MDS shard listed in {folder / 'index.json'} is missing")
    path = folder / zipped["basename"]
    if not path.exists():
        raise FileNotFoundError(f"{path}: MDS shard listed in {folder / 'index.json'} is missing")
    return _decompress(info["compression"], path.read_bytes())


def read_index(folder: str | Path) -> dict:
    index_file = Path(folder) / "index.json"
    if not index_file.exists():
        raise FileNotFoundError(f"{folder}: not an MDS folder (no index.json)")
    index = read_json(index_file)
    for i, shard in enumerate(index.get("shards", [])):
        if shard.get("format") != "mds":
            raise ValueError(
                f"{index_file}: shard {i} has format {shard.get('format')!r}; only 'mds' is read"
            )
    return index


def iter_shard(folder: Path, info: dict) -> Iterator[tuple[int, dict]]:
    """(sample index in shard, {column: value}) for each sample of one shard."""
    data = _read_shard(folder, info)
    name = info["raw_data"]["basename"]
    num_samples = int(np.frombuffer(data[:4], np.uint32)[0])
    if num_samples != info.get("samples", num_samples):
        raise ValueError(f"{folder / name}: holds {num_samples} samples, index.json says {info['samples']}")
    offsets = np.frombuffer(data[4 : 4 + 4 * (num_samples + 1)], np.uint32)
    names, encodings, sizes = info["column_names"], info["column_encodings"], info["column_sizes"]
    for i in range(num_samples):
        sample_bytes = data[offsets[i] : offsets[i + 1]]
        position, lengths = 0, []
        for size in sizes:
            if size:
                lengths.append(size)
            else:
                lengths.append(int(np.frombuffer(sample_bytes[position : position + 4], np.uint32)[0]))
                position += 4
        sample = {}
        for column, encoding, length in zip(names, encodings, lengths):
            sample[column] = decode_column(encoding, sample_bytes[position : position + length])
            position += length
        yield i, sample


def iter_mds_samples(folder: str | Path) -> Iterator[tuple[str, dict]]:
    """(location, sample dict) for every sample of a local MDS folder, shards in index order."""
    folder = Path(folder)
    if os.environ.get("ETTIN_MDS_READER") == "streaming":
        yield from _iter_with_library(folder)
        return
    index = read_index(folder)
    for info in index["shards"]:
        shard_dir = folder / Path(info["raw_data"]["basename"]).parent
        flat = dict(info, raw_data=dict(info["raw_data"], basename=Path(info["raw_data"]["basename"]).name))
        if flat.get("zip_data"):
            flat["zip_data"] = dict(flat["zip_data"], basename=Path(flat["zip_data"]["basename"]).name)
        for i, sample in iter_shard(shard_dir, flat):
            yield f"{folder / info['raw_data']['basename']}:sample {i}", sample


def _iter_with_library(folder: Path) -> Iterator[tuple[str, dict]]:
    from streaming import LocalDataset  # optional extra: mosaicml-streaming

    dataset = LocalDataset(local=str(folder))
    for i in range(len(dataset)):
        yield f"{folder}:sample {i}", dataset[i]
