"""Core store API: data sets, items, models and runs, responses, reviewers, grades, and the SQL behind
imports, exports and statistics.

Every write runs inside ``transaction(db)`` so that an import either lands completely or not at all, and
concurrent writers (the review app, judges, imports) queue on SQLite's write lock instead of interleaving.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from math import isfinite
from typing import Any

import sqlite_utils

from trainer.errors import UserError
from workbench.store.schema import cannot_write, database_file

PREFERENCES = ("left", "right", "tie")
HUMAN_SCORE_RANGE = (1, 5)


def utc_now() -> str:
    """ISO-8601 UTC timestamp, the one format every table uses."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction; nested use becomes a savepoint of the outer one. A write the file system refuses
    (a read-only database file or folder) is a ``UserError`` naming the file, after the rollback.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so a writer waits (busy timeout) at the start rather
    than failing halfway when another process committed first.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.rollback()
            raise
        db.commit()
    except sqlite3.OperationalError as exc:  # a read-only file or folder: the user's to fix, not a bug
        error = cannot_write(exc, database_file(db))
        if error is None:
            raise
        raise error from exc


def _one(db: sqlite_utils.Database, sql: str, params: Sequence[Any] | dict = ()) -> Any:
    """The first column of the first row (None when there is none); ``params`` positional or named."""
    row = db.execute(sql, params if isinstance(params, dict) else list(params)).fetchone()
    return row[0] if row else None


# --- data sets and items ---------------------------------------------------------------------------------


def item_id(dataset: str, instruction: str, input: str, occurrence: int = 0) -> str:
    """Stable identity of an item: re-importing a file changes nothing and responses from other files align.

    ``occurrence`` counts earlier entries of the same file with the same instruction and input (the book's
    data has a few such duplicates with different outputs); 0 keeps the plain hash.
    """
    parts = [dataset, instruction, input] + ([str(occurrence)] if occurrence else [])
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def get_or_create_dataset(db: sqlite_utils.Database, name: str, source: str | None = None) -> int:
    with transaction(db):
        db.execute(
            "INSERT INTO datasets (name, source, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING",
            [name, source, utc_now()],
        )
        return _one(db, "SELECT id FROM datasets WHERE name = ?", [name])


def dataset_names(db: sqlite_utils.Database) -> list[str]:
    return [row["name"] for row in db.query("SELECT name FROM datasets ORDER BY id")]


def add_items(db: sqlite_utils.Database, dataset_id: int, items: Iterable[dict], *, keep_position: bool) -> None:
    """Insert or refresh items (dicts with id, position, instruction, input, reference_output, split).

    ``keep_position`` is for partial files (a generation output covers only the test split): their order
    says nothing about the data set's order, so existing items keep theirs.
    """
    position_update = "position" if keep_position else "excluded.position"
    with transaction(db):  # an item that would not change is not written (imports count what they changed)
        db.conn.executemany(
            "INSERT INTO items (id, dataset_id, position, instruction, input, reference_output, split) "
            "VALUES (:id, :dataset_id, :position, :instruction, :input, :reference_output, :split) "
            f"ON CONFLICT(id) DO UPDATE SET position = {position_update}, "
            "reference_output = COALESCE(excluded.reference_output, reference_output), "
            "split = COALESCE(excluded.split, split) "
            f"WHERE position IS NOT {position_update} "
            "OR reference_output IS NOT COALESCE(excluded.reference_output, reference_output) "
            "OR split IS NOT COALESCE(excluded.split, split)",
            ({**item, "dataset_id": dataset_id} for item in items),
        )


def in_clause(column: str, values: Sequence, params: dict, prefix: str) -> str:
    """``column IN (:prefix0, ...)`` with the values bound into ``params``."""
    names = []
    for index, value in enumerate(values):
        params[f"{prefix}{index}"] = value
        names.append(f":{prefix}{index}")
    return f"{column} IN ({', '.join(names)})"


def next_position(db: sqlite_utils.Database, dataset_id: int) -> int:
    return _one(db, "SELECT COALESCE(MAX(position) + 1, 0) FROM items WHERE dataset_id = ?", [dataset_id])


def set_item_splits(db: sqlite_utils.Database, dataset: str, splits: dict[str, list[int]]) -> int:
    """Label items by file position (a run's split.json); returns how many items were labelled."""
    dataset_id = _one(db, "SELECT id FROM datasets WHERE name = ?", [dataset])
    with transaction(db):
        return db.conn.executemany(
            "UPDATE items SET split = ? WHERE position = ? AND dataset_id = ? AND split IS NOT ?",
            [(split, position, dataset_id, split) for split, positions in splits.items() for position in positions],
        ).rowcount  # executemany sums the rows each statement changed


def dataset_items(db: sqlite_utils.Database, dataset: str) -> list[dict]:
    """The data set's items in file order (the order judge score lists are aligned with)."""
    return list(
        db.query(
            "SELECT items.* FROM items JOIN datasets ON datasets.id = items.dataset_id "
            "WHERE datasets.name = ? ORDER BY items.position, items.id",
            [dataset],
        )
    )


# --- models, runs and responses --------------------------------------------------------------------------


def get_or_create_model(
    db: sqlite_utils.Database,
    name: str,
    kind: str = "responses",
    run_dir: str | None = None,
    config: dict | None = None,
) -> int:
    """A model by name; a run's folder and config are filled in (or refreshed) when given."""
    config_json = json.dumps(config, sort_keys=True) if config is not None else None
    with transaction(db):
        db.execute(
            "INSERT INTO models (name, kind, run_dir, config_json, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET run_dir = COALESCE(excluded.run_dir, run_dir), "
            "config_json = COALESCE(excluded.config_json, config_json), "
            "kind = CASE WHEN excluded.run_dir IS NOT NULL THEN excluded.kind ELSE kind END "
            "WHERE run_dir IS NOT COALESCE(excluded.run_dir, run_dir) "
            "OR config_json IS NOT COALESCE(excluded.config_json, config_json) "
            "OR kind IS NOT (CASE WHEN excluded.run_dir IS NOT NULL THEN excluded.kind ELSE kind END)",
            [name, kind, run_dir, config_json, utc_now()],
        )
        return _one(db, "SELECT id FROM models WHERE name = ?", [name])


def model_names(db: sqlite_utils.Database) -> list[str]:
    return [row["name"] for row in db.query("SELECT name FROM models ORDER BY id")]


def model_origins(db: sqlite_utils.Database) -> list[dict]:
    """Every model with where it came from: kind, run folder and the run's config (decoded), in the order added."""
    rows = db.query("SELECT name, kind, run_dir, config_json, created_at FROM models ORDER BY id")
    return [
        {
            **{key: value for key, value in row.items() if key != "config_json"},
            "config": json.loads(row["config_json"]) if row["config_json"] else None,
        }
        for row in rows
    ]


def model_id(db: sqlite_utils.Database, name: str) -> int:
    """The id of an existing model; the error lists the known names."""
    found = _one(db, "SELECT id FROM models WHERE name = ?", [name])
    if found is None:
        known = ", ".join(repr(n) for n in model_names(db)) or "none"
        raise UserError(f"unknown model (response key) {name!r}; known: {known}")
    return found


LOSS_COLUMNS = ("train_loss", "val_loss")
JUDGE_COLUMNS = ("judge_score", "judge_win_rate", "response_tokens")  # written by a judge during training
_METRICS_COLUMNS = ("model_id", "step", "epoch", "tokens_seen", *LOSS_COLUMNS, "non_finite_json", *JUDGE_COLUMNS)


def _non_finite_losses(row: dict) -> dict[str, str]:
    """The NaN or infinite losses of a metrics.jsonl row (a diverged run), as text: ``{"train_loss": "nan"}``."""
    return {key: str(row[key]) for key in LOSS_COLUMNS if isinstance(row.get(key), float) and not isfinite(row[key])}


def _metrics_record(model_id: int, row: dict) -> tuple:
    """One metrics.jsonl row as stored: a non-finite loss becomes NULL, and ``non_finite_json`` says which
    losses held what."""
    non_finite = _non_finite_losses(row)
    losses = [None if key in non_finite else row.get(key) for key in LOSS_COLUMNS]
    flags = json.dumps(non_finite, sort_keys=True) if non_finite else None
    judged = [row.get(key) for key in JUDGE_COLUMNS]
    return (model_id, row["step"], row.get("epoch"), row.get("tokens_seen"), *losses, flags, *judged)


def replace_training_metrics(db: sqlite_utils.Database, model_id: int, rows: Iterable[dict]) -> int:
    """Store a run's evaluation history (metrics.jsonl), replacing what an earlier import stored (an
    identical history is left as it is, so a re-import writes nothing). Returns how many non-finite losses
    the history holds (stored as NULL)."""
    rows = list(rows)
    records = [_metrics_record(model_id, r) for r in rows]
    non_finite = sum(len(_non_finite_losses(r)) for r in rows)
    with transaction(db):
        stored = db.execute(
            f"SELECT {', '.join(_METRICS_COLUMNS)} FROM training_metrics WHERE model_id = ? ORDER BY step", [model_id]
        ).fetchall()
        if stored == sorted(records, key=lambda record: record[1]):
            return non_finite
        db.execute("DELETE FROM training_metrics WHERE model_id = ?", [model_id])
        db.conn.executemany(
            f"INSERT INTO training_metrics ({', '.join(_METRICS_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_METRICS_COLUMNS))})",
            records,
        )
    return non_finite


def training_metrics(db: sqlite_utils.Database, model: str) -> list[dict]:
    return list(
        db.query(
            f"SELECT step, epoch, tokens_seen, train_loss, val_loss, {', '.join(JUDGE_COLUMNS)} FROM training_metrics "
            "WHERE model_id = ? ORDER BY step",
            [model_id(db, model)],
        )
    )


def upsert_responses(db: sqlite_utils.Database, model_id: int, responses: Iterable[dict]) -> None:
    """Insert or refresh responses (dicts with item_id, text, decoding_json, source) of one model.

    An unchanged text keeps its row, id and timestamps, so judge scores and grades stay attached. A changed
    text becomes a new current version with a new id: what was graded or judged stays with the old text, and
    the new text is ungraded and unjudged.
    """
    now = utc_now()
    with transaction(db):
        for response in responses:
            row = {**response, "model_id": model_id, "created_at": now}
            current = db.execute(
                "SELECT id, text FROM response_versions "
                "WHERE item_id = :item_id AND model_id = :model_id AND is_current = 1",
                row,
            ).fetchone()
            if current is not None and current[1] == row["text"]:
                db.execute(
                    "UPDATE response_versions SET decoding_json = COALESCE(:decoding_json, decoding_json), "
                    "source = :source WHERE id = :id AND (decoding_json IS NOT COALESCE(:decoding_json, "
                    "decoding_json) OR source IS NOT :source)",
                    {**row, "id": current[0]},
                )
                continue
            if current is not None:
                db.execute("UPDATE response_versions SET is_current = 0 WHERE id = ?", [current[0]])
            db.execute(
                "INSERT INTO response_versions (item_id, model_id, version, is_current, text, decoding_json, "
                "source, created_at) VALUES (:item_id, :model_id, (SELECT COALESCE(MAX(version), 0) + 1 FROM "
                "response_versions WHERE item_id = :item_id AND model_id = :model_id), 1, :text, :decoding_json, "
                ":source, :created_at)",
                row,
            )


def response_rows(
    db: sqlite_utils.Database, *, dataset: str | None = None, models: Sequence[str] | None = None
) -> list[dict]:
    """Responses with their item's fields, in data set order then model order."""
    where, params = [], []
    if dataset is not None:
        where.append("datasets.name = ?")
        params.append(dataset)
    if models is not None:
        where.append(f"models.name IN ({','.join('?' * len(models))})")
        params.extend(models)
    return list(
        db.query(
            "SELECT items.id AS item_id, datasets.name AS dataset, items.position, items.instruction, "
            "items.input, items.reference_output, items.split, responses.id AS response_id, "
            "models.name AS model, responses.text, responses.decoding_json, responses.injection_flag "
            "FROM responses JOIN items ON items.id = responses.item_id "
            "JOIN datasets ON datasets.id = items.dataset_id JOIN models ON models.id = responses.model_id "
            + (f"WHERE {' AND '.join(where)} " if where else "")
            + "ORDER BY datasets.id, items.position, items.id, models.id",
            params,
        )
    )


def response_ids_by_item(db: sqlite_utils.Database, model: str, dataset: str | None = None) -> dict[str, int]:
    return {row["item_id"]: row["response_id"] for row in response_rows(db, dataset=dataset, models=[model])}


def datasets_with_model(db: sqlite_utils.Database, model: str) -> list[str]:
    return [
        row["name"]
        for row in db.query(
            "SELECT DISTINCT datasets.name FROM responses JOIN items ON items.id = responses.item_id "
            "JOIN datasets ON datasets.id = items.dataset_id JOIN models ON models.id = responses.model_id "
            "WHERE models.name = ? ORDER BY datasets.name",
            [model],
        )
    ]


# --- external judges (import-scores); the Ollama judge's SQL lives in store/judging.py ---------------------


def get_or_create_external_judge(
    db: sqlite_utils.Database, name: str, score_min: float = 0.0, score_max: float = 100.0
) -> dict:
    """The judge row; an existing judge keeps its recorded scale (scores are checked against it)."""
    with transaction(db):
        db.execute(
            "INSERT INTO judges (name, kind, mode, score_min, score_max, created_at) "
            "VALUES (?, 'external', 'score', ?, ?, ?) ON CONFLICT(name) DO NOTHING",
            [name, score_min, score_max, utc_now()],
        )
        judge = next(db.query("SELECT * FROM judges WHERE name = ?", [name]))
    if judge["kind"] != "external" or judge["mode"] != "score":
        kind = f"{judge['kind']} {judge['mode']}"
        raise UserError(f"judge {name!r} is a {kind} judge; import these scores under another name")
    return judge


def upsert_external_scores(db: sqlite_utils.Database, judge_id: int, scores: Iterable[dict]) -> None:
    """Store scores (dicts with response_id, score, rationale, raw_output, latency_s, error) as repeat 0."""
    now = utc_now()
    with transaction(db):
        db.conn.executemany(
            "INSERT INTO judge_scores (response_id, judge_id, repeat, score, rationale, raw_output, "
            "latency_s, error, created_at) VALUES (:response_id, :judge_id, 0, :score, :rationale, "
            ":raw_output, :latency_s, :error, :created_at) "
            "ON CONFLICT(response_id, judge_id, repeat) DO UPDATE SET score = excluded.score, "
            "rationale = excluded.rationale, raw_output = excluded.raw_output, "
            "latency_s = excluded.latency_s, error = excluded.error "
            "WHERE score IS NOT excluded.score OR rationale IS NOT excluded.rationale "
            "OR raw_output IS NOT excluded.raw_output OR error IS NOT excluded.error",
            ({**s, "judge_id": judge_id, "created_at": now} for s in scores),
        )


def judge_names(db: sqlite_utils.Database) -> list[str]:
    return [row["name"] for row in db.query("SELECT name FROM judges ORDER BY id")]


# --- reviewers and human grades --------------------------------------------------------------------------


def get_or_create_reviewer(db: sqlite_utils.Database, name: str) -> int:
    if not name.strip():
        raise UserError("a reviewer needs a non-empty name")
    with transaction(db):
        db.execute(
            "INSERT INTO reviewers (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
            [name, utc_now()],
        )
        return _one(db, "SELECT id FROM reviewers WHERE name = ?", [name])


def reviewer_names(db: sqlite_utils.Database) -> list[str]:
    return [row["name"] for row in db.query("SELECT name FROM reviewers ORDER BY id")]


def add_grade(db: sqlite_utils.Database, response_id: int, reviewer: str, score: int, comment: str = "") -> int:
    """Record (or change) one reviewer's 1-5 grade of a response; other reviewers' grades are untouched."""
    low, high = HUMAN_SCORE_RANGE
    if isinstance(score, bool) or not isinstance(score, int) or not low <= score <= high:
        raise UserError(f"grade {score!r} for response {response_id} must be an integer from {low} to {high}")
    with transaction(db):
        reviewer_id = get_or_create_reviewer(db, reviewer)
        # any version: a grade belongs to the text the reviewer read, even if a re-import replaced it meanwhile
        if _one(db, "SELECT 1 FROM response_versions WHERE id = ?", [response_id]) is None:
            raise UserError(f"no response with id {response_id}")
        now = utc_now()
        return _one(
            db,
            "INSERT INTO grades (response_id, reviewer_id, score, comment, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(response_id, reviewer_id) DO UPDATE SET "
            "score = excluded.score, comment = excluded.comment, updated_at = excluded.updated_at "
            "RETURNING id",
            [response_id, reviewer_id, score, comment, now, now],
        )


def _model_ref(db: sqlite_utils.Database, model: str | int) -> int:
    return model if isinstance(model, int) else model_id(db, model)


def add_pairwise_grade(
    db: sqlite_utils.Database,
    item_id: str,
    left_model: str | int,
    right_model: str | int,
    reviewer: str,
    preference: str,
    blind: bool,
    repeat_of: int | None = None,
    comment: str = "",
    both_bad: bool = False,
) -> int:
    """Record which of two models' responses to one item a reviewer preferred (``left``/``right``/``tie``).

    ``both_bad`` marks a tie in which neither answer is acceptable (it counts as a tie in win rates)."""
    if preference not in PREFERENCES:
        raise UserError(f"preference {preference!r} must be one of {', '.join(PREFERENCES)}")
    if both_bad and preference != "tie":
        raise UserError(f"a 'both bad' vote is a tie, not {preference!r}")
    with transaction(db):
        left_id, right_id = _model_ref(db, left_model), _model_ref(db, right_model)
        if left_id == right_id:
            raise UserError(f"a pairwise grade compares two different models, got {left_model!r} twice")
        if _one(db, "SELECT 1 FROM items WHERE id = ?", [item_id]) is None:
            raise UserError(f"no item with id {item_id!r}")
        reviewer_id = get_or_create_reviewer(db, reviewer)
        return _one(
            db,
            "INSERT INTO pairwise_grades (item_id, left_model_id, right_model_id, reviewer_id, preference, "
            "blind, repeat_of, comment, both_bad, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [
                item_id,
                left_id,
                right_id,
                reviewer_id,
                preference,
                int(blind),
                repeat_of,
                comment,
                int(both_bad),
                utc_now(),
            ],
        )


def pairwise_grade_exists(
    db: sqlite_utils.Database, item_id: str, left_id: int, right_id: int, reviewer_id: int, preference: str
) -> bool:
    return (
        _one(
            db,
            "SELECT 1 FROM pairwise_grades WHERE item_id = ? AND left_model_id = ? AND right_model_id = ? "
            "AND reviewer_id = ? AND preference = ?",
            [item_id, left_id, right_id, reviewer_id, preference],
        )
        is not None
    )


# --- queries behind exports and statistics ---------------------------------------------------------------

_SCORE_JOINS = (
    "JOIN responses ON responses.id = {table}.response_id JOIN models ON models.id = responses.model_id "
    "JOIN items ON items.id = responses.item_id JOIN datasets ON datasets.id = items.dataset_id "
)


def judge_score_rows(db: sqlite_utils.Database) -> list[dict]:
    """Judge scores (mean over repeats, errors excluded) per response."""
    return list(
        db.query(
            "SELECT judges.name AS judge, models.name AS model, responses.id AS response_id, "
            "items.id AS item_id, datasets.name AS dataset, AVG(judge_scores.score) AS score "
            "FROM judge_scores JOIN judges ON judges.id = judge_scores.judge_id "
            + _SCORE_JOINS.format(table="judge_scores")
            + "WHERE judge_scores.score IS NOT NULL GROUP BY judges.id, responses.id "
            "ORDER BY judges.id, responses.id"
        )
    )


def human_grade_rows(db: sqlite_utils.Database) -> list[dict]:
    """Every human grade with its reviewer, model and item."""
    return list(
        db.query(
            "SELECT reviewers.name AS reviewer, models.name AS model, responses.id AS response_id, "
            "items.id AS item_id, datasets.name AS dataset, grades.score "
            "FROM grades JOIN reviewers ON reviewers.id = grades.reviewer_id "
            + _SCORE_JOINS.format(table="grades")
            + "ORDER BY reviewers.id, responses.id"
        )
    )


def pairwise_grade_rows(db: sqlite_utils.Database, dataset: str | None = None) -> list[dict]:
    """Human pairwise grades with both responses' texts (for win rates, ratings and the DPO export)."""
    return list(
        db.query(
            "SELECT pairwise_grades.id, pairwise_grades.item_id, datasets.name AS dataset, items.position, "
            "items.instruction, items.input, items.reference_output, left_model.name AS left_model, "
            "right_model.name AS right_model, reviewers.name AS reviewer, pairwise_grades.preference, "
            "pairwise_grades.blind, pairwise_grades.repeat_of, pairwise_grades.comment, pairwise_grades.both_bad, "
            "pairwise_grades.created_at, left_response.text AS left_text, right_response.text AS right_text "
            "FROM pairwise_grades JOIN items ON items.id = pairwise_grades.item_id "
            "JOIN datasets ON datasets.id = items.dataset_id "
            "JOIN models AS left_model ON left_model.id = pairwise_grades.left_model_id "
            "JOIN models AS right_model ON right_model.id = pairwise_grades.right_model_id "
            "JOIN reviewers ON reviewers.id = pairwise_grades.reviewer_id "
            "LEFT JOIN responses AS left_response ON left_response.item_id = items.id "
            "AND left_response.model_id = left_model.id "
            "LEFT JOIN responses AS right_response ON right_response.item_id = items.id "
            "AND right_response.model_id = right_model.id "
            + ("WHERE datasets.name = ? " if dataset is not None else "")
            + "ORDER BY datasets.id, items.position, items.id, pairwise_grades.id",
            [dataset] if dataset is not None else [],
        )
    )


# The CSV export: one row per judge score, human grade, adjudicated (final) grade and human pairwise grade.
# Scores and grades refer to one response version (its text, version number and whether it is still current);
# pairwise grades refer to an item and two models, so their response columns are empty.
CSV_COLUMNS = (
    "kind",
    "dataset",
    "item_id",
    "instruction",
    "model",
    "other_model",
    "rater",
    "repeat",
    "score",
    "preference",
    "comment",
    "created_at",
    "response_version",
    "response_current",
    "response",
)

# Like _SCORE_JOINS, but over every version: the export keeps what was given to texts a re-import replaced.
_VERSION_JOINS = (
    "JOIN response_versions rv ON rv.id = {table}.response_id JOIN models ON models.id = rv.model_id "
    "JOIN items ON items.id = rv.item_id JOIN datasets ON datasets.id = items.dataset_id "
)


def grades_and_scores_rows(db: sqlite_utils.Database) -> list[dict]:
    """The CSV export's rows (``CSV_COLUMNS``), older response versions' scores and grades included; an
    adjudicated grade is a row of its own (kind ``adjudicated``) beside the raw grades it settles."""
    return list(
        db.query(
            f"SELECT {', '.join(CSV_COLUMNS)} FROM ("
            "SELECT 'judge' AS kind, datasets.name AS dataset, items.id AS item_id, items.instruction, "
            "models.name AS model, NULL AS other_model, judges.name AS rater, judge_scores.repeat, "
            "judge_scores.score, NULL AS preference, COALESCE(judge_scores.rationale, judge_scores.error) "
            "AS comment, judge_scores.created_at, rv.version AS response_version, "
            "rv.is_current AS response_current, rv.text AS response, datasets.id AS d, items.position AS p, "
            "0 AS k FROM judge_scores JOIN judges ON judges.id = judge_scores.judge_id "
            + _VERSION_JOINS.format(table="judge_scores")
            + "UNION ALL SELECT 'grade', datasets.name, items.id, items.instruction, models.name, NULL, "
            "reviewers.name, 0, grades.score, NULL, grades.comment, grades.updated_at, rv.version, "
            "rv.is_current, rv.text, datasets.id, items.position, 1 "
            "FROM grades JOIN reviewers ON reviewers.id = grades.reviewer_id "
            + _VERSION_JOINS.format(table="grades")
            + "UNION ALL SELECT 'adjudicated', datasets.name, items.id, items.instruction, models.name, NULL, "
            "reviewers.name, 0, adjudications.score, NULL, adjudications.note, adjudications.updated_at, "
            "rv.version, rv.is_current, rv.text, datasets.id, items.position, 2 "
            "FROM adjudications JOIN reviewers ON reviewers.id = adjudications.adjudicator_id "
            + _VERSION_JOINS.format(table="adjudications")
            + "UNION ALL SELECT 'pairwise', datasets.name, items.id, items.instruction, l.name, r.name, "
            "reviewers.name, 0, NULL, CASE WHEN pairwise_grades.both_bad THEN 'both bad' "
            "ELSE pairwise_grades.preference END, pairwise_grades.comment, "
            "pairwise_grades.created_at, NULL, NULL, NULL, datasets.id, items.position, 3 FROM pairwise_grades "
            "JOIN items ON items.id = pairwise_grades.item_id "
            "JOIN datasets ON datasets.id = items.dataset_id "
            "JOIN models AS l ON l.id = pairwise_grades.left_model_id "
            "JOIN models AS r ON r.id = pairwise_grades.right_model_id "
            "JOIN reviewers ON reviewers.id = pairwise_grades.reviewer_id"
            ") ORDER BY d, p, item_id, k, model, response_version, rater, repeat"
        )
    )


def older_graded_versions(db: sqlite_utils.Database, item_id: str, models: Sequence[str]) -> dict[str, int]:
    """Per model name, how many human grades were given to this item's replaced (non-current) responses.

    Every model asked about gets an entry (0 when none): the app says "older versions were graded" where > 0.
    """
    counts = dict.fromkeys(models, 0)
    if not models:
        return counts
    params: dict = {"item_id": item_id}
    rows = db.execute(
        "SELECT models.name, COUNT(grades.id) FROM response_versions rv "
        "JOIN models ON models.id = rv.model_id JOIN grades ON grades.response_id = rv.id "
        f"WHERE rv.item_id = :item_id AND rv.is_current = 0 AND {in_clause('models.name', models, params, 'm')} "
        "GROUP BY models.id",
        params,
    ).fetchall()
    counts.update(dict(rows))
    return counts


def response_history(db: sqlite_utils.Database, item_id: str, model: str) -> list[dict]:
    """Every text ``model`` gave for the item, oldest first: response_id, version, is_current, text,
    created_at, grades (human grades of that version) and judge_scores (judge scores of it, failed attempts
    left out). Empty when the model has no response to the item."""
    return list(
        db.query(
            "SELECT rv.id AS response_id, rv.version, rv.is_current, rv.text, rv.created_at, "
            "(SELECT COUNT(*) FROM grades WHERE grades.response_id = rv.id) AS grades, "
            "(SELECT COUNT(*) FROM judge_scores WHERE judge_scores.response_id = rv.id "
            "AND judge_scores.score IS NOT NULL) AS judge_scores "
            "FROM response_versions rv JOIN models ON models.id = rv.model_id "
            "WHERE rv.item_id = ? AND models.name = ? ORDER BY rv.version",
            [item_id, model],
        )
    )


def model_response_counts(db: sqlite_utils.Database) -> dict[str, int]:
    return {
        row["name"]: row["n"]
        for row in db.query(
            "SELECT models.name, COUNT(responses.id) AS n FROM models "
            "LEFT JOIN responses ON responses.model_id = models.id GROUP BY models.id ORDER BY models.id"
        )
    }
