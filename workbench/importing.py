"""Placeholder: the owning helper replaces this module."""


def add_cli(subparsers) -> None:
    """Register this module's subcommands."""
