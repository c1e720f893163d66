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
