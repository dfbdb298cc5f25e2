"""``workbench judge --shard I/N``: N judge processes on one SQLite file at once, each on its share of the items;
one killed with SIGKILL and rerun; together they store what one unsharded run stores, each answer once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.workbench.test_judge import make_db
from workbench import store
from workbench.cli import main as workbench_main
from workbench.judge import format_summary, run_judge

sys.path.insert(0, str(Path(__file__).parent))
from ollama_fake import FakeOllama, default_judge  # noqa: E402

SHARD_ERROR = "--shard must be I/N with 1 <= I <= N, e.g. 1/3 for the first of three workers;"
REPO = Path(__file__).resolve().parents[2]
# Runs the workbench CLI, and SIGKILLs itself right after its second commit of judge scores: a worker killed
# mid-run, at a known point (with --concurrency 1 nothing else is in flight then).
KILLED_AFTER_TWO_SAVES = """
import os, signal, sys
from workbench import store
save, saved = store.save_judge_scores, []
def save_then_die(db, judge_id, rows):
    save(db, judge_id, rows)
    saved.append(len(rows))
    if len(saved) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
store.save_judge_scores = save_then_die
from workbench.cli import main
sys.exit(main(sys.argv[1:]))
"""
TEXTS = {"m1": [f"first model answer {i}" for i in range(18)], "m2": [f"second answer number {i}" for i in range(18)]}


def _item_shard(item_id: str, count: int) -> int:
    """The documented rule: SHA-256 of the item's stable id, modulo N, plus one."""
    return int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % count + 1


class Rendezvous:
    """A judge that holds each shard's first question until every shard has asked one: proof that the workers
    ran at once, not one after another."""

    def __init__(self, shard_of_text: dict[str, int], count: int) -> None:
        self.shard_of_text, self.count = shard_of_text, count
        self.seen: set[int] = set()
        self.lock, self.everyone_asked = threading.Lock(), threading.Event()

    def __call__(self, chat: dict) -> dict:
        with self.lock:
            self.seen.add(self.shard_of_text[chat["responses"][0]])
            if len(self.seen) == self.count:
                self.everyone_asked.set()
        self.everyone_asked.wait(timeout=60)
        return default_judge(chat)


def _scores(db_file: Path) -> list[tuple]:
    """Every stored judge answer: (judge, model, item, repeat, score, error)."""
    db = store.open_db(db_file)
    rows = db.execute(
        "SELECT j.name, m.name, r.item_id, js.repeat, js.score, js.error FROM judge_scores js "
        "JOIN judges j ON j.id = js.judge_id JOIN responses r ON r.id = js.response_id "
        "JOIN models m ON m.id = r.model_id ORDER BY 1, 2, 3, 4"
    ).fetchall()
    db.close()
    return rows


@pytest.mark.slow
def test_three_concurrent_shards_one_killed_and_rerun_equal_one_unsharded_run(db_path, tmp_path, capsys):
    make_db(db_path, TEXTS)
    whole = tmp_path / "whole.db"
    shutil.copyfile(db_path, whole)
    db = store.open_db(db_path)
    shard_of_text = {row["text"]: _item_shard(row["item_id"], 3) for row in store.response_rows(db)}
    item_ids = [row[0] for row in db.execute("SELECT id FROM items ORDER BY position")]
    db.close()
    share = [[i for i in item_ids if _item_shard(i, 3) == index] for index in (1, 2, 3)]
    assert min(map(len, share)) >= 3  # the killed worker has work left after two commits
    with FakeOllama() as plain:
        run_judge(whole, "judge", host=plain.url, progress=False)
    unsharded_requests = len(plain.chats)

    rendezvous = Rendezvous(shard_of_text, 3)
    with FakeOllama(delay_s=0.02, judge=rendezvous) as fake:
        argv = ["judge", "--db", str(db_path), "--judge-model", "judge", "--host", fake.url, "--json"]
        argv += ["--concurrency", "1"]
        start = {2: [sys.executable, "-c", KILLED_AFTER_TWO_SAVES]}
        workers = [
            subprocess.Popen(
                [*start.get(index, [sys.executable, "-m", "workbench"]), *argv, "--shard", f"{index}/3"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                cwd=tmp_path,
            )
            for index in (1, 2, 3)
        ]
        outputs = [worker.communicate(timeout=120) for worker in workers]
        assert [worker.returncode for worker in workers] == [0, -signal.SIGKILL, 0], outputs
        assert rendezvous.everyone_asked.is_set()  # the three shards had questions open at the same time
        summaries = {index: json.loads(outputs[index - 1][0]) for index in (1, 3)}
        # shards 1 and 3 finished; shard 2 kept its two commits (one answer each at concurrency 1)
        assert len(_scores(db_path)) == 2 * (len(share[0]) + len(share[2])) + 2

        assert workbench_main([*argv, "--shard", "2/3"]) == 0
        summaries[2] = json.loads(capsys.readouterr().out)
    assert fake.violations == [] and plain.violations == []
    assert len(fake.chats) == unsharded_requests  # every response asked exactly once by the shards
    stored = _scores(db_path)
    assert stored == _scores(whole)  # one judge, the same answers: nothing doubled or lost
    assert len(stored) == sum(map(len, TEXTS.values()))
    for index in (1, 2, 3):
        run, expected = summaries[index]["run"], 2 * len(share[index - 1]) - (2 if index == 2 else 0)
        assert (run["pending"], run["judged"], run["failed"], summaries[index]["shard"]) == (
            expected,
            expected,
            0,
            f"{index}/3",
        )
    assert summaries[2]["models"]["m1"]["scored"] == len(TEXTS["m1"])  # the summary covers every shard's answers


@pytest.mark.parametrize("value", ["0/3", "4/3", "1/0", "two/3", "1/3/1", ""])
def test_bad_shard_values_are_one_line_and_leave_the_store_unchanged(value, db_path, capsys):
    make_db(db_path, TEXTS)
    before = {path.name: path.read_bytes() for path in db_path.parent.iterdir()}
    code = workbench_main(
        ["judge", "--db", str(db_path), "--judge-model", "judge", "--host", "http://127.0.0.1:9", "--shard", value]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {SHARD_ERROR} got {value!r}\n"
    assert {path.name: path.read_bytes() for path in db_path.parent.iterdir()} == before


def test_pairwise_shards_split_the_items_and_add_up_to_the_unsharded_verdicts(db_path, tmp_path):
    make_db(db_path, {"a": [f"a{'!' * i}" for i in range(8)], "b": [f"bb{'?' * (7 - i)}" for i in range(8)]})
    whole = tmp_path / "whole.db"
    shutil.copyfile(db_path, whole)
    with FakeOllama() as fake:
        settings = {"host": fake.url, "mode": "pairwise", "response_keys": ["a", "b"], "progress": False}
        expected = run_judge(whole, "judge", **settings)
        halves = [run_judge(db_path, "judge", shard=f"{index}/2", **settings) for index in (1, 2)]
    assert fake.violations == []
    assert [half["run"]["pending"] for half in halves] == [
        sum(_item_shard(item, 2) == index for item in _item_ids(db_path)) for index in (1, 2)
    ]
    assert sum(half["run"]["pending"] for half in halves) == expected["run"]["pending"] == 8
    assert halves[1]["pairwise"] == expected["pairwise"]  # after the second half the store holds every verdict
    assert (
        len(fake.chats) == 2 * 2 * 8
    )  # both orders of each item, asked once by the unsharded run and once by the shards
    assert "shard 2/2" in format_summary(halves[1]).splitlines()[0]


def _item_ids(db_file: Path) -> list[str]:
    db = store.open_db(db_file)
    ids = [row[0] for row in db.execute("SELECT id FROM items")]
    db.close()
    return ids
