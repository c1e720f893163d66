"""Before any long work: every file a recipe names exists (`ettin train --dry-run` runs the same checks).

`load_recipe` validates values (the shipped recipes must load on a machine without their data); this
checks the files behind them, relative to the working directory as training reads them:

  model.init_from   a local checkpoint folder (meta.json) or Hugging Face folder (config.json), whose tokenizer
                    (the run's tokenizer.json, or the folder's) is the one data.tokenizer names: the same
                    text to the same ids (`ettin.data.tokenizer.encoding_sha256`), not merely as many ids
  data.*            the data's own check, one call: `ettin.data.check.check_data` (tokenizer, sources to prepare,
                    each phase's mixture and its prepared shards)

Every problem is reported at once (a RecipeError naming the recipe file and the key); the return value is
one line per input for the dry run.
"""

from __future__ import annotations

from pathlib import Path

from ettin.data.check import check_data, has_tokenizer, wanted_tokenizer
from ettin.train.recipe import Recipe, RecipeError

_SHOWN = 20  # problems listed in full; the rest are counted


def check_inputs(recipe: Recipe) -> list[str]:
    problems: list[str] = []
    found: list[str] = []
    _check_init(recipe, problems, found)
    data = check_data(recipe)  # the data's own check (ettin.data.check): tokenizer, sources, mixtures, shards
    problems += data.problems
    found += data.found
    if problems:
        shown = problems[:_SHOWN] + ([f"... and {len(problems) - _SHOWN} more"] if len(problems) > _SHOWN else [])
        raise RecipeError(f"{recipe.source_file}: inputs missing or not matching (paths are relative to {Path.cwd()}):\n  "
                          + "\n  ".join(shown))
    return found


def _check_init(recipe: Recipe, problems: list[str], found: list[str]) -> None:
    init = recipe.model.init_from
    if not init:
        return
    path = Path(init).expanduser()
    if (path / "meta.json").is_file():
        found.append(f"model.init_from: checkpoint {path}")
        _check_init_tokenizer(recipe, path, problems, found)
    elif (path / "config.json").is_file():
        found.append(f"model.init_from: Hugging Face folder {path}")
        _check_init_tokenizer(recipe, path, problems, found)
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


def init_tokenizer(path: str | Path) -> Path | None:
    """The tokenizer a starting point was trained with: a checkpoint's (its run's tokenizer.json) or a Hugging Face
    folder's tokenizer.json; None when it has none (a model trained on synthetic ids)."""
    path = Path(path)
    if (path / "meta.json").is_file():
        from ettin.train.checkpoint import find_tokenizer

        return find_tokenizer(path)
    file = path / "tokenizer.json"
    return file if file.is_file() else None


def _check_init_tokenizer(recipe: Recipe, init: Path, problems: list[str], found: list[str]) -> None:
    """The data must be tokenized as the starting model was: compare what maps text to ids, not the sizes."""
    data = recipe.data
    if data.source != "prepared":
        return
    own = init_tokenizer(init)
    if own is None:
        found.append(f"model.init_from: {init} has no tokenizer beside it; not compared with data.tokenizer")
        return
    wanted = wanted_tokenizer(recipe)
    fix = f"tokenize the data with the model's own: data.tokenizer={own}"
    if not has_tokenizer(wanted):
        if data.prepare is not None and data.prepare.tokenizer_vocab_size:
            problems.append(f"model.init_from: {init} was trained with the tokenizer {own}, but data.tokenizer "
                            f"{wanted} would be a new one, trained by data.prepare; {fix}")
        return  # a missing tokenizer is the data check's problem
    from ettin.data.tokenizer import encoding_sha256, load_tokenizer

    mine, theirs = load_tokenizer(own), load_tokenizer(wanted)
    if encoding_sha256(mine.tokenizer) != encoding_sha256(theirs.tokenizer):
        sizes = (mine.vocab_size, theirs.vocab_size)
        same = f"; both have {sizes[0]:,} ids, which does not make them one tokenizer" if sizes[0] == sizes[1] else ""
        problems.append(f"model.init_from: {init} was trained with the tokenizer {own}, but data.tokenizer is "
                        f"{wanted}, a different tokenizer: the same text gets other ids{same}; {fix} "
                        "(and prepare the shards with it)")
    else:
        found.append(f"model.init_from: its tokenizer {own} = data.tokenizer {wanted}")


