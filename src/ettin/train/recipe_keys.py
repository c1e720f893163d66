"""The keys a recipe override may name, checked before it is applied, so that a typo on the command line is blamed
on the override (not on the recipe file) with the nearest known key: ``train.lrr=1e-3`` -> ``did you mean
train.lr?``. Read from the recipe dataclasses themselves (`ettin.train.recipe_types`), so the list never drifts."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from ettin.config import ModelConfig
from ettin.train.recipe_checks import SET_ELSEWHERE
from ettin.train.recipe_types import Recipe
from ettin.train.recipe_values import is_setting


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if is_setting(f)}


def _unwrap(hint: Any) -> Any:
    """Optional[X] -> X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def unknown_key(key: str, raw: dict[str, Any]) -> str | None:
    """Why `key` (dotted, as an override names it) is not a recipe setting, with the nearest one; None when it is.
    `raw`: the recipe as read (phases named by index or name). Mappings of free keys (data.mixtures, data.vars) take
    any key; model.overrides takes the fields of ettin.config.ModelConfig but those the recipe sets elsewhere."""
    parts = key.split(".")
    node: Any = Recipe
    done: list[str] = []
    for i, part in enumerate(parts):
        where = ".".join(done) or "a recipe"
        if typing.get_origin(node) in (list, tuple):  # phases: an index or a phase's name
            phases = raw.get("phases") if isinstance(raw.get("phases"), list) else []
            names = [str(p.get("name")) for p in phases if isinstance(p, dict)]
            if not (part.isdigit() and int(part) < len(phases)) and part not in names:
                return _suggest(f"{where} has no item {part!r}", part, names, done, f"0-{len(phases) - 1}, "
                                + ", ".join(names) if phases else "none")
            node = typing.get_args(node)[0]
        elif dataclasses.is_dataclass(node):
            fields = _fields(node)
            if node is ModelConfig:
                fields = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
                if part in SET_ELSEWHERE:
                    return f"{where}.{part}: {SET_ELSEWHERE[part]}"
            if part not in fields:
                return _suggest(f"{where} has no field {part!r}", part, list(fields), done, ", ".join(fields))
            node = _unwrap(fields[part])
            if done == ["model"] and part == "overrides":
                node = ModelConfig
        else:
            return None  # inside a mapping of free keys or a value: anything goes
        done.append(part)
        if i == len(parts) - 1:
            return None
    return None


def _suggest(problem: str, part: str, known: list[str], done: list[str], listing: str) -> str:
    near = difflib.get_close_matches(part, known, n=1, cutoff=0.6)
    hint = f"; did you mean {'.'.join([*done, near[0]])}?" if near else ""
    return f"{problem}{hint} (known: {listing})"
