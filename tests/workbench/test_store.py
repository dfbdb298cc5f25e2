"""The store: schema, identities, grades, transactions, concurrent writers and crash safety."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from trainer.errors import UserError
from workbench import store

ARCHITECTURE_TABLES = {
    "meta",
    "datasets",
    "items",
    "models",
    "training_metrics",
    "responses",
    "judges",
    "judge_scores",
    "judge_pairwise",
    "reviewers",
    "grades",
    "pairwise_grades",
    "benchmark_runs",
    "benchmark_results",
    "benchmark_samples",
}


def test_open_db_creates_the_documented_schema_in_wal_mode(db_path):
    db = store.open_db(db_path)
    assert set(db.table_names()) == ARCHITECTURE_TABLES
    assert db.journal_mode == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.schema_version(db) == store.SCHEMA_VERSION == 1
    assert set(db["responses"].columns_dict) == {
        "id",
        "item_id",
        "model_id",
        "text",
        "decoding_json",
        "source",
        "injection_flag",
        "created_at",
    }
    assert set(db["pairwise_grades"].columns_dict) == {
        "id",
        "item_id",
        "left_model_id",
        "right_model_id",
        "reviewer_id",
        "preference",
        "blind",
        "repeat_of",
        "comment",
        "created_at",
    }
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        db.execute("INSERT INTO items (id, dataset_id, position, instruction) VALUES ('x', 99, 0, 'i')")


def test_a_newer_schema_is_refused_and_left_untouched(db_path):
    db = store.open_db(db_path)
    db.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    db.close()
    before = db_path.read_bytes()
    with pytest.raises(UserError, match=r"schema version 7 is newer than this workbench supports \(1\)"):
        store.open_db(db_path)
    assert db_path.read_bytes() == before


def test_bad_database_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="folder .*missing.* does not exist"):
        store.open_db(tmp_path / "missing" / "wb.db")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "notes.txt").write_text("not a database, just some text that is long enough" * 50)
    with pytest.raises(UserError, match="not a workbench database"):
        store.open_db(tmp_path / "notes.txt")
    with pytest.raises(UserError, match="is a folder"):
        store.open_db(tmp_path)


def test_item_id_is_the_documented_hash():
    expected = hashlib.sha256(b"book\x1fGive a synonym\x1ffast").hexdigest()[:16]
    assert store.item_id("book", "Give a synonym", "fast") == expected
    assert store.item_id("other", "Give a synonym", "fast") != expected
    assert store.item_id("book", "Give a synonym", "fast", occurrence=1) != expected


def test_grades_upsert_per_reviewer_and_never_overwrite_each_other(book_db):
    db = store.open_db(book_db)
    response = store.response_rows(db, models=["model 1 response"])[0]["response_id"]
    first = store.add_grade(db, response, "alice", 4, "fine")
    assert store.add_grade(db, response, "alice", 2, "on second thought, wrong") == first
    store.add_grade(db, response, "bob", 5)
    rows = {r["reviewer"]: r["score"] for r in store.human_grade_rows(db)}
    assert rows == {"alice": 2, "bob": 5}
    assert db["grades"].get(first)["comment"] == "on second thought, wrong"
    with pytest.raises(UserError, match="from 1 to 5"):
        store.add_grade(db, response, "alice", 6)
    with pytest.raises(UserError, match="no response with id 999999"):
        store.add_grade(db, 999999, "alice", 3)
    assert {r["reviewer"]: r["score"] for r in store.human_grade_rows(db)} == {"alice": 2, "bob": 5}


def test_pairwise_grades_are_validated(book_db):
    db = store.open_db(book_db)
    item = store.dataset_items(db, "eval-example-data")[0]["id"]
    grade = store.add_pairwise_grade(db, item, "model 1 response", "model 2 response", "alice", "right", True)
    repeat = store.add_pairwise_grade(
        db, item, "model 2 response", "model 1 response", "alice", "left", True, repeat_of=grade
    )
    assert db["pairwise_grades"].get(repeat)["repeat_of"] == grade
    with pytest.raises(UserError, match="preference 'B'"):
        store.add_pairwise_grade(db, item, "model 1 response", "model 2 response", "alice", "B", True)
    with pytest.raises(UserError, match="two different models"):
        store.add_pairwise_grade(db, item, "model 1 response", "model 1 response", "alice", "tie", True)
    with pytest.raises(UserError, match="unknown model .*'gpt-5'.*known: 'model 1 response'"):
        store.add_pairwise_grade(db, item, "model 1 response", "gpt-5", "alice", "tie", True)
    assert db["pairwise_grades"].count == 2


def test_a_failed_transaction_writes_nothing_and_nests_as_a_savepoint(db_path):
    db = store.open_db(db_path)
    with pytest.raises(RuntimeError):
        with store.transaction(db):
            store.get_or_create_model(db, "kept-out")
            raise RuntimeError("boom")
    assert store.model_names(db) == []
    with store.transaction(db):
        store.get_or_create_model(db, "outer")
        with pytest.raises(UserError):
            with store.transaction(db):
                store.get_or_create_model(db, "inner")
                raise UserError("inner fails")
    assert store.model_names(db) == ["outer"]


def _write_grades(db_file, reviewer: str, response_ids: list[int], barrier) -> None:
    db = store.open_db(db_file)
    barrier.wait()
    for number, response_id in enumerate(response_ids):
        store.add_grade(db, response_id, reviewer, number % 5 + 1, f"{reviewer} #{number}")
    db.close()


@pytest.mark.slow
def test_eight_processes_writing_200_grades_each_lose_nothing(book_db):
    responses = [row["response_id"] for row in store.response_rows(store.open_db(book_db))]
    assert len(responses) == 200
    context = multiprocessing.get_context("fork")  # children inherit the imported modules: fast start
    barrier = context.Barrier(8)
    workers = [
        context.Process(target=_write_grades, args=(book_db, f"reviewer-{n}", responses, barrier)) for n in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    db = store.open_db(book_db)
    assert db["grades"].count == 1600
    per_reviewer = db.execute("SELECT COUNT(DISTINCT reviewer_id), COUNT(DISTINCT response_id) FROM grades")
    assert per_reviewer.fetchone() == (8, 200)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


KILL_SCRIPT = """
import sys
from workbench import importing, store
db = store.open_db(sys.argv[1])
importing.import_path(db, sys.argv[2], progress=True)
"""


@pytest.mark.slow
def test_kill_9_during_an_import_leaves_the_database_as_before(book_db, tmp_path, db_snapshot):
    entries = [
        {
            "instruction": f"Question {n}: what is {n} + {n}?",
            "input": "x" * 50,
            "output": str(2 * n),
            "big model": f"It is {2 * n}. " * 10,
        }
        for n in range(120_000)
    ]
    big = tmp_path / "big.json"
    big.write_text(json.dumps(entries))
    before = db_snapshot(book_db)
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(book_db), str(big)],
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    progress, deadline, seen, done = re.compile(rb"(\d+)/(\d+)"), time.monotonic() + 120, b"", []
    while time.monotonic() < deadline:
        chunk = os.read(process.stderr.fileno(), 4096)
        if not chunk:
            break  # the process ended before we saw it mid-import
        seen += chunk
        done = [(int(a), int(b)) for a, b in progress.findall(seen[-400:])]
        if done and 0 < done[-1][0] < done[-1][1]:
            break  # rows are being written inside the import's one transaction
    assert done and 0 < done[-1][0] < done[-1][1], seen.decode(errors="replace")[-500:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, seen.decode(errors="replace")[-500:]
    assert db_snapshot(book_db) == before
    assert store.open_db(book_db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
