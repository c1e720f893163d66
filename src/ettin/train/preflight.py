"""Before any long work: every file a recipe names exists (`ettin train --dry-run` runs the same checks).

`load_recipe` validates values (the shipped recipes must load on a machine without their data); this
checks the files behind them, relative to the working directory as training reads them:

  model.init_from   a local checkpoint folder (meta.json) or Hugging Face folder (config.json)
  data.tokenizer    a tokenizer.json (or a folder holding one), unless data.prepare trains it
  data.prepare      each source to prepare exists (hub datasets are not checked: that needs the network)
  data.mixtures     each source of each phase's mixture is a prepared dataset holding its `subset`, or is
                    data.prepare.out and one of the sources that will be prepared into it

Every problem is reported at once (a RecipeError naming the recipe file and the key); the return value is
one line per input for the dry run.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ettin.train.recipe import Recipe, RecipeError

_SHOWN = 20  # problems listed in full; the rest are counted


def check_inputs(recipe: Recipe) -> list[str]:
    problems: list[str] = []
    found: list[str] = []
    _check_init(recipe, problems, found)
    if recipe.data.source == "prepared":
        prepared_names = _check_prepare(recipe, problems, found)
        _check_tokenizer(recipe, problems, found)
        _check_mixtures(recipe, prepared_names, problems, found)
    if problems:
        shown = problems[:_SHOWN] + ([f"... and {len(problems) - _SHOWN} more"] if len(problems) > _SHOWN else [])
        raise RecipeError(f"{recipe.source_file}: inputs missing (paths are relative to {Path.cwd()}):\n  "
                          + "\n  ".join(shown))
    return found


def _check_init(recipe: Recipe, problems: list[str], found: list[str]) -> None:
    init = recipe.model.init_from
    if not init:
        return
    path = Path(init).expanduser()
    if (path / "meta.json").is_file():
        found.append(f"model.init_from: checkpoint {path}")
    elif (path / "config.json").is_file():
        found.append(f"model.init_from: Hugging Face folder {path}")
    elif (path / "checkpoints").is_dir():
        from ettin.train.checkpoint import latest_checkpoint

        latest = latest_checkpoint(path)
        hint = f"; name one of its checkpoints, e.g. {latest}" if latest else " without checkpoints"
        problems.append(f"model.init_from: {init} is a run folder{hint}")
    elif path.exists():
        problems.append(f"model.init_from: {init} is neither a checkpoint (meta.json) nor a Hugging Face folder "
                        "(config.json)")
    else:
        problems.append(f"model.init_from: {init} does not exist (a local checkpoint or Hugging Face folder; "
                        "`ettin convert-objective CHECKPOINT --to mlm|clm --out DIR` makes one from a finished run)")


def _check_prepare(recipe: Recipe, problems: list[str], found: list[str]) -> set[str]:
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


def _check_tokenizer(recipe: Recipe, problems: list[str], found: list[str]) -> None:
    data = recipe.data
    path = Path(str(data.tokenizer)).expanduser()
    usable = path.is_file() or (path / "tokenizer.json").is_file() or (
        (path / "vocab.json").is_file() and (path / "merges.txt").is_file())
    if usable:
        found.append(f"data.tokenizer: {path}")
    elif data.prepare is not None and data.prepare.tokenizer_vocab_size:
        found.append(f"data.tokenizer: {path} (to be trained: {data.prepare.tokenizer_vocab_size} tokens)")
    elif path.exists():
        problems.append(f"data.tokenizer: {path} holds no tokenizer.json (or vocab.json + merges.txt)")
    else:
        problems.append(f"data.tokenizer: {path} does not exist (or set data.prepare.tokenizer_vocab_size to train one)")


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


def _check_mixtures(recipe: Recipe, prepared_names: set[str], problems: list[str], found: list[str]) -> None:
    from ettin.data.mixture import MixtureError
    from ettin.data.ready import resolve_mixture

    prep_out = Path(recipe.data.prepare.out).resolve() if recipe.data.prepare else None
    checked: dict[Path, str | None] = {}  # dataset folder -> problem (None: fine)
    contents: dict[Path, set[str]] = {}  # dataset folder -> the names of its sources
    seen_mixtures: set[str] = set()
    datasets = 0
    with _environment(recipe.data.vars):
        for i, phase in enumerate(recipe.phases):
            if phase.mixture in seen_mixtures:
                continue
            seen_mixtures.add(phase.mixture)
            where = f"phases.{i} ({phase.name}): mixture {phase.mixture}"
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
                    checked[key], contents[key] = _dataset(path, key == prep_out)
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


def _dataset(path: Path, to_prepare: bool) -> tuple[str | None, set[str]]:
    """(problem or None, source names) of a prepared dataset folder; data.prepare finishes its own folder."""
    from ettin.data.shards import read_manifest

    try:
        manifest = read_manifest(path)
    except (FileNotFoundError, ValueError) as e:
        return str(e), set()
    names = {s.get("name") for s in manifest.get("sources", []) if s.get("name")}
    if not manifest.get("complete") and not to_prepare:
        return f"{path}: preparation did not finish; re-run `ettin data prepare` with the same arguments", names
    return None, names
