"""``python -m trainer SUBCOMMAND``: each subcommand lives in its own module and maps to a plain function."""

from __future__ import annotations

import argparse
import sys

from trainer import generate, train
from trainer.errors import UserError

# Each module adds its subcommand with ``add_cli(subparsers)`` and sets ``func`` to a handler taking the args.
COMMAND_MODULES = (train, generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
