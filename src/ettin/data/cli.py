"""`ettin tokenizer train|info` and `ettin data prepare|info`."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    tokenizer = subparsers.add_parser("tokenizer", help="train or inspect tokenizers")
    tok_sub = tokenizer.add_subparsers(dest="tokenizer_command", required=True)

    train = tok_sub.add_parser("train", help="train a ModernBERT-style byte-level BPE on sources")
    train.add_argument(
        "--sources",
        nargs="+",
        required=True,
        metavar="SPEC",
        help="source specs, e.g. data/*.jsonl:text (see ettin.data.sources)",
    )
    train.add_argument(
        "--vocab-size", type=int, required=True, help="target size (padded to a multiple of 64)"
    )
    train.add_argument("--out", required=True, help="folder for tokenizer.json + configs")
    train.add_argument("--min-frequency", type=int, default=2)
    train.add_argument("--max-documents", type=int, default=None, help="train on at most this many documents")
    train.set_defaults(func=cmd_tokenizer_train)

    info = tok_sub.add_parser("info", help="print a tokenizer's special ids, size and hash")
    info.add_argument(
        "path", nargs="?", default=None, help="tokenizer.json or its folder (default: ModernBERT)"
    )
    info.set_defaults(func=cmd_tokenizer_info)

    data = subparsers.add_parser("data", help="prepare and inspect token shards")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    prep = data_sub.add_parser("prepare", help="tokenize sources into shards (resumable)")
    prep.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="SPEC",
        help="repeatable: path/glob/folder[:text_field][?key=value], hf:NAME, mds:FOLDER",
    )
    prep.add_argument("--tokenizer", default=None, help="tokenizer.json or its folder (default: ModernBERT)")
    prep.add_argument("--out", required=True)
    prep.add_argument(
        "--workers", type=int, default=2, help="tokenizer processes (0: threads in this process)"
    )
    prep.add_argument(
        "--skip-bad", action="store_true", help="skip bad records and count them in the manifest"
    )
    prep.add_argument("--overwrite", action="store_true", help="start over if --out was made differently")
    prep.add_argument("--shard-tokens", type=int, default=1 << 24, help="tokens per shard (about)")
    prep.set_defaults(func=cmd_data_prepare)

    tree = data_sub.add_parser(
        "prepare-tree", help="prepare every MDS folder of a downloaded dataset tree, and a mixture reading it all once",
        description="Prepare each MDS folder under RAW (e.g. a downloaded jhu-clsp/ettin-*-data) into OUT/<folder>, "
                    "and write a mixture whose sources are those folders, each budgeted with its own token count: "
                    "every row once, as the published trainer read its merged MDS root (ettin.data.tree).")
    tree.add_argument("raw", help="the downloaded tree (folders with index.json and MDS shards)")
    tree.add_argument("--out", required=True, help="folder for the prepared sources, one sub-folder each")
    tree.add_argument("--mixture", required=True, help="the mixture YAML to write")
    tree.add_argument("--like", default=None, help="a preset mixture (recipes/data/ettin_*.yaml): its phase and "
                                                   "instance rule, and its sources' shares printed beside the tree's")
    tree.add_argument("--tokenizer", default=None, help="what the ids mean (default: ModernBERT); pre-tokenized "
                                                        "folders are not re-tokenized")
    tree.add_argument("--workers", type=int, default=2, help="tokenizer processes for text folders")
    tree.add_argument("--jobs", type=int, default=1, help="folders prepared at once, each in its own process")
    tree.set_defaults(func=cmd_data_prepare_tree)

    show = data_sub.add_parser("info", help="summarize a prepared dataset")
    show.add_argument("path")
    show.add_argument("--verify", action="store_true", help="recompute every shard's sha256")
    show.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    show.set_defaults(func=cmd_data_info)

    find = data_sub.add_parser("where", help="which steps of a published batch order (jhu-clsp/ettin-data-order) "
                               "hold a token sequence: one JSON object a row")
    find.add_argument("order", help="an order folder (checkpoint_*/ext_*/decay_*, or the folder holding them)")
    what = find.add_mutually_exclusive_group(required=True)
    what.add_argument("--ids", help="comma-separated token ids, e.g. 1,2,3")
    what.add_argument("--text", help="text, tokenized as given (no special tokens; a leading space matters)")
    find.add_argument("--tokenizer", help="with --text: tokenizer.json or its folder (default: ModernBERT)")
    find.add_argument("--phase", choices=("pretrain", "extension", "decay"), help="only this phase's folders")
    find.set_defaults(func=cmd_data_where)


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from ettin.data.sources import iter_documents
    from ettin.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    texts = (doc.text for spec in args.sources for doc in iter_documents(spec) if doc.text is not None)
    if args.max_documents is not None:
        texts = itertools.islice(texts, args.max_documents)
    tokenizer = train_tokenizer(texts, args.vocab_size, min_frequency=args.min_frequency)
    out = save_tokenizer(tokenizer, args.out)
    info = load_tokenizer(out)
    print(f"wrote {out}/tokenizer.json: vocab_size {info.vocab_size}, sha256 {info.sha256[:16]}")
    return 0


def cmd_tokenizer_info(args: argparse.Namespace) -> int:
    from ettin.data.tokenizer import load_tokenizer

    print(json.dumps(load_tokenizer(args.path).describe(), indent=2))
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from ettin.data.prepare import PrepareConfig, prepare

    config = PrepareConfig(out=Path(args.out), workers=args.workers, skip_bad=args.skip_bad,
                           overwrite=args.overwrite, shard_tokens=args.shard_tokens, log=_log)  # fmt: skip
    manifest = prepare(args.source, args.tokenizer, config)
    _print_summary(manifest)
    return 0


def cmd_data_prepare_tree(args: argparse.Namespace) -> int:
    from ettin.data.tree import prepare_tree, shares_table, tree_mixture, write_mixture

    sources = prepare_tree(args.raw, args.out, args.tokenizer, workers=args.workers, like=args.like, jobs=args.jobs,
                           log=_log)
    if args.like:
        print("\n".join(shares_table(sources, args.like)))
    path = write_mixture(tree_mixture(sources, args.like), args.mixture)
    total = sum(s["tokens"] for s in sources)
    print(f"{path}: {len(sources)} source(s), {total:,} tokens; train on it with data.mixtures.<phase>={path}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from ettin.data.shards import TokenDataset, read_manifest

    manifest = read_manifest(args.path)
    if args.verify:
        TokenDataset(args.path, allow_incomplete=True).verify()
        print(f"{args.path}: all {len(manifest['shards'])} shards match their checksums")
    if args.json:
        summary = {k: v for k, v in manifest.items() if k != "shards"}
        print(json.dumps(summary | {"shards": len(manifest["shards"])}, indent=2))
    else:
        _print_summary(manifest)
    return 0 if manifest["complete"] else 1


def cmd_data_where(args: argparse.Namespace) -> int:
    from ettin.data.order import where
    from ettin.io import UserError

    if args.ids is not None:
        try:
            ids = [int(x) for x in args.ids.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--ids {args.ids!r}: comma-separated whole numbers, e.g. 1,2,3") from None
    else:
        from ettin.data.tokenizer import load_tokenizer

        ids = load_tokenizer(args.tokenizer).tokenizer.encode(args.text, add_special_tokens=False).ids
        _log(f"searching for {len(ids)} token ids: {','.join(map(str, ids))}")
    found = 0
    for hit in where(args.order, ids, args.phase):
        print(json.dumps(hit), flush=False)
        found += 1
    _log(f"{found} row(s)")
    return 0


def _print_summary(manifest: dict) -> None:
    state = "complete" if manifest["complete"] else "INCOMPLETE (re-run prepare to finish)"
    tok = manifest["tokenizer"]
    print(f"{state}: {manifest['documents']:,} documents, {manifest['num_tokens']:,} tokens, "
          f"{len(manifest['shards'])} shards, dtype {manifest['dtype']}")  # fmt: skip
    print(f"tokenizer: {tok.get('path')} (vocab {tok.get('vocab_size')}, sha256 {tok['sha256'][:16]})")
    print(f"{'source':<32} {'documents':>10} {'tokens':>12} {'empty':>6} {'skipped':>8}  done")
    for s in manifest["sources"]:
        skipped = sum(s["skipped"].values())
        print(f"{s['name'][:32]:<32} {s['documents']:>10,} {s['num_tokens']:>12,} {s['empty']:>6} {skipped:>8}  "
              f"{'yes' if s['complete'] else 'no'}")  # fmt: skip
        for reason, count in s["skipped"].items():
            print(f"    skipped {count} x {reason}")
