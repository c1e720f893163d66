"""Your own text as a recipe's data: the overrides behind `ettin train|pair RECIPE --data FILE...` and the data
section of `ettin continue --data FILE...`.

    ettin pair recipes/tiny.yaml --data notes.jsonl --out runs/notes --parallel

Every phase of the recipe reads one mixture of the given files (each file a source, weighted by its size on disk),
prepared into OUT/data/shards on first use; a recipe that trains its own tokenizer (`data.prepare.
tokenizer_vocab_size`, the tiny and demo recipes) trains it on the files' training side into OUT/data, one that
names a tokenizer (the presets: ModernBERT's) tokenizes them with it. The recipe's held-out share, phases, model and
schedule stay as they are; `--dry-run` shows the result.
"""

from __future__ import annotations

import json
from pathlib import Path

FIELD, SPLIT_BY = "text", "paragraph"  # the defaults of --field and --split-by


def data_flags(p, data_help: str | None = None) -> None:
    """--field and --split-by (and --data when `data_help` is given) on a command's parser."""
    if data_help:
        p.add_argument("--data", nargs="+", metavar="FILE", help=data_help)
    p.add_argument("--field", default=FIELD, help=f"the JSONL / Parquet field holding the text (default: {FIELD})")
    p.add_argument("--split-by", choices=("file", "paragraph", "line"), default=SPLIT_BY,
                   help=f"plain text files: one document per file, blank-line paragraph or line (default: {SPLIT_BY})")


def data_sources(files: list[str], field: str = FIELD, split_by: str = SPLIT_BY) -> list[str]:
    """`ettin data prepare` source specs for the command line's files: `field` where a file names no field of its
    own (`notes.jsonl:body`), `split_by` where it sets no split_by (plain text only reads it)."""
    from ettin.data.sources import SourceSpec

    specs = []
    for text in files:
        spec = SourceSpec.parse(text)  # checks the form; the files are checked by the dry run and data prepare
        base, _, query = text.partition("?")
        if spec.text_field == "text" and field != "text":
            base = f"{base}:{field}"
        if "split_by=" not in query:
            query = "&".join(filter(None, [query, f"split_by={split_by}"]))
        specs.append(f"{base}?{query}")
    return specs


def source_weights(specs: list[str]) -> list[float]:
    """Each source's share: its size on disk (a token count's stand-in, known before tokenizing)."""
    from ettin.data.sources import SourceSpec, expand_files

    out = []
    for text in specs:
        try:
            out.append(float(sum(f.stat().st_size for f in expand_files(SourceSpec.parse(text)))) or 1.0)
        except (OSError, ValueError):
            out.append(1.0)  # missing: the dry run names it
    return out


def mixture(specs: list[str], shards: Path, name: str, mode: str) -> dict:
    """One inline mixture of the prepared sources `specs` (each a subset of `shards`), weighted by size."""
    from ettin.data.sources import SourceSpec

    names = [SourceSpec.parse(s).name for s in specs]
    return {"name": name, "instances": {"mode": mode},
            "sources": [{"name": n, "path": str(shards), "subset": n, "weight": w}
                        for n, w in zip(names, source_weights(specs))]}


def own_data_overrides(recipe, files: list[str], out: Path, field: str = FIELD, split_by: str = SPLIT_BY) -> list[str]:
    """KEY=VALUE overrides that make `recipe` (loaded) train on `files` (see the module docstring)."""
    specs = data_sources(files, field, split_by)
    data = Path(out) / "data"
    shards = data / "shards"
    names = sorted({ph.mixture for ph in recipe.phases if ph.mixture})
    mix = mixture(specs, shards, "own", "chunk")  # one document a row, as the published recipe
    prepare = {"out": str(shards), "sources": specs}
    overrides = ["data.source=prepared", f"data.mixtures={json.dumps({n: {**mix, 'name': n} for n in names})}",
                 "data.vars={}"]
    if recipe.data.prepare is not None and recipe.data.prepare.tokenizer_vocab_size:
        prepare["tokenizer_vocab_size"] = recipe.data.prepare.tokenizer_vocab_size
        prepare["workers"] = recipe.data.prepare.workers
        overrides.append(f"data.tokenizer={data / 'tokenizer' / 'tokenizer.json'}")
    return [*overrides, f"data.prepare={json.dumps(prepare)}"]
