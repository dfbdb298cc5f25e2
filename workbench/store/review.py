"""Read (and a few write) queries behind the review app: queues, progress, blind pairs and calibration.

The app never writes SQL itself; every query here takes plain names (data set, model, reviewer, judge) so that
the same function serves the browser, the tests and anyone scripting against the database file.
Judge scores stay on each judge's own scale; where they meet human grades (1-5) they are mapped linearly from
``[score_min, score_max]`` (0-100 when a judge does not say) onto 1-5.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils

from workbench.store.core import HUMAN_SCORE_RANGE, in_clause, reviewer_names

# A blind pair comes back only after this many other blind votes, so the reviewer cannot simply remember it.
REPEAT_MIN_GAP = 3

# A judge's per-response mean (over repeats), also mapped onto the 1-5 grade scale (HUMAN_SCORE_RANGE).
_JUDGE_MEANS_SQL = """
SELECT js.response_id, j.name AS judge, AVG(js.score) AS score,
       1 + 4.0 * (AVG(js.score) - COALESCE(j.score_min, 0))
             / NULLIF(COALESCE(j.score_max, 100) - COALESCE(j.score_min, 0), 0) AS on_grade_scale
FROM judge_scores js JOIN judges j ON j.id = js.judge_id
WHERE js.score IS NOT NULL
GROUP BY js.response_id, js.judge_id
"""


def _response_scope(dataset: str | None, models: Sequence[str] | None, split: str | None, params: dict) -> str:
    """WHERE conditions (on aliases i, d, m) restricting responses to a data set, models and split."""
    conditions = ["1 = 1"]
    if dataset:
        params["dataset"] = dataset
        conditions.append("d.name = :dataset")
    if models:
        conditions.append(in_clause("m.name", list(models), params, "model"))
    if split:
        params["split"] = split
        conditions.append("i.split = :split")
    return " AND ".join(conditions)


# --- names for the app's drop-downs -------------------------------------------------------------------------


def models_with_responses(db: sqlite_utils.Database, dataset: str | None = None) -> list[str]:
    """Models with at least one response (in ``dataset`` when given), in the order they were added."""
    params: dict = {}
    scope = _response_scope(dataset, None, None, params)
    sql = f"""
        SELECT m.name FROM models m
        WHERE EXISTS (SELECT 1 FROM responses r JOIN items i ON i.id = r.item_id
                      JOIN datasets d ON d.id = i.dataset_id WHERE r.model_id = m.id AND {scope})
        ORDER BY m.id"""
    return [row[0] for row in db.execute(sql, params).fetchall()]


def split_names(db: sqlite_utils.Database, dataset: str | None = None) -> list[str]:
    params: dict = {}
    scope = _response_scope(dataset, None, None, params)
    sql = f"""SELECT DISTINCT i.split FROM items i JOIN datasets d ON d.id = i.dataset_id
              WHERE i.split IS NOT NULL AND {scope} ORDER BY i.split"""
    return [row[0] for row in db.execute(sql, params).fetchall()]


def score_judge_names(db: sqlite_utils.Database) -> list[str]:
    """Judges that score single responses (pairwise judges feed the leaderboard instead)."""
    return [row[0] for row in db.execute("SELECT name FROM judges WHERE mode = 'score' ORDER BY id")]


# --- queues -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFilter:
    """What a reviewer asked to see. ``judge``/``score_*`` filter on the judge's own scale."""

    dataset: str | None = None
    models: tuple[str, ...] = ()
    split: str | None = None
    ungraded_for: str | None = None
    judge: str | None = None
    score_min: float | None = None
    score_max: float | None = None
    flagged: bool = False
    # words that must each appear (ASCII case ignored) in the instruction, the input or an in-scope response
    search: str | None = None
    # "position" (file order) or "disagreement" (judge vs human gap, largest first)
    order: str = "position"
    # whose grades ``graded_by_me`` counts (defaults to ``ungraded_for``)
    reviewer: str | None = None
    # only this reviewer's grades make the human means (a reviewer must not see the others' grades)
    humans_of: str | None = None

    @property
    def me(self) -> str:
        return self.reviewer or self.ungraded_for or ""


QUEUE_ORDERS = ("position", "disagreement")


def _search_scope(search: str | None, models: str, params: dict) -> str:
    """WHERE conditions on items ``i``: every word of ``search`` in the instruction, the input or the text of a
    response ``r`` that ``models`` admits. LIKE with ``%`` and ``_`` escaped, so they match only themselves;
    SQLite folds case for ASCII letters only."""
    conditions = ["1 = 1"]
    for index, word in enumerate((search or "").split()):
        params[f"search{index}"] = "%" + re.sub(r"([\\%_])", r"\\\1", word) + "%"
        like = f"LIKE :search{index} ESCAPE '\\'"
        conditions.append(
            f"""(i.instruction {like} OR COALESCE(i.input, '') {like}
                 OR EXISTS (SELECT 1 FROM responses r WHERE r.item_id = i.id AND {models} AND r.text {like}))"""
        )
    return " AND ".join(conditions)


def _model_scope(models: Sequence[str], params: dict) -> str:
    """A condition on responses ``r``: written by one of ``models`` (any model when empty)."""
    if not models:
        return "1 = 1"
    return f"r.model_id IN (SELECT id FROM models WHERE {in_clause('name', list(models), params, 'model')})"


def review_queue(db: sqlite_utils.Database, queue: QueueFilter) -> list[dict]:
    """Items matching ``queue``, one row each with counts and the judge/human means of its responses.

    ``disagreement`` is the largest gap on the 1-5 scale between a response's mean human grade and its
    mean judge score; ``judge_spread`` is the largest gap between judges on one response (used to rank items
    that no human has graded yet). Every aggregate is one grouped join (no per-response subqueries), so the
    cost grows with the rows in scope, not with their square.
    """
    if queue.order not in QUEUE_ORDERS:
        raise ValueError(f"unknown queue order {queue.order!r}; expected one of {QUEUE_ORDERS}")
    params: dict = {"me": queue.me, "judge": queue.judge or "", "humans_of": queue.humans_of or ""}
    scope = _response_scope(queue.dataset, queue.models, queue.split, params)
    search = _search_scope(queue.search, _model_scope(queue.models, params), params)
    having = ["1 = 1"]
    if queue.ungraded_for:
        having.append("SUM(mine) < COUNT(*)")
    if queue.flagged:
        having.append("SUM(flagged) > 0")
    params["lo"] = queue.score_min if queue.score_min is not None else float("-inf")
    params["hi"] = queue.score_max if queue.score_max is not None else float("inf")
    if queue.score_min is not None or queue.score_max is not None:
        having.append("SUM(in_range) > 0")
    order = {
        "position": "d.id, i.position, i.id",
        "disagreement": "disagreement IS NULL, disagreement DESC, judge_spread DESC, d.id, i.position, i.id",
    }[queue.order]
    sql = f"""
    WITH scoped AS MATERIALIZED (
        SELECT r.id AS response_id, r.item_id, COALESCE(r.injection_flag, '') != '' AS flagged
        FROM responses r JOIN items i ON i.id = r.item_id JOIN datasets d ON d.id = i.dataset_id
        JOIN models m ON m.id = r.model_id
        WHERE {scope} AND {search}
    ),
    judge_means AS (
        SELECT js.response_id, j.name AS judge, AVG(js.score) AS score,
               1 + 4.0 * (AVG(js.score) - COALESCE(j.score_min, 0))
                     / NULLIF(COALESCE(j.score_max, 100) - COALESCE(j.score_min, 0), 0) AS on_grade_scale
        FROM scoped s JOIN judge_scores js ON js.response_id = s.response_id JOIN judges j ON j.id = js.judge_id
        WHERE js.score IS NOT NULL
        GROUP BY js.response_id, js.judge_id
    ),
    judged AS (
        SELECT response_id,
               AVG(CASE WHEN :judge = '' OR judge = :judge THEN on_grade_scale END) AS judge,
               MAX(on_grade_scale) - MIN(on_grade_scale) AS judge_spread,
               MAX((:judge = '' OR judge = :judge) AND score BETWEEN :lo AND :hi) AS in_range
        FROM judge_means GROUP BY response_id
    ),
    graded AS (
        SELECT g.response_id, MAX(rv.name = :me) AS mine,
               AVG(CASE WHEN :humans_of = '' OR rv.name = :humans_of THEN g.score END) AS human
        FROM scoped s JOIN grades g ON g.response_id = s.response_id JOIN reviewers rv ON rv.id = g.reviewer_id
        GROUP BY g.response_id
    ),
    per_response AS (
        SELECT s.item_id, s.flagged, COALESCE(gr.mine, 0) AS mine, gr.human, jd.judge, jd.judge_spread,
               COALESCE(jd.in_range, 0) AS in_range
        FROM scoped s LEFT JOIN judged jd ON jd.response_id = s.response_id
        LEFT JOIN graded gr ON gr.response_id = s.response_id
    )
    SELECT i.id AS item_id, d.name AS dataset, i.position, i.split, i.instruction,
           COUNT(*) AS responses, SUM(mine) AS graded_by_me, SUM(flagged) AS flagged,
           ROUND(AVG(judge), 2) AS mean_judge_1to5, ROUND(AVG(human), 2) AS mean_grade,
           ROUND(MAX(ABS(human - judge)), 2) AS disagreement, ROUND(MAX(judge_spread), 2) AS judge_spread
    FROM per_response p JOIN items i ON i.id = p.item_id JOIN datasets d ON d.id = i.dataset_id
    GROUP BY i.id
    HAVING {" AND ".join(having)}
    ORDER BY {order}
    """
    return list(db.query(sql, params))


def next_item(
    db: sqlite_utils.Database, queue: QueueFilter, *, after: str | None = None, direction: int = 1
) -> str | None:
    """The queue's item after (``direction=-1``: before) ``after``, wrapping round, or None for an empty queue.

    In file order this is one indexed look-up from the current item's position (LIMIT 1), so a step costs
    the same at 100 or 20,000 items; the disagreement order ranks the whole queue and is meant for the
    Queues tab (the app keeps that ranking instead of asking again on every step).
    """
    if queue.order != "position":
        item_ids = [row["item_id"] for row in review_queue(db, queue)]
        if not item_ids:
            return None
        index = item_ids.index(after) + direction if after in item_ids else 0
        return item_ids[index % len(item_ids)]
    params: dict = {"me": queue.ungraded_for or "", "judge": queue.judge or ""}
    conditions = [_item_scope(queue, params)]
    anchor = None
    if after is not None:
        anchor = db.execute("SELECT dataset_id, position, id FROM items WHERE id = ?", [after]).fetchone()
    if anchor is not None:
        params.update(anchor_dataset=anchor[0], anchor_position=anchor[1], anchor_id=anchor[2])
        compare = ">" if direction > 0 else "<"
        conditions.append(f"(i.dataset_id, i.position, i.id) {compare} (:anchor_dataset, :anchor_position, :anchor_id)")
    order = "ASC" if direction > 0 else "DESC"
    sql = f"""SELECT i.id FROM items i WHERE {{where}}
              ORDER BY i.dataset_id {order}, i.position {order}, i.id {order} LIMIT 1"""
    row = db.execute(sql.format(where=" AND ".join(conditions)), params).fetchone()
    if row is None and anchor is not None:  # wrap round
        row = db.execute(sql.format(where=conditions[0]), params).fetchone()
    return row[0] if row else None


def _item_scope(queue: QueueFilter, params: dict) -> str:
    """WHERE conditions on items ``i`` for the queue's filters, each an indexed EXISTS on the item's rows."""
    conditions = []
    if queue.dataset:
        params["dataset"] = queue.dataset
        conditions.append("i.dataset_id = (SELECT id FROM datasets WHERE name = :dataset)")
    if queue.split:
        params["split"] = queue.split
        conditions.append("i.split = :split")
    models = _model_scope(queue.models, params)
    responses = f"SELECT 1 FROM responses r WHERE r.item_id = i.id AND {models}"
    conditions.append(f"EXISTS ({responses})")
    conditions.append(_search_scope(queue.search, models, params))
    if queue.ungraded_for:
        conditions.append(
            f"""EXISTS ({responses} AND NOT EXISTS (SELECT 1 FROM grades g WHERE g.response_id = r.id
                AND g.reviewer_id = (SELECT id FROM reviewers WHERE name = :me)))"""
        )
    if queue.flagged:
        conditions.append(f"EXISTS ({responses} AND COALESCE(r.injection_flag, '') != '')")
    if queue.score_min is not None or queue.score_max is not None:
        params["lo"] = queue.score_min if queue.score_min is not None else float("-inf")
        params["hi"] = queue.score_max if queue.score_max is not None else float("inf")
        conditions.append(
            f"""EXISTS (SELECT 1 FROM responses r JOIN judge_scores js ON js.response_id = r.id
                JOIN judges j ON j.id = js.judge_id
                WHERE r.item_id = i.id AND {models} AND js.score IS NOT NULL AND (:judge = '' OR j.name = :judge)
                GROUP BY r.id, js.judge_id HAVING AVG(js.score) BETWEEN :lo AND :hi)"""
        )
    return " AND ".join(conditions)


# --- one item, side by side ---------------------------------------------------------------------------------


def item_view(
    db: sqlite_utils.Database, item_id: str, models: Sequence[str], reviewer: str | None = None
) -> dict | None:
    """An item with the responses of ``models`` (in that order; all models when empty), judge scores and
    ``reviewer``'s own grades and comments (a draft comment when there is no grade yet). Other reviewers'
    grades are left out on purpose: nobody sees them before grading."""
    item = next(
        db.query(
            """SELECT i.id AS item_id, d.name AS dataset, i.position, i.split, i.instruction, i.input,
                      i.reference_output
               FROM items i JOIN datasets d ON d.id = i.dataset_id WHERE i.id = ?""",
            [item_id],
        ),
        None,
    )
    if item is None:
        return None
    params: dict = {"item": item_id, "me": reviewer or ""}
    scope = in_clause("m.name", list(models), params, "model") if models else "1 = 1"
    rows = list(
        db.query(
            f"""SELECT r.id AS response_id, m.name AS model, r.version, r.text, r.injection_flag,
                       g.score AS my_grade, COALESCE(g.comment, gd.comment) AS my_comment
                FROM responses r JOIN models m ON m.id = r.model_id
                LEFT JOIN reviewers rv ON rv.name = :me
                LEFT JOIN grades g ON g.response_id = r.id AND g.reviewer_id = rv.id
                LEFT JOIN grade_drafts gd ON gd.response_id = r.id AND gd.reviewer_id = rv.id
                WHERE r.item_id = :item AND {scope} ORDER BY m.id""",
            params,
        )
    )
    order = {name: index for index, name in enumerate(models)}
    rows.sort(key=lambda row: order.get(row["model"], len(order)))
    for row in rows:
        row["judge_scores"] = list(
            db.query(
                """SELECT j.name AS judge, js.repeat, js.score, j.score_min, j.score_max, js.rationale,
                          js.error FROM judge_scores js JOIN judges j ON j.id = js.judge_id
                   WHERE js.response_id = ? ORDER BY j.id, js.repeat""",
                [row["response_id"]],
            )
        )
    item["responses"] = rows
    item["my_preference"] = my_preference(db, item_id, reviewer) if reviewer else None
    return item


def response_models(db: sqlite_utils.Database, item_id: str, response_ids: Sequence[int]) -> list[list]:
    """[[response id, model name], ...] for those responses of ``item_id``, in the order given (unknown ids and
    other items' responses are left out, so a stale or forged id cannot put a mark on another item)."""
    params: dict = {"item": item_id}
    if not response_ids:
        return []
    ids = in_clause("r.id", [int(i) for i in response_ids], params, "response")
    found = dict(
        db.execute(
            f"""SELECT r.id, m.name FROM response_versions r JOIN models m ON m.id = r.model_id
                WHERE r.item_id = :item AND {ids}""",
            params,
        ).fetchall()
    )
    return [[int(i), found[int(i)]] for i in response_ids if int(i) in found]


def my_preference(db: sqlite_utils.Database, item_id: str, reviewer: str) -> str | None:
    """The model this reviewer marked better on this item in the Review tab, "tie", or None."""
    rows = list(
        db.query(
            """SELECT pg.preference, l.name AS left_model, r.name AS right_model
               FROM pairwise_grades pg JOIN reviewers rv ON rv.id = pg.reviewer_id
               JOIN models l ON l.id = pg.left_model_id JOIN models r ON r.id = pg.right_model_id
               WHERE pg.item_id = ? AND rv.name = ? AND pg.blind = 0 ORDER BY pg.id""",
            [item_id, reviewer],
        )
    )
    winners = {
        row["left_model"] if row["preference"] == "left" else row["right_model"]
        for row in rows
        if row["preference"] != "tie"
    }
    if len(winners) == 1:
        return winners.pop()
    return "tie" if rows and not winners else None


def clear_open_preferences(db: sqlite_utils.Database, item_id: str, reviewer: str) -> None:
    """Drop a reviewer's earlier non-blind better/tie marks on an item before they mark it again.

    Call inside the caller's transaction, together with the new marks, so a re-save never double counts.
    """
    db.execute(
        """DELETE FROM pairwise_grades WHERE item_id = ? AND blind = 0
           AND reviewer_id = (SELECT id FROM reviewers WHERE name = ?)""",
        [item_id, reviewer],
    )


# --- progress -----------------------------------------------------------------------------------------------


def progress(
    db: sqlite_utils.Database,
    reviewer: str | None = None,
    *,
    dataset: str | None = None,
    models: Sequence[str] | None = None,
) -> dict:
    """Responses in scope, how many ``reviewer`` graded, how many anyone graded, and all grades given.

    Joins from the scoped responses to ``grades`` by its (response, reviewer) index: no per-row subqueries.
    """
    params: dict = {"me": reviewer or ""}
    scope = _response_scope(dataset, models, None, params)
    sql = f"""
    WITH scoped AS MATERIALIZED (
        SELECT r.id, r.item_id FROM responses r JOIN items i ON i.id = r.item_id
        JOIN datasets d ON d.id = i.dataset_id JOIN models m ON m.id = r.model_id WHERE {scope}
    ),
    graded AS MATERIALIZED (
        SELECT g.response_id, g.reviewer_id FROM scoped s JOIN grades g ON g.response_id = s.id
    )
    SELECT (SELECT COUNT(*) FROM scoped) AS total,
           (SELECT COUNT(*) FROM graded WHERE reviewer_id = (SELECT id FROM reviewers WHERE name = :me)) AS mine,
           (SELECT COUNT(DISTINCT response_id) FROM graded) AS anyone,
           (SELECT COUNT(*) FROM graded) AS grades,
           (SELECT COUNT(DISTINCT item_id) FROM scoped) AS items
    """
    return next(db.query(sql, params))


# --- blind A/B ----------------------------------------------------------------------------------------------


def next_blind_pair(
    db: sqlite_utils.Database,
    reviewer: str,
    *,
    dataset: str | None = None,
    models: Sequence[str] | None = None,
    repeat_share: float = 0.1,
    rng: random.Random | None = None,
) -> dict | None:
    """A pair of responses to one item for a blind vote, sides at random, or None when nothing is left.

    With probability ``repeat_share`` (and whenever no fresh pair is left) an earlier blind vote of this
    reviewer comes back with its sides swapped; ``repeat_of`` then holds that vote's id. Votes younger than
    ``REPEAT_MIN_GAP`` blind votes are not repeated yet.
    """
    rng = rng or random.Random()
    repeats = _repeatable_votes(db, reviewer, dataset, models)
    fresh = _fresh_pairs(db, reviewer, dataset, models)
    if repeats and (not fresh or rng.random() < repeat_share):
        vote = rng.choice(repeats)
        left, right, repeat_of = vote["right_model"], vote["left_model"], vote["id"]
        item_id = vote["item_id"]
    elif fresh:
        pair = rng.choice(fresh)
        left, right = rng.sample([pair["model_a"], pair["model_b"]], 2)
        item_id, repeat_of = pair["item_id"], None
    else:
        return None
    item = next(
        db.query("SELECT id AS item_id, instruction, input, reference_output FROM items WHERE id = ?", [item_id])
    )
    texts = dict(
        db.execute(
            """SELECT m.name, r.text FROM responses r JOIN models m ON m.id = r.model_id
               WHERE r.item_id = ? AND m.name IN (?, ?)""",
            [item_id, left, right],
        ).fetchall()
    )
    return {
        **item,
        "left_model": left,
        "right_model": right,
        "left_text": texts[left],
        "right_text": texts[right],
        "repeat_of": repeat_of,
    }


def _fresh_pairs(db, reviewer: str, dataset: str | None, models: Sequence[str] | None) -> list[dict]:
    """(item, model pair) combinations this reviewer has not voted on blind, in either side order, on items
    they have not seen with model names in the Review tab (a remembered name would unblind the pair)."""
    params: dict = {"me": reviewer}
    scope = _response_scope(dataset, models, None, params)
    scope_b = in_clause("mb.name", list(models), params, "model") if models else "1 = 1"
    sql = f"""
    SELECT ra.item_id, m.name AS model_a, mb.name AS model_b
    FROM responses ra JOIN responses rb ON rb.item_id = ra.item_id AND rb.model_id > ra.model_id
    JOIN items i ON i.id = ra.item_id JOIN datasets d ON d.id = i.dataset_id
    JOIN models m ON m.id = ra.model_id JOIN models mb ON mb.id = rb.model_id
    WHERE {scope} AND {scope_b} AND NOT EXISTS (
        SELECT 1 FROM item_views seen JOIN reviewers rv ON rv.id = seen.reviewer_id
        WHERE rv.name = :me AND seen.item_id = ra.item_id
    ) AND NOT EXISTS (
        SELECT 1 FROM pairwise_grades pg JOIN reviewers rv ON rv.id = pg.reviewer_id
        WHERE rv.name = :me AND pg.blind = 1 AND pg.item_id = ra.item_id
          AND ((pg.left_model_id = ra.model_id AND pg.right_model_id = rb.model_id)
            OR (pg.left_model_id = rb.model_id AND pg.right_model_id = ra.model_id)))
    ORDER BY d.name, i.position, ra.model_id, rb.model_id
    """
    return list(db.query(sql, params))


def _repeatable_votes(db, reviewer: str, dataset: str | None, models: Sequence[str] | None) -> list[dict]:
    """First-time blind votes of this reviewer not yet re-asked and at least REPEAT_MIN_GAP votes old."""
    params: dict = {"me": reviewer, "gap": REPEAT_MIN_GAP}
    scope = _response_scope(dataset, models, None, params)
    scope_right = in_clause("mr.name", list(models), params, "model") if models else "1 = 1"
    sql = f"""
    WITH mine AS (
        SELECT pg.* FROM pairwise_grades pg JOIN reviewers rv ON rv.id = pg.reviewer_id
        WHERE rv.name = :me AND pg.blind = 1
    )
    SELECT pg.id, pg.item_id, m.name AS left_model, mr.name AS right_model
    FROM mine pg JOIN items i ON i.id = pg.item_id JOIN datasets d ON d.id = i.dataset_id
    JOIN models m ON m.id = pg.left_model_id JOIN models mr ON mr.id = pg.right_model_id
    WHERE pg.repeat_of IS NULL AND {scope} AND {scope_right}
      AND NOT EXISTS (SELECT 1 FROM mine again WHERE again.repeat_of = pg.id)
      AND (SELECT COUNT(*) FROM mine later WHERE later.id > pg.id) >= :gap
    ORDER BY pg.id
    """
    return list(db.query(sql, params))


# --- calibration --------------------------------------------------------------------------------------------


def reviewer_consistency(db: sqlite_utils.Database) -> list[dict]:
    """Per reviewer: blind votes, share of decided votes for the left (first) side, and self-consistency.

    A repeated pair is consistent when both votes prefer the same model (sides were swapped) or both tie.
    """
    sql = """
    SELECT rv.name AS reviewer,
           COUNT(pg.id) AS blind_votes,
           SUM(pg.preference = 'left') * 1.0 / NULLIF(SUM(pg.preference != 'tie'), 0) AS first_position_share,
           (SELECT COUNT(*) FROM pairwise_grades again
            WHERE again.reviewer_id = rv.id AND again.repeat_of IS NOT NULL) AS repeats,
           (SELECT SUM((first.preference = 'tie' AND again.preference = 'tie')
                    OR (first.preference = 'left' AND again.preference = 'right')
                    OR (first.preference = 'right' AND again.preference = 'left'))
            FROM pairwise_grades again JOIN pairwise_grades first ON first.id = again.repeat_of
            WHERE again.reviewer_id = rv.id) AS consistent
    FROM reviewers rv JOIN pairwise_grades pg ON pg.reviewer_id = rv.id AND pg.blind = 1
    GROUP BY rv.id ORDER BY rv.name
    """
    rows = list(db.query(sql))
    for row in rows:
        row["self_consistency"] = row["consistent"] / row["repeats"] if row["repeats"] else None
    return rows


def judge_position_bias(db: sqlite_utils.Database) -> list[dict]:
    """Per pairwise judge: comparisons, share of decided verdicts for whichever answer was shown first, and
    the share of comparisons whose verdict survived swapping the order."""
    sql = """
    SELECT j.name AS judge, COUNT(*) AS comparisons,
           (SUM(jp.verdict_ab = 'A') + SUM(jp.verdict_ba = 'B')) * 1.0
             / NULLIF(SUM(jp.verdict_ab IN ('A', 'B')) + SUM(jp.verdict_ba IN ('A', 'B')), 0)
             AS first_position_share,
           AVG(jp.consistent) AS consistency
    FROM judge_pairwise jp JOIN judges j ON j.id = jp.judge_id
    WHERE jp.error IS NULL
    GROUP BY j.id ORDER BY j.name
    """
    return list(db.query(sql))


# --- raters, for agreement statistics ----------------------------------------------------------------------

HUMANS = "humans (mean grade)"


def humans_label(exclude: str | None = None) -> str:
    """How the humans' mean grade is named, with the reviewer left out of it when there is one."""
    return f"humans (mean grade, without {exclude})" if exclude else HUMANS


def rater_names(db: sqlite_utils.Database) -> list[str]:
    """Everyone who scores responses: ``judge:NAME``, ``reviewer:NAME`` and the humans' mean grade."""
    judges = [f"judge:{name}" for name in score_judge_names(db)]
    reviewers = [f"reviewer:{name}" for name in reviewer_names(db)]
    return judges + ([HUMANS] if reviewers else []) + reviewers


def rater_scores(
    db: sqlite_utils.Database,
    rater: str,
    *,
    dataset: str | None = None,
    models: Sequence[str] | None = None,
    exclude: str | None = None,
) -> dict[int, float]:
    """response id -> score of one rater (a judge on its own scale, averaged over repeats; humans 1-5).

    ``exclude`` (humans only) leaves one reviewer's grades out of the mean, so that a reviewer compared with
    "the humans" is not compared with their own grades.
    """
    params: dict = {}
    scope = _response_scope(dataset, models, None, params)
    if exclude is not None and rater != HUMANS:
        raise ValueError(f"only {HUMANS!r} can leave a reviewer out, not {rater!r}")
    if rater == HUMANS:
        params["exclude"] = exclude
        source = """SELECT g.response_id, AVG(g.score) AS score FROM grades g JOIN reviewers rv ON rv.id = g.reviewer_id
                    WHERE :exclude IS NULL OR rv.name != :exclude GROUP BY g.response_id"""
    elif rater.startswith("judge:"):
        params["rater"] = rater.removeprefix("judge:")
        source = f"SELECT response_id, score FROM ({_JUDGE_MEANS_SQL}) WHERE judge = :rater"
    elif rater.startswith("reviewer:"):
        params["rater"] = rater.removeprefix("reviewer:")
        source = """SELECT g.response_id, g.score FROM grades g JOIN reviewers rv ON rv.id = g.reviewer_id
                    WHERE rv.name = :rater"""
    else:
        raise ValueError(f"unknown rater {rater!r}; expected judge:NAME, reviewer:NAME or {HUMANS!r}")
    sql = f"""SELECT s.response_id, s.score FROM ({source}) s JOIN responses r ON r.id = s.response_id
              JOIN items i ON i.id = r.item_id JOIN datasets d ON d.id = i.dataset_id
              JOIN models m ON m.id = r.model_id WHERE {scope}"""
    return {response_id: score for response_id, score in db.execute(sql, params).fetchall()}


def rater_scale(db: sqlite_utils.Database, rater: str) -> tuple[float, float]:
    """The (min, max) of a rater's scale: the judge's declared range, or 1-5 for humans."""
    if rater.startswith("judge:"):
        row = db.execute(
            "SELECT COALESCE(score_min, 0), COALESCE(score_max, 100) FROM judges WHERE name = ?",
            [rater.removeprefix("judge:")],
        ).fetchone()
        if row:
            return float(row[0]), float(row[1])
    return float(HUMAN_SCORE_RANGE[0]), float(HUMAN_SCORE_RANGE[1])


# --- leaderboard --------------------------------------------------------------------------------------------


def model_summary(db: sqlite_utils.Database, *, dataset: str | None = None) -> list[dict]:
    """Per model with responses in scope: responses; human grades, the responses they cover and the mean over
    those responses of each one's mean grade (as in ``HUMANS``); per judge the mean over responses of its
    per-response mean score (own scale) and the responses it scored. The app's leaderboard and
    ``workbench stats`` both show these."""
    params: dict = {}
    scope = _response_scope(dataset, None, None, params)
    rows = list(
        db.query(
            f"""SELECT m.name AS model, COUNT(r.id) AS responses, COALESCE(SUM(hm.grades), 0) AS grades,
                       COUNT(hm.score) AS graded, AVG(hm.score) AS mean_grade
                FROM responses r JOIN items i ON i.id = r.item_id JOIN datasets d ON d.id = i.dataset_id
                JOIN models m ON m.id = r.model_id
                LEFT JOIN (SELECT response_id, AVG(score) AS score, COUNT(*) AS grades FROM grades
                           GROUP BY response_id) hm ON hm.response_id = r.id
                WHERE {scope} GROUP BY m.id ORDER BY m.id""",
            params,
        )
    )
    judge_means = db.execute(
        f"""SELECT m.name, jm.judge, AVG(jm.score), COUNT(*)
            FROM ({_JUDGE_MEANS_SQL}) jm JOIN responses r ON r.id = jm.response_id
            JOIN items i ON i.id = r.item_id JOIN datasets d ON d.id = i.dataset_id
            JOIN models m ON m.id = r.model_id JOIN judges j ON j.name = jm.judge
            WHERE {scope} GROUP BY m.id, jm.judge ORDER BY m.id, j.id""",
        params,
    ).fetchall()
    by_model = {row["model"]: {**row, "judges": {}} for row in rows}
    for model, judge, mean, count in judge_means:
        by_model[model]["judges"][judge] = {"mean": mean, "n": count}
    return list(by_model.values())


def pairwise_judge_names(db: sqlite_utils.Database) -> list[str]:
    """Judges that compare two responses (each one a source of outcomes of its own)."""
    return [row[0] for row in db.execute("SELECT name FROM judges WHERE mode = 'pairwise' ORDER BY id")]


# (item id, model_a, model_b, result): a comparison before it is reduced to an outcome of ``workbench.stats``
_Comparison = tuple[str, str, str, float]


def _comparisons(
    db: sqlite_utils.Database,
    source: str,
    *,
    dataset: str | None,
    blind: bool | None = None,
    judge: str | None = None,
    reviewer: str | None = None,
) -> list[_Comparison]:
    """Explicit pairwise comparisons in the order they were given (see ``pairwise_outcomes``)."""
    params: dict = {}
    scope = _response_scope(dataset, None, None, params)
    if source == "human":
        if blind is not None:
            params["blind"] = int(blind)
            scope += " AND pg.blind = :blind"
        if reviewer is not None:
            params["reviewer"] = reviewer
            scope += " AND pg.reviewer_id = (SELECT id FROM reviewers WHERE name = :reviewer)"
        sql = f"""SELECT i.id, a.name, b.name, CASE pg.preference WHEN 'left' THEN 1.0 WHEN 'right' THEN 0.0
                         ELSE 0.5 END
                  FROM pairwise_grades pg JOIN models a ON a.id = pg.left_model_id
                  JOIN models b ON b.id = pg.right_model_id JOIN items i ON i.id = pg.item_id
                  JOIN datasets d ON d.id = i.dataset_id
                  WHERE pg.repeat_of IS NULL AND {scope} ORDER BY pg.id"""
    elif source == "judge":
        if judge is not None:
            params["judge"] = judge
            scope += " AND jp.judge_id = (SELECT id FROM judges WHERE name = :judge)"
        sql = f"""SELECT i.id, a.name, b.name, CASE jp.winner WHEN 'A' THEN 1.0 WHEN 'B' THEN 0.0 ELSE 0.5 END
                  FROM judge_pairwise jp JOIN models a ON a.id = jp.model_a_id
                  JOIN models b ON b.id = jp.model_b_id JOIN items i ON i.id = jp.item_id
                  JOIN datasets d ON d.id = i.dataset_id
                  WHERE jp.winner IS NOT NULL AND jp.error IS NULL AND {scope} ORDER BY jp.id"""
    else:
        raise ValueError(f"unknown source {source!r}; expected 'human' or 'judge'")
    return [tuple(row) for row in db.execute(sql, params).fetchall()]


def pairwise_outcomes(
    db: sqlite_utils.Database,
    *,
    source: str = "human",
    dataset: str | None = None,
    blind: bool | None = None,
    judge: str | None = None,
) -> list[tuple[str, str, float]]:
    """(model_a, model_b, result) per comparison: 1.0 when a won, 0.0 when b won, 0.5 for a tie
    (the outcome format of ``workbench.stats``).

    ``source="human"``: every pairwise grade except the swapped-side repeats (they measure the reviewer, not
    the models), only blind votes (``blind=True``) or only the Review tab's better/tie marks (``blind=False``),
    which are given with the names in view; ``source="judge"``: pairwise judge verdicts (order-swapped and
    reconciled already), only ``judge``'s when given.
    """
    comparisons = _comparisons(db, source, dataset=dataset, blind=blind, judge=judge)
    return [comparison[1:] for comparison in comparisons]


def _score_comparisons(db: sqlite_utils.Database, rater: str, dataset: str | None) -> list[_Comparison]:
    """Per item and model pair, the comparison one rater's single-response scores imply."""
    scores = rater_scores(db, rater, dataset=dataset)
    by_item: dict[str, list[tuple[int, str, float]]] = {}
    for response_id, item, model_id, model in db.execute(
        "SELECT r.id, r.item_id, r.model_id, m.name FROM responses r JOIN models m ON m.id = r.model_id"
    ).fetchall():
        if response_id in scores:
            by_item.setdefault(item, []).append((model_id, model, scores[response_id]))
    comparisons = []
    for item, entries in by_item.items():
        entries.sort()
        for index, (_, model_a, score_a) in enumerate(entries):
            for _, model_b, score_b in entries[index + 1 :]:
                result = 1.0 if score_a > score_b else 0.0 if score_b > score_a else 0.5
                comparisons.append((item, model_a, model_b, result))
    return comparisons


def score_outcomes(
    db: sqlite_utils.Database, rater: str, *, dataset: str | None = None
) -> list[tuple[str, str, float]]:
    """(model_a, model_b, result) per item and model pair from one rater's single-response scores.

    The higher-scored response wins, equal scores tie; this turns judge scores (and grades) into the same
    comparisons as pairwise votes so that every rater gets win rates and a rating.
    """
    return [comparison[1:] for comparison in _score_comparisons(db, rater, dataset)]


def reviewer_outcomes(
    db: sqlite_utils.Database, reviewer: str, *, dataset: str | None = None
) -> list[tuple[str, str, float]]:
    """Everything one reviewer said about which of two answers is better, each comparison counted once.

    Their explicit votes first (blind votes and the Review tab's better/tie marks, without the swapped-side
    repeats, in the order given), then the comparisons their 1-5 grades imply (``score_outcomes``) for the
    item and model pairs they did not vote on: a vote says more than two grades, and a pair both voted on
    and graded is one judgement, not two.
    """
    votes = _comparisons(db, "human", dataset=dataset, reviewer=reviewer)
    voted = {(item, frozenset((a, b))) for item, a, b, _ in votes}
    graded = [
        comparison
        for comparison in _score_comparisons(db, f"reviewer:{reviewer}", dataset)
        if (comparison[0], frozenset(comparison[1:3])) not in voted
    ]
    return [comparison[1:] for comparison in votes + graded]


# --- benchmarks and training --------------------------------------------------------------------------------


def training_models(db: sqlite_utils.Database) -> list[str]:
    return [
        row[0]
        for row in db.execute(
            "SELECT m.name FROM models m "
            "WHERE EXISTS (SELECT 1 FROM training_metrics t WHERE t.model_id = m.id) ORDER BY m.id"
        )
    ]
