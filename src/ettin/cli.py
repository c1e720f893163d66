"""The `ettin` command line: thin over the modules. Each area registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

from ettin.io import UserError  # defined in the bottom layer, which raises it; importable here too

AREAS = ("ettin.data.cli", "ettin.train.cli", "ettin.train.composer", "ettin.eval.cli", "ettin.demo",
         "ettin.downstream.cli")


def build_parser() -> argparse.ArgumentParser:
    from ettin import __version__

    parser = argparse.ArgumentParser(prog="ettin", description="Paired encoder/decoder language models.")
    parser.add_argument("--version", action="version", version=f"ettin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in AREAS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # an area not built yet must not break the others
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ettin.cpu import tune_allocator

    tune_allocator()  # every ettin command: large CPU tensors stop paying page faults each step (ettin.cpu)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_overrides", False):
        parser.parse_args(argv)  # argparse's own error: unrecognized arguments, with the command's usage
    args.extra = extra  # commands that take recipe overrides (train, pair) sort these out themselves
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as e:
        print(f"ettin {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
