"""Review campaigns in the store: assignment with overlap, reservations, closing, adjudication and exports.

The browser tests of the same features are in ``test_app_campaigns.py``; here every rule is checked on the
SQLite file directly, including a property test over random interleavings of reviewers.
"""

from __future__ import annotations

import csv
import json
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.workbench.conftest import BOOK_MODELS
from trainer.errors import UserError
from workbench import cli, importing, store

BOOK = "eval-example-data"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _grade_item(db, reviewer: str, item_id: str, score: int = 4, models=BOOK_MODELS) -> store.Saved:
    """Grade every response of ``models`` on the item, as the Review tab's autosave does."""
    view = store.item_view(db, item_id, list(models), reviewer)
    marks = [store.Mark(row["response_id"], row["model"], score) for row in view["responses"]]
    return store.save_marks(db, reviewer, item_id, marks, None)


def _holders(db, campaign: str) -> dict[str, list[str]]:
    """item -> reviewers who finished it, read from the assignments table."""
    found: dict[str, list[str]] = {}
    for item, reviewer in db.execute(
        """SELECT a.item_id, rv.name FROM assignments a JOIN reviewers rv ON rv.id = a.reviewer_id
           JOIN campaigns c ON c.id = a.campaign_id WHERE c.name = ? AND a.done_at IS NOT NULL""",
        [campaign],
    ).fetchall():
        found.setdefault(item, []).append(reviewer)
    return found


def _graders(db, item_id: str) -> Counter:
    """reviewer -> responses of the item they graded."""
    return Counter(
        name
        for (name,) in db.execute(
            """SELECT rv.name FROM grades g JOIN reviewers rv ON rv.id = g.reviewer_id
               JOIN responses r ON r.id = g.response_id WHERE r.item_id = ?""",
            [item_id],
        ).fetchall()
    )


@pytest.fixture
def book(book_db):
    db = store.open_db(book_db)
    yield db
    db.close()


def _small_campaign(db, name="c", overlap=2, items=6, **options) -> store.Campaign:
    """A campaign over the first ``items`` items of the book's data (a split holds them)."""
    store.set_item_splits(db, BOOK, {"pilot": list(range(items))})
    return store.create_campaign(db, name, dataset=BOOK, models=BOOK_MODELS, overlap=overlap, split="pilot", **options)


# --- creating ---------------------------------------------------------------------------------------------


def test_a_campaign_covers_the_items_of_its_split_in_file_order(book):
    campaign = _small_campaign(book, guidelines="# Grade facts, not style")
    assert campaign.models == BOOK_MODELS and campaign.overlap == 2 and campaign.is_open
    assert store.get_campaign(book, "c").guidelines == "# Grade facts, not style"
    progress = store.campaign_progress(book, "c")
    assert (progress["items"], progress["complete"], progress["reviews_needed"]) == (6, 0, 12)
    first = store.dataset_items(book, BOOK)[0]["id"]
    assert store.next_assignment(book, "c", "alice", now=T0) == first


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dataset": "nope"}, "unknown data set 'nope'"),
        ({"models": ["nobody"]}, "model 'nobody' has no responses"),
        ({"models": []}, "at least one model"),
        ({"models": ["a", "b", "c", "d", "e"]}, "at most 4 models"),
        ({"overlap": 0}, "overlap"),
        ({"overlap": 1.5}, "overlap"),
        ({"split": "nosuch"}, "no items in split 'nosuch'"),
        ({"lease_minutes": 0}, "minutes"),
        ({"name": " "}, "needs a name"),
    ],
)
def test_a_bad_campaign_is_refused_and_changes_nothing(book_db, db_snapshot, options, message):
    before = db_snapshot(book_db)
    db = store.open_db(book_db)
    arguments = {"name": "c", "dataset": BOOK, "models": BOOK_MODELS, "overlap": 2, **options}
    with pytest.raises(UserError, match=message):
        store.create_campaign(db, arguments.pop("name"), **arguments)
    db.close()
    assert db_snapshot(book_db) == before


def test_the_same_name_twice_is_refused(book):
    _small_campaign(book)
    with pytest.raises(UserError, match="exists already"):
        store.create_campaign(book, "c", dataset=BOOK, models=BOOK_MODELS)


def test_reviews_done_before_the_campaign_count(book):
    first, second = [item["id"] for item in store.dataset_items(book, BOOK)][:2]
    _grade_item(book, "alice", first)
    store.save_marks(  # one of two responses only: not done
        book,
        "bob",
        first,
        [store.Mark(store.item_view(book, first, list(BOOK_MODELS))["responses"][0]["response_id"], BOOK_MODELS[0], 3)],
        None,
    )
    _small_campaign(book)
    assert _holders(book, "c") == {first: ["alice"]}
    assert store.next_assignment(book, "c", "alice", now=T0) == second  # never an item they have done
    assert store.next_assignment(book, "c", "bob", now=T0) == first


# --- handing out ------------------------------------------------------------------------------------------


def test_overlap_two_with_three_reviewers_grades_each_item_exactly_twice(book):
    _small_campaign(book)
    reviewers = ["alice", "bob", "carol"]
    handed: dict[str, list[str]] = {name: [] for name in reviewers}
    active = list(reviewers)
    while active:
        for reviewer in list(active):
            item = store.next_assignment(book, "c", reviewer, now=T0)
            if item is None:
                active.remove(reviewer)
                continue
            handed[reviewer].append(item)
            saved = _grade_item(book, reviewer, item)
            assert saved.completed == ["c"]
    holders = _holders(book, "c")
    assert len(holders) == 6 and all(len(names) == 2 for names in holders.values())
    for names in handed.values():
        assert len(names) == len(set(names))  # nobody got an item twice
    for item in holders:
        assert sorted(_graders(book, item).values()) == [2, 2]  # two reviewers, two responses each
    assert store.get_campaign(book, "c").closed_at is not None  # closed once every item has its quota
    assert store.next_assignment(book, "c", "dave", now=T0) is None


def test_a_reservation_resumes_and_lapses(book):
    campaign = _small_campaign(book, overlap=1, lease_minutes=10)
    first = store.next_assignment(book, "c", "alice", now=T0)
    assert store.next_assignment(book, "c", "alice", now=T0 + timedelta(minutes=5)) == first  # a reload resumes
    assert store.next_assignment(book, "c", "bob", now=T0 + timedelta(minutes=5)) != first  # taken
    later = T0 + timedelta(minutes=5 + campaign.lease_minutes + 1)
    assert store.next_assignment(book, "c", "carol", now=later) == first  # alice's lapsed: back in the pool


def test_next_on_an_unfinished_item_hands_the_same_item_and_skip_moves_on(book):
    _small_campaign(book, overlap=1)
    items = [item["id"] for item in store.dataset_items(book, BOOK)][:6]
    assert store.next_assignment(book, "c", "alice", now=T0) == items[0]
    assert store.next_assignment(book, "c", "alice", after=items[0], now=T0) == items[0]
    assert store.next_assignment(book, "c", "alice", after=items[0], skip=True, now=T0) == items[1]
    assert store.next_assignment(book, "c", "bob", now=T0) == items[0]  # the skipped item went back
    # skipping the last open item wraps round to the first one still open for alice
    for item in items[2:]:
        _grade_item(book, "carol", item)
    assert store.next_assignment(book, "c", "alice", after=items[1], skip=True, now=T0) == items[1]


def test_skipping_a_half_graded_item_keeps_it_and_previous_brings_it_back(book):
    _small_campaign(book, overlap=1)
    items = [item["id"] for item in store.dataset_items(book, BOOK)][:6]
    assert store.next_assignment(book, "c", "alice", now=T0) == items[0]
    view = store.item_view(book, items[0], list(BOOK_MODELS), "alice")
    store.save_marks(
        book, "alice", items[0], [store.Mark(view["responses"][0]["response_id"], BOOK_MODELS[0], 2)], None
    )
    assert store.next_assignment(book, "c", "alice", after=items[0], now=T0) == items[0]  # Next: finish it first
    assert store.next_assignment(book, "c", "alice", after=items[0], skip=True, now=T0) == items[1]
    assert store.next_assignment(book, "c", "bob", now=T0) == items[2]  # item 0 stays alice's: she graded part
    assert store.next_assignment(book, "c", "alice", after=items[1], skip=True, now=T0) == items[3]
    assert store.next_assignment(book, "c", "carol", now=T0) == items[1]  # nothing graded there: handed back
    assert store.previous_assignment(book, "c", "alice", before=items[3]) == items[0]
    # once everything else is taken, Skip comes back to the half-graded item instead of saying nothing is left
    for item in items[3:]:  # dora grades the rest, alice's reserved item 3 too
        _grade_item(book, "dora", item)
    _grade_item(book, "bob", items[2])
    _grade_item(book, "carol", items[1])
    assert store.next_assignment(book, "c", "alice", after=items[3], skip=True, now=T0) == items[0]


def test_previous_walks_back_through_my_own_items(book):
    _small_campaign(book, overlap=3)
    items = [item["id"] for item in store.dataset_items(book, BOOK)][:3]
    for _ in range(2):
        _grade_item(book, "alice", store.next_assignment(book, "c", "alice", now=T0))
    current = store.next_assignment(book, "c", "alice", now=T0)
    assert current == items[2]
    assert store.previous_assignment(book, "c", "alice", before=current) == items[1]
    assert store.previous_assignment(book, "c", "alice", before=items[1]) == items[0]
    assert store.previous_assignment(book, "c", "alice", before=items[0]) == items[2]  # wraps round
    assert store.previous_assignment(book, "c", "nobody", before=None) is None


def test_a_closed_campaign_hands_out_nothing_until_reopened(book):
    _small_campaign(book)
    store.close_campaign(book, "c")
    assert store.next_assignment(book, "c", "alice", now=T0) is None
    assert store.campaign_progress(book, "c", "alice")["closed"]
    store.close_campaign(book, "c", reopen=True)
    assert store.next_assignment(book, "c", "alice", now=T0) is not None


def test_reviewers_asking_at_once_never_overfill_an_item(book_db):
    """Eight threads, each its own connection, race for the places of a one-item campaign with overlap 2."""
    db = store.open_db(book_db)
    _small_campaign(db, items=1)
    db.close()
    got: dict[str, str | None] = {}
    barrier = threading.Barrier(8)

    def ask(name: str) -> None:
        connection = store.open_db(book_db)
        barrier.wait()
        got[name] = store.next_assignment(connection, "c", name, now=T0)
        connection.close()

    threads = [threading.Thread(target=ask, args=(f"r{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(item is not None for item in got.values()) == 2


ACTIONS = st.lists(
    st.tuples(st.sampled_from(["alice", "bob", "carol"]), st.sampled_from(["next", "grade", "skip", "wait"])),
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS, overlap=st.integers(1, 3))
def test_no_interleaving_gives_an_item_more_places_than_its_overlap(book_db, actions, overlap, tmp_path_factory):
    """Whatever order reviewers ask, grade, skip and wait in (within one reservation's time), an item never
    has more finished reviews plus live reservations than its overlap, and nobody holds an item twice."""
    path = tmp_path_factory.mktemp("prop") / "p.db"
    path.write_bytes(book_db.read_bytes())
    db = store.open_db(path)
    _small_campaign(db, overlap=overlap, items=4)
    now = T0
    current: dict[str, str | None] = {}
    for reviewer, action in actions:
        if action == "wait":
            now += timedelta(minutes=1)
        elif action == "grade" and current.get(reviewer):
            _grade_item(db, reviewer, current[reviewer])
        else:
            current[reviewer] = store.next_assignment(
                db, "c", reviewer, after=current.get(reviewer), skip=action == "skip", now=now
            )
        places = db.execute(
            """SELECT item_id, COUNT(*), COUNT(DISTINCT reviewer_id) FROM assignments
               WHERE done_at IS NOT NULL OR expires_at > ? GROUP BY item_id""",
            [store.campaigns._stamp(now)],
        ).fetchall()
        assert all(count <= overlap and count == distinct for _, count, distinct in places)
        # the counters each save moves equal a count from scratch
        counted = db.execute(
            """SELECT COUNT(*), SUM(done >= c.overlap), SUM(MIN(done, c.overlap)), c.items, c.complete_items,
                      c.reviews_done, SUM(done = ci.reviews)
               FROM campaign_items ci JOIN campaigns c ON c.id = ci.campaign_id
               JOIN (SELECT ci2.item_id, (SELECT COUNT(*) FROM assignments a WHERE a.item_id = ci2.item_id
                     AND a.done_at IS NOT NULL) AS done FROM campaign_items ci2) d ON d.item_id = ci.item_id"""
        ).fetchone()
        items, complete, reviews, *kept, consistent = counted
        assert (items, complete, reviews) == tuple(kept) and consistent == items
        assert (store.get_campaign(db, "c").closed_at is not None) == (complete == items)
    db.close()


# --- adjudication -----------------------------------------------------------------------------------------


def _vote(db, reviewer: str, item_id: str, winner: str) -> None:
    view = store.item_view(db, item_id, list(BOOK_MODELS), reviewer)
    marks = [store.Mark(row["response_id"], row["model"], None) for row in view["responses"]]
    store.save_marks(db, reviewer, item_id, marks, winner)


def test_disagreements_are_grade_spreads_of_two_or_opposite_votes(book):
    _small_campaign(book)
    items = [item["id"] for item in store.dataset_items(book, BOOK)][:4]
    _grade_item(book, "alice", items[0], 5)
    _grade_item(book, "bob", items[0], 3)  # spread 2: disagreement
    _grade_item(book, "alice", items[1], 4)
    _grade_item(book, "bob", items[1], 3)  # spread 1: agreement
    _vote(book, "alice", items[2], BOOK_MODELS[0])
    _vote(book, "bob", items[2], BOOK_MODELS[1])  # opposite votes
    _vote(book, "alice", items[3], BOOK_MODELS[0])
    _vote(book, "bob", items[3], "tie")  # a tie is not opposite
    rows = store.disagreements(book, "c")
    assert [(row["item_id"], row["grade_spread"], row["opposite_votes"]) for row in rows] == [
        (items[0], 2, False),
        (items[2], 0, True),
    ]
    assert not any(row["resolved"] for row in rows)


def test_an_adjudication_resolves_the_item_and_reaches_both_exports(book, tmp_path):
    _small_campaign(book)
    item = store.dataset_items(book, BOOK)[0]["id"]
    _grade_item(book, "alice", item, 5)
    _grade_item(book, "bob", item, 2)
    view = store.adjudication_view(book, "c", item)
    assert [[grade["score"] for grade in response["grades"]] for response in view["responses"]] == [[5, 2], [5, 2]]
    finals = [(response["response_id"], 3, "both half right") for response in view["responses"]]
    with pytest.raises(UserError, match="from 1 to 5"):
        store.save_adjudication(book, "c", "admin", [(finals[0][0], 6, "")])
    with pytest.raises(UserError, match="not part of campaign"):
        store.save_adjudication(book, "c", "admin", [(999999, 3, "")])
    assert store.save_adjudication(book, "c", "admin", finals) == 2
    assert store.disagreements(book, "c")[0]["resolved"]
    assert store.disagreements(book, "c", unresolved_only=True) == []

    out = tmp_path / "campaign.json"
    assert importing.export(book, "campaign", out, campaign="c") == 6
    entry = json.loads(out.read_text())[0]
    model = BOOK_MODELS[0]
    assert entry[f"{model} adjudicated grade"] == 3
    assert entry[f"{model} final grade"] == 3
    assert [g["grade"] for g in entry[f"{model} grades"]] == [5, 2]

    out = tmp_path / "grades.csv"
    importing.export(book, "csv", out)
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    adjudicated = [row for row in rows if row["kind"] == "adjudicated"]
    assert [(row["model"], row["rater"], row["score"], row["comment"]) for row in adjudicated] == [
        (BOOK_MODELS[0], "admin", "3", "both half right"),
        (BOOK_MODELS[1], "admin", "3", "both half right"),
    ]
    assert sorted(row["score"] for row in rows if row["kind"] == "grade") == ["2", "2", "5", "5"]


def test_the_final_grade_is_the_mean_where_nobody_adjudicated(book):
    _small_campaign(book)
    item = store.dataset_items(book, BOOK)[0]["id"]
    _grade_item(book, "alice", item, 4)
    _grade_item(book, "bob", item, 5)
    first = store.campaign_results(book, "c")[0]
    assert (first["adjudicated"], first["final"]) == (None, 4.5)


# --- the command line -------------------------------------------------------------------------------------


def test_the_campaign_commands_create_follow_and_close(book_db, tmp_path, capsys):
    guidelines = tmp_path / "guidelines.md"
    guidelines.write_text("# Grade facts\nA wrong number is a 1.", encoding="utf-8")
    db_arg = ["--db", str(book_db)]
    assert cli.main(["campaign", "list", *db_arg]) == 0
    assert "no campaigns yet" in capsys.readouterr().out
    create = ["campaign", "create", *db_arg, "--name", "pilot", "--dataset", BOOK, "--models", *BOOK_MODELS]
    assert cli.main([*create, "--overlap", "3", "--guidelines", str(guidelines)]) == 0
    out = capsys.readouterr().out
    assert "created campaign 'pilot'" in out and "0 / 100 items have their 3 reviewer(s); 0 / 300 reviews" in out
    db = store.open_db(book_db)
    assert store.get_campaign(db, "pilot").guidelines.startswith("# Grade facts")
    item = store.next_assignment(db, "pilot", "alice")
    _grade_item(db, "alice", item, 5)
    _grade_item(db, "bob", item, 1)
    db.close()
    assert cli.main(["campaign", "progress", "pilot", *db_arg]) == 0
    out = capsys.readouterr().out
    assert "2 / 300 reviews done" in out and "alice: 1 done, 0 in progress" in out
    assert cli.main(["campaign", "disagreements", "pilot", *db_arg]) == 0
    assert "item 1 [open] grades 4 apart" in capsys.readouterr().out
    assert cli.main(["campaign", "close", "pilot", *db_arg]) == 0
    assert "is closed" in capsys.readouterr().out
    assert cli.main(["campaign", "list", *db_arg]) == 0
    assert "pilot: closed" in capsys.readouterr().out
    out_file = tmp_path / "pilot.json"
    assert cli.main(["export", *db_arg, "--format", "campaign", "--campaign", "pilot", "--out", str(out_file)]) == 0
    assert len(json.loads(out_file.read_text())) == 100


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["create", "--name", "x", "--dataset", "nope", "--models", "m"], "error: unknown data set 'nope'"),
        (
            ["create", "--name", "x", "--dataset", BOOK, "--models", "m", "--guidelines", "/no/such.md"],
            "error: /no/such.md: cannot read the guidelines",
        ),
        (["progress", "nosuch"], "error: unknown campaign 'nosuch'; known: none"),
        (["close", "nosuch"], "error: unknown campaign 'nosuch'"),
    ],
)
def test_bad_campaign_commands_say_one_line_and_exit_2(book_db, db_snapshot, capsys, arguments, message):
    before = db_snapshot(book_db)
    assert cli.main(["campaign", arguments[0], "--db", str(book_db), *arguments[1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert db_snapshot(book_db) == before


def test_export_campaign_needs_a_campaign_and_the_other_formats_refuse_one(book_db, tmp_path, capsys):
    out = str(tmp_path / "x.json")
    assert cli.main(["export", "--db", str(book_db), "--format", "campaign", "--out", out]) == 2
    assert cli.main(["export", "--db", str(book_db), "--format", "json", "--campaign", "c", "--out", out]) == 2
    assert capsys.readouterr().err.count("--campaign NAME goes with --format campaign") == 2
