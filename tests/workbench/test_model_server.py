"""The judge and ``workbench generate`` against a real llama.cpp server (the ``llama_server`` fixture).

The served model is a tiny GPT-2 with random weights. llama.cpp turns the judge's JSON schema into a grammar, and
the schema lists the allowed scores and caps the rationale, so even random weights give a complete reply with a
score in range; a reply cut short by ``max_tokens`` is refused and stored as a failure with the raw text.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trainer.data import format_prompt
from trainer.errors import UserError
from workbench import store
from workbench.cli import main as workbench_main
from workbench.generation import run_generate
from workbench.judge import run_judge

sys.path.insert(0, str(Path(__file__).parent))
from test_judge import make_db  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
JUDGE = {"backend": "openai", "retries": 0, "progress": False}


def judge_rows(db_path: Path) -> list[tuple]:
    db = store.open_db(db_path)
    rows = db.execute(
        "SELECT r.text, js.score, js.error, js.raw_output FROM judge_scores js "
        "JOIN responses r ON r.id = js.response_id"
    ).fetchall()
    db.close()
    return rows


def answered(server) -> int:
    """Chat completions a llama.cpp server has answered (its access log)."""
    return server.log.read_text(errors="replace").count('"POST /v1/chat/completions HTTP/1.1" 200')


def assert_scored_in_range(rows: list[tuple]) -> None:
    """Every judgement is a stored score from 0 to 100 with its rationale; none is a failure."""
    for _, score, error, raw in rows:
        assert error is None and 0 <= score <= 100, (error, raw)
        assert json.loads(raw)["score"] == score


def test_the_judge_scores_every_response_through_a_real_server(db_path, llama_server, capsys):
    texts = [f"The answer is {number}." for number in range(6)]
    make_db(db_path, {"m": texts})
    argv = ["judge", "--db", str(db_path), "--backend", "openai", "--base-url", llama_server.base_url]
    assert workbench_main([*argv, "--judge-model", llama_server.model, "--retries", "0"]) == 0
    assert "this run: 6 judged, 0 of 6 failed" in capsys.readouterr().out
    rows = judge_rows(db_path)
    assert sorted(text for text, *_ in rows) == sorted(texts)  # each response asked once
    assert_scored_in_range(rows)

    db = store.open_db(db_path)
    judge = db.execute("SELECT kind, model, digest FROM judges").fetchone()
    db.close()
    assert judge == ("openai", llama_server.model, "")  # llama.cpp reports no digest: the key says so


def test_a_reply_cut_short_by_the_token_cap_is_refused_and_kept(db_path, llama_server, capsys):
    make_db(db_path, {"m": ["A short answer."]})
    argv = ["judge", "--db", str(db_path), "--backend", "openai", "--base-url", llama_server.base_url]
    code = workbench_main([*argv, "--judge-model", llama_server.model, "--retries", "0", "--max-tokens", "8"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "malformed answer" in err[0]
    ((_, score, error, raw),) = judge_rows(db_path)
    assert score is None and error.startswith("malformed answer: ") and raw.startswith("{")


@pytest.mark.slow
def test_two_servers_one_killed_mid_run_judge_everything_exactly_once(db_path, llama_server):
    texts = [f"Response number {number:02d}." for number in range(16)]
    make_db(db_path, {"m": texts})
    other = llama_server.start_another()
    outcome: dict = {}

    def judge() -> None:
        try:
            run_judge(db_path, llama_server.model, host=[llama_server.base_url, other.base_url], concurrency=1, **JUDGE)
        except UserError as exc:
            outcome["error"] = str(exc)

    worker = threading.Thread(target=judge)
    worker.start()
    deadline = time.monotonic() + 120
    while len(judge_rows(db_path)) < 3 or answered(other) < 1:  # both servers are at work
        assert time.monotonic() < deadline and worker.is_alive()
        time.sleep(0.05)
    other.kill()
    worker.join(timeout=300)

    assert outcome == {}
    rows = judge_rows(db_path)
    assert sorted(text for text, *_ in rows) == sorted(texts)  # nothing lost with the killed server
    assert_scored_in_range(rows)  # every answer came from a live server: no connection error is stored
    assert answered(other) < 16 and answered(llama_server) + answered(other) >= 16


def test_generate_stores_a_served_models_responses_and_a_rerun_adds_nothing(db_path, llama_server, capsys):
    make_db(db_path, {"reference": [f"ref {number}" for number in range(5)]})
    argv = ["generate", "--db", str(db_path), "--base-url", llama_server.base_url, "--model", llama_server.model]
    argv += ["--dataset", "mini", "--name", "served-gpt2", "--max-tokens", "8", "--concurrency", "2"]
    assert workbench_main(argv) == 0
    assert "this run: 5 new responses, 0 of 5 failed, 5 requests in " in capsys.readouterr().out
    db = store.open_db(db_path)
    rows = store.response_rows(db, models=["served-gpt2"])
    before = list(db.conn.iterdump())
    db.close()
    assert len(rows) == 5 and all(isinstance(row["text"], str) for row in rows)
    assert {row["decoding_json"] for row in rows} == {
        json.dumps(
            {
                "digest": None,
                "max_tokens": 8,
                "model": llama_server.model,
                "prompt_style": "alpaca",
                "seed": 123,
                "server": "openai",
                "temperature": 0.0,
            },
            sort_keys=True,
        )
    }

    again = run_generate(
        db_path, llama_server.model, dataset="mini", host=llama_server.base_url, name="served-gpt2", max_tokens=8
    )
    assert again["run"]["pending"] == 0 and again["already_stored"] == 5
    db = store.open_db(db_path)
    assert list(db.conn.iterdump()) == before
    db.close()


def test_generate_sends_our_prompt_as_a_plain_completion(db_path, llama_server):
    """alpaca: the served model continues exactly the prompt ``trainer generate`` builds (greedy, so the same
    text as asking llama.cpp's completion endpoint directly)."""
    import httpx

    make_db(db_path, {"reference": ["ref 0"]})
    run_generate(db_path, llama_server.model, dataset="mini", host=llama_server.base_url, max_tokens=8)
    db = store.open_db(db_path)
    (row,) = store.response_rows(db, models=[llama_server.model])
    db.close()
    direct = httpx.post(
        f"{llama_server.base_url}/completions",
        json={
            "model": llama_server.model,
            "prompt": format_prompt({"instruction": row["instruction"], "input": row["input"]}, "alpaca"),
            "max_tokens": 8,
            "temperature": 0,
            "seed": 123,
        },
        timeout=60,
    ).json()
    assert row["text"] == direct["choices"][0]["text"].strip()


@pytest.mark.slow
def test_generate_killed_with_sigkill_keeps_every_stored_response_and_resumes(db_path, llama_server):
    make_db(db_path, {"reference": [f"ref {number}" for number in range(30)]})
    code = (
        "from workbench.generation import run_generate; "
        f"run_generate({str(db_path)!r}, {llama_server.model!r}, dataset='mini', host={llama_server.base_url!r}, "
        "max_tokens=24, concurrency=1, progress=False)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ})
    deadline = time.monotonic() + 120
    while len(stored_responses(db_path)) < 5:
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    kept = stored_responses(db_path)
    assert 5 <= len(kept) < 30

    resumed = run_generate(db_path, llama_server.model, dataset="mini", host=llama_server.base_url, max_tokens=24)
    assert resumed["run"]["pending"] == 30 - len(kept) and resumed["run"]["generated"] == 30 - len(kept)
    after = stored_responses(db_path)
    assert len(after) == 30 and all(after[item] == kept[item] for item in kept)  # nothing asked twice


def stored_responses(db_path: Path) -> dict[str, tuple]:
    """item id -> (response id, text) of the served model's responses."""
    db = store.open_db(db_path)
    rows = store.response_rows(db, models=["tiny-gpt2"]) if "tiny-gpt2" in store.model_names(db) else []
    db.close()
    return {row["item_id"]: (row["response_id"], row["text"]) for row in rows}
