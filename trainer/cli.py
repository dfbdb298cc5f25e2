"""``python -m trainer SUBCOMMAND``: each subcommand lives in its own module and maps to a plain function."""

from __future__ import annotations

import argparse
import os
import sys

from trainer.errors import UserError


class HelpParser(argparse.ArgumentParser):
    """An ArgumentParser for commands whose docstrings double as help: reST's ````literal```` quotes are dropped.

    Subcommands' parsers are made of the same class (``add_subparsers`` uses the parent's), so one parser at the
    top covers every ``--help``."""

    def format_help(self) -> str:
        return super().format_help().replace("``", "")


def build_parser() -> argparse.ArgumentParser:
    parser = HelpParser(prog="python -m trainer", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    from trainer import (  # they import torch: not needed by run_command's other users
        export,
        finetune_cli,
        generate,
        lora,
    )

    # Each module adds its subcommand with ``add_cli(subparsers)`` and sets ``func`` to a handler taking the args.
    for module in (finetune_cli, generate, export, lora):
        module.add_cli(subparsers)
    return parser


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse turns the error into a usage line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and call the chosen subcommand; a UserError is one line on stderr and exit code 2, a closed
    stdout (``| head``) a quiet exit 1."""
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and point stdout at /dev/null so the interpreter's
        # final flush cannot fail again (Python's documented recipe, exit 1).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)
