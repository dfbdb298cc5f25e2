"""What the review app writes besides grades: autosaved marks, draft comments, views and campaign settings.

Autosave calls ``save_marks`` on every click and on every move to another item, so it compares with what is
stored first and writes only what changed: a step that changes nothing costs a read, not a write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import sqlite_utils

from trainer.errors import UserError
from workbench.store.campaigns import record_completion
from workbench.store.core import (
    _one,
    add_grade,
    add_pairwise_grade,
    dataset_names,
    get_or_create_reviewer,
    transaction,
    utc_now,
)
from workbench.store.review import clear_open_preferences, my_preference

TIE = "tie"


@dataclass
class Saved:
    """What ``save_marks`` wrote: rows changed, and per grade given for the first time by this reviewer, the
    model and whether it is that response's first grade by anyone (progress counts move by these)."""

    changed: int = 0
    new_grades: list[tuple[str, bool]] = field(default_factory=list)
    # campaigns in which this save finished the item for the reviewer (every response graded)
    completed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Mark:
    """One response's state on screen: its grade (1-5 or None) and comment."""

    response_id: int
    model: str
    grade: int | None
    comment: str = ""


def save_marks(
    db: sqlite_utils.Database, reviewer: str, item_id: str, marks: Sequence[Mark], better: str | None
) -> Saved:
    """Store a reviewer's grades, comments and better/tie mark on one item; returns what changed.

    A comment without a grade is kept as a draft (``grade_drafts``) and moves onto the grade once one is
    given. ``better`` is a model name or ``"tie"``; it becomes pairwise grades of the chosen model against
    each other model shown (a tie: every pair), replacing the reviewer's earlier mark on the item.
    """
    saved = Saved()
    with transaction(db):
        reviewer_id = get_or_create_reviewer(db, reviewer)
        for mark in marks:
            saved.changed += _save_mark(db, reviewer, reviewer_id, mark, saved)
        models = [mark.model for mark in marks]
        if better and len(models) > 1 and better != my_preference(db, item_id, reviewer):
            _store_better(db, item_id, models, better, reviewer)
            saved.changed += 1
        if saved.new_grades:
            saved.completed = record_completion(db, reviewer_id, item_id)
    return saved


def _save_mark(db: sqlite_utils.Database, reviewer: str, reviewer_id: int, mark: Mark, saved: Saved) -> int:
    comment = (mark.comment or "").strip()
    stored = db.execute(
        "SELECT score, comment FROM grades WHERE response_id = ? AND reviewer_id = ?", [mark.response_id, reviewer_id]
    ).fetchone()
    if mark.grade is not None:
        if stored is not None and tuple(stored) == (int(mark.grade), comment):
            return 0
        if stored is None:
            first = _one(db, "SELECT 1 FROM grades WHERE response_id = ?", [mark.response_id]) is None
            saved.new_grades.append((mark.model, first))
        add_grade(db, mark.response_id, reviewer, int(mark.grade), comment)
        db.execute(
            "DELETE FROM grade_drafts WHERE response_id = ? AND reviewer_id = ?", [mark.response_id, reviewer_id]
        )
        return 1
    if stored is not None:  # a stored grade is never taken back by an empty radio; its comment follows the box
        if stored[1] == comment:
            return 0
        db.execute(
            "UPDATE grades SET comment = ?, updated_at = ? WHERE response_id = ? AND reviewer_id = ?",
            [comment, utc_now(), mark.response_id, reviewer_id],
        )
        return 1
    draft = _one(
        db,
        "SELECT comment FROM grade_drafts WHERE response_id = ? AND reviewer_id = ?",
        [mark.response_id, reviewer_id],
    )
    if (draft or "") == comment:
        return 0
    if not comment:
        db.execute(
            "DELETE FROM grade_drafts WHERE response_id = ? AND reviewer_id = ?", [mark.response_id, reviewer_id]
        )
    else:
        db.execute(
            "INSERT INTO grade_drafts (response_id, reviewer_id, comment, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(response_id, reviewer_id) DO UPDATE SET comment = excluded.comment, "
            "updated_at = excluded.updated_at",
            [mark.response_id, reviewer_id, comment, utc_now()],
        )
    return 1


def _store_better(db: sqlite_utils.Database, item_id: str, models: list[str], better: str, reviewer: str) -> None:
    clear_open_preferences(db, item_id, reviewer)
    chosen = None if better == TIE else better
    for left, right in combinations(models, 2):
        if chosen is None:
            preference = TIE
        elif chosen in (left, right):
            preference = "left" if chosen == left else "right"
        else:
            continue
        add_pairwise_grade(db, item_id, left, right, reviewer, preference, blind=False)


def record_view(db: sqlite_utils.Database, reviewer: str, item_id: str) -> None:
    """Remember that ``reviewer`` saw this item with model names shown (blind pairs then leave it out).

    Called on every step outside blind review, so a view already recorded costs a read, not the write lock."""
    seen = _one(
        db,
        "SELECT 1 FROM item_views v JOIN reviewers r ON r.id = v.reviewer_id WHERE r.name = ? AND v.item_id = ?",
        [reviewer, item_id],
    )
    if seen:
        return
    with transaction(db):
        reviewer_id = get_or_create_reviewer(db, reviewer)
        db.execute(
            "INSERT INTO item_views (reviewer_id, item_id, first_seen_at) VALUES (?, ?, ?) "
            "ON CONFLICT(reviewer_id, item_id) DO NOTHING",
            [reviewer_id, item_id, utc_now()],
        )


def set_blind_review(db: sqlite_utils.Database, dataset: str, blind: bool) -> None:
    """Make the Review tab blind (models as A-D in a per-reviewer order) for one data set, or not."""
    dataset_id = _one(db, "SELECT id FROM datasets WHERE name = ?", [dataset])
    if dataset_id is None:
        known = ", ".join(repr(name) for name in dataset_names(db)) or "none"
        raise UserError(f"unknown data set {dataset!r}; known: {known}")
    with transaction(db):
        db.execute(
            "INSERT INTO review_settings (dataset_id, blind, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(dataset_id) DO UPDATE SET blind = excluded.blind, updated_at = excluded.updated_at",
            [dataset_id, int(blind), utc_now()],
        )


def blind_review(db: sqlite_utils.Database, dataset: str | None) -> bool:
    """Whether the Review tab hides model names for this data set."""
    if not dataset:
        return False
    return bool(
        _one(
            db,
            "SELECT rs.blind FROM review_settings rs JOIN datasets d ON d.id = rs.dataset_id WHERE d.name = ?",
            [dataset],
        )
    )


NOTICE_KEY = "app_notice"


def set_app_notice(db: sqlite_utils.Database, notice: str | None) -> None:
    """A banner every review app on this database shows (the demo says its model was trained from random
    weights); None removes it."""
    with transaction(db):
        if notice is None:
            db.execute("DELETE FROM meta WHERE key = ?", [NOTICE_KEY])
        else:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [NOTICE_KEY, notice],
            )


def app_notice(db: sqlite_utils.Database) -> str | None:
    return _one(db, "SELECT value FROM meta WHERE key = ?", [NOTICE_KEY])
