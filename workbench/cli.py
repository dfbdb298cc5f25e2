"""``workbench SUBCOMMAND``: small commands over one SQLite file, each mapping to a plain function."""

from __future__ import annotations

import argparse

from trainer.cli import HelpParser, run_command
from workbench import (
    analysis,
    auth,
    bench,
    campaigns,
    demo,
    generation,
    importing,
    judge,
    report,
    serve,
    training_judge,
)

# Each module adds its subcommands with ``add_cli(subparsers)`` and sets ``func`` to a handler taking the args.
COMMAND_MODULES = (demo, importing, analysis, training_judge, judge, generation, bench, campaigns, report, serve, auth)


def build_parser() -> argparse.ArgumentParser:
    parser = HelpParser(prog="workbench", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)
