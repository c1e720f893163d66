"""How a recipe's values are read: token counts (``1.7T``), the per-objective marker (``!objective``), and the typed
conversion of a mapping into the recipe's dataclasses (`convert`), each error naming the file and the field.

A leaf of the recipe modules (it imports none of them but `recipe_checks`), so the types (`ettin.train.recipe_types`),
the loader (`ettin.train.recipe`) and the override check (`ettin.train.recipe_keys`) all build on it.

Per-objective values: where the published recipe differs by objective (the decay phase's local RoPE theta of some
sizes), a value is tagged ``!objective``: ``local_rope_theta: !objective {mlm: 160000, clm: 10000}``. The tag, not
the keys, makes it one: a mapping of free keys (``data.mixtures``, ``data.vars``) may have keys named mlm or clm.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from ettin.config import OBJECTIVES
from ettin.train.recipe_checks import RecipeError

_SUFFIX = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
TOKEN_FIELDS = {"tokens", "warmup_tokens", "decay_tokens", "save_every_tokens", "batch_size_warmup_tokens"}
TAG = "!objective"


def parse_tokens(value: Any) -> int:
    """``"1.7T"`` -> 1_700_000_000_000; ints pass through; ``"2_000"`` works too."""
    if isinstance(value, bool):
        raise ValueError(f"expected a token count, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "").removesuffix("tok")
        scale = _SUFFIX.get(text[-1:], None)
        try:
            number = float(text[:-1]) * scale if scale else float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number) and number >= 0:
            return int(round(number))
    raise ValueError(f"expected a token count such as 250B, 4M or 65536, got {value!r}")


def is_setting(f: dataclasses.Field) -> bool:
    """Whether a recipe dataclass field is a setting (a file may set it) or bookkeeping (where it came from)."""
    return f.metadata.get("setting", True)


# ---- per-objective values ------------------------------------------------------------------------


@dataclass(frozen=True)
class PerObjective:
    """A value that differs by objective, ``!objective {mlm: a, clm: b}`` in a recipe file."""

    values: dict[str, Any]

    def __post_init__(self) -> None:
        if not self.values or not set(self.values) <= set(OBJECTIVES):
            raise ValueError(f"{TAG} maps objectives ({', '.join(OBJECTIVES)}) to values, got {self.values!r}")


class RecipeLoader(yaml.SafeLoader):
    """YAML's safe loader with the ``!objective`` tag (recipe files and the command line's override values)."""


def _construct(loader: RecipeLoader, node: yaml.Node) -> PerObjective:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(None, None, f"{TAG} takes a mapping such as {{mlm: 1, clm: 2}}",
                                                node.start_mark)
    try:
        return PerObjective(loader.construct_mapping(node, deep=True))
    except ValueError as e:
        raise yaml.constructor.ConstructorError(None, None, str(e), node.start_mark) from None


RecipeLoader.add_constructor(TAG, _construct)


def per_objective_paths(node: Any, path: tuple = ()) -> list[tuple]:
    """The key paths of the per-objective values in a recipe mapping (list items by index)."""
    if isinstance(node, PerObjective):
        return [path]
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return [p for k, v in items for p in per_objective_paths(v, (*path, k))]


def resolve_objective(node: Any, objective: str, source: str, where: str = "") -> Any:
    """`node` with every per-objective value replaced by `objective`'s: a pure function of (mapping, objective)."""
    if isinstance(node, PerObjective):
        if objective not in node.values:
            raise RecipeError(f"{source}: {where}: a per-objective value without one for {objective!r} "
                              f"(it has {sorted(node.values)})")
        return node.values[objective]
    if isinstance(node, dict):
        return {k: resolve_objective(v, objective, source, f"{where}.{k}".lstrip(".")) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_objective(v, objective, source, f"{where}.{i}") for i, v in enumerate(node)]
    return node


def find(node: Any, path: tuple) -> tuple[Any, Any] | None:
    """(container, key) of a key path in a recipe mapping (list items by index, phases also by name); None: gone."""
    for i, step in enumerate(path):
        if isinstance(node, list) and isinstance(step, str):
            step = next((j for j, item in enumerate(node) if isinstance(item, dict) and item.get("name") == step), -1)
        if not (0 <= step < len(node) if isinstance(node, list) else isinstance(node, dict) and step in node):
            return None
        if i == len(path) - 1:
            return node, step
        node = node[step]
    return None


# ---- typed conversion ----------------------------------------------------------------------------


def convert(cls: type, data: Any, where: str, source: str) -> Any:
    """An instance of the recipe dataclass `cls` from a mapping of its settings, each value checked and coerced."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: {where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if is_setting(f)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecipeError(f"{source}: {where}: unknown field(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}".lstrip("."), source)
    return cls(**kwargs)


def _expected(source: str, where: str, what: str, value: Any) -> RecipeError:
    hint = ""
    if isinstance(value, dict) and value and set(value) <= set(OBJECTIVES):
        hint = f" (a value per objective is tagged: {TAG} {{mlm: ..., clm: ...}})"
    return RecipeError(f"{source}: {where}: expected {what}, got {value!r}{hint}")


def _coerce(hint: Any, value: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _coerce(hint, value, where, source)
    if where.split(".")[-1] in TOKEN_FIELDS:
        try:
            return parse_tokens(value)
        except ValueError as e:
            raise RecipeError(f"{source}: {where}: {e}") from None
    if dataclasses.is_dataclass(hint):
        return convert(hint, value, where, source)
    if origin is tuple and args[-1:] == (Ellipsis,):  # a sequence of any length, held as a tuple (phases)
        if not isinstance(value, (list, tuple)):
            raise _expected(source, where, "a list", value)
        return tuple(_coerce(args[0], v, f"{where}.{i}", source) for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _expected(source, where, f"{len(args)} values", value)
        return tuple(_coerce(a, v, f"{where}.{i}", source) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or hint is Any:
        if origin is dict and not isinstance(value, dict):
            raise _expected(source, where, "a mapping", value)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _expected(source, where, "true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _expected(source, where, "an integer", value)
        return value
    if hint is float:
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _expected(source, where, "a number", value)
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise _expected(source, where, "a string", value)
        return str(value)
    return value
