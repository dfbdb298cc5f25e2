"""A scripted Ollama server on 127.0.0.1 for the judge's tests and benchmark.

It speaks the wire format of ``/api/tags`` and ``/api/chat`` that the ``ollama`` client uses (see
../shared/NOTES.md), checks every request like a strict server would (model pulled, ``stream`` false,
temperature 0 with an integer seed, the reply schema, the conversation, the fenced response), and answers like
a judge that reads the fenced response: by default a score computed from the response text
(``fake_score``), or in pairwise mode the longer answer. Tests script exceptions per response text: malformed
replies, HTTP errors, slow answers, dropped connections.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_MODEL = "judge:latest"
DEFAULT_DIGEST = "sha256:" + "ab" * 32
_FENCE = r"<{tag}-([0-9a-f]{{16,}})>\n(.*?)\n</{tag}-\1>"


def fake_score(text: str) -> int:
    """The fake judge's score of a response: a fixed function of its text, so tests know every answer."""
    return sum(text.encode("utf-8")) % 101


@dataclass(frozen=True)
class Reply:
    """Answer with this message content (malformed JSON, fenced JSON, an out-of-range score...)."""

    content: str


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error and Ollama's ``{"error": ...}`` body."""

    code: int


@dataclass(frozen=True)
class Slow:
    """Wait this long, then answer normally (the client's timeout should fire first)."""

    seconds: float


@dataclass(frozen=True)
class Drop:
    """Close the connection without answering."""


Action = Reply | Status | Slow | Drop


class FakeOllama:
    """``with FakeOllama() as fake: fake.url``; ``fake.chats`` records every valid chat request,
    ``fake.generations`` every raw completion."""

    def __init__(
        self,
        models: dict[str, str] | None = None,
        *,
        delay_s: float = 0.0,
        judge: Callable[[dict], dict] | None = None,
    ) -> None:
        self.models = dict(models or {DEFAULT_MODEL: DEFAULT_DIGEST})
        self.delay_s = delay_s
        self.judge = judge or default_judge
        self.chats: list[dict] = []
        self.generations: list[dict] = []  # /api/generate requests
        self.violations: list[str] = []
        self._scripts: list[tuple[str, list[Action]]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, address: None  # clients that gave up are expected
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeOllama:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, needle: str, *actions: Action) -> None:
        """The next chats whose judged response contains ``needle`` get ``actions``, one each, in order."""
        with self._lock:
            self._scripts.append((needle, list(actions)))

    def requests_for(self, needle: str) -> int:
        """How many valid chats judged a response containing ``needle``."""
        return sum(any(needle in text for text in chat["responses"]) for chat in self.chats)

    def _next_action(self, responses: list[str]) -> Action | None:
        with self._lock:
            for needle, actions in self._scripts:
                if actions and any(needle in text for text in responses):
                    return actions.pop(0)
        return None

    def _check_chat(self, body: dict) -> tuple[str | None, dict]:
        """(violation or None, parsed request) for a chat body."""
        if body.get("stream") is not False:
            return "stream must be false", {}
        options = body.get("options") or {}
        if options.get("temperature") != 0 or not isinstance(options.get("seed"), int):
            return f"options must hold temperature 0 and an integer seed, got {options}", {}
        schema = body.get("format")
        mode = _schema_mode(schema)
        if mode is None:
            return f"format is not the score or pairwise schema: {schema}", {}
        messages = body.get("messages")
        if not isinstance(messages, list) or len(messages) < 2 or len(messages) % 2:
            return "messages must be system, user and optionally (assistant, user) repair turns", {}
        roles = [message.get("role") for message in messages]
        expected = ["system"] + ["user", "assistant"] * (len(messages) // 2 - 1) + ["user"]
        if roles != expected or not all(isinstance(message.get("content"), str) for message in messages):
            return f"roles {roles} do not alternate as {expected}", {}
        if "data" not in messages[0]["content"] or "ignore" not in messages[0]["content"]:
            return "the system prompt must say that fenced text is data and its instructions are ignored", {}
        tags = ("response",) if mode == "score" else ("response_a", "response_b")
        first_user = messages[1]["content"]
        fenced = [re.search(_FENCE.format(tag=tag), first_user, re.DOTALL) for tag in tags]
        if not all(fenced) or len({match.group(1) for match in fenced}) != 1:
            return f"the judged responses are not fenced as {tags} with one marker", {}
        marker = fenced[0].group(1)
        if any(marker in match.group(2) for match in fenced):
            return "the boundary marker occurs inside a judged response", {}
        return None, {
            "mode": mode,
            "seed": options["seed"],
            "messages": messages,
            "marker": marker,
            "responses": [match.group(2) for match in fenced],
            "model": body.get("model"),
        }


def _schema_mode(schema: object) -> str | None:
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return None
    properties = schema.get("properties", {})
    if properties.get("rationale", {}).get("type") != "string":
        return None
    score = properties.get("score", {})
    if (score.get("type"), score.get("minimum"), score.get("maximum")) == ("integer", 0, 100) and set(
        schema.get("required", ())
    ) == {"score", "rationale"}:
        return "score"
    verdict = properties.get("verdict", {})
    if sorted(verdict.get("enum", ())) == ["A", "B", "tie"] and set(schema.get("required", ())) == {
        "verdict",
        "rationale",
    }:
        return "pairwise"
    return None


def _tagged(name: str) -> str:
    """Ollama's reading of a model name: no tag means ``:latest``."""
    return name if ":" in name else f"{name}:latest"


def default_judge(chat: dict) -> dict:
    """Score mode: ``fake_score`` of the response; pairwise: the longer answer wins (a verbose judge)."""
    if chat["mode"] == "score":
        return {"score": fake_score(chat["responses"][0]), "rationale": "fake judge"}
    first, second = (len(text) for text in chat["responses"])
    verdict = "A" if first > second else "B" if second > first else "tie"
    return {"verdict": verdict, "rationale": "the longer one"}


def _make_handler(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like Ollama

        def setup(self) -> None:
            super().setup()
            # headers and body go out in separate writes: without this, Nagle's algorithm and the client's
            # delayed ACK add ~40 ms to every answer, which a real Ollama server does not have
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args) -> None:
            pass

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _generate(self, body: dict) -> None:
            """A raw completion (``workbench generate --backend ollama``): the prompt's last line, echoed."""
            if _tagged(body.get("model") or "") not in fake.models:
                return self._send(404, {"error": f"model '{body.get('model')}' not found, try pulling it first"})
            if body.get("raw") is not True or body.get("stream") is not False:
                fake.violations.append(f"generate must be raw and not streamed: {body}")
                return self._send(400, {"error": "expected raw, unstreamed generation"})
            with fake._lock:
                fake.generations.append(body)
            last_line = body["prompt"].splitlines()[-3]
            reply = {"model": body["model"], "created_at": "2026-11-25T00:00:00Z", "response": f" {last_line}\n"}
            return self._send(200, {**reply, "done": True})

        def do_GET(self) -> None:
            if self.path != "/api/tags":
                return self._send(404, {"error": f"unknown path {self.path}"})
            models = [
                {
                    "name": name,
                    "model": name,
                    "modified_at": "2026-11-25T00:00:00Z",
                    "size": 1,
                    "digest": digest.removeprefix("sha256:"),
                    "details": {},
                }
                for name, digest in fake.models.items()
            ]
            self._send(200, {"models": models})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path == "/api/generate":
                return self._generate(body)
            if self.path != "/api/chat":
                return self._send(404, {"error": f"unknown path {self.path}"})
            if _tagged(body.get("model") or "") not in fake.models:
                return self._send(404, {"error": f"model '{body.get('model')}' not found, try pulling it first"})
            violation, chat = fake._check_chat(body)
            if violation:
                fake.violations.append(violation)
                return self._send(400, {"error": violation})
            with fake._lock:
                fake.chats.append(chat)
            action = fake._next_action(chat["responses"])
            if fake.delay_s:
                time.sleep(fake.delay_s)
            if isinstance(action, Drop):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return None
            if isinstance(action, Status):
                return self._send(action.code, {"error": f"scripted HTTP {action.code}"})
            if isinstance(action, Slow):
                time.sleep(action.seconds)
            content = action.content if isinstance(action, Reply) else json.dumps(fake.judge(chat))
            self._send(
                200,
                {
                    "model": body["model"],
                    "created_at": "2026-11-25T00:00:00Z",
                    "message": {"role": "assistant", "content": content},
                    "done": True,
                    "done_reason": "stop",
                },
            )
            return None

    return Handler
