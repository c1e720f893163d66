"""Phase mixtures: which prepared sources a phase reads, in what proportion, and the seeded draw order.

A mixture is a small YAML file (presets in recipes/data/):

    name: demo_pretrain
    phase: pretrain                      # default phase name (the loader's `phase` wins)
    total_tokens: 2.0e+6                 # optional phase budget; default: every source's tokens once
    draw: budget                         # or `once`: every instance of every source once an epoch, no weights
    instances: {mode: pack}              # optional: how documents become instances (InstanceConfig
                                         # fields); the loader's `instances` argument wins
    sources:
      - name: wikipedia                  # unique; keys the source's own permutation
        path: ${ETTIN_DATA:-runs/data}/wikipedia   # a prepared shard folder (`ettin data prepare`)
        subset: wikipedia_vital_summaries_en      # optional: one source inside a multi-source folder
        weight: 3                        # or `percent: 49.1`, or `tokens: 837.2e+9` (one kind per file)
        raw: ../shared/data/pretrain/wikipedia_vital_summaries_en.jsonl   # optional, informational
        hub: jhu-clsp/ettin-pretraining-data                               # optional, informational

Weights and percents are shares of the phase's *tokens* (as the reference table is), normalised to 1.
Source s gets T_s = round(share_s * total_tokens / mean instance length of s) draws (at least 1);
with `tokens:` budgets, T_s = round(tokens_s / mean length). A source is downsampled (a seeded random
subset) when T_s < its instances, and upsampled when T_s > its instances: draw k of source s is
instance perm_{s, k // n_s}(k % n_s), a fresh permutation per source epoch.

The phase's order is a permutation of the T = sum T_s draws, keyed by (seed, phase, mixture epoch);
position p of the phase is draw perm(p % T) of mixture epoch p // T (a new epoch continues every
source's draws, so it does not repeat the first). Permutations are keyed Feistel bijections with cycle
walking: any position maps to its instance in O(1) time and memory, for any data size.
With `draw: once` (what `ettin data prepare-tree` writes for the published datasets, whose mixture was sampled into
the data) sources give no weight: T_s is the source's instance count, so an epoch reads every instance once.
Paths expand `${VAR}` and `${VAR:-default}` and are relative to the current directory.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import yaml

from ettin.data.instances import InstanceConfig
from ettin.data.keyed import derive_key, permute

WEIGHT_KINDS = ("weight", "percent", "tokens")
_SOURCE_KEYS = {"name", "path", "subset", "raw", "hub", "notes", *WEIGHT_KINDS}
_MIXTURE_KEYS = {"name", "phase", "total_tokens", "draw", "sources", "instances", "notes", "description"}
DRAWS = ("budget", "once")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class MixtureError(ValueError):
    """A mixture file or field is invalid; the message names the file, line and field."""


@dataclass
class MixtureSource:
    """One weighted entry of a mixture: a prepared shard folder and its share (ettin.data.sources.SourceSpec is
    something else: where raw documents come from)."""

    name: str
    path: str
    weight: float | None = None
    percent: float | None = None
    tokens: float | None = None
    subset: str | None = None
    raw: str | None = None
    hub: str | None = None
    notes: str | None = None

    @property
    def kind(self) -> str | None:
        """weight | percent | tokens; None in a `draw: once` mixture."""
        return next((k for k in WEIGHT_KINDS if getattr(self, k) is not None), None)

    @property
    def amount(self) -> float:
        return float(getattr(self, self.kind))


@dataclass
class Mixture:
    name: str
    sources: list[MixtureSource]
    phase: str | None = None
    total_tokens: float | None = None
    file: str = "<dict>"
    notes: str | None = None
    instances: InstanceConfig | None = None  # how this phase's documents become instances (loader default)
    draw: str = "budget"  # budget: T_s from the weights; once: every instance once an epoch

    @property
    def kind(self) -> str | None:
        return self.sources[0].kind

    def shares(self) -> np.ndarray:
        """Token share of each source (sums to 1)."""
        amounts = np.array([s.amount for s in self.sources], dtype=np.float64)
        return amounts / amounts.sum()

    def resolved_path(self, source: MixtureSource) -> Path:
        return Path(expand_vars(source.path, f"{self.file}: sources[{source.name}].path"))


def expand_vars(text: str, where: str) -> str:
    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group(1)) or m.group(2)
        if value is None:
            raise MixtureError(
                f"{where}: environment variable {m.group(1)} is not set (and has no :-default)"
            )
        return value

    return os.path.expanduser(_VAR.sub(sub, text))


# ------------------------------------------------------------------------------------ loading + checks


def _lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    """Map each dotted field path of a YAML document to its 1-based line."""
    out[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _lines(value, f"{prefix}.{key.value}" if prefix else str(key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _lines(value, f"{prefix}[{i}]", out)


def load_mixture(path: str | Path) -> Mixture:
    """Read and validate a mixture YAML; errors name the file, line and field."""
    path = Path(path)
    if not path.exists():
        raise MixtureError(f"{path}: mixture file not found")
    text = path.read_text()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MixtureError(f"{path}: not valid YAML ({e})") from e
    lines: dict[str, int] = {}
    if node is not None:
        _lines(node, "", lines)
    return mixture_from_dict(data, file=str(path), lines=lines)


def mixture_from_dict(data: object, file: str = "<dict>", lines: dict[str, int] | None = None) -> Mixture:
    lines = lines or {}

    def fail(fieldname: str, message: str) -> MixtureError:
        line = lines.get(fieldname)
        return MixtureError(f"{file}{f':{line}' if line else ''}: {fieldname or 'mixture'}: {message}")

    if not isinstance(data, dict):
        raise fail("", f"must be a mapping with `name` and `sources`, got {type(data).__name__}")
    unknown = set(data) - _MIXTURE_KEYS
    if unknown:
        raise fail(sorted(unknown)[0], f"unknown field (known: {', '.join(sorted(_MIXTURE_KEYS))})")
    name = data.get("name") or Path(file).stem
    if not isinstance(name, str):
        raise fail("name", "must be a string")
    total = data.get("total_tokens")
    if total is not None and (
        isinstance(total, bool) or not isinstance(total, (int, float)) or not total > 0
    ):
        raise fail("total_tokens", f"must be a positive number, got {total!r}")
    draw = data.get("draw", "budget")
    if draw not in DRAWS:
        raise fail("draw", f"must be one of {', '.join(DRAWS)}, got {draw!r}")
    if draw == "once" and total is not None:
        raise fail("total_tokens", "not used with `draw: once` (every instance is drawn once): remove it")
    raw_sources = data.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise fail("sources", "must be a non-empty list of sources")
    sources: list[MixtureSource] = []
    for i, raw in enumerate(raw_sources):
        where = f"sources[{i}]"
        if not isinstance(raw, dict):
            raise fail(where, "must be a mapping with name, path and one of weight/percent/tokens")
        unknown = set(raw) - _SOURCE_KEYS
        if unknown:
            raise fail(
                f"{where}.{sorted(unknown)[0]}", f"unknown field (known: {', '.join(sorted(_SOURCE_KEYS))})"
            )
        for key in ("name", "path"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise fail(f"{where}.{key}" if key in raw else where, f"`{key}` must be a non-empty string")
        for key in ("subset", "raw", "hub", "notes"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise fail(f"{where}.{key}", "must be a string")
        given = [k for k in WEIGHT_KINDS if raw.get(k) is not None]
        if draw == "once":
            if given:
                raise fail(f"{where}.{given[0]}", "not used with `draw: once` (every instance is drawn once): remove it")
            if any(s.name == raw["name"] for s in sources):
                raise fail(f"{where}.name", f"duplicate source name {raw['name']!r}")
            sources.append(MixtureSource(**{k: raw.get(k) for k in _SOURCE_KEYS}))
            continue
        if len(given) != 1:
            raise fail(where, f"give exactly one of weight / percent / tokens (got {given or 'none'})")
        value = raw[given[0]]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            hint = (
                " (YAML reads 3.0e9 as text: write 3.0e+9)" if isinstance(value, str) and "e" in value else ""
            )
            raise fail(f"{where}.{given[0]}", f"must be a positive number, got {value!r}{hint}")
        if any(s.name == raw["name"] for s in sources):
            raise fail(f"{where}.name", f"duplicate source name {raw['name']!r}")
        sources.append(MixtureSource(**{k: raw.get(k) for k in _SOURCE_KEYS}))
        if sources[0].kind != sources[-1].kind:
            raise fail(
                f"{where}.{given[0]}", f"mixes `{given[0]}` with `{sources[0].kind}`; use one kind per file"
            )
    if sources[0].kind == "tokens" and total is not None:
        raise fail("total_tokens", "not allowed with `tokens:` budgets (the total is their sum)")
    phase = data.get("phase")
    if phase is not None and not isinstance(phase, str):
        raise fail("phase", "must be a string")
    instances = None
    if data.get("instances") is not None:
        raw = data["instances"]
        if not isinstance(raw, dict):
            raise fail(
                "instances", "must be a mapping of InstanceConfig fields (mode, min_len, skip_below, ...)"
            )
        known = {f.name: f.type for f in fields(InstanceConfig)}
        for key, value in raw.items():
            if key not in known:
                raise fail(f"instances.{key}", f"unknown field (known: {', '.join(known)})")
            wanted = str if key == "mode" else bool if known[key] == "bool" else int
            if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
                raise fail(f"instances.{key}", f"must be {wanted.__name__}, got {value!r}")
        try:
            instances = InstanceConfig(**raw)
        except ValueError as e:
            where, _, message = str(e).partition(": ")  # "instances.mode: must be one of ..."
            raise fail(where if where.startswith("instances") else "instances", message or str(e)) from e
    return Mixture(
        instances=instances,
        name=name,
        sources=sources,
        phase=phase,
        total_tokens=None if total is None else float(total),
        draw=draw,
        file=file,
        notes=data.get("notes") or data.get("description"),
    )


# ------------------------------------------------------------------------------------------ the plan


TABLE_MAX = 1 << 22  # permutations up to this size (a source's instances, a mixture epoch's draws) are kept as
# tables (32 MB at most each)
TABLES_KEPT = 16  # (mixture or source, epoch) tables kept, the least recently used dropped first


class MixturePlan:
    """Draw counts per source and the position -> (source, instance) map of one (seed, phase)."""

    def __init__(self, mixture: Mixture, instances: list[int], tokens: list[int], seed: int, phase: str):
        self.mixture, self.seed, self.phase = mixture, seed, phase
        self.instances = np.asarray(instances, dtype=np.int64)  # (S,) instances per source
        tokens_arr = np.asarray(tokens, dtype=np.float64)  # (S,) positions filled per source
        for spec, n in zip(mixture.sources, self.instances):
            if n == 0:
                raise MixtureError(
                    f"{mixture.file}: sources[{spec.name}]: has no instances (empty or all too short)"
                )
        mean_len = tokens_arr / self.instances
        if mixture.draw == "once":
            budget = tokens_arr  # T_s = the instances themselves
        elif mixture.kind == "tokens":
            budget = np.array([s.amount for s in mixture.sources])
        else:
            total = mixture.total_tokens if mixture.total_tokens is not None else tokens_arr.sum()
            budget = mixture.shares() * total
        self.draws = np.maximum(1, np.rint(budget / mean_len)).astype(np.int64)  # (S,) T_s
        self.starts = np.concatenate([[0], np.cumsum(self.draws)]).astype(np.int64)  # (S + 1,)
        self.total = int(self.starts[-1])  # draws per mixture epoch
        self.epochs_per_source = self.draws / self.instances  # > 1 = upsampled
        self._tables: dict[tuple, np.ndarray] = {}  # ("mix", epoch) | ("source", s, epoch) -> a whole permutation

    def lookup(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Phase positions (int64, >= 0) -> (source index, instance index within that source)."""
        positions = np.asarray(positions, dtype=np.int64)
        source = np.zeros(len(positions), dtype=np.int64)
        instance = np.zeros(len(positions), dtype=np.int64)
        epoch = positions // self.total
        for e in np.unique(epoch):
            sel = np.nonzero(epoch == e)[0]
            draw = self._mixture_order(int(e), positions[sel] % self.total)
            s = np.searchsorted(self.starts, draw, side="right") - 1
            k = int(e) * self.draws[s] + (draw - self.starts[s])  # k-th draw of source s in this phase
            n = self.instances[s]
            src_epoch = k // n
            for si, se in {(int(a), int(b)) for a, b in zip(s, src_epoch)}:
                m = (s == si) & (src_epoch == se)
                instance[sel[m]] = self._source_order(si, se, k[m] % n[m])
            source[sel] = s
        return source, instance

    def _mixture_order(self, epoch: int, slots: np.ndarray) -> np.ndarray:
        """The draws at `slots` of mixture epoch `epoch`: the keyed permutation of [0, total), read from a table when
        the epoch is small enough to keep one (the same values)."""
        key = derive_key(self.seed, self.phase, "mix", epoch)
        return self._order(("mix", epoch), self.total, key, slots)

    def _order(self, name: tuple, n: int, key: int, at: np.ndarray) -> np.ndarray:
        if n > TABLE_MAX:
            return permute(at, n, key).astype(np.int64)
        table = self._tables.pop(name, None)
        if table is not None:
            self._tables[name] = table  # the most recently used last: the oldest unused one is dropped first
        else:
            if len(self._tables) >= TABLES_KEPT:
                self._tables.pop(next(iter(self._tables)))
            table = self._tables[name] = permute(np.arange(n), n, key).astype(np.int64)
        return table[at]

    def _source_order(self, source: int, epoch: int, draws: np.ndarray) -> np.ndarray:
        """The instances of `source` at its draws `draws` of its epoch `epoch`: the keyed permutation, read from a
        table when the source is small enough to keep one (the same values, without the per-call cycle walking)."""
        key = derive_key(self.seed, self.phase, "source", self.mixture.sources[source].name, epoch)
        return self._order(("source", source, epoch), int(self.instances[source]), key, draws)

    def summary(self) -> list[dict]:
        return [
            {"name": spec.name, "instances": int(n), "draws": int(d), "epochs": round(float(d / n), 4)}
            for spec, n, d in zip(self.mixture.sources, self.instances, self.draws)
        ]
