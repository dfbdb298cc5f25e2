"""Review campaigns: who grades which item, how many reviewers each item needs, and adjudication.

A campaign covers one data set (optionally one split) and chosen models. Each item needs ``overlap`` reviewers
who have graded every response of it in the campaign. ``next_assignment`` hands a reviewer the first item in
order that still needs someone and that they have not done, and reserves it for them (``assignments`` row
with ``expires_at``), so that three reviewers working at once with overlap 2 never grade an item three times;
a reservation nobody finishes lapses and the item goes back to the pool. Grades are stored as everywhere else
(``review_state.save_marks``), which calls ``record_completion`` to mark the reviewer's assignment done. The
campaign closes itself once every item has its quota.

Where reviewers disagree (grades of one response two or more apart, or opposite votes on a pair), an admin
records the final grade (``adjudications``); the raw grades stay untouched and exports carry both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone

import sqlite_utils

from trainer.errors import UserError
from workbench.store.core import (
    HUMAN_SCORE_RANGE,
    _one,
    dataset_names,
    get_or_create_reviewer,
    in_clause,
    transaction,
    utc_now,
)

DEFAULT_OVERLAP = 2
# the review app shows at most four responses side by side, and a review is finished when all are graded
MAX_CAMPAIGN_MODELS = 4
DEFAULT_LEASE_MINUTES = 30
# grades of one response this far apart (on 1-5) send the item to adjudication
DISAGREEMENT_SPREAD = 2


@dataclass(frozen=True)
class Campaign:
    id: int
    name: str
    dataset: str
    split: str | None
    overlap: int
    guidelines: str
    lease_minutes: int
    models: tuple[str, ...]
    items: int
    complete_items: int
    reviews_done: int
    created_by: str | None
    created_at: str
    closed_at: str | None

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


def _stamp(moment: datetime) -> str:
    """The store's timestamp format (``utc_now``) for any moment, so that timestamps compare as text."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


# --- creating and reading campaigns -----------------------------------------------------------------------


def create_campaign(
    db: sqlite_utils.Database,
    name: str,
    *,
    dataset: str,
    models: Sequence[str],
    overlap: int = DEFAULT_OVERLAP,
    split: str | None = None,
    guidelines: str = "",
    lease_minutes: int = DEFAULT_LEASE_MINUTES,
    created_by: str | None = None,
) -> Campaign:
    """A new campaign over the items of ``dataset`` (of ``split``) that have a response from any of ``models``.

    Reviews done before the campaign count: a reviewer who already graded every response of an item in scope
    has it done, so it is never handed to them again."""
    name = (name or "").strip()
    if not name:
        raise UserError("a campaign needs a name")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 1:
        raise UserError(f"overlap (reviewers per item) must be a whole number of at least 1, got {overlap!r}")
    if isinstance(lease_minutes, bool) or not isinstance(lease_minutes, int) or lease_minutes < 1:
        raise UserError(f"the reservation time must be a whole number of minutes, at least 1, got {lease_minutes!r}")
    if not dataset:
        raise UserError("choose the data set the campaign covers")
    dataset_id = _one(db, "SELECT id FROM datasets WHERE name = ?", [dataset])
    if dataset_id is None:
        known = ", ".join(repr(known) for known in dataset_names(db)) or "none"
        raise UserError(f"unknown data set {dataset!r}; known: {known}")
    models = list(dict.fromkeys(models))
    if not models:
        raise UserError("choose at least one model for the campaign")
    if len(models) > MAX_CAMPAIGN_MODELS:
        raise UserError(f"a campaign shows at most {MAX_CAMPAIGN_MODELS} models side by side, got {len(models)}")
    with transaction(db):
        if _one(db, "SELECT 1 FROM campaigns WHERE name = ?", [name]) is not None:
            raise UserError(f"a campaign named {name!r} exists already")
        model_ids = []
        for model in models:
            found = _one(
                db,
                """SELECT m.id FROM models m WHERE m.name = ? AND EXISTS (SELECT 1 FROM responses r JOIN items i
                   ON i.id = r.item_id WHERE r.model_id = m.id AND i.dataset_id = ?)""",
                [model, dataset_id],
            )
            if found is None:
                raise UserError(f"model {model!r} has no responses in data set {dataset!r}")
            model_ids.append(found)
        campaign_id = _one(
            db,
            """INSERT INTO campaigns (name, dataset_id, split, overlap, guidelines, lease_minutes, created_by,
                                      created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            [name, dataset_id, split or None, overlap, guidelines or "", lease_minutes, created_by, utc_now()],
        )
        db.conn.executemany(
            "INSERT INTO campaign_models (campaign_id, model_id, position) VALUES (?, ?, ?)",
            [(campaign_id, model_id, position) for position, model_id in enumerate(model_ids)],
        )
        params: dict = {"c": campaign_id, "dataset": dataset_id, "split": split or ""}
        models_in = in_clause("r.model_id", model_ids, params, "model")
        db.execute(
            f"""INSERT INTO campaign_items (campaign_id, item_id, position)
                SELECT :c, i.id, ROW_NUMBER() OVER (ORDER BY i.position, i.id) - 1 FROM items i
                WHERE i.dataset_id = :dataset AND (:split = '' OR i.split = :split)
                  AND EXISTS (SELECT 1 FROM responses r WHERE r.item_id = i.id AND {models_in})""",
            params,
        )
        if _one(db, "SELECT COUNT(*) FROM campaign_items WHERE campaign_id = ?", [campaign_id]) == 0:
            where = f" in split {split!r}" if split else ""
            raise UserError(f"data set {dataset!r} has no items{where} with responses from these models")
        db.execute(
            f"""INSERT INTO assignments (campaign_id, item_id, reviewer_id, assigned_at, done_at)
                SELECT :c, per.item_id, per.reviewer_id, per.last, per.last FROM (
                    SELECT r.item_id, g.reviewer_id, COUNT(*) AS graded, MAX(g.updated_at) AS last
                    FROM campaign_items ci JOIN {_CAMPAIGN_RESPONSES} JOIN grades g ON g.response_id = r.id
                    WHERE ci.campaign_id = :c GROUP BY r.item_id, g.reviewer_id
                ) per
                WHERE per.graded = (SELECT COUNT(*) FROM responses r JOIN campaign_models cm
                                    ON cm.model_id = r.model_id AND cm.campaign_id = :c
                                    WHERE r.item_id = per.item_id)""",
            {"c": campaign_id},
        )
        db.execute(
            """UPDATE campaign_items SET reviews = (SELECT COUNT(*) FROM assignments a
               WHERE a.campaign_id = campaign_items.campaign_id AND a.item_id = campaign_items.item_id)
               WHERE campaign_id = ?""",
            [campaign_id],
        )
        db.execute(
            """UPDATE campaigns SET
                   items = (SELECT COUNT(*) FROM campaign_items WHERE campaign_id = campaigns.id),
                   complete_items = (SELECT COUNT(*) FROM campaign_items
                                     WHERE campaign_id = campaigns.id AND reviews >= campaigns.overlap),
                   reviews_done = (SELECT COALESCE(SUM(MIN(reviews, campaigns.overlap)), 0) FROM campaign_items
                                   WHERE campaign_id = campaigns.id)
               WHERE id = ?""",
            [campaign_id],
        )
        _close_if_complete(db, campaign_id)
    return get_campaign(db, name)


# The campaign's responses of item ``ci.item_id`` (current versions of the campaign's models), as a join.
_CAMPAIGN_RESPONSES = """campaign_models cm ON cm.campaign_id = ci.campaign_id
    JOIN responses r ON r.item_id = ci.item_id AND r.model_id = cm.model_id"""


def get_campaign(db: sqlite_utils.Database, name: str) -> Campaign:
    row = next(
        db.query(
            """SELECT c.*, d.name AS dataset FROM campaigns c JOIN datasets d ON d.id = c.dataset_id
               WHERE c.name = ?""",
            [name],
        ),
        None,
    )
    if row is None:
        known = ", ".join(repr(known) for known in campaign_names(db)) or "none"
        raise UserError(f"unknown campaign {name!r}; known: {known}")
    models = tuple(
        model
        for (model,) in db.execute(
            """SELECT m.name FROM campaign_models cm JOIN models m ON m.id = cm.model_id
               WHERE cm.campaign_id = ? ORDER BY cm.position""",
            [row["id"]],
        ).fetchall()
    )
    return Campaign(
        **{field.name: row[field.name] for field in fields(Campaign) if field.name != "models"}, models=models
    )


def campaign_names(db: sqlite_utils.Database, *, open_only: bool = False) -> list[str]:
    """Campaign names, newest first."""
    where = "WHERE closed_at IS NULL" if open_only else ""
    return [row[0] for row in db.execute(f"SELECT name FROM campaigns {where} ORDER BY id DESC").fetchall()]


def close_campaign(db: sqlite_utils.Database, name: str, *, reopen: bool = False) -> Campaign:
    """Close a campaign by hand (nothing more is handed out), or reopen it."""
    campaign = get_campaign(db, name)
    with transaction(db):
        db.execute("UPDATE campaigns SET closed_at = ? WHERE id = ?", [None if reopen else utc_now(), campaign.id])
    return get_campaign(db, name)


# --- handing out items ------------------------------------------------------------------------------------

# Assignments that hold one of an item's places: finished reviews and reservations that have not lapsed.
_HOLDING = "(a.done_at IS NOT NULL OR a.expires_at > :now)"

# Items of campaign :c that still need a reviewer and that reviewer :me has neither done nor reserved.
_OPEN_FOR_ME = f"""
    ci.campaign_id = :c
    AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.campaign_id = :c AND a.item_id = ci.item_id
                    AND a.reviewer_id = :me AND {_HOLDING})
    AND (SELECT COUNT(*) FROM assignments a WHERE a.campaign_id = :c AND a.item_id = ci.item_id
         AND {_HOLDING}) < :overlap
"""


def next_assignment(
    db: sqlite_utils.Database,
    name: str,
    reviewer: str,
    *,
    after: str | None = None,
    skip: bool = False,
    now: datetime | None = None,
) -> str | None:
    """The item ``reviewer`` should grade next in the campaign, reserved for them; None when nothing is left
    for them (every item has its quota, they did the rest, or the campaign is closed).

    Their own unfinished item comes first (``after`` itself when it is one, else their oldest), so a reload or a
    second tab resumes it and Next does not leave an item half graded. ``skip`` moves on to the next open item
    after ``after``: the skipped item goes back to the pool, unless they graded part of it, then it stays
    theirs (Previous brings it back) until the reservation lapses. One write transaction, so two reviewers
    asking at once never take the same last place.
    """
    campaign = get_campaign(db, name)
    moment = _now(now)
    with transaction(db):
        reviewer_id = get_or_create_reviewer(db, reviewer)
        params = {
            "c": campaign.id,
            "me": reviewer_id,
            "now": _stamp(moment),
            "overlap": campaign.overlap,
            "after": after or "",
        }
        # a lapsed reservation of mine holds nothing: drop it, so the item can be handed to me again
        db.execute(
            "DELETE FROM assignments WHERE campaign_id = :c AND reviewer_id = :me AND done_at IS NULL "
            "AND expires_at <= :now",
            params,
        )
        if skip and after is not None and not _graded_any(db, params):
            db.execute(
                "DELETE FROM assignments WHERE campaign_id = :c AND reviewer_id = :me AND item_id = :after "
                "AND done_at IS NULL",
                params,
            )
        if not campaign.is_open:
            return None
        mine = _one(  # from the reviewer's open reservations (a partial index): not a walk over the items
            db,
            """SELECT a.item_id FROM assignments a INDEXED BY assignments_open
               WHERE a.campaign_id = :c AND a.reviewer_id = :me AND a.done_at IS NULL
               ORDER BY a.item_id = :after DESC, (SELECT ci.position FROM campaign_items ci
                         WHERE ci.campaign_id = a.campaign_id AND ci.item_id = a.item_id) LIMIT 1""",
            params,
        )
        if skip:
            target = _first_open(db, params, _position(db, campaign.id, after)) or mine
        else:
            target = mine or _first_open(db, params, None)
        if target is not None:
            db.execute(
                """INSERT INTO assignments (campaign_id, item_id, reviewer_id, assigned_at, expires_at)
                   VALUES (:c, :item, :me, :now, :until) ON CONFLICT (campaign_id, item_id, reviewer_id)
                   DO UPDATE SET expires_at = excluded.expires_at WHERE done_at IS NULL""",
                {
                    **params,
                    "item": target,
                    "until": _stamp(moment + timedelta(minutes=campaign.lease_minutes)),
                },
            )
        return target


def _graded_any(db: sqlite_utils.Database, params: dict) -> bool:
    """Whether reviewer :me has graded any response of item :after in campaign :c."""
    return (
        _one(
            db,
            f"""SELECT 1 FROM campaign_items ci JOIN {_CAMPAIGN_RESPONSES}
                JOIN grades g ON g.response_id = r.id AND g.reviewer_id = :me
                WHERE ci.campaign_id = :c AND ci.item_id = :after LIMIT 1""",
            params,
        )
        is not None
    )


def _position(db: sqlite_utils.Database, campaign_id: int, item_id: str | None) -> int | None:
    if item_id is None:
        return None
    return _one(db, "SELECT position FROM campaign_items WHERE campaign_id = ? AND item_id = ?", [campaign_id, item_id])


def _first_open(db: sqlite_utils.Database, params: dict, after_position: int | None) -> str | None:
    """The first item open for reviewer :me in campaign order, starting after ``after_position`` and wrapping.

    One ordered look-up per count of finished reviews below the overlap (0, 1, ...) on the index
    (campaign, reviews, position), so the items that already have their reviewers are never read: the cost
    does not grow as the campaign fills up."""
    arms = " UNION ALL ".join(
        f"""SELECT * FROM (SELECT ci.item_id, ci.position FROM campaign_items ci
            WHERE ci.reviews = {reviews} AND {_OPEN_FOR_ME} {{extra}} ORDER BY ci.position LIMIT 1)"""
        for reviews in range(params["overlap"])
    )
    sql = f"SELECT item_id FROM ({arms}) ORDER BY position LIMIT 1"
    if after_position is not None:
        found = _one(db, sql.format(extra="AND ci.position > :after"), {**params, "after": after_position})
        if found is not None:
            return found
    return _one(db, sql.format(extra=""), params)


def previous_assignment(db: sqlite_utils.Database, name: str, reviewer: str, *, before: str | None) -> str | None:
    """The reviewer's own item (done or reserved) before ``before`` in campaign order, wrapping round; lets
    them go back and change a grade."""
    campaign = get_campaign(db, name)
    params = {"c": campaign.id, "me": reviewer, "at": _position(db, campaign.id, before)}
    sql = """SELECT a.item_id FROM assignments a INDEXED BY assignments_reviewer
             JOIN campaign_items ci ON ci.campaign_id = a.campaign_id AND ci.item_id = a.item_id
             WHERE a.campaign_id = :c AND a.reviewer_id = (SELECT id FROM reviewers WHERE name = :me) {extra}
             ORDER BY ci.position DESC LIMIT 1"""
    if params["at"] is not None:
        found = _one(db, sql.format(extra="AND ci.position < :at"), params)
        if found is not None:
            return found
    return _one(db, sql.format(extra=""), params)


def record_completion(db: sqlite_utils.Database, reviewer_id: int, item_id: str) -> list[str]:
    """After a save: mark the reviewer's assignment done in every campaign where they have now graded every
    response of the item (also when they graded it outside the campaign), move the campaign's counts, and close
    a campaign whose items all have their quota. Returns the names of those campaigns. Runs inside the caller's
    transaction, so the counts move with the grades or not at all."""
    done = []
    for campaign_id, campaign_name in db.execute(
        """SELECT c.id, c.name FROM campaign_items ci JOIN campaigns c ON c.id = ci.campaign_id
           WHERE ci.item_id = ?""",
        [item_id],
    ).fetchall():
        params = {"c": campaign_id, "item": item_id, "me": reviewer_id}
        missing = _one(
            db,
            f"""SELECT COUNT(*) FROM campaign_items ci JOIN {_CAMPAIGN_RESPONSES}
                WHERE ci.campaign_id = :c AND ci.item_id = :item AND NOT EXISTS (
                    SELECT 1 FROM grades g WHERE g.response_id = r.id AND g.reviewer_id = :me)""",
            params,
        )
        finished_before = _one(
            db,
            "SELECT done_at IS NOT NULL FROM assignments WHERE campaign_id = :c AND item_id = :item "
            "AND reviewer_id = :me",
            params,
        )
        if missing or finished_before:
            continue
        now = utc_now()
        db.execute(
            """INSERT INTO assignments (campaign_id, item_id, reviewer_id, assigned_at, done_at)
               VALUES (:c, :item, :me, :now, :now) ON CONFLICT (campaign_id, item_id, reviewer_id)
               DO UPDATE SET done_at = excluded.done_at, expires_at = NULL""",
            {**params, "now": now},
        )
        reviews = _one(
            db,
            "UPDATE campaign_items SET reviews = reviews + 1 WHERE campaign_id = :c AND item_id = :item "
            "RETURNING reviews",
            params,
        )
        db.execute(
            """UPDATE campaigns SET reviews_done = reviews_done + (:reviews <= overlap),
                                    complete_items = complete_items + (:reviews = overlap) WHERE id = :c""",
            {**params, "reviews": reviews},
        )
        _close_if_complete(db, campaign_id)
        done.append(campaign_name)
    return done


def _close_if_complete(db: sqlite_utils.Database, campaign_id: int) -> None:
    db.execute(
        "UPDATE campaigns SET closed_at = ? WHERE id = ? AND closed_at IS NULL AND complete_items >= items",
        [utc_now(), campaign_id],
    )


# --- progress ---------------------------------------------------------------------------------------------


def campaign_progress(
    db: sqlite_utils.Database,
    name: str,
    reviewer: str | None = None,
    *,
    open_for_me: bool = False,
    now: datetime | None = None,
) -> dict:
    """Items, items with their quota and reviews done (counters kept by each save: no scan), and with
    ``reviewer`` their own items done and reserved (their rows only). ``open_for_me`` also counts the items
    still open for them, a scan of the campaign's items (the Campaigns tab asks for it, a step does not)."""
    campaign = get_campaign(db, name)
    params = {
        "c": campaign.id,
        "overlap": campaign.overlap,
        "now": _stamp(_now(now)),
        "me": _one(db, "SELECT id FROM reviewers WHERE name = ?", [reviewer or ""]) or -1,
    }
    mine = next(
        db.query(
            """SELECT COALESCE(SUM(done_at IS NOT NULL), 0) AS done,
                      COALESCE(SUM(done_at IS NULL AND expires_at > :now), 0) AS reserved
               FROM assignments WHERE campaign_id = :c AND reviewer_id = :me""",
            params,
        )
    )
    waiting = None
    if reviewer and open_for_me and campaign.is_open:
        waiting = _one(
            db, f"SELECT COUNT(*) FROM campaign_items ci WHERE ci.reviews < :overlap AND {_OPEN_FOR_ME}", params
        )
    return {
        "campaign": campaign.name,
        "dataset": campaign.dataset,
        "overlap": campaign.overlap,
        "closed": not campaign.is_open,
        "items": campaign.items,
        "complete": campaign.complete_items,
        "reviews_needed": campaign.items * campaign.overlap,
        "reviews_done": campaign.reviews_done,
        "mine_done": mine["done"] if reviewer else None,
        "mine_reserved": mine["reserved"] if reviewer else None,
        "open_for_me": waiting,
    }


def reviewer_progress(db: sqlite_utils.Database, name: str, *, now: datetime | None = None) -> list[dict]:
    """Per reviewer in the campaign: items done, items reserved now, and when they last finished one."""
    campaign = get_campaign(db, name)
    return list(
        db.query(
            """SELECT rv.name AS reviewer, SUM(a.done_at IS NOT NULL) AS done,
                      SUM(a.done_at IS NULL AND a.expires_at > :now) AS in_progress, MAX(a.done_at) AS last_done
               FROM assignments a JOIN reviewers rv ON rv.id = a.reviewer_id
               WHERE a.campaign_id = :c GROUP BY rv.id HAVING done > 0 OR in_progress > 0
               ORDER BY done DESC, rv.name""",
            {"c": campaign.id, "now": _stamp(_now(now))},
        )
    )


def campaign_overview(db: sqlite_utils.Database) -> list[dict]:
    """Every campaign with its scope and progress, newest first (the Campaigns tab's table)."""
    rows = []
    for name in campaign_names(db):
        campaign = get_campaign(db, name)  # its counters are its progress
        rows.append(
            {
                "campaign": name,
                "dataset": campaign.dataset,
                "split": campaign.split or "all",
                "models": ", ".join(campaign.models),
                "overlap": campaign.overlap,
                "items": campaign.items,
                "complete": campaign.complete_items,
                "reviews": f"{campaign.reviews_done} / {campaign.items * campaign.overlap}",
                "status": "open" if campaign.is_open else "closed",
            }
        )
    return rows


# --- adjudication -----------------------------------------------------------------------------------------


def disagreements(
    db: sqlite_utils.Database, name: str, *, min_spread: int = DISAGREEMENT_SPREAD, unresolved_only: bool = False
) -> list[dict]:
    """Items of the campaign where reviewers disagree: one response's grades ``min_spread`` or more apart, or
    two reviewers preferring opposite responses of the same pair (each reviewer's latest vote; ties and
    swapped-side repeats left out). ``resolved`` once every response of the item has an adjudicated grade."""
    campaign = get_campaign(db, name)
    params = {"c": campaign.id, "spread": min_spread}
    sql = f"""
    WITH scoped AS MATERIALIZED (
        SELECT ci.item_id, ci.position, r.id AS response_id, r.model_id
        FROM campaign_items ci JOIN {_CAMPAIGN_RESPONSES} WHERE ci.campaign_id = :c
    ),
    spreads AS (
        SELECT item_id, MAX(spread) AS spread, MAX(graders) AS graders FROM (
            SELECT s.item_id, MAX(g.score) - MIN(g.score) AS spread, COUNT(*) AS graders
            FROM scoped s JOIN grades g ON g.response_id = s.response_id GROUP BY s.response_id
        ) GROUP BY item_id
    ),
    latest AS (
        SELECT pg.item_id, MIN(pg.left_model_id, pg.right_model_id) AS low,
               MAX(pg.left_model_id, pg.right_model_id) AS high, pg.reviewer_id, MAX(pg.id) AS id
        FROM pairwise_grades pg
        WHERE pg.repeat_of IS NULL AND pg.item_id IN (SELECT item_id FROM campaign_items WHERE campaign_id = :c)
          AND pg.left_model_id IN (SELECT model_id FROM campaign_models WHERE campaign_id = :c)
          AND pg.right_model_id IN (SELECT model_id FROM campaign_models WHERE campaign_id = :c)
        GROUP BY pg.item_id, low, high, pg.reviewer_id
    ),
    opposite AS (
        SELECT l.item_id, COUNT(DISTINCT CASE pg.preference WHEN 'left' THEN pg.left_model_id
                                                            ELSE pg.right_model_id END) AS winners
        FROM latest l JOIN pairwise_grades pg ON pg.id = l.id WHERE pg.preference != 'tie'
        GROUP BY l.item_id, l.low, l.high HAVING winners > 1
    ),
    adjudicated AS (
        SELECT s.item_id, COUNT(*) AS responses, COUNT(adj.response_id) AS final
        FROM scoped s LEFT JOIN adjudications adj ON adj.response_id = s.response_id GROUP BY s.item_id
    )
    SELECT i.id AS item_id, ci.position, i.instruction, COALESCE(sp.spread, 0) AS grade_spread,
           COALESCE(sp.graders, 0) AS reviewers,
           EXISTS (SELECT 1 FROM opposite o WHERE o.item_id = i.id) AS opposite_votes,
           ad.final = ad.responses AS resolved
    FROM campaign_items ci JOIN items i ON i.id = ci.item_id
    LEFT JOIN spreads sp ON sp.item_id = ci.item_id JOIN adjudicated ad ON ad.item_id = ci.item_id
    WHERE ci.campaign_id = :c
      AND (COALESCE(sp.spread, 0) >= :spread OR EXISTS (SELECT 1 FROM opposite o WHERE o.item_id = i.id))
    ORDER BY ci.position
    """
    rows = list(db.query(sql, params))
    for row in rows:
        row["opposite_votes"], row["resolved"] = bool(row["opposite_votes"]), bool(row["resolved"])
    return [row for row in rows if not (unresolved_only and row["resolved"])]


def adjudication_view(db: sqlite_utils.Database, name: str, item_id: str) -> dict | None:
    """One item as the adjudicator sees it: every campaign response with every reviewer's grade and comment,
    the final grade if one is recorded, and every reviewer's pairwise votes on the item."""
    campaign = get_campaign(db, name)
    item = next(
        db.query(
            """SELECT i.id AS item_id, ci.position, i.instruction, i.input, i.reference_output
               FROM campaign_items ci JOIN items i ON i.id = ci.item_id
               WHERE ci.campaign_id = ? AND ci.item_id = ?""",
            [campaign.id, item_id],
        ),
        None,
    )
    if item is None:
        return None
    responses = list(
        db.query(
            f"""SELECT r.id AS response_id, m.name AS model, r.text, adj.score AS final_grade,
                       adj.note AS final_note, rv.name AS adjudicator
                FROM campaign_items ci JOIN {_CAMPAIGN_RESPONSES} JOIN models m ON m.id = r.model_id
                LEFT JOIN adjudications adj ON adj.response_id = r.id
                LEFT JOIN reviewers rv ON rv.id = adj.adjudicator_id
                WHERE ci.campaign_id = :c AND ci.item_id = :item ORDER BY cm.position""",
            {"c": campaign.id, "item": item_id},
        )
    )
    for response in responses:
        response["grades"] = list(
            db.query(
                """SELECT rv.name AS reviewer, g.score, g.comment FROM grades g
                   JOIN reviewers rv ON rv.id = g.reviewer_id WHERE g.response_id = ? ORDER BY rv.name""",
                [response["response_id"]],
            )
        )
    item["responses"] = responses
    item["votes"] = list(
        db.query(
            """SELECT rv.name AS reviewer, l.name AS left_model, r.name AS right_model, pg.preference,
                      pg.both_bad, pg.blind, pg.comment
               FROM pairwise_grades pg JOIN reviewers rv ON rv.id = pg.reviewer_id
               JOIN models l ON l.id = pg.left_model_id JOIN models r ON r.id = pg.right_model_id
               WHERE pg.item_id = ? AND pg.repeat_of IS NULL ORDER BY rv.name, pg.id""",
            [item_id],
        )
    )
    return item


def save_adjudication(
    db: sqlite_utils.Database,
    name: str,
    adjudicator: str,
    finals: Sequence[tuple[int, int, str]],
) -> int:
    """Record final grades, ``(response id, grade 1-5, note)`` each, for responses of the campaign; a later
    adjudication of the same response replaces the earlier one. Returns the rows written."""
    campaign = get_campaign(db, name)
    low, high = HUMAN_SCORE_RANGE
    with transaction(db):
        adjudicator_id = get_or_create_reviewer(db, adjudicator)
        now = utc_now()
        for response_id, score, note in finals:
            if isinstance(score, bool) or not isinstance(score, int) or not low <= score <= high:
                raise UserError(f"final grade {score!r} must be a whole number from {low} to {high}")
            in_campaign = _one(  # from the response (its primary key), never a walk over the campaign's items
                db,
                """SELECT 1 FROM responses r
                   JOIN campaign_items ci ON ci.campaign_id = :c AND ci.item_id = r.item_id
                   JOIN campaign_models cm ON cm.campaign_id = :c AND cm.model_id = r.model_id
                   WHERE r.id = :response""",
                {"c": campaign.id, "response": response_id},
            )
            if in_campaign is None:
                raise UserError(f"response {response_id} is not part of campaign {name!r}")
            db.execute(
                """INSERT INTO adjudications (response_id, campaign_id, score, note, adjudicator_id, created_at,
                                              updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (response_id) DO UPDATE SET campaign_id = excluded.campaign_id,
                   score = excluded.score, note = excluded.note, adjudicator_id = excluded.adjudicator_id,
                   updated_at = excluded.updated_at""",
                [response_id, campaign.id, score, (note or "").strip(), adjudicator_id, now, now],
            )
    return len(finals)


def campaign_results(db: sqlite_utils.Database, name: str) -> list[dict]:
    """Per item and campaign model: the response, every raw grade (reviewer, grade, comment), the adjudicated
    grade (or None) and the final grade: the adjudicated one where there is one, else the mean raw grade."""
    campaign = get_campaign(db, name)
    rows = list(
        db.query(
            f"""SELECT ci.position, i.id AS item_id, i.instruction, i.input, i.reference_output, m.name AS model,
                       r.id AS response_id, r.text, adj.score AS adjudicated, adj.note AS adjudication_note,
                       arv.name AS adjudicator
                FROM campaign_items ci JOIN {_CAMPAIGN_RESPONSES} JOIN items i ON i.id = ci.item_id
                JOIN models m ON m.id = r.model_id LEFT JOIN adjudications adj ON adj.response_id = r.id
                LEFT JOIN reviewers arv ON arv.id = adj.adjudicator_id
                WHERE ci.campaign_id = :c ORDER BY ci.position, cm.position""",
            {"c": campaign.id},
        )
    )
    grades: dict[int, list[dict]] = {}
    for response_id, reviewer, score, comment in db.execute(
        f"""SELECT g.response_id, rv.name, g.score, g.comment FROM campaign_items ci JOIN {_CAMPAIGN_RESPONSES}
            JOIN grades g ON g.response_id = r.id JOIN reviewers rv ON rv.id = g.reviewer_id
            WHERE ci.campaign_id = :c ORDER BY rv.name""",
        {"c": campaign.id},
    ).fetchall():
        grades.setdefault(response_id, []).append({"reviewer": reviewer, "grade": score, "comment": comment})
    for row in rows:
        row["grades"] = grades.get(row["response_id"], [])
        raw = [grade["grade"] for grade in row["grades"]]
        row["final"] = row["adjudicated"] if row["adjudicated"] is not None else (sum(raw) / len(raw) if raw else None)
    return rows
