"""The workbench's one SQLite file: tables, indexes, forward migrations and ``open_db``.

Everything (data sets, runs, responses, judge scores, human grades, benchmarks) lives in one file so that a
user can copy it, open it in ``sqlite-utils`` or ``datasette`` and never lose a grade. Migrations only move
forward; a file written by a newer workbench is refused rather than silently misread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from trainer.errors import UserError

# Long enough for 8 processes writing grades at once to queue behind each other instead of failing.
BUSY_TIMEOUT_MS = 60_000

SCHEMA_V1 = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE datasets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    source TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE items (
    id TEXT PRIMARY KEY,
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    position INTEGER NOT NULL,
    instruction TEXT NOT NULL,
    input TEXT NOT NULL DEFAULT '',
    reference_output TEXT,
    split TEXT
);
CREATE INDEX items_dataset_position ON items(dataset_id, position);
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('responses', 'run', 'hf')),
    run_dir TEXT,
    config_json TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE training_metrics (
    model_id INTEGER NOT NULL REFERENCES models(id),
    step INTEGER NOT NULL,
    epoch REAL,
    tokens_seen INTEGER,
    train_loss REAL,
    val_loss REAL,
    PRIMARY KEY (model_id, step)
);
CREATE TABLE responses (
    id INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL REFERENCES items(id),
    model_id INTEGER NOT NULL REFERENCES models(id),
    text TEXT NOT NULL,
    decoding_json TEXT,
    source TEXT,
    injection_flag TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (item_id, model_id)
);
CREATE INDEX responses_model ON responses(model_id);
CREATE TABLE judges (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('external', 'ollama')),
    model TEXT,
    digest TEXT,
    template_hash TEXT,
    options_json TEXT,
    mode TEXT NOT NULL DEFAULT 'score' CHECK (mode IN ('score', 'pairwise')),
    score_min REAL,
    score_max REAL,
    created_at TEXT NOT NULL
);
CREATE TABLE judge_scores (
    id INTEGER PRIMARY KEY,
    response_id INTEGER NOT NULL REFERENCES responses(id),
    judge_id INTEGER NOT NULL REFERENCES judges(id),
    repeat INTEGER NOT NULL DEFAULT 0,
    score REAL,
    rationale TEXT,
    raw_output TEXT,
    latency_s REAL,
    error TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (response_id, judge_id, repeat)
);
CREATE INDEX judge_scores_judge ON judge_scores(judge_id);
CREATE TABLE judge_pairwise (
    id INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL REFERENCES items(id),
    model_a_id INTEGER NOT NULL REFERENCES models(id),
    model_b_id INTEGER NOT NULL REFERENCES models(id),
    judge_id INTEGER NOT NULL REFERENCES judges(id),
    repeat INTEGER NOT NULL DEFAULT 0,
    verdict_ab TEXT CHECK (verdict_ab IN ('A', 'B', 'tie')),
    verdict_ba TEXT CHECK (verdict_ba IN ('A', 'B', 'tie')),
    winner TEXT CHECK (winner IN ('A', 'B', 'tie')),
    consistent INTEGER,
    raw_output TEXT,
    latency_s REAL,
    error TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (item_id, model_a_id, model_b_id, judge_id, repeat)
);
CREATE INDEX judge_pairwise_judge ON judge_pairwise(judge_id);
CREATE TABLE reviewers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE grades (
    id INTEGER PRIMARY KEY,
    response_id INTEGER NOT NULL REFERENCES responses(id),
    reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (response_id, reviewer_id)
);
CREATE INDEX grades_reviewer ON grades(reviewer_id);
CREATE TABLE pairwise_grades (
    id INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL REFERENCES items(id),
    left_model_id INTEGER NOT NULL REFERENCES models(id),
    right_model_id INTEGER NOT NULL REFERENCES models(id),
    reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
    preference TEXT NOT NULL CHECK (preference IN ('left', 'right', 'tie')),
    blind INTEGER NOT NULL DEFAULT 1,
    repeat_of INTEGER REFERENCES pairwise_grades(id),
    comment TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    CHECK (left_model_id != right_model_id)
);
CREATE INDEX pairwise_grades_item ON pairwise_grades(item_id);
CREATE INDEX pairwise_grades_reviewer ON pairwise_grades(reviewer_id);
CREATE TABLE benchmark_runs (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL REFERENCES models(id),
    cache_key TEXT NOT NULL UNIQUE,
    tasks TEXT NOT NULL,
    num_fewshot INTEGER,
    limit_n INTEGER,
    settings_json TEXT,
    lm_eval_version TEXT,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX benchmark_runs_model ON benchmark_runs(model_id);
CREATE TABLE benchmark_results (
    id INTEGER PRIMARY KEY,
    benchmark_run_id INTEGER NOT NULL REFERENCES benchmark_runs(id),
    task TEXT NOT NULL,
    subject TEXT,
    metric TEXT NOT NULL,
    value REAL,
    stderr REAL,
    n INTEGER,
    shots INTEGER,
    limit_n INTEGER
);
CREATE INDEX benchmark_results_run ON benchmark_results(benchmark_run_id);
CREATE TABLE benchmark_samples (
    id INTEGER PRIMARY KEY,
    benchmark_run_id INTEGER NOT NULL REFERENCES benchmark_runs(id),
    task TEXT NOT NULL,
    subject TEXT,
    doc_id INTEGER NOT NULL,
    prompt TEXT,
    choices_json TEXT,
    model_choice INTEGER,
    correct_choice INTEGER,
    correct INTEGER,
    loglikelihoods_json TEXT
);
CREATE INDEX benchmark_samples_run ON benchmark_samples(benchmark_run_id, task, subject, doc_id);
"""


# Version 2: responses are versioned and the review app keeps its own state.
# - ``response_versions`` holds every text a model ever gave for an item; a re-import with changed text adds a
#   version instead of rewriting the old one, so grades, judge scores and flags stay with the exact text they
#   were given to. The view ``responses`` shows the current versions only: every statistic, queue and judge
#   run reads it, and so sees the current text; exports read ``response_versions`` to keep the history.
# - ``grade_drafts``: a comment typed before any grade (nothing a reviewer types is lost).
# - ``item_views``: items a reviewer has seen with model names shown (blind pairs leave them out).
# - ``review_settings``: per data set review campaign settings (blind review).
# - ``pairwise_grades.both_bad``: a blind vote that neither answer is acceptable (Chatbot Arena's "both bad");
#   its preference is ``tie``, so win rates and ratings count it as one.
# The table rebuild follows SQLite's recipe: renaming ``responses`` first points the foreign keys of grades and
# judge scores at ``response_versions``, then the new table takes that name.
SCHEMA_V2 = """
CREATE TABLE response_versions_new (
    id INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL REFERENCES items(id),
    model_id INTEGER NOT NULL REFERENCES models(id),
    version INTEGER NOT NULL DEFAULT 1,
    is_current INTEGER NOT NULL DEFAULT 1 CHECK (is_current IN (0, 1)),
    text TEXT NOT NULL,
    decoding_json TEXT,
    source TEXT,
    injection_flag TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (item_id, model_id, version)
);
INSERT INTO response_versions_new (id, item_id, model_id, version, is_current, text, decoding_json, source,
                                   injection_flag, created_at)
    SELECT id, item_id, model_id, 1, 1, text, decoding_json, source, injection_flag, created_at FROM responses;
ALTER TABLE responses RENAME TO response_versions;
DROP TABLE response_versions;
ALTER TABLE response_versions_new RENAME TO response_versions;
CREATE UNIQUE INDEX response_versions_current ON response_versions(item_id, model_id) WHERE is_current = 1;
CREATE INDEX response_versions_model ON response_versions(model_id, item_id) WHERE is_current = 1;
CREATE VIEW responses AS
    SELECT id, item_id, model_id, version, text, decoding_json, source, injection_flag, created_at
    FROM response_versions WHERE is_current = 1;
CREATE TABLE grade_drafts (
    response_id INTEGER NOT NULL REFERENCES response_versions(id),
    reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
    comment TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (response_id, reviewer_id)
);
CREATE TABLE item_views (
    reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
    item_id TEXT NOT NULL REFERENCES items(id),
    first_seen_at TEXT NOT NULL,
    PRIMARY KEY (reviewer_id, item_id)
);
CREATE TABLE review_settings (
    dataset_id INTEGER PRIMARY KEY REFERENCES datasets(id),
    blind INTEGER NOT NULL DEFAULT 0 CHECK (blind IN (0, 1)),
    updated_at TEXT NOT NULL
);
ALTER TABLE pairwise_grades ADD COLUMN both_bad INTEGER NOT NULL DEFAULT 0 CHECK (both_bad IN (0, 1));
CREATE INDEX items_dataset_split ON items(dataset_id, split, position);
CREATE INDEX pairwise_grades_reviewer_item ON pairwise_grades(reviewer_id, item_id);
"""


# Version 3: review campaigns and adjudication.
# - ``campaigns``: a review campaign over one data set (optionally one split) and chosen models, with
#   guidelines (Markdown) and an overlap: how many reviewers must grade each item.
# - ``campaign_models`` / ``campaign_items``: what the campaign covers, in the order items are handed out.
#   ``campaign_items.reviews`` counts the finished reviews of an item and ``campaigns.complete_items`` /
#   ``reviews_done`` the campaign's, kept by the save that finishes a review: progress is read, not counted.
# - ``assignments``: who was handed which item. A row is a reservation while ``done_at`` is NULL (it lapses at
#   ``expires_at``, so an abandoned item goes back to the pool) and a completed review once the reviewer has
#   graded every response of the item in the campaign. An item's quota counts done rows plus live reservations.
# - ``adjudications``: an admin's final grade of one response version where reviewers disagreed; the raw
#   grades stay as they were.
SCHEMA_V3 = """
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    split TEXT,
    overlap INTEGER NOT NULL CHECK (overlap >= 1),
    guidelines TEXT NOT NULL DEFAULT '',
    lease_minutes INTEGER NOT NULL DEFAULT 30 CHECK (lease_minutes > 0),
    items INTEGER NOT NULL DEFAULT 0,
    complete_items INTEGER NOT NULL DEFAULT 0,
    reviews_done INTEGER NOT NULL DEFAULT 0,
    created_by TEXT,
    created_at TEXT NOT NULL,
    closed_at TEXT
);
CREATE TABLE campaign_models (
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    model_id INTEGER NOT NULL REFERENCES models(id),
    position INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, model_id)
);
CREATE TABLE campaign_items (
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    item_id TEXT NOT NULL REFERENCES items(id),
    position INTEGER NOT NULL,
    reviews INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, item_id)
);
CREATE UNIQUE INDEX campaign_items_order ON campaign_items(campaign_id, position);
CREATE INDEX campaign_items_open ON campaign_items(campaign_id, reviews, position);
CREATE INDEX campaign_items_item ON campaign_items(item_id);
CREATE TABLE assignments (
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    item_id TEXT NOT NULL REFERENCES items(id),
    reviewer_id INTEGER NOT NULL REFERENCES reviewers(id),
    assigned_at TEXT NOT NULL,
    expires_at TEXT,
    done_at TEXT,
    PRIMARY KEY (campaign_id, item_id, reviewer_id)
);
CREATE INDEX assignments_reviewer ON assignments(campaign_id, reviewer_id);
CREATE INDEX assignments_open ON assignments(campaign_id, reviewer_id) WHERE done_at IS NULL;
CREATE TABLE adjudications (
    response_id INTEGER PRIMARY KEY REFERENCES response_versions(id),
    campaign_id INTEGER REFERENCES campaigns(id),
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    note TEXT NOT NULL DEFAULT '',
    adjudicator_id INTEGER NOT NULL REFERENCES reviewers(id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


# Version 4: a diverged run's losses. ``metrics.jsonl`` may hold NaN or infinite losses (the trainer logs what
# it computed); they are stored as NULL, and ``training_metrics.non_finite_json`` records which fields held
# what (``{"train_loss": "nan"}``), so an empty value is told apart from a loss that was never measured.
SCHEMA_V4 = """
ALTER TABLE training_metrics ADD COLUMN non_finite_json TEXT;
"""


# Version 5: a judge may be asked through an OpenAI-compatible server: ``judges.kind`` takes 'openai' beside
# 'ollama' (the protocol is part of the cache key). SQLite cannot change a CHECK in place, so the table is rebuilt
# by SQLite's recipe (foreign keys are off while migrating): the new table takes the old one's name and ids, and
# the references of judge scores and verdicts resolve to it again.
SCHEMA_V5 = """
CREATE TABLE judges_new (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('external', 'ollama', 'openai')),
    model TEXT,
    digest TEXT,
    template_hash TEXT,
    options_json TEXT,
    mode TEXT NOT NULL DEFAULT 'score' CHECK (mode IN ('score', 'pairwise')),
    score_min REAL,
    score_max REAL,
    created_at TEXT NOT NULL
);
INSERT INTO judges_new (id, name, kind, model, digest, template_hash, options_json, mode, score_min, score_max,
                        created_at)
    SELECT id, name, kind, model, digest, template_hash, options_json, mode, score_min, score_max, created_at
    FROM judges;
DROP TABLE judges;
ALTER TABLE judges_new RENAME TO judges;
"""


# Version 6: what a judge said of a run's checkpoints while it trained (``workbench finetune --judge-every``):
# ``metrics.jsonl`` rows with the mean judge score, the win rate against step 0 and the mean answer length.
SCHEMA_V6 = """
ALTER TABLE training_metrics ADD COLUMN judge_score REAL;
ALTER TABLE training_metrics ADD COLUMN judge_win_rate REAL;
ALTER TABLE training_metrics ADD COLUMN response_tokens REAL;
"""


def _statements(script: str) -> list[str]:
    return [statement.strip() for statement in script.split(";\n") if statement.strip()]


def _script(script: str) -> Callable[[sqlite_utils.Database], None]:
    """A migration that runs a script statement by statement (executescript would commit the open transaction)."""

    def migrate(db: sqlite_utils.Database) -> None:
        for statement in _statements(script):
            db.execute(statement)

    return migrate


# MIGRATIONS[i] brings a database from version i to version i + 1. Append only; never edit a shipped one.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _script(SCHEMA_V1),
    _script(SCHEMA_V2),
    _script(SCHEMA_V3),
    _script(SCHEMA_V4),
    _script(SCHEMA_V5),
    _script(SCHEMA_V6),
]
SCHEMA_VERSION = len(MIGRATIONS)


def database_file(db: sqlite_utils.Database) -> str:
    """The path of the file behind ``db``, for messages."""
    return db.execute("PRAGMA database_list").fetchone()[2] or ":memory:"


def schema_version(db: sqlite_utils.Database) -> int:
    """The version recorded in ``meta`` (0 for an empty file); anything but a whole number is refused, since
    migrating from a guessed version could rebuild tables that are already current."""
    if not db["meta"].exists():
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return 0
    if not (isinstance(row[0], str) and row[0].isdecimal()):
        raise UserError(
            f"{database_file(db)}: schema_version {row[0]!r} in table meta is not a version number; "
            "the file is damaged or not a workbench database"
        )
    return int(row[0])


# SQLite's answers when the file or its folder cannot be written (the -wal and -shm files live beside it).
_CANNOT_WRITE = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR", "SQLITE_FULL")


def cannot_write(exc: sqlite3.Error, path: str | Path) -> UserError | None:
    """The user's error for a write SQLite refused because of the file system (a read-only file or folder, a
    full disk), or None for any other failure, which stays a bug with its traceback."""
    if isinstance(exc, sqlite3.OperationalError) and (exc.sqlite_errorname or "").startswith(_CANNOT_WRITE):
        return UserError(
            f"{path}: cannot write ({exc}); check the permissions of the file and its folder, and the free space"
        )
    return None


def _refuse_newer(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise UserError(
            f"{path}: database schema version {version} is newer than this workbench supports "
            f"({SCHEMA_VERSION}); upgrade the workbench to open it"
        )


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating or migrating as needed) the workbench database at ``path``.

    WAL lets the review app read while an import writes; the busy timeout lets concurrent writers queue.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist; create it first")
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a database file path such as {path / 'workbench.db'}")
    try:
        db = sqlite_utils.Database(path)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA foreign_keys = ON")
        version = schema_version(db)
        _refuse_newer(path, version)
        if db.journal_mode != "wal":
            db.enable_wal()
        if version < SCHEMA_VERSION:
            _migrate(db, path)
    except sqlite3.DatabaseError as exc:
        raise cannot_write(exc, path) or UserError(f"{path}: not a workbench database ({exc})") from exc
    return db


def _migrate(db: sqlite_utils.Database, path: Path) -> None:
    """Apply pending migrations in one write transaction (another process may have migrated meanwhile).

    Foreign keys are off while tables are rebuilt (SQLite's recipe) and checked before the commit.
    """
    db.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction, so before BEGIN
    db.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(db)
        _refuse_newer(path, version)
        for migration in MIGRATIONS[version:]:
            migration(db)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [str(SCHEMA_VERSION)],
        )
        broken = db.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise UserError(f"{path}: migration left {len(broken)} broken references, e.g. {broken[0]}")
    except BaseException:
        db.rollback()
        db.execute("PRAGMA foreign_keys = ON")
        raise
    db.commit()
    db.execute("PRAGMA foreign_keys = ON")
