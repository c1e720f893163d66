"""Whether a recipe's data is ready, and if not, what is wrong, by file and key: `check_data(recipe)`, one call for
the trainer's preflight (`ettin.train.preflight`, also `ettin train --dry-run`); `ettin.data.ready.ensure_data`
makes what is missing. Checked relative to the working directory, as training reads them:

  data.tokenizer    a tokenizer.json (or a folder holding one), unless data.prepare trains it
  data.prepare      each source to prepare exists (hub datasets are not checked: that needs the network)
  data.mixtures     each source of each phase's mixture is a prepared dataset holding its `subset`, or is
                    data.prepare.out and one of the sources that will be prepared into it, tokenized with
                    data.tokenizer (the same text to the same ids)

The recipe is read, never imported: any object with the fields of `ettin.train.recipe.Recipe` works.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ettin.data.ready import resolve_mixture


@dataclass
class DataCheck:
    """What `check_data` found: `problems`, one "recipe key: what is wrong" each (a mixture's source named by its
    file and entry), and `found`, one line per input for the dry run."""

    problems: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems


def check_data(recipe) -> DataCheck:
    """Every problem of a recipe's data at once (synthetic data has none)."""
    check = DataCheck()
    if recipe.data.source == "prepared":
        prepared_names = _check_prepare(recipe, check.problems, check.found)
        tokenizer = _check_tokenizer(recipe, check.problems, check.found)
        _check_mixtures(recipe, prepared_names, tokenizer, check.problems, check.found)
    return check


def has_tokenizer(path: Path) -> bool:
    """Whether a path is a tokenizer (a tokenizer.json, or a folder holding one or vocab.json + merges.txt)."""
    return path.is_file() or (path / "tokenizer.json").is_file() or (
        (path / "vocab.json").is_file() and (path / "merges.txt").is_file())


def _check_prepare(recipe, problems: list[str], found: list[str]) -> set[str]:
    """The names of the sources data.prepare will put into data.prepare.out."""
    prep = recipe.data.prepare
    if prep is None:
        return set()
    from ettin.data.sources import DataError, SourceSpec, expand_files

    names = set()
    for i, text in enumerate(prep.sources):
        try:
            spec = SourceSpec.parse(text)
        except DataError as e:
            problems.append(f"data.prepare.sources.{i}: {e}")
            continue
        names.add(spec.name)
        if spec.format == "hf" and not os.path.exists(spec.path):
            continue  # a hub dataset: not checked offline
        try:
            if spec.resolved_format() != "mds":
                expand_files(spec)
        except (FileNotFoundError, DataError) as e:
            problems.append(f"data.prepare.sources.{i}: {e}")
    found.append(f"data.prepare: {len(prep.sources)} source(s) for {prep.out}")
    return names


def wanted_tokenizer(recipe) -> Path:
    """data.tokenizer as a local path (a hub id: its files in the Hugging Face cache, fetched when online); a hub id
    that cannot be had is left as written, for `_check_tokenizer` to report."""
    from ettin.data.tokenizer import fetch_tokenizer

    try:
        return fetch_tokenizer(recipe.data.tokenizer)
    except FileNotFoundError:
        return Path(str(recipe.data.tokenizer))


def _check_tokenizer(recipe, problems: list[str], found: list[str]) -> Path:
    """data.tokenizer checked; its local path (`wanted_tokenizer`'s), fetched once for the whole check."""
    from ettin.data.tokenizer import fetch_tokenizer

    data = recipe.data
    try:
        path = fetch_tokenizer(data.tokenizer)
    except FileNotFoundError as e:
        problems.append(f"data.tokenizer: {e}")
        return Path(str(data.tokenizer))
    if has_tokenizer(path):
        hub = str(path) != str(Path(str(data.tokenizer)).expanduser())
        found.append(f"data.tokenizer: {data.tokenizer} (hub id; {path})" if hub else f"data.tokenizer: {path}")
    elif data.prepare is not None and data.prepare.tokenizer_vocab_size:
        found.append(f"data.tokenizer: {path} (to be trained: {data.prepare.tokenizer_vocab_size} tokens)")
    elif path.exists():
        problems.append(f"data.tokenizer: {path} holds no tokenizer.json (or vocab.json + merges.txt)")
    else:
        problems.append(f"data.tokenizer: {path} does not exist (or set data.prepare.tokenizer_vocab_size to train one)")
    return path


@contextlib.contextmanager
def _environment(extra: dict[str, str]):
    """data.vars over the environment, as the loader applies them."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update({k: str(v) for k, v in extra.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_mixtures(recipe, prepared_names: set[str], wanted: Path, problems: list[str], found: list[str]) -> None:
    from ettin.data.mixture import MixtureError
    from ettin.data.order import order_folders, order_spec
    from ettin.io import UserError

    prep_out = Path(recipe.data.prepare.out).resolve() if recipe.data.prepare else None
    checked: dict[Path, str | None] = {}  # dataset folder -> problem (None: fine)
    contents: dict[Path, set[str]] = {}  # dataset folder -> the names of its sources
    seen_mixtures: set[str] = set()
    datasets = 0
    tokenizer = None
    if has_tokenizer(wanted):
        from ettin.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(wanted)
    with _environment(recipe.data.vars):
        for i, phase in enumerate(recipe.phases):
            if phase.mixture in seen_mixtures:
                continue
            seen_mixtures.add(phase.mixture)
            where = f"phases.{i} ({phase.name}): mixture {phase.mixture}"
            order = order_spec(recipe.data.mixtures.get(phase.mixture))
            if order is not None:  # the published batch order, replayed (ettin.data.order)
                try:
                    folders = order_folders(order, recipe.source_file, phase.mixture)
                    found.append(f"{where}: the published order in {', '.join(map(str, folders))}")
                except UserError as e:
                    problems.append(f"{where}: {e}")
                continue
            try:
                mixture = resolve_mixture(recipe, phase)
            except (MixtureError, FileNotFoundError, ValueError) as e:
                problems.append(f"{where}: {e}")
                continue
            for spec in mixture.sources:
                label = f"{where}: {mixture.file}: sources[{spec.name}]"
                try:
                    path = mixture.resolved_path(spec)
                except MixtureError as e:
                    problems.append(f"{label}: {e}")
                    continue
                if prep_out is not None and path.resolve() == prep_out and not (path / "manifest.json").is_file():
                    if spec.subset is not None and spec.subset not in prepared_names:
                        problems.append(f"{label}.subset: {spec.subset!r} is not among data.prepare.sources "
                                        f"({', '.join(sorted(prepared_names)) or 'none'})")
                    continue
                key = path.resolve()
                if key not in checked:
                    checked[key], contents[key] = _dataset(path, key == prep_out, tokenizer)
                    datasets += checked[key] is None
                    if checked[key]:  # once per folder, however many sources read it
                        problems.append(f"{label}.path: {checked[key]}")
                if checked[key]:
                    continue
                names = contents[key] | (prepared_names if key == prep_out else set())
                if spec.subset is not None and spec.subset not in names:
                    problems.append(f"{label}.subset: {spec.subset!r} is not in {path} "
                                    f"(it has: {', '.join(sorted(n for n in names if n)) or 'none'})")
    found.append(f"data.mixtures: {len(seen_mixtures)} mixture(s), {datasets} prepared dataset(s) found")


def _dataset(path: Path, to_prepare: bool, tokenizer=None) -> tuple[str | None, set[str]]:
    """(problem or None, source names) of a prepared dataset folder; data.prepare finishes its own folder.
    `tokenizer`: data.tokenizer's TokenizerInfo (None: not checked), which must be the one the shards were made with."""
    from ettin.data.shards import read_manifest

    try:
        manifest = read_manifest(path)
    except (FileNotFoundError, ValueError) as e:
        return str(e), set()
    names = {s.get("name") for s in manifest.get("sources", []) if s.get("name")}
    if not manifest.get("complete") and not to_prepare:
        return f"{path}: preparation did not finish; re-run `ettin data prepare` with the same arguments", names
    if tokenizer is not None and not to_prepare and not _same_tokenizer(manifest.get("tokenizer") or {}, tokenizer):
        made = manifest.get("tokenizer") or {}
        return (f"{path}: tokenized with {made.get('path')} (sha256 {str(made.get('sha256'))[:12]}), not with "
                f"data.tokenizer {tokenizer.path} ({tokenizer.sha256[:12]}): the ids would mean other tokens; "
                f"prepare the shards with data.tokenizer (`ettin data prepare --tokenizer {tokenizer.path}`)"), names
    return None, names


def _same_tokenizer(made: dict, tokenizer) -> bool:
    """Whether shards made with the tokenizer a manifest records encode as `tokenizer` does: the same file content,
    or the recorded file (when it is still there) mapping text to the same ids."""
    if made.get("sha256") in (None, tokenizer.sha256):
        return True
    from ettin.data.tokenizer import encoding_sha256

    recorded = Path(str(made.get("path") or ""))
    try:
        return recorded.is_file() and encoding_sha256(recorded) == encoding_sha256(tokenizer.tokenizer)
    except (OSError, ValueError):
        return False
