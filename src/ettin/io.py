"""Atomic writes: a file (or folder) is written under a hidden temporary name beside its target, then renamed
into place with `os.replace`. A crash leaves the old version or the new one, never half of one, and a reader
never sees a partial file. Temporary names are `.NAME.tmp-PID` (files) and `.NAME.tmp-XXXX` (folders):
hidden, so listings that skip dot-files ignore them, and removed when the write fails.

    atomic_write_text(path, "...")        atomic_write_bytes(path, b"...")     atomic_write_json(path, obj)
    with atomic_path(path) as tmp: fig.savefig(tmp)      # any writer that takes a path
    with atomic_dir(folder) as tmp: ...                   # a whole folder, renamed into place at the end
    with atomic_dir(folder, replace=True) as tmp: ...     # the same, replacing a folder already there

Reading what a user hands over, with errors that name the file (and line): `read_json`, `read_jsonl`,
`read_tokenizer` (a tokenizer.json or its folder), `is_hub_id` (what is taken for a Hugging Face hub id rather than
a path), `hub_offline` (whether the hub is switched off here), and `UserError`, the error type of bad user input (the `ettin` command prints it as one line, exit 2).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def temp_name(path: Path) -> Path:
    """The hidden temporary name a write of `path` uses (unique per process)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` (its folder is created), on error it is
    removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> Path:
    with atomic_path(path, fsync=False) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str, fsync: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2, sort_keys: bool = False,
                      fsync: bool = True) -> Path:
    """JSON with a final newline."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n", fsync=fsync)


@contextlib.contextmanager
def atomic_dir(path: str | Path, exist_ok: bool = False, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it is renamed to `path`. When `path` already
    exists: with `replace` the old folder is renamed aside, the new one renamed in and the old one removed (a
    reader sees the old folder or the new one); with `exist_ok` the new folder is dropped and the existing one kept
    (e.g. a cache entry another process wrote first); otherwise the rename fails with OSError. On error the
    temporary folder is removed and `path` is untouched. Modes follow the umask, as mkdir's do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the folder is for others to read, as mkdir's are
    try:
        yield tmp
        if replace and path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
            return
        try:
            os.replace(tmp, path)
        except OSError:
            if not (exist_ok and path.is_dir()):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ reading
class UserError(ValueError):
    """Bad input from the user: printed by the `ettin` command as one clear line, exit code 2 (a ValueError, so that
    callers catching ValueError see it too)."""


def read_json(path: str | Path) -> Any:
    """A JSON file's value; a missing file is a FileNotFoundError and bad JSON a ValueError, both naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None


def read_jsonl(path: str | Path, required: Sequence[str] = (), error: type[Exception] = UserError) -> list[dict]:
    """The JSON objects of a JSONL file, one per non-blank line, each with its line number under "_line". A line
    that is not UTF-8, not JSON, not an object or without one of the `required` fields raises `error`, naming the
    file and line; a missing file is a FileNotFoundError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{path}:{line_no}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{line_no}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise error(f"{path}:{line_no}: expected a JSON object")
            missing = [k for k in required if k not in row]
            if missing:
                raise error(f"{path}:{line_no}: missing field(s) {missing}")
            rows.append(row | {"_line": line_no})
    return rows


def read_tokenizer(path: str | Path):
    """(`tokenizers.Tokenizer`, the file it came from) of a tokenizer.json, or of a folder holding one."""
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no tokenizer.json")
    try:
        return Tokenizer.from_file(str(file)), file
    except Exception as e:  # the library raises a bare Exception on bad JSON
        raise ValueError(f"{file}: not a Hugging Face tokenizer.json ({e})") from e


def is_hub_id(text: str) -> bool:
    """Whether a model argument that is no local path reads as a Hugging Face hub id: `owner/name`, valid by
    huggingface_hub's own rule, and not path-like (./x, /x, ~/x, or an owner that is a folder here, as in
    runs/does-not-exist). A bare name is taken for a missing local folder."""
    text = str(text)
    if text.startswith((".", "/", "~")) or text.count("/") != 1 or Path(text.split("/", 1)[0]).is_dir():
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off in this environment (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE set
    to a true value, as huggingface_hub and datasets read them): the one rule every hub download here asks."""
    return any(os.environ.get(k, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def results_file(out_dir: str | Path, run: str, checkpoint: str, model_path: str | Path) -> Path:
    """Where one model's results go: <out>/<run>/<checkpoint>.json; when that file holds another model's results (two
    runs of one name, e.g. the final/ folders of two pairs' encoders), <out>/<run>-<digest of this model's
    path>/<checkpoint>.json instead, so results of different models never collide. A model is its absolute, resolved
    path, which results record (`model.path`): the same model named from another working directory, relatively or
    absolutely, finds its file. (A relative `model.path`, written before, is read against the working directory.)"""
    path = Path(out_dir) / run / f"{checkpoint}.json"
    try:
        held = read_json(path).get("model", {}).get("path") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        held = None  # a damaged file is this model's to rebuild
    here = Path(model_path).resolve()
    if held is None or Path(held).resolve() == here:
        return path
    digest = hashlib.sha256(str(here).encode()).hexdigest()[:8]
    return Path(out_dir) / f"{run}-{digest}" / f"{checkpoint}.json"
