"""The OpenAI-compatible backend's protocol details against pytest-httpserver, and servers sharing work.

The scripted server reads the fenced response like the Ollama fake does and answers ``fake_score`` of it, so
every stored score is an exact expectation. Real-server tests (llama.cpp) live in test_model_server.py.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from trainer.errors import UserError
from workbench import store
from workbench.cli import main as workbench_main
from workbench.judge import format_summary, run_judge

sys.path.insert(0, str(Path(__file__).parent))
from ollama_fake import _FENCE, Drop, FakeOllama, fake_score  # noqa: E402
from test_judge import FAST, make_db, stored_scores  # noqa: E402

SERVED = "judge-7b"
KEY = "sk-test-0123456789"


class OpenAIScript:
    """Answers ``/v1/models`` and ``/v1/chat/completions`` on an HTTPServer like a strict OpenAI-compatible
    judge: ``refuse`` lists the response_format styles it answers 400 to; ``key`` the Bearer key it wants;
    ``answer(text)`` the reply content for a judged response (default: its fake_score as JSON)."""

    def __init__(self, server: HTTPServer, *, refuse=(), key=None, answer=None, digest=None) -> None:
        self.requests: list[dict] = []
        self.refuse, self.key, self.digest = set(refuse), key, digest
        self.answer = answer or (lambda text: json.dumps({"score": fake_score(text), "rationale": "fake"}))
        self.lock = threading.Lock()
        server.expect_request("/v1/models").respond_with_handler(self.models)
        server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(self.chat)

    def _unauthorized(self, request: Request) -> Response | None:
        if self.key and request.headers.get("Authorization") != f"Bearer {self.key}":
            return _json({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, 401)
        return None

    def models(self, request: Request) -> Response:
        entry = {"id": SERVED, "object": "model", "owned_by": "me"} | ({"digest": self.digest} if self.digest else {})
        return self._unauthorized(request) or _json({"object": "list", "data": [entry]})

    def chat(self, request: Request) -> Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        body = request.get_json()
        with self.lock:
            self.requests.append(body)
        style = _style(body.get("response_format"))
        if style in self.refuse:
            return _json({"error": {"message": f"response_format {style} is not supported"}}, 400)
        assert body["model"] == SERVED and body["temperature"] == 0 and isinstance(body["seed"], int)
        judged = re.search(_FENCE.format(tag="response"), body["messages"][1]["content"], re.DOTALL).group(2)
        content = self.answer(judged)
        return _json({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    def styles(self) -> list[str]:
        return [_style(body.get("response_format")) for body in self.requests]


def _style(response_format: dict | None) -> str | None:
    if response_format is None:
        return None
    if response_format["type"] == "json_schema":
        return "json_schema"
    return "json_object_schema" if "schema" in response_format else "json_object"


def _json(payload: dict, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def _base(server: HTTPServer) -> str:
    return server.url_for("/v1")


TEXTS = ["alpha answer", "beta answer", "gamma answer", "delta answer"]


def test_openai_judge_asks_for_the_schema_and_scores_everything_once(db_path, httpserver):
    script = OpenAIScript(httpserver)
    make_db(db_path, {"m": TEXTS})
    summary = run_judge(db_path, SERVED, backend="openai", host=_base(httpserver), **FAST)
    assert summary["run"] == {**summary["run"], "pending": 4, "judged": 4, "failed": 0, "requests": 4}
    assert stored_scores(db_path, summary["judge"]) == {text: [(0, fake_score(text), None)] for text in TEXTS}
    first = script.requests[0]
    assert first["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": first["response_format"]["json_schema"]["schema"], "strict": True},
    }
    assert first["response_format"]["json_schema"]["schema"]["properties"]["score"]["maximum"] == 100
    assert [m["role"] for m in first["messages"]] == ["system", "user"] and first["stream"] is False
    assert summary["backend"] == "openai" and summary["structured_output"] == "json_schema"

    again = run_judge(db_path, SERVED, backend="openai", host=_base(httpserver), **FAST)
    assert again["run"]["pending"] == 0 and len(script.requests) == 4  # cached
    db = store.open_db(db_path)
    (kind,) = db.execute("SELECT kind FROM judges").fetchone()
    db.close()
    assert kind == "openai"


def test_a_server_that_refuses_schemas_gets_json_mode_and_replies_are_still_validated(db_path, httpserver):
    answers = {"alpha answer": '{"score": 101, "rationale": "too high"}', "beta answer": '{"score": -751751751751751}'}
    script = OpenAIScript(
        httpserver,
        refuse={"json_schema", "json_object_schema"},
        answer=lambda text: answers.get(text) or json.dumps({"score": fake_score(text), "rationale": "ok"}),
    )
    make_db(db_path, {"m": TEXTS})
    summary = run_judge(db_path, SERVED, backend="openai", host=_base(httpserver), concurrency=1, retries=1, **FAST)

    # the first question tries all three formats; every later one goes straight to plain JSON mode
    assert script.styles()[:3] == ["json_schema", "json_object_schema", "json_object"]
    assert set(script.styles()[3:]) == {"json_object"} and summary["structured_output"] == "json_object"
    found = stored_scores(db_path, summary["judge"])
    assert found["alpha answer"] == [(0, None, "malformed answer: score 101 is outside 0-100")]
    assert found["beta answer"] == [(0, None, "malformed answer: score -7.51752e+14 is outside 0-100")]
    assert found["gamma answer"] == [(0, fake_score("gamma answer"), None)]
    assert summary["run"]["judged"] == 2 and summary["run"]["failed"] == 2


def test_a_server_error_is_retried_and_a_client_error_is_not(db_path, httpserver):
    calls = {"n": 0}

    def flaky(request: Request) -> Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return _json({"error": {"message": "overloaded"}}, 503)
        return script.chat(request)

    script = OpenAIScript(httpserver)
    httpserver.clear_all_handlers()
    httpserver.expect_request("/v1/models").respond_with_handler(script.models)
    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(flaky)
    make_db(db_path, {"m": TEXTS[:2]})
    summary = run_judge(db_path, SERVED, backend="openai", host=_base(httpserver), concurrency=1, **FAST)
    assert summary["run"] == {**summary["run"], "judged": 2, "failed": 0, "requests": 3}


def test_the_api_key_comes_from_the_named_variable_and_is_never_stored(db_path, httpserver, monkeypatch, capsys):
    OpenAIScript(httpserver, key=KEY)
    make_db(db_path, {"m": TEXTS[:2]})
    before = db_path.read_bytes()
    argv = ["judge", "--db", str(db_path), "--backend", "openai", "--base-url", _base(httpserver)]
    argv += ["--judge-model", SERVED]

    monkeypatch.delenv("JUDGE_KEY", raising=False)
    assert workbench_main([*argv, "--api-key-env", "JUDGE_KEY"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --api-key-env JUDGE_KEY: the environment variable JUDGE_KEY is not set or empty"
    ]
    assert workbench_main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: the server at {_base(httpserver)} refused the request (HTTP 401: Incorrect API key provided); "
        "pass --api-key-env VAR with the variable that holds its API key"
    ]
    assert db_path.read_bytes() == before

    monkeypatch.setenv("JUDGE_KEY", KEY)
    assert workbench_main([*argv, "--api-key-env", "JUDGE_KEY", "--json"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["run"]["judged"] == 2
    db = store.open_db(db_path)
    dump = "\n".join(db.conn.iterdump())
    db.close()
    assert KEY not in dump and KEY not in printed.out + printed.err


def test_cache_key_names_the_protocol_and_a_declared_revision(db_path, httpserver):
    OpenAIScript(httpserver)
    make_db(db_path, {"m": TEXTS[:2]})
    plain = run_judge(db_path, SERVED, backend="openai", host=_base(httpserver), **FAST)
    assert plain["digest"] == "" and not plain["versioned"]
    assert "hosted models change under the same name" in format_summary(plain)
    revised = run_judge(db_path, SERVED, backend="openai", host=_base(httpserver), judge_revision="2026-11", **FAST)
    assert revised["judge"] != plain["judge"] and revised["digest"] == "revision:2026-11"
    assert revised["run"]["judged"] == 2 and "hosted models change" not in format_summary(revised)
    with pytest.raises(UserError, match=r"^--judge-revision is for --backend openai"):
        run_judge(db_path, "judge", backend="ollama", host=_base(httpserver), judge_revision="x", **FAST)


def test_a_reported_digest_is_the_version_and_servers_must_agree(db_path, httpserver):
    OpenAIScript(httpserver, digest="sha256:feed")
    make_db(db_path, {"m": TEXTS[:1]})
    summary = run_judge(db_path, SERVED, backend="openai", host=_base(httpserver), **FAST)
    assert summary["digest"] == "sha256:feed" and summary["versioned"]
    with HTTPServer() as other:
        OpenAIScript(other, digest="sha256:beef")
        with pytest.raises(UserError, match=r"^the servers do not serve the same model 'judge-7b': .*sha256:beef"):
            run_judge(db_path, SERVED, backend="openai", host=[_base(httpserver), _base(other)], **FAST)


def test_unknown_model_or_missing_address_is_one_line(db_path, httpserver, capsys):
    OpenAIScript(httpserver)
    make_db(db_path, {"m": TEXTS[:1]})
    base = ["judge", "--db", str(db_path), "--backend", "openai"]
    assert workbench_main([*base, "--judge-model", "gpt-9"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --backend openai needs the server's address: --base-url URL (e.g. http://127.0.0.1:8000/v1)"
    ]
    assert workbench_main([*base, "--judge-model", "gpt-9", "--base-url", httpserver.url_for("/")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: the server at {_base(httpserver)} does not serve model 'gpt-9' (served: 'judge-7b')"
    ]


# --- several servers share the work ------------------------------------------------------------------------


def _dies_after(server: FakeOllama, answers: int):
    """A judge function for ``server`` after whose ``answers``-th answer every request has its connection
    closed unanswered (a crashed server behind a proxy, or one killed mid-run)."""
    count = {"n": 0}

    def judge(chat: dict) -> dict:
        count["n"] += 1
        if count["n"] == answers:
            server._next_action = lambda responses: Drop()
        return {"score": fake_score(chat["responses"][0]), "rationale": "fake judge"}

    return judge


def test_two_servers_share_the_work_and_a_dead_ones_questions_move(db_path):
    texts = [f"response {i:02d}" for i in range(16)]
    make_db(db_path, {"m": texts})
    with FakeOllama(delay_s=0.02) as steady, FakeOllama(delay_s=0.02) as dying:
        dying.judge = _dies_after(dying, 3)
        summary = run_judge(db_path, "judge", host=[steady.url, dying.url], concurrency=2, retries=1, **FAST)
        answered = {chat["responses"][0] for chat in steady.chats} | {c["responses"][0] for c in dying.chats}
    assert stored_scores(db_path, summary["judge"]) == {text: [(0, fake_score(text), None)] for text in texts}
    assert answered == set(texts) and summary["run"]["judged"] == 16 and summary["run"]["failed"] == 0
    servers = {server["url"]: server for server in summary["run"]["servers"]}
    assert servers[steady.url]["down"] is None and servers[dying.url]["down"] is not None
    assert servers[steady.url]["answered"] + servers[dying.url]["answered"] == 16
    assert 3 <= servers[dying.url]["answered"] <= 4  # the third answer, and one already being answered
    assert f"  {dying.url}: {servers[dying.url]['answered']} answered, stopped: " in format_summary(summary)


def test_when_every_server_dies_the_batch_stops_with_one_line(db_path, capsys):
    texts = [f"response {i:02d}" for i in range(10)]
    make_db(db_path, {"m": texts})
    with FakeOllama() as first, FakeOllama() as second:
        first.judge, second.judge = _dies_after(first, 2), _dies_after(second, 2)
        code = workbench_main(
            ["judge", "--db", str(db_path), "--judge-model", "judge", "--host", first.url, "--host", second.url]
            + ["--retries", "0", "--concurrency", "1"]
        )
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1
    assert re.fullmatch(
        r"error: every server stopped answering \(http://127\.0\.0\.1:\d+: \w+: .*; http://127\.0\.0\.1:\d+: .*\); "
        r"\d+ of 10 answers were stored, a rerun asks the rest",
        err[0],
    )
    db = store.open_db(db_path)
    (judge,) = store.judge_names(db)
    db.close()
    kept = stored_scores(db_path, judge)
    assert 2 <= len(kept) <= 4 and all(rows == [(0, fake_score(text), None)] for text, rows in kept.items())


# --- workbench generate ------------------------------------------------------------------------------------


class CompletionScript:
    """``/v1/completions`` and ``/v1/chat/completions`` answering ``reply(prompt_or_message)``; ``fail`` holds
    substrings whose requests get a 500."""

    def __init__(self, server: HTTPServer, *, fail=()) -> None:
        self.prompts: list[str] = []
        self.chats: list[list[dict]] = []
        self.fail = set(fail)
        server.expect_request("/v1/models").respond_with_handler(
            lambda request: _json({"data": [{"id": SERVED, "object": "model"}]})
        )
        server.expect_request("/v1/completions", method="POST").respond_with_handler(self.complete)
        server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(self.chat)

    def complete(self, request: Request) -> Response:
        prompt = request.get_json()["prompt"]
        self.prompts.append(prompt)
        if any(needle in prompt for needle in self.fail):
            return _json({"error": {"message": "boom"}}, 500)
        return _json({"choices": [{"index": 0, "text": f"\n answer to {prompt.splitlines()[3]} "}]})

    def chat(self, request: Request) -> Response:
        messages = request.get_json()["messages"]
        self.chats.append(messages)
        return _json({"choices": [{"index": 0, "message": {"role": "assistant", "content": "chatted"}}]})


def _generate(db_path, server: HTTPServer, *extra: str) -> int:
    argv = ["generate", "--db", str(db_path), "--base-url", _base(server), "--model", SERVED, "--dataset", "mini"]
    return workbench_main([*argv, "--retries", "0", *extra])


def test_generate_resumes_where_a_failure_left_off(db_path, httpserver, capsys):
    script = CompletionScript(httpserver, fail={"Instruction 2"})
    make_db(db_path, {"reference": ["r0", "r1", "r2", "r3"]})
    assert _generate(db_path, httpserver) == 1
    out, err = capsys.readouterr()
    assert "this run: 3 new responses, 1 of 4 failed, 4 requests in " in out
    assert err.splitlines() == [
        "error: 1 of 4 responses failed; first: item "
        f"{store.item_id('mini', 'Instruction 2', '')}: HTTP 500: boom. A rerun asks again for the missing ones"
    ]
    assert (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nInstruction 0\n\n### Response:"
    ) in script.prompts
    db = store.open_db(db_path)
    texts = {row["instruction"]: row["text"] for row in store.response_rows(db, models=[SERVED])}
    db.close()
    assert texts == {f"Instruction {i}": f"answer to Instruction {i}" for i in (0, 1, 3)}

    script.fail.clear()
    assert _generate(db_path, httpserver) == 0
    assert "this run: 1 new responses, 0 of 1 failed" in capsys.readouterr().out
    assert len(script.prompts) == 5 and "Instruction 2" in script.prompts[-1]


def test_generate_chat_style_uses_the_servers_template_and_refuses_mixing(db_path, httpserver, capsys):
    script = CompletionScript(httpserver)
    make_db(db_path, {"reference": ["r0", "r1"]})
    assert _generate(db_path, httpserver, "--prompt-style", "chat", "--name", "chatty") == 0
    capsys.readouterr()
    assert [{"role": "user", "content": "Instruction 0"}] in script.chats and script.prompts == []
    before = db_path.read_bytes()
    assert _generate(db_path, httpserver, "--name", "chatty") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: model 'chatty' already holds responses to 'mini' made otherwise")
    assert db_path.read_bytes() == before and script.prompts == []


def test_generate_input_errors_are_one_line(db_path, httpserver, capsys):
    CompletionScript(httpserver)
    make_db(db_path, {"reference": ["r0"]})
    assert _generate(db_path, httpserver, "--split", "test") == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: data set 'mini' has no items in split 'test' (its splits: none)"
    ]
    argv = ["generate", "--db", str(db_path), "--base-url", _base(httpserver), "--model", SERVED]
    assert workbench_main([*argv, "--dataset", "other"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: unknown data set 'other'; known: 'mini'"]


def test_generate_through_ollama_sends_the_raw_prompt(db_path, capsys):
    make_db(db_path, {"reference": ["r0", "r1"]})
    with FakeOllama() as fake:
        argv = ["generate", "--db", str(db_path), "--backend", "ollama", "--host", fake.url, "--model", "judge"]
        assert workbench_main([*argv, "--dataset", "mini", "--max-tokens", "5"]) == 0
    assert "model judge:latest (judge:latest at " in capsys.readouterr().out
    assert fake.violations == [] and len(fake.generations) == 2
    assert {body["options"]["num_predict"] for body in fake.generations} == {5}
    db = store.open_db(db_path)
    texts = {row["instruction"]: row["text"] for row in store.response_rows(db, models=["judge:latest"])}
    db.close()
    assert texts == {"Instruction 0": "Instruction 0", "Instruction 1": "Instruction 1"}
