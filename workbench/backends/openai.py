"""The OpenAI chat-completions protocol (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``), spoken
with httpx directly: vLLM, llama.cpp's server, LM Studio, SGLang, hosted APIs and Ollama's ``/v1`` all serve it.

Structured output differs between servers, so a judge request tries, in order, OpenAI's
``{"type": "json_schema", ...}``, the ``{"type": "json_object", "schema": ...}`` that llama.cpp and older vLLM
read, and plain JSON mode; a server that refuses one (HTTP 400 or 422; llama-cpp-python answers 500) gets the
next, and the first that works is kept for the rest of the batch. The judge validates every reply anyway (score
range, verdict values), since a grammar gives the shape but not the bounds. The API key comes from an
environment variable and goes only into the Authorization header.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import httpx

from trainer.errors import UserError
from workbench.backends import ServedModel, ServerError, bound_reply, transport_error

# How to ask for JSON of a schema, most precise first; None: plain JSON mode (the reply is validated only).
OUTPUT_FORMATS = ("json_schema", "json_object_schema", "json_object")


def refuses_format(exc: ServerError) -> bool:
    """A server that does not know a response_format answers 400 or 422, or (llama-cpp-python) a 500 whose
    message names the field."""
    return exc.status in (400, 422) or (exc.status == 500 and "response_format" in str(exc))


def api_base(url: str) -> str:
    """``url`` with ``/v1`` appended when it names only a host (``http://127.0.0.1:8000``): OpenAI clients take
    the base with ``/v1``, users often paste the server's address."""
    url = url.rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def response_format(style: str, schema: dict) -> dict:
    if style == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
    if style == "json_object_schema":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_object"}


def _error_text(response: httpx.Response) -> str:
    """The server's own words for an HTTP error: OpenAI's ``{"error": {"message"}}``, FastAPI's ``detail`` or
    the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:300]
    return str(body)[:300]


class OpenAIBackend:
    """One OpenAI-compatible server; ``output_format`` is the structured-output request it accepts."""

    kind = "openai"

    def __init__(self, url: str, *, timeout: float, api_key: str | None = None) -> None:
        self.url = api_base(url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.url + "/", timeout=timeout, headers=headers, event_hooks={"response": [bound_reply]}
        )
        self.output_format = OUTPUT_FORMATS[0]
        self._lock = threading.Lock()

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise transport_error(exc) from exc
        if response.status_code == 401 or response.status_code == 403:
            raise UserError(
                f"the server at {self.url} refused the request (HTTP {response.status_code}: "
                f"{_error_text(response)}); pass --api-key-env VAR with the variable that holds its API key"
            )
        if response.status_code >= 400:
            raise ServerError(f"HTTP {response.status_code}: {_error_text(response)}", status=response.status_code)
        try:
            return response.json()
        except ValueError:
            raise ServerError(f"the reply is not JSON: {response.text[:200]!r}", status=response.status_code) from None

    def served_model(self, name: str) -> ServedModel:
        try:
            listing = self._request("GET", "models")
        except ServerError as exc:
            raise UserError(
                f"cannot list the models of the server at {self.url} ({exc}); check --base-url (an "
                "OpenAI-compatible server answers GET /v1/models)"
            ) from None
        entries = [entry for entry in listing.get("data") or [] if isinstance(entry, dict) and "id" in entry]
        for entry in entries:
            if entry["id"] == name:
                digest = entry.get("digest")
                return ServedModel(entry["id"], digest if isinstance(digest, str) and digest else None)
        served = ", ".join(repr(entry["id"]) for entry in entries) or "none"
        raise UserError(f"the server at {self.url} does not serve model {name!r} (served: {served})")

    def _answer(self, path: str, body: dict, model: str) -> dict:
        try:
            reply = self._request("POST", path, body)
        except ServerError as exc:
            if exc.status == 404:
                raise UserError(
                    f"the server at {self.url} answered 404 to {path} for model {model!r} ({exc}); check "
                    "--base-url (it usually ends in /v1) and the model name"
                ) from None
            raise
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise ServerError(f"the reply holds no choices: {str(reply)[:200]}", status=200)
        return choices[0]

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
        body = {"model": model, "messages": messages, "temperature": temperature, "seed": seed, "stream": False}
        if max_tokens:
            body["max_tokens"] = max_tokens
        if schema is None:
            return self._content(self._answer("chat/completions", body, model))
        first_refusal: ServerError | None = None
        for style in OUTPUT_FORMATS[OUTPUT_FORMATS.index(self.output_format) :]:
            request = {**body, "response_format": response_format(style, schema)}
            try:
                choice = self._answer("chat/completions", request, model)
            except ServerError as exc:
                if not refuses_format(exc):
                    raise
                first_refusal = first_refusal or exc
                continue
            with self._lock:  # the first format that worked: later requests start there
                if OUTPUT_FORMATS.index(style) > OUTPUT_FORMATS.index(self.output_format):
                    self.output_format = style
            return self._content(choice)
        raise first_refusal

    @staticmethod
    def _content(choice: dict) -> str:
        message = choice.get("message") or {}
        return message.get("content") or ""

    def complete(self, model: str, prompt: str, *, seed: int, temperature: float, max_tokens: int | None) -> str:
        body = {"model": model, "prompt": prompt, "temperature": temperature, "seed": seed, "stream": False}
        if max_tokens:
            body["max_tokens"] = max_tokens
        return self._answer("completions", body, model).get("text") or ""

    def close(self) -> None:
        self._client.close()
