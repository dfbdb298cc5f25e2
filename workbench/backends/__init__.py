"""Model servers the workbench talks to: one module per protocol, behind one small interface.

The judge (``workbench/judge.py``) and served-model generation (``workbench/generation.py``) see a server only
through ``Backend``: the models it serves (with a weights digest when it reports one), a chat request that asks
for a JSON schema, and a plain completion. ``ollama.py`` speaks Ollama's own API (it reports digests);
``openai.py`` speaks the OpenAI chat-completions protocol that vLLM, llama.cpp, LM Studio, SGLang, hosted APIs
and Ollama's ``/v1`` serve. Every failure to get an answer is a ``ServerError`` that says whether asking again
can help and whether the server itself is gone, so retries and moving work between servers stay protocol-free.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from trainer.errors import UserError

BACKENDS = ("ollama", "openai")
DEFAULT_OLLAMA_HOST = "http://localhost:11434"
# A reply is a short JSON object or one response; past this many bytes it is a runaway generation, and reading
# stops there.
MAX_REPLY_BYTES = 1 << 20
# What the store keeps of a reply; the rest is replaced by TRUNCATED (the app and SQL can look for it).
MAX_STORED_REPLY_CHARS = 64 * 1024
TRUNCATED = "\n[truncated: "


@dataclass(frozen=True)
class ServedModel:
    """A model a server offers: its id as the server spells it, and its weights digest when reported."""

    id: str
    digest: str | None


class ServerError(Exception):
    """A request the server did not answer usefully. ``status`` is the HTTP status, None when no answer came
    (connection refused or lost, timeout); ``unreachable`` marks a server that is gone rather than slow."""

    def __init__(self, message: str, *, status: int | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable

    @property
    def retryable(self) -> bool:
        """Connection errors, timeouts, overload (429) and server errors (5xx) may pass; a 4xx will not."""
        return self.status is None or self.status >= 500 or self.status == 429


def transport_error(exc: Exception) -> ServerError:
    """A ServerError for an exception raised before any HTTP answer: a timeout is a slow server, anything
    else (refused, reset, closed mid-answer) an unreachable one."""
    return ServerError(f"{type(exc).__name__}: {exc}", unreachable=not isinstance(exc, httpx.TimeoutException))


class ReplyTooLarge(Exception):
    """The server's HTTP reply passed MAX_REPLY_BYTES; ``head`` keeps its first bytes for the store."""

    def __init__(self, head: bytes, limit: int) -> None:
        super().__init__(f"the judge's reply is larger than {limit / 2**20:g} MiB; reading stopped there")
        self.head = head


class BoundedStream(httpx.SyncByteStream):
    """A response body that raises ReplyTooLarge once more than ``limit`` bytes arrived, so a runaway reply
    costs at most ``limit`` plus one network chunk of memory instead of its whole size."""

    def __init__(self, chunks: Iterable[bytes], limit: int) -> None:
        self._chunks = chunks
        self._limit = limit

    def __iter__(self) -> Iterator[bytes]:
        received, head = 0, bytearray()
        for chunk in self._chunks:
            received += len(chunk)
            head += chunk[: max(0, MAX_STORED_REPLY_CHARS - len(head))]
            if received > self._limit:
                raise ReplyTooLarge(bytes(head), self._limit)
            yield chunk

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def bound_reply(response: httpx.Response) -> None:
    """httpx response hook (it runs before the body is read): read the body through a BoundedStream of
    MAX_REPLY_BYTES. A hook rather than a transport keeps httpx's own transport, proxies from the
    environment included."""
    response.stream = BoundedStream(response.stream, MAX_REPLY_BYTES)


class Backend(Protocol):
    """One server. ``kind`` names the protocol (and the judge's kind in the store), ``url`` the server,
    ``output_format`` how it is asked for JSON of a schema."""

    kind: str
    url: str
    output_format: str

    def served_model(self, name: str) -> ServedModel:
        """The served model called ``name``; a UserError says how to reach the server or get the model."""
        ...

    def chat(
        self,
        model: str,
        messages: list[dict],
        *,
        schema: dict | None,
        seed: int,
        temperature: float,
        max_tokens: int | None,
    ) -> str:
        """The reply text to a conversation (through the server's chat template), asking for JSON of ``schema``
        when one is given; raises ServerError or ReplyTooLarge."""
        ...

    def complete(self, model: str, prompt: str, *, seed: int, temperature: float, max_tokens: int | None) -> str:
        """The continuation of ``prompt`` as the model sees it (no chat template); raises ServerError."""
        ...

    def close(self) -> None: ...


def api_key(variable: str | None) -> str | None:
    """The API key held by the environment variable ``variable`` (read here, never taken from the command line
    nor stored)."""
    if variable is None:
        return None
    key = os.environ.get(variable, "").strip()
    if not key:
        raise UserError(f"--api-key-env {variable}: the environment variable {variable} is not set or empty")
    return key


def connect(kind: str, url: str, *, timeout: float, api_key_env: str | None = None) -> Backend:
    """A client of the server at ``url`` speaking protocol ``kind`` (one of BACKENDS)."""
    if kind == "ollama":
        if api_key_env is not None:
            raise UserError("--api-key-env is for --backend openai (a local Ollama server takes no key)")
        from workbench.backends.ollama import OllamaBackend

        return OllamaBackend(url, timeout=timeout)
    if kind == "openai":
        from workbench.backends.openai import OpenAIBackend

        return OpenAIBackend(url, timeout=timeout, api_key=api_key(api_key_env))
    raise UserError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")


def check_request_options(concurrency: int, retries: int, timeout: float, **at_least_one: int | None) -> None:
    """Refuse option values no batch can run with (``at_least_one``: more options, keyed by name, that must be
    1 or more when given)."""
    limits = [("concurrency", concurrency, 1), ("retries", retries, 0)]
    limits += [(name, value, 1) for name, value in at_least_one.items()]
    for name, value, low in limits:
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if timeout <= 0:
        raise UserError(f"--timeout must be positive, got {timeout}")


def resolve_hosts(kind: str, hosts: str | Sequence[str] | None) -> list[str]:
    """The servers to ask: the given ones, else (Ollama only) $OLLAMA_HOST or Ollama's default address."""
    given = [hosts] if isinstance(hosts, str) else list(hosts or ())
    if given:
        return list(dict.fromkeys(given))
    if kind == "openai":
        raise UserError("--backend openai needs the server's address: --base-url URL (e.g. http://127.0.0.1:8000/v1)")
    return [os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_HOST]


def served_everywhere(backends: list[Backend], name: str) -> ServedModel:
    """The model ``name`` as every server serves it. Servers that share work must serve the same weights:
    digests that differ would mix two judges (or two models) under one name."""
    found = [backend.served_model(name) for backend in backends]
    if len({model.id for model in found}) > 1 or len({model.digest for model in found}) > 1:
        listed = "; ".join(
            f"{backend.url}: {model.id} (digest {model.digest or 'not reported'})"
            for backend, model in zip(backends, found, strict=True)
        )
        raise UserError(f"the servers do not serve the same model {name!r}: {listed}; give servers of one model")
    return found[0]


def add_server_arguments(parser: argparse.ArgumentParser, *, default_backend: str = "ollama") -> None:
    """The options shared by the commands that ask servers: protocol, addresses, key, concurrency, retries."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=default_backend,
        help=f"server protocol: ollama (its own API) or openai (chat completions) (default: {default_backend})",
    )
    parser.add_argument(
        "--base-url",
        "--host",
        dest="host",
        action="append",
        metavar="URL",
        help="server address; repeat it to share the work among servers (ollama default: $OLLAMA_HOST or "
        "http://localhost:11434; openai: e.g. http://127.0.0.1:8000/v1)",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="(openai) environment variable that holds the API key (the key itself is never an argument)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight on each server (default: 4)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help="extra attempts after a connection error, timeout, 5xx or malformed answer",
    )
