"""``workbench serve``: the review app on a database, bound to this machine unless told otherwise.

Kept apart from ``workbench.app`` so that the command line starts without importing Gradio.
"""

from __future__ import annotations

import argparse
import errno
import socket
from pathlib import Path

from trainer.cli import positive_int
from trainer.errors import UserError
from workbench.auth import Logins, load_logins

DEFAULT_MAX_UPLOAD_MB = 50
DEFAULT_PORT = 7860
# Gradio first tries the port on this address, whatever address it then serves on.
GRADIO_PROBE_HOST = "127.0.0.1"


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1-65535 (argparse turns the error into a usage line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text!r}")
    return value


def check_address(host: str, port: int) -> None:
    """Refuse, in one line, an address the app could not listen on (a busy port, another machine's address),
    before anything is built or written: Gradio would only fail after opening the store, with a traceback."""
    bare_host = host.strip("[]")  # "[::1]" as in a URL
    for address in dict.fromkeys((bare_host, GRADIO_PROBE_HOST)):
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
        except socket.gaierror as exc:
            message = f"cannot serve on {host}: {exc.strerror}; give an address of this machine with --host"
            raise UserError(message) from None
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no bar
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise UserError(f"port {port} on {address} is in use; pick another with --port") from None
                raise UserError(f"cannot serve on {host} port {port}: {exc.strerror}") from None


def serve(
    db_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    logins: Logins | None = None,
    notice: str | None = None,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    blind_datasets: tuple[str, ...] = (),
) -> None:
    """Build the app and serve it until interrupted (Ctrl+C). ``logins`` (from ``load_logins``) gives sign-in
    and roles; None means no sign-in, which is only safe on this machine. ``blind_datasets`` hide the model
    names in the Review tab for those data sets until each reviewer has graded an item."""
    check_address(host, port)
    from workbench.app import build_app, launch  # Gradio takes seconds to import: only when serving

    blocks = build_app(db_path, notice=notice, logins=logins, blind_datasets=tuple(blind_datasets))
    if host not in ("127.0.0.1", "localhost") and not logins:
        print(f"warning: serving on {host} without logins: anyone who can reach it can grade, upload and export")
    _, url, _ = launch(
        blocks,
        host=host,
        port=port,
        logins=logins,
        max_upload_mb=max_upload_mb,
        quiet=True,
        prevent_thread_lock=True,
    )
    print(f"review app on {url} ({'logins required' if logins else 'no logins'}); Ctrl+C stops it")
    try:
        blocks.block_thread()
    finally:
        blocks.close()


def _cli(args: argparse.Namespace) -> None:
    logins = load_logins(args.auth or (), args.auth_file, args.admin or ())
    serve(
        args.db,
        host=args.host,
        port=args.port,
        logins=logins,
        max_upload_mb=args.max_upload_mb,
        blind_datasets=tuple(args.blind_review or ()),
    )


def add_cli(subparsers) -> None:
    """Register ``serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="open the review app (Gradio) on a database",
        description="Open the review app on a database: grade responses side by side, blind A/B votes, "
        "queues, calibration, leaderboard, agreement, benchmarks, training curves and imports/exports.",
    )
    parser.add_argument("--db", required=True, type=Path, help="workbench SQLite file")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine; 0.0.0.0 every IPv4 address, :: every IPv6 one)",
    )
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT, help="default %(default)s")
    parser.add_argument(
        "--blind-review",
        action="append",
        metavar="DATASET",
        help="blind review campaign for this data set (repeatable): models shown as A-D in a per-reviewer "
        "order and named only after the reviewer's grades for the item are in; admins can also set it in Data",
    )
    parser.add_argument(
        "--auth-file",
        type=Path,
        help="logins: one NAME:ROLE:HASH per line, written by `workbench users add` (the login is the reviewer name)",
    )
    parser.add_argument(
        "--auth",
        action="append",
        metavar="USER:PASS",
        help="a reviewer login given on the command line (visible in `ps`: prefer --auth-file); repeatable",
    )
    parser.add_argument(
        "--admin",
        action="append",
        metavar="NAME",
        help="make this login an admin (may upload and export); repeatable",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=positive_int,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest file the app accepts for import, in MB (default {DEFAULT_MAX_UPLOAD_MB})",
    )
    parser.set_defaults(func=_cli)
