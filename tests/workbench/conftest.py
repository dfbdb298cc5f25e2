"""Fixtures shared by the workbench tests: fresh database paths and the book's evaluation data, imported.

``book_db`` is built once per session and copied for each test, so tests may write to it freely.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import require
from workbench import importing, store

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

BOOK_MODELS = ("model 1 response", "model 2 response")
# (judge, model, score file): 0-100 scores aligned with eval-example-data.json. The shared
# llama3-8b-model-2-response.json holds only 99 scores for 100 entries (the book's script skipped one reply it
# could not parse, and which one is unknown), so the importer refuses it and the fixture leaves it out.
BOOK_SCORES = (
    ("gpt4", "model 1 response", "gpt4-model-1-response.json"),
    ("gpt4", "model 2 response", "gpt4-model-2-response.json"),
    ("llama3", "model 1 response", "llama3-8b-model-1-response.json"),
)


def import_book(db_file: Path, shared_dir: Path) -> Path:
    """eval-example-data.json plus the judge scores in BOOK_SCORES."""
    db = store.open_db(db_file)
    importing.import_path(db, shared_dir / "datasets" / "eval-example-data.json")
    for judge, model, file_name in BOOK_SCORES:
        importing.import_scores(
            db, shared_dir / "datasets" / "judge-scores" / file_name, judge=judge, response_key=model
        )
    db.close()
    return db_file


@pytest.fixture
def db_path(tmp_path) -> Path:
    """A path for a new workbench database (the file does not exist yet)."""
    return tmp_path / "workbench.db"


@pytest.fixture(scope="session")
def _book_db_template(shared_dir, tmp_path_factory) -> Path:
    return import_book(tmp_path_factory.mktemp("book") / "book.db", shared_dir)


@pytest.fixture
def book_db(_book_db_template, tmp_path) -> Path:
    """Path of a database holding eval-example-data (100 items, models ``model 1 response`` and
    ``model 2 response``), judge ``gpt4`` scoring both models and ``llama3`` scoring model 1 (0-100)."""
    copy = tmp_path / "book.db"
    shutil.copyfile(_book_db_template, copy)
    return copy


@pytest.fixture
def db_snapshot():
    """``db_snapshot(path)``: every row of every table, to assert that a refused operation changed nothing."""
    return _snapshot


def _snapshot(db_file: Path) -> dict[str, list[tuple]]:
    db = store.open_db(db_file)
    try:
        tables = db.table_names()
        return {table: db.execute(f"SELECT * FROM [{table}] ORDER BY rowid").fetchall() for table in tables}
    finally:
        db.close()


@pytest.fixture(scope="session")
def browser():
    require(CHROMIUM.exists(), f"{CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
