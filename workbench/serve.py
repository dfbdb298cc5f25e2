"""``workbench serve``: the review app on a database, bound to this machine unless told otherwise.

Kept apart from ``workbench.app`` so that the command line starts without importing Gradio.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from trainer.errors import UserError


def read_auth(pairs: Sequence[str] = (), auth_file: str | Path | None = None) -> list[tuple[str, str]]:
    """USER:PASS pairs from the command line and from a file (one per line, # comments allowed)."""
    entries = [(str(pair), "--auth") for pair in pairs]
    if auth_file is not None:
        path = Path(auth_file)
        if not path.is_file():
            raise UserError(f"{path}: auth file not found")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                entries.append((line.strip(), f"{path} line {number}"))
    credentials = []
    for entry, where in entries:
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            raise UserError(f"{where}: expected USER:PASS, got {entry.split(':')[0]!r}...")
        credentials.append((user.strip(), password))
    return credentials


def serve(
    db_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: list[tuple[str, str]] | None = None,
    notice: str | None = None,
) -> None:
    """Build the app and serve it until interrupted (Ctrl+C)."""
    from workbench.app import build_app, launch  # Gradio takes seconds to import: only when serving

    blocks = build_app(db_path, notice=notice)
    if host not in ("127.0.0.1", "localhost") and not auth:
        print(f"warning: serving on {host} without --auth: anyone who can reach it can grade")
    _, url, _ = launch(blocks, host=host, port=port, auth=auth, quiet=True, prevent_thread_lock=True)
    print(f"review app on {url} ({'logins required' if auth else 'no logins'}); Ctrl+C stops it")
    try:
        blocks.block_thread()
    finally:
        blocks.close()


def _cli(args: argparse.Namespace) -> None:
    serve(args.db, host=args.host, port=args.port, auth=read_auth(args.auth or (), args.auth_file))


def add_cli(subparsers) -> None:
    """Register ``serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="open the review app (Gradio) on a database",
        description="Open the review app on a database: grade responses side by side, blind A/B votes, "
        "queues, calibration, leaderboard, agreement, benchmarks, training curves and imports/exports.",
    )
    parser.add_argument("--db", required=True, type=Path, help="workbench SQLite file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=7860)
    logins = parser.add_mutually_exclusive_group()
    logins.add_argument(
        "--auth",
        action="append",
        metavar="USER:PASS",
        help="require a login; repeat for several reviewers (the login is the reviewer name)",
    )
    logins.add_argument("--auth-file", type=Path, help="file with one USER:PASS per line")
    parser.set_defaults(func=_cli)
