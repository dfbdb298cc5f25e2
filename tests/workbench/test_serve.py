"""``workbench serve`` and ``workbench demo`` on addresses they cannot use: one line and exit 2, nothing written.

Real subprocesses of the command line, with real sockets: a listening socket makes a port busy.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

WORKBENCH = [sys.executable, "-c", "import sys; from workbench.cli import main; sys.exit(main(sys.argv[1:]))"]


def _workbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*WORKBENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _free_port(host: str = "127.0.0.1", family: socket.AddressFamily = socket.AF_INET) -> int:
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@pytest.fixture
def busy_port():
    """A port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_busy_port_is_one_line_and_leaves_no_database(tmp_path, busy_port, command):
    done = _workbench(command, "--db", "wb.db", "--port", str(busy_port), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        f"error: port {busy_port} on 127.0.0.1 is in use; pick another with --port\n",
    )
    assert list(tmp_path.iterdir()) == []  # the demo stops before its pipeline, serve before opening the store


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_a_port_out_of_range_is_refused_by_the_argument_parser(tmp_path, port):
    done = _workbench("serve", "--db", "wb.db", f"--port={port}", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("workbench serve: error: argument --port: must be a port number")
    assert list(tmp_path.iterdir()) == []


def test_an_address_of_another_machine_is_one_line(tmp_path):
    done = _workbench("serve", "--db", "wb.db", "--host", "192.0.2.1", cwd=tmp_path)  # TEST-NET-1: nobody's
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot serve on 192.0.2.1 port 7860: ") and done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_host_ipv6_any_serves_the_app_on_ipv6(tmp_path):
    try:
        port = _free_port("::1", socket.AF_INET6)
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    server = subprocess.Popen(
        [*WORKBENCH, "serve", "--db", "wb.db", "--host", "::", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = server.stdout.readline()  # the no-logins warning, then the address
        address = server.stdout.readline()
        assert first.startswith("warning: serving on :: without logins")
        assert address.startswith(f"review app on http://[::]:{port}/ (no logins)"), first + address
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://[::1]:{port}/", timeout=10) as page:
                    assert page.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        server.kill()
        server.communicate(timeout=30)
