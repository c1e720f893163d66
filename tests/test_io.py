"""Atomic writes (ettin.io): the target is the old file or the new one, never part of one, and no temporary
file is left behind."""

import json
import os
import stat

import pytest

from ettin.io import atomic_dir, atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_replace_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_json(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1} and path.read_text().endswith("}\n")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(path, {"not json": object()})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_dir(tmp_path):
    target = tmp_path / "cache" / "entry"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("1")
        assert not target.exists()  # invisible until complete
    assert (target / "f").read_text() == "1"
    with atomic_dir(target, exist_ok=True) as tmp:  # someone got there first: theirs is kept
        (tmp / "f").write_text("2")
    assert (target / "f").read_text() == "1"
    with pytest.raises(OSError), atomic_dir(target) as tmp:
        (tmp / "f").write_text("3")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "other") as tmp:
        raise RuntimeError
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["entry"]
    assert not (tmp_path / "other").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_atomic_dir_replace(tmp_path):
    """replace=True: the new folder takes the old one's place whole (no file of the old one survives); a failed
    write leaves the old folder as it was; no temporary is left either way; the mode follows the umask."""
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target, replace=True) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    with atomic_dir(target, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").is_file()  # readers see the old folder until the end
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    umask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "shared", replace=True):
            pass
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755


def test_read_jsonl_names_file_and_line(tmp_path):
    from ettin.io import UserError, read_jsonl

    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2, "b": 3}\n')
    assert read_jsonl(path, required=("a",)) == [{"a": 1, "_line": 1}, {"a": 2, "b": 3, "_line": 3}]
    for body, match in [(b'{"a": 1}\n{oops}\n', "rows.jsonl:2: invalid JSON"),
                        (b"[1]\n", "rows.jsonl:1: expected a JSON object"),
                        (b'{"a": 1}\n{"b": 1}\n', r"rows.jsonl:2: missing field\(s\) \['a'\]"),
                        (b'{"a": 1}\n{"a": "\xff"}\n', "rows.jsonl:2: not UTF-8")]:
        path.write_bytes(body)
        with pytest.raises(UserError, match=match):
            read_jsonl(path, required=("a",))
    path.write_text("[]\n")
    with pytest.raises(KeyError, match="rows.jsonl:1"):  # the caller's own error type
        read_jsonl(path, error=KeyError)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_read_json_and_tokenizer_errors_name_the_file(tmp_path):
    from ettin.io import read_json, read_tokenizer

    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: invalid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="none.json"):
        read_json(tmp_path / "none.json")
    (tmp_path / "tok").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        read_tokenizer(tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="tokenizer.json: not a Hugging Face tokenizer.json"):
        read_tokenizer(tmp_path / "tok")


def test_is_hub_id():
    from ettin.io import is_hub_id

    assert is_hub_id("jhu-clsp/ettin-encoder-17m")
    for text in ("gpt2", "./model", "/abs/model", "~/model", "runs/a/b", "a/b c", "a/b--c"):
        assert not is_hub_id(text), text
