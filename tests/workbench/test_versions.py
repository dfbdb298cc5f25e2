"""Versioned responses end to end: a re-import that changes a text adds a version, and every grade and judge
score stays with the exact text it was given to; statistics and judges see the current text, exports the
history."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from workbench import importing, store
from workbench.judge import run_judge

sys.path.insert(0, str(Path(__file__).parent))
from ollama_fake import FakeOllama, fake_score  # noqa: E402

FAST = {"progress": False, "backoff_s": 0.01}
DATASET = "answers"
OLD, NEW = "Paris is the capital of France.", "The capital of France is Paris."
ENTRIES = [
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris.", "m1": OLD, "m2": "Lyon."},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5", "m1": "5", "m2": "Five."},
    {"instruction": "Name a colour.", "input": "", "output": "Blue.", "m1": "Blue.", "m2": "Table."},
]


@pytest.fixture
def fake():
    with FakeOllama() as server:
        yield server
    assert server.violations == []


def _write(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def _judge_scores_by_version(db, item: str, model: str) -> dict[int, list[tuple]]:
    """version -> sorted [(judge name, score)] of one item's responses of ``model``."""
    rows = db.execute(
        "SELECT rv.version, j.name, js.score FROM judge_scores js JOIN judges j ON j.id = js.judge_id "
        "JOIN response_versions rv ON rv.id = js.response_id JOIN models m ON m.id = rv.model_id "
        "WHERE rv.item_id = ? AND m.name = ? ORDER BY rv.version, j.name",
        [item, model],
    ).fetchall()
    found: dict[int, list[tuple]] = {}
    for version, judge, score in rows:
        found.setdefault(version, []).append((judge, score))
    return found


def test_a_changed_text_becomes_a_new_version_and_grades_and_scores_stay_with_the_old_one(
    db_path, tmp_path, db_snapshot, fake
):
    data = _write(tmp_path / f"{DATASET}.json", ENTRIES)
    db = store.open_db(db_path)
    importing.import_path(db, data)
    first, second, third = (item["id"] for item in store.dataset_items(db, DATASET))
    ids = {(r["item_id"], r["model"]): r["response_id"] for r in store.response_rows(db)}
    store.add_grade(db, ids[first, "m1"], "alice", 2, "too terse")
    store.add_grade(db, ids[second, "m1"], "bob", 4)
    scores = _write(tmp_path / "gpt4-m1.json", [10, 20, 30])
    importing.import_scores(db, scores, judge="gpt4", response_key="m1")
    db.close()
    judged = run_judge(db_path, "judge", host=fake.url, **FAST)
    assert len(fake.chats) == 6
    ollama = judged["judge"]

    # the identical file again: nothing changes, not even a timestamp
    before = db_snapshot(db_path)
    importing.import_path(store.open_db(db_path), data)
    assert db_snapshot(db_path) == before

    changed = _write(tmp_path / f"{DATASET}.json", [{**ENTRIES[0], "m1": NEW}, *ENTRIES[1:]])
    db = store.open_db(db_path)
    importing.import_path(db, changed)
    history = store.response_history(db, first, "m1")
    assert [(h["version"], h["is_current"], h["text"], h["grades"], h["judge_scores"]) for h in history] == [
        (1, 0, OLD, 1, 2),
        (2, 1, NEW, 0, 0),
    ]
    old_id, new_id = history[0]["response_id"], history[1]["response_id"]
    assert old_id == ids[first, "m1"] and new_id not in ids.values()
    assert db.execute("SELECT response_id, score, comment FROM grades WHERE reviewer_id = 1").fetchall() == [
        (old_id, 2, "too terse")
    ]
    assert _judge_scores_by_version(db, first, "m1") == {1: [("gpt4", 10.0), (ollama, fake_score(OLD))]}
    # the other responses kept their single version, id and scores
    assert [(h["response_id"], h["version"], h["is_current"]) for h in store.response_history(db, second, "m1")] == [
        (ids[second, "m1"], 1, 1)
    ]
    assert store.response_history(db, first, "nobody") == []
    assert store.older_graded_versions(db, first, ["m1", "m2"]) == {"m1": 1, "m2": 0}
    assert store.older_graded_versions(db, second, ["m1", "m2"]) == {"m1": 0, "m2": 0}

    # statistics read the current versions: alice's grade is no longer counted
    assert [(r["reviewer"], r["response_id"]) for r in store.human_grade_rows(db)] == [("bob", ids[second, "m1"])]
    assert {r["response_id"] for r in store.judge_score_rows(db) if r["judge"] == "gpt4"} == {
        ids[second, "m1"],
        ids[third, "m1"],
    }
    assert {(r["item_id"], r["model"]): r["text"] for r in store.response_rows(db)}[first, "m1"] == NEW
    assert store.model_response_counts(db) == {"m1": 3, "m2": 3}
    db.close()

    # the judge asks once, about the new text only
    rerun = run_judge(db_path, "judge", host=fake.url, **FAST)
    assert len(fake.chats) == 7 and fake.requests_for(NEW) == 1 and fake.requests_for(OLD) == 1
    assert rerun["run"]["pending"] == 1 and rerun["judge"] == ollama
    db = store.open_db(db_path)
    assert _judge_scores_by_version(db, first, "m1") == {
        1: [("gpt4", 10.0), (ollama, fake_score(OLD))],
        2: [(ollama, fake_score(NEW))],
    }
    db.close()

    # the changed file again changes nothing, and the judge has nothing left to ask
    before = db_snapshot(db_path)
    importing.import_path(store.open_db(db_path), changed)
    assert db_snapshot(db_path) == before
    run_judge(db_path, "judge", host=fake.url, **FAST)
    assert len(fake.chats) == 7


def test_exports_keep_the_history_in_csv_and_the_current_texts_in_json(db_path, tmp_path):
    db = store.open_db(db_path)
    importing.import_path(db, _write(tmp_path / f"{DATASET}.json", ENTRIES))
    first = store.dataset_items(db, DATASET)[0]["id"]
    old_id = store.response_ids_by_item(db, "m1")[first]
    store.add_grade(db, old_id, "alice", 2, "too terse")
    importing.import_scores(db, _write(tmp_path / "s.json", [10, 20, 30]), judge="gpt4", response_key="m1")
    store.add_pairwise_grade(db, first, "m1", "m2", "alice", "left", True)
    importing.import_path(db, _write(tmp_path / f"{DATASET}.json", [{**ENTRIES[0], "m1": NEW}, *ENTRIES[1:]]))
    new_id = store.response_ids_by_item(db, "m1")[first]
    store.add_grade(db, new_id, "alice", 5, "better")

    out = tmp_path / "all.csv"
    assert importing.export(db, "csv", out) == 3 + 2 + 1
    with out.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["item_id"] == first]
    assert [
        (r["kind"], r["model"], r["rater"], r["score"], r["response_version"], r["response_current"], r["response"])
        for r in rows
    ] == [
        ("judge", "m1", "gpt4", "10", "1", "0", OLD),
        ("grade", "m1", "alice", "2", "1", "0", OLD),
        ("grade", "m1", "alice", "5", "2", "1", NEW),
        ("pairwise", "m1", "alice", "", "", "", ""),
    ]
    assert [r["comment"] for r in rows[1:3]] == ["too terse", "better"]

    exported = importing.export_json(db, DATASET)
    assert [entry["m1"] for entry in exported] == [NEW, "5", "Blue."]
    # the DPO export pairs current texts (pairwise grades refer to an item and two models, not versions)
    assert importing.export_preferences(db, DATASET)[0]["chosen"] == NEW


def test_a_grade_given_to_a_text_that_was_replaced_meanwhile_is_kept_with_that_text(db_path, tmp_path):
    """A reviewer who read the old text and saves after a re-import grades what they read."""
    db = store.open_db(db_path)
    importing.import_path(db, _write(tmp_path / f"{DATASET}.json", ENTRIES))
    first = store.dataset_items(db, DATASET)[0]["id"]
    shown = store.response_ids_by_item(db, "m1")[first]
    importing.import_path(db, _write(tmp_path / f"{DATASET}.json", [{**ENTRIES[0], "m1": NEW}, *ENTRIES[1:]]))
    store.add_grade(db, shown, "alice", 3)
    assert [(h["text"], h["grades"]) for h in store.response_history(db, first, "m1")] == [(OLD, 1), (NEW, 0)]
    assert store.older_graded_versions(db, first, ["m1"]) == {"m1": 1}
