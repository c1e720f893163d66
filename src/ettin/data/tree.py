"""A downloaded MDS dataset tree (the published `jhu-clsp/ettin-*-data`) -> one prepared source per MDS folder, and a
mixture that reads the tree as the published trainer did.

    ettin data prepare-tree RAW --out PREPARED --like recipes/data/ettin_decay.yaml --mixture decay-as-published.yaml

The published runs did not weight sources at training time: the mixture was sampled into the data beforehand
(JHU-CLSP/ettin-encoder-vs-decoder pretraining/data_processing/README.md, "Sampling"; sample_down_or_up_to_meet.py),
the source folders were merged into one MDS root (bin/make_recursive_root.py, `merge_index` over every sub-folder's
index.json), and the trainer read that root (`data_local: ettin_tokenized_data | sample_250B | ProLong`, line 1 of
the pretraining/configs/standard/*/{,de_decay/,prolong_decay/}*.yaml) once through in a shuffled order. The mixture
written here does the same in ettin's terms: every MDS folder of the tree is one source whose budget is its own token
count, drawn with `draw: once`, so each instance is drawn once an epoch, in one seeded order. `--like` takes the phase name and the
instance rule from a preset mixture, and its sources are matched to the tree's folders by name to print the shares
side by side: the folder names on the hub are whatever the tree holds, no list is assumed here.

Pre-tokenized folders (`input_ids`) are not re-tokenized: their ids are copied (ettin.data.prepare; a leading [CLS]
and trailing [SEP] are dropped, as for every document), and the tokenizer only records what the ids mean. Text
folders are tokenized. Each folder's preparation resumes where it stopped, and a complete one is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import yaml

from ettin.io import atomic_write_text, read_json


def leaf_folders(root: str | Path) -> list[Path]:
    """The MDS folders of a tree that hold their own shards (an index.json whose shard files lie beside it), sorted.
    Merged indexes (a parent's index.json listing its sub-folders' shards, as make_recursive_root.py writes) are
    not sources of their own: their sub-folders are."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (a downloaded MDS dataset)")
    leaves = []
    for index in sorted(root.rglob("index.json")):
        if any(part.startswith(".") for part in index.relative_to(root).parts):
            continue  # caches and temporary folders (.cache/huggingface of `hf download --local-dir`)
        shards = read_json(index).get("shards", [])
        if shards and any("/" not in s["raw_data"]["basename"] for s in shards):
            leaves.append(index.parent)
    if not leaves:
        raise FileNotFoundError(f"{root}: no MDS folder (index.json with its shards) in this tree")
    return leaves


def source_name(root: Path, folder: Path) -> str:
    """A folder's source name: its path under the tree, '/' -> '__' (unique, and a valid folder name)."""
    rel = folder.relative_to(root)
    return "__".join(rel.parts) if rel.parts else root.name


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def match(names: list[str], candidates: list[str]) -> dict[str, str | None]:
    """Each tree source -> the preset source of the same name (ignoring case, '_', '-', the folders above it), or
    the only preset name contained in it (or containing it); None when none or several fit."""
    out: dict[str, str | None] = {}
    keys = {c: _key(c) for c in candidates}
    for name in names:
        last = _key(name.split("__")[-1])
        exact = [c for c, k in keys.items() if k == last]
        loose = [c for c, k in keys.items() if k and (k in _key(name) or last in k)]
        out[name] = exact[0] if len(exact) == 1 else loose[0] if len(loose) == 1 else None
    return out


def folder_names(root: str | Path, like: str | Path | None = None) -> dict[Path, str]:
    """Each MDS folder of the tree -> its source name: the preset source its name matches (`like`'s, so the preset
    mixture's `path: .../<phase>/<source>` finds it), else its path under the tree with '/' -> '__'."""
    root = Path(root)
    leaves = leaf_folders(root)
    own = {leaf: source_name(root, leaf) for leaf in leaves}
    if like is None:
        return own
    preset = [s["name"] for s in (yaml.safe_load(Path(like).read_text()) or {}).get("sources", [])]
    matched = match(list(own.values()), preset)
    names = {leaf: matched[name] or name for leaf, name in own.items()}
    taken = [n for n in names.values() if list(names.values()).count(n) > 1]
    if taken:  # two folders for one preset source: keep both under their own names
        names = {leaf: own[leaf] if names[leaf] in taken else names[leaf] for leaf in leaves}
    return names


def _prepare_one(folder: Path, out: Path, tokenizer, workers: int, log) -> dict:
    from ettin.data.prepare import PrepareConfig, prepare

    manifest = prepare([f"mds:{folder}"], tokenizer, PrepareConfig(out=out, workers=workers, log=log))
    return {"tokens": int(manifest["num_tokens"]), "documents": int(manifest["documents"])}


def prepare_tree(root: str | Path, out: str | Path, tokenizer, workers: int = 2, like: str | Path | None = None,
                 jobs: int = 1, log: Callable[[str], None] = print) -> list[dict]:
    """Prepare every MDS folder of `root` into out/<source name> (`folder_names`), `jobs` folders at a time (each in
    its own process when jobs > 1); [{name, folder, path, tokens, documents}] in folder order."""
    from concurrent.futures import ProcessPoolExecutor

    from ettin.data.tokenizer import TokenizerInfo, load_tokenizer

    root, out = Path(root), Path(out)
    names = folder_names(root, like)
    tokenizer = tokenizer if isinstance(tokenizer, TokenizerInfo) else load_tokenizer(tokenizer)
    for i, (folder, name) in enumerate(names.items(), 1):
        log(f"[{i}/{len(names)}] {folder} -> {out / name}")
    if jobs > 1:
        with ProcessPoolExecutor(min(jobs, len(names))) as pool:
            futures = {f: pool.submit(_prepare_one, f, out / n, tokenizer.path, workers, None) for f, n in names.items()}
            counts = {f: fut.result() for f, fut in futures.items()}
    else:
        counts = {f: _prepare_one(f, out / n, tokenizer, workers, log) for f, n in names.items()}
    return [{"name": n, "folder": str(f), "path": str((out / n).resolve()), **counts[f]} for f, n in names.items()]


def tree_mixture(sources: list[dict], like: str | Path | None = None, name: str | None = None) -> dict:
    """The mixture that reads every instance of every prepared folder once (`draw: once`), with `like`'s phase and
    instance rule, and each source's token count and matched preset source noted."""
    base = yaml.safe_load(Path(like).read_text()) if like else {}
    matched = match([s["name"] for s in sources], [s["name"] for s in base.get("sources", [])])
    mixture = {"name": name or f"{base.get('name', 'tree')}_as_published", "phase": base.get("phase", "pretrain"),
               "draw": "once"}
    if "instances" in base:
        mixture["instances"] = base["instances"]
    preset = {n: f"; preset source: {m or 'none matched'}" for n, m in matched.items()} if like else {}
    mixture["sources"] = [
        {"name": s["name"], "path": s["path"],
         "notes": f"{s['tokens']:,} tokens from {s['folder']}{preset.get(s['name'], '')}"}
        for s in sources
    ]
    return mixture


def shares_table(sources: list[dict], like: str | Path) -> list[str]:
    """Lines comparing each folder's share of the tree with its matched preset source's share of the preset."""
    from ettin.data.mixture import load_mixture

    preset = load_mixture(like)
    shares = dict(zip([s.name for s in preset.sources], preset.shares()))
    matched = match([s["name"] for s in sources], list(shares))
    total = sum(s["tokens"] for s in sources) or 1
    lines = [f"{'folder source':<40} {'tokens':>16} {'share':>7}   preset source (share)"]
    for s in sources:
        m = matched[s["name"]]
        theirs = f"{m} ({100 * shares[m]:.1f}%)" if m else "none matched"
        lines.append(f"{s['name']:<40} {s['tokens']:>16,} {100 * s['tokens'] / total:>6.1f}%   {theirs}")
    missing = sorted(set(shares) - {m for m in matched.values() if m})
    if missing:
        lines.append(f"preset sources with no folder here: {', '.join(missing)}")
    return lines


def write_mixture(mixture: dict, path: str | Path) -> Path:
    path = Path(path)
    head = ("# Written by `ettin data prepare-tree`: every instance of every MDS folder of the tree once (draw: once), as\n"
            "# the published trainer read its merged MDS root. Use it with data.mixtures.<phase>=THIS_FILE.\n")
    atomic_write_text(path, head + yaml.safe_dump(mixture, sort_keys=False, width=120))
    return path
