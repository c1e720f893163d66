"""Training recipes: YAML loading with `extends`, and dotted overrides (the types: `ettin.train.recipe_types`).

A recipe is one YAML file: the model size, the data, the optimiser settings and a list of phases.
Everything is validated before any work starts (`ettin.train.recipe_checks`); a bad value raises `RecipeError` naming
the file and the field (``recipes/tiny.yaml: train.lr: expected a number, got 'fast'``).

Token counts accept suffixes: ``1.7T``, ``250B``, ``3M``, ``64k`` (powers of ten), or plain integers.
Inheritance: ``extends: 150m.yaml`` deep-merges this file onto that one (mappings merge; lists such as
``phases`` are replaced, not merged); ``extends: [150m.yaml, cross/base.yaml]`` merges the bases in order,
then this file. Overrides use dotted paths: ``train.lr=1e-3``, ``phases.1.tokens=2M``, ``--model.size=17m``;
a dotted key in a recipe file (``phases.cross.tokens: 2M``) is such an override of what it extends.
A key the recipe's objective cannot use (a decoder's ``mlm_probability``) is an error.

Per-objective values: where the published recipe differs by objective (the decay phase's local RoPE theta of
some sizes), a value is tagged ``!objective``: ``local_rope_theta: !objective {mlm: 160000, clm: 10000}``
(`ettin.train.recipe_values`): each model takes its objective's (`Recipe.for_objective`; `ettin pair` resolves the
encoder's and the decoder's), from the typed recipe, so that a change made to it (`dataclasses.replace`) stays. Only
the tag makes a per-objective value: a mapping of free keys (``data.mixtures``) may name a mixture mlm. The resolved
recipe (run folders' recipe.yaml) holds plain values. A loaded recipe is frozen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ettin.data.ready import unusable_keys
from ettin.train.recipe_checks import RecipeError
from ettin.train.recipe_keys import unknown_key
from ettin.train.recipe_types import (  # noqa: F401  (the recipe's types, importable from here as before)
    DataSection,
    ModelSection,
    PhaseSection,
    PrepareSection,
    Recipe,
    TrainSection,
    recipe_from_dict,
    usable,
)
from ettin.train.recipe_values import RecipeLoader, parse_tokens, resolve_objective  # noqa: F401

# ---- loading -------------------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file, apply dotted overrides, validate; raises RecipeError naming file and field."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    raw = _read_with_extends(path, seen=())
    unusable = unusable_keys(raw)  # what the file says, before the command line's overrides
    if unusable:
        raise RecipeError(f"{path}: {unusable[0]}; remove it")
    for text in overrides or []:
        apply_override(raw, text, "command line")
    try:
        return recipe_from_dict(raw, str(path))
    except RecipeError as e:  # a bad value the command line gave is the command line's, not the file's
        for text in overrides or []:
            key = text.removeprefix("--").split("=", 1)[0]
            if str(e).startswith(f"{path}: {key}:"):
                raise RecipeError(f"the command line ({text}, on {path}): {str(e)[len(str(path)) + 2:]}") from None
        raise


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=RecipeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    return data


def _read_with_extends(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    data = _read_yaml(path)
    _anchor_mixture_paths(data, path)
    bases = data.pop("extends", None)
    dotted = {k: data.pop(k) for k in [k for k in data if "." in str(k)]}
    merged: dict[str, Any] = {}
    for base in [] if bases is None else bases if isinstance(bases, list) else [bases]:
        base_path = (path.parent / str(base)).resolve()
        if base_path in seen or len(seen) > 4:
            raise RecipeError(f"{path}: extends: circular or too deep ({base})")
        if not base_path.is_file():
            raise RecipeError(f"{path}: extends: {base} not found")
        merged = _deep_merge(merged, _read_with_extends(base_path, (*seen, base_path)))
    merged = _deep_merge(merged, data)
    for key, value in dotted.items():
        set_path(merged, str(key), value, str(path))
    return merged


def _anchor_mixture_paths(data: dict[str, Any], path: Path) -> None:
    """Mixture files are named relative to the recipe that names them (which may be an `extends` base):
    rewrite them relative to the working directory so they stay valid after merging."""
    mixtures = (data.get("data") or {}).get("mixtures") if isinstance(data.get("data"), dict) else None
    if not isinstance(mixtures, dict):
        return
    for key, spec in mixtures.items():
        if isinstance(spec, str) and not Path(spec).is_absolute() and (path.parent / spec).exists():
            mixtures[key] = os.path.relpath(path.parent / spec)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(raw: dict[str, Any], text: str, source: str = "<override>") -> None:
    """``train.lr=1e-3`` (a leading ``--`` is allowed); the value is parsed as YAML."""
    body = text.removeprefix("--")
    if "=" not in body:
        raise RecipeError(f"{source}: override {text!r}: expected key.path=value")
    key, value_text = body.split("=", 1)
    problem = unknown_key(key, raw)
    if problem:
        raise RecipeError(f"{source}: override {text}: {problem}")
    try:
        value = yaml.load(value_text, Loader=RecipeLoader)
    except yaml.YAMLError:
        value = value_text
    set_path(raw, key, value, source)


def set_path(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    """raw[key] = value for a dotted key (``train.lr``, ``phases.1.tokens``, ``phases.decay.tokens``)."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, key, source)
        else:
            if not isinstance(node.get(part, {}), (dict, list)):
                raise RecipeError(f"{source}: override {key}: {'.'.join(parts[: i + 1])} is not a section")
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        index = int(last) if last.isdigit() else -1
        if not 0 <= index < len(node):
            raise RecipeError(f"{source}: override {key}: no item {last} (the list has {len(node)})")
        node[index] = value
    else:
        node[last] = value


def _list_item(items: list, part: str, key: str, source: str) -> Any:
    if part.isdigit() and int(part) < len(items):
        return items[int(part)]
    for item in items:  # phases may be addressed by name: phases.decay.tokens=1M
        if isinstance(item, dict) and item.get("name") == part:
            return item
    raise RecipeError(f"{source}: override {key}: no list item {part!r}")
