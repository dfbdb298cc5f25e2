"""The ``llama_server`` fixture: a real llama.cpp server that answers the OpenAI protocol, and a second one."""

from __future__ import annotations

import httpx

from tests.conftest import SERVED_MODEL
from trainer.data import encode, format_prompt


def test_llama_server_answers_a_chat_completion(llama_server, tokenizer):
    """The served GGUF's chat template puts the message in the alpaca prompt: the server counts as many prompt
    tokens as ``generate`` would feed the model for that instruction."""
    assert llama_server.base_url.startswith("http://127.0.0.1:") and llama_server.base_url.endswith("/v1")
    models = httpx.get(f"{llama_server.base_url}/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [SERVED_MODEL] == [llama_server.model]
    reply = httpx.post(
        f"{llama_server.base_url}/chat/completions",
        json={
            "model": llama_server.model,
            "messages": [{"role": "user", "content": "Name a colour."}],
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    prompt = encode(tokenizer, format_prompt({"instruction": "Name a colour."}, "alpaca"))
    assert reply.json()["usage"]["prompt_tokens"] == len(prompt)


def test_llama_server_starts_another_that_can_be_killed(llama_server):
    other = llama_server.start_another()
    assert other.base_url != llama_server.base_url and other.model == llama_server.model
    assert httpx.get(f"{other.base_url}/models", timeout=10).status_code == 200
    other.kill()
    assert other.process.poll() is not None
    assert httpx.get(f"{llama_server.base_url}/models", timeout=10).status_code == 200
