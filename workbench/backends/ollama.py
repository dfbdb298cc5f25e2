"""Ollama's own API (``/api/tags``, ``/api/chat``, ``/api/generate``) through the ``ollama`` client.

Ollama reports each pulled model's digest, so a judge keyed on it re-judges after ``ollama pull`` brings new
weights. Its names take a tag: ``llama3`` is listed as ``llama3:latest``, and both name one model.
"""

from __future__ import annotations

import httpx
import ollama

from trainer.errors import UserError
from workbench.backends import ServedModel, ServerError, bound_reply, transport_error


def _tagged(name: str) -> str:
    """Ollama's full model name: ``llama3`` is listed as ``llama3:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class OllamaBackend:
    """One Ollama server; replies are read through the bounded reader."""

    kind = "ollama"
    output_format = "format"  # the JSON schema in the request's ``format``

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self._client = ollama.Client(host=url, timeout=timeout, event_hooks={"response": [bound_reply]})

    def served_model(self, name: str) -> ServedModel:
        """(full name, digest) of a pulled model from ``/api/tags``; a UserError says how to start the server
        or pull the model. The full name (``llama3:latest`` for ``llama3``) keeps one cache key per model."""
        try:
            listing = self._client.list()
        except (ConnectionError, httpx.TransportError) as exc:
            raise UserError(
                f"cannot reach the Ollama server at {self.url} ({type(exc).__name__}); start it with `ollama serve`, "
                "or pass --host / set OLLAMA_HOST"
            ) from None
        except ollama.ResponseError as exc:
            raise UserError(f"the Ollama server at {self.url} failed to list its models: {exc}") from None
        for entry in listing.models:
            if entry.model and _tagged(entry.model) == _tagged(name):
                return ServedModel(entry.model, entry.digest or None)
        pulled = ", ".join(entry.model or "?" for entry in listing.models) or "none"
        raise UserError(f"model {name!r} is not pulled on {self.url}; run `ollama pull {name}` (pulled: {pulled})")

    def _call(self, model: str, request):
        try:
            return request()
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise UserError(
                    f"the Ollama server no longer has model {model!r}: {exc.error}; run `ollama pull {model}`"
                ) from None
            raise ServerError(f"ResponseError: {exc}", status=exc.status_code) from exc
        except (ConnectionError, httpx.TransportError) as exc:
            raise transport_error(exc) from exc

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
        options = {"temperature": temperature, "seed": seed} | ({"num_predict": max_tokens} if max_tokens else {})
        reply = self._call(
            model,
            lambda: self._client.chat(model=model, messages=messages, format=schema, options=options, stream=False),
        )
        return reply.message.content or ""

    def complete(self, model: str, prompt: str, *, seed: int, temperature: float, max_tokens: int | None) -> str:
        options = {"temperature": temperature, "seed": seed} | ({"num_predict": max_tokens} if max_tokens else {})
        reply = self._call(
            model, lambda: self._client.generate(model=model, prompt=prompt, raw=True, options=options, stream=False)
        )
        return reply.response or ""

    def close(self) -> None:
        self._client.close()
