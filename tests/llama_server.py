"""Real llama.cpp servers (``python -m llama_cpp.server``) for the model-server tests, started on free ports.

The ``llama_server`` fixture in tests/conftest.py yields one; ``server.start_another()`` starts another on the
same GGUF (a test that kills one mid-run needs two), and every server started is stopped at the end of the
session.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LlamaServer:
    """One running server: ``base_url`` (``http://127.0.0.1:PORT/v1``), the ``model`` id it serves, its
    ``process`` (kill it to play a dead host) and its ``log`` file (stdout and stderr)."""

    base_url: str
    model: str
    process: subprocess.Popen
    log: Path
    pool: LlamaServerPool = field(repr=False)

    def start_another(self) -> LlamaServer:
        """A second server on another port, serving the same GGUF under the same model id."""
        return self.pool.start()

    def kill(self) -> None:
        """Stop this server at once (SIGKILL), as a crashed host would."""
        self.process.kill()
        self.process.wait(timeout=10)


@dataclass
class LlamaServerPool:
    """Starts servers for one GGUF file and stops them all in :meth:`close`."""

    gguf: Path
    model: str
    n_ctx: int
    log_dir: Path
    servers: list[LlamaServer] = field(default_factory=list)

    def start(self) -> LlamaServer:
        port = free_port()
        log = self.log_dir / f"llama-server-{port}.log"
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.gguf),
            "--model_alias",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            "1",
        ]
        with log.open("wb") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        server = LlamaServer(f"http://127.0.0.1:{port}/v1", self.model, process, log, self)
        self.servers.append(server)
        self._wait_until_ready(server)
        return server

    @staticmethod
    def _wait_until_ready(server: LlamaServer) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {server.process.returncode}:\n{_tail(server.log)}")
            try:
                if httpx.get(f"{server.base_url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        server.kill()
        raise RuntimeError(f"llama.cpp server not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{_tail(server.log)}")

    def close(self) -> None:
        for server in self.servers:
            if server.process.poll() is None:
                server.process.terminate()
                try:
                    server.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
