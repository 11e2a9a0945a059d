"""`kivla <command>`: one entry point; each package registers its own subcommands.

A command module exposes `register(subparsers)`, adds its parsers there and sets `func` on each
(`func(args) -> int | None`). Command modules import heavy dependencies (torch, pyarrow) inside
their functions so that `kivla --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order of `kivla --help`.
COMMAND_MODULES = (
    "kivla.data.cli",
    "kivla.data.metaworld_cli",
    "kivla.tokenizers.cli",
    "kivla.model.cli",
    "kivla.train.cli",
    "kivla.eval.cli",
    "kivla.pipelines.cli",
    "kivla.serve.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kivla",
        description="Train vision-language-action policies with the Knowledge Insulation recipe.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        result = func(args)
    except (ValueError, FileNotFoundError) as err:
        # User errors: one clear line, no traceback.
        print(f"kivla {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
