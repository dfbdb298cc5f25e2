"""The review app in a real headless Chromium (Playwright), and the store queries behind it.

One browser per session and one app server per module keep this file fast; each browser test opens its own
context (its own cookies and Gradio session), so tests behave like different people at different desks.
Grades are checked in the SQLite file itself, never only in the page.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from workbench import app, importing, store
from workbench.auth import load_logins
from workbench.store.review import REPEAT_MIN_GAP

BOOK = "eval-example-data"
MODEL_1, MODEL_2 = "model 1 response", "model 2 response"
XSS_SCRIPT = "<script>window.__xss=1</script>"
XSS_IMG = '<img src=x onerror="window.__xss=1">'
TIMEOUT_MS = 20_000


# --- test data: the book's evaluation set plus what the other tabs show ---------------------------------


def _add_xss_dataset(db, folder: Path) -> None:
    """A small data set whose instruction, responses, judge rationale and flag all carry HTML payloads."""
    entries = [
        {
            "instruction": f"Say hello {XSS_IMG}",
            "input": XSS_SCRIPT,
            "output": f"hello {XSS_SCRIPT}",
            "xss a": f"Hi! {XSS_SCRIPT}",
            "xss b": f"Hello {XSS_IMG}",
        },
        {"instruction": "Second", "input": "", "output": "2", "xss a": "two", "xss b": "2"},
    ]
    path = folder / "xss-check.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    importing.import_path(db, path)
    first = store.dataset_items(db, "xss-check")[0]["id"]
    scores = folder / "xss-scores.json"
    scores.write_text(json.dumps([{"item_id": first, "score": 50, "rationale": f"fine {XSS_IMG}"}]))
    importing.import_scores(db, scores, judge="gpt4", response_key="xss a", dataset="xss-check")
    response_id = store.response_ids_by_item(db, "xss a", "xss-check")[first]
    store.set_injection_flags(db, {response_id: f"asks the judge to ignore instructions {XSS_SCRIPT}"})


def _add_benchmark(db) -> None:
    """An MMLU run of model 1 with two subjects; one question answered wrongly."""
    results = [
        {
            "task": "mmlu",
            "subject": None,
            "metric": "acc_macro",
            "value": 0.5,
            "stderr": 0.1,
            "n": 4,
            "shots": 0,
            "limit_n": 2,
        },
        {
            "task": "mmlu",
            "subject": "anatomy",
            "metric": "acc",
            "value": 1.0,
            "stderr": 0.0,
            "n": 2,
            "shots": 0,
            "limit_n": 2,
        },
        {
            "task": "mmlu",
            "subject": "astronomy",
            "metric": "acc",
            "value": 0.5,
            "stderr": 0.5,
            "n": 2,
            "shots": 0,
            "limit_n": 2,
        },
    ]
    samples = [
        {
            "task": "mmlu",
            "subject": subject,
            "doc_id": doc,
            "prompt": prompt,
            "choices": [" A", " B", " C", " D"],
            "model_choice": choice,
            "correct_choice": 0,
            "correct": int(choice == 0),
            "loglikelihoods": [-1.0, -2.0, -3.0, -4.0],
        }
        for subject, doc, prompt, choice in [
            ("anatomy", 0, "Which bone is longest?", 0),
            ("anatomy", 1, "Where is the ulna?", 0),
            ("astronomy", 0, "Which planet is red?", 0),
            ("astronomy", 1, "How far is the Moon?", 2),
        ]
    ]
    store.save_benchmark_run(
        db,
        model={"name": MODEL_1},
        cache_key="test-run",
        tasks=["mmlu"],
        num_fewshot=0,
        limit_n=2,
        settings={},
        lm_eval_version="0.4.13",
        started_at=store.utc_now(),
        finished_at=store.utc_now(),
        results=results,
        samples=samples,
    )


def _add_training_run(db) -> None:
    model_id = store.get_or_create_model(db, "tiny-run", "run", "/runs/tiny-run", {"name": "tiny-run"})
    store.replace_training_metrics(
        db,
        model_id,
        [
            {
                "step": step,
                "epoch": step / 10,
                "tokens_seen": step * 512,
                "train_loss": 4 - step / 10,
                "val_loss": 4.2 - step / 12,
            }
            for step in (0, 5, 10, 15)
        ],
    )


@pytest.fixture(scope="module")
def app_db(_book_db_template, tmp_path_factory) -> Path:
    """The book's data (two models, judges gpt4 and llama3) plus XSS items, a benchmark and a training run."""
    folder = tmp_path_factory.mktemp("app")
    path = folder / "app.db"
    shutil.copyfile(_book_db_template, path)
    db = store.open_db(path)
    _add_xss_dataset(db, folder)
    _add_benchmark(db)
    _add_training_run(db)
    db.close()
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(db_path: Path, logins=None, blind_datasets=(), **launch_options):
    blocks = app.build_app(db_path, notice=None, seed=7, logins=logins, blind_datasets=blind_datasets)
    port = _free_port()
    app.launch(blocks, port=port, prevent_thread_lock=True, quiet=True, logins=logins, **launch_options)
    return blocks, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server(app_db):
    blocks, url = _start(app_db)
    yield url
    blocks.close()


def open_page(browser, url: str | None = None, *, requests: list | None = None):
    """A page in a browser context of its own (its own cookies and Gradio session: another person at another
    desk), at ``url`` when given; ``requests`` collects every URL the page asks for."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    if requests is not None:
        context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    if url:
        page.goto(url)
    return page


def readme_screenshot(page, name: str, tmp_path: Path) -> None:
    """A picture for the README, written to docs/ only on request (WORKBENCH_UPDATE_SCREENSHOTS=1), so that
    running the tests leaves the checkout clean."""
    page.evaluate("window.scrollTo(0, 0)")
    folder = REPO / "docs" if os.environ.get("WORKBENCH_UPDATE_SCREENSHOTS") == "1" else tmp_path
    assert page.screenshot(path=str(folder / name), full_page=True).startswith(b"\x89PNG")


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server)
    _wait_for_item(page)
    yield page
    page.context.close()


# --- helpers: what a person does in the page ------------------------------------------------------------


def _wait_for_item(page) -> None:
    page.wait_for_function("document.querySelector('#response-0 textarea')?.value.length > 0")


def _text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()


def _sign_in(page, name: str) -> None:
    page.locator("#reviewer-name textarea, #reviewer-name input").first.fill(name)
    page.locator("#item-header").click()  # leave the text field, so that keys become shortcuts
    _wait_for_text(page, "#progress", "You: ")  # the open item is shown again with this reviewer's grades


def _wait_for_text(page, selector: str, pattern: str) -> None:
    page.wait_for_function(
        "([sel, pattern]) => new RegExp(pattern).test(document.querySelector(sel)?.innerText ?? '')",
        arg=[selector, pattern],
    )


def _wait_for(condition, timeout_s: float = TIMEOUT_MS / 1000):
    """Poll ``condition`` (a read of the SQLite file) until it holds: saves happen as the reviewer clicks."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, "timed out waiting for the database"
        time.sleep(0.05)
    return result


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _grades(db_path: Path, reviewer: str) -> dict[tuple[str, str], tuple[int, str]]:
    """(instruction, model) -> (score, comment) of one reviewer, read straight from SQLite."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT i.instruction, m.name, g.score, g.comment FROM grades g "
            "JOIN reviewers rv ON rv.id = g.reviewer_id JOIN responses r ON r.id = g.response_id "
            "JOIN items i ON i.id = r.item_id JOIN models m ON m.id = r.model_id WHERE rv.name = ?",
            [reviewer],
        ).fetchall()
    return {(instruction, model): (score, comment) for instruction, model, score, comment in rows}


def _pairwise(db_path: Path, reviewer: str) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(
            "SELECT i.instruction, l.name, r.name, pg.preference, pg.blind, pg.repeat_of "
            "FROM pairwise_grades pg "
            "JOIN reviewers rv ON rv.id = pg.reviewer_id JOIN items i ON i.id = pg.item_id "
            "JOIN models l ON l.id = pg.left_model_id JOIN models r ON r.id = pg.right_model_id "
            "WHERE rv.name = ? ORDER BY pg.id",
            [reviewer],
        ).fetchall()


# --- browser tests --------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_grading_by_mouse_is_stored_per_reviewer(page, app_db, tmp_path):
    _sign_in(page, "mouse")
    instruction = _text(page, "instruction")
    assert instruction == "Calculate the hypotenuse of a right triangle with legs of 6 cm and 8 cm."
    assert _text(page, "response-0") == "The hypotenuse of the triangle is 3 cm."  # leading blank line trimmed
    assert "gpt4" in page.locator("#judges-0").inner_text()
    page.locator("#grade-0").get_by_label("3 · partly right").check()
    page.locator("#grade-1").get_by_label("1 · wrong or unusable").check()
    page.locator("#comment-1 textarea").fill("12 cm is wrong too")
    page.locator("#better").get_by_label("Tie").check()
    _wait_for_text(page, "#saved-1", "grade 1 saved with comment")  # stored as clicked, no Save needed
    _wait_for_text(page, "#progress", r"You: 2 / 200")
    _wait_for(lambda: _pairwise(app_db, "mouse"))
    assert _grades(app_db, "mouse") == {
        (instruction, MODEL_1): (3, ""),
        (instruction, MODEL_2): (1, "12 cm is wrong too"),
    }
    assert _pairwise(app_db, "mouse") == [(instruction, MODEL_1, MODEL_2, "tie", 0, None)]
    # changing the mark replaces it instead of adding a second vote
    page.locator("#better").get_by_label("B better").check()
    _wait_for(lambda: _pairwise(app_db, "mouse")[0][3] == "right")
    assert _pairwise(app_db, "mouse") == [(instruction, MODEL_1, MODEL_2, "right", 0, None)]
    readme_screenshot(page, "review-tab.png", tmp_path)


@pytest.mark.browser
@pytest.mark.slow
def test_grading_by_keyboard_then_next(page, app_db):
    _sign_in(page, "keys")
    first = _text(page, "instruction")
    page.keyboard.press("2")
    page.keyboard.press("4")
    page.keyboard.press("b")
    page.keyboard.press("n")  # save and next
    page.wait_for_function("(first) => document.querySelector('#instruction textarea').value !== first", arg=first)
    assert _text(page, "instruction") == "Name 3 different animals that are active during the day."
    assert _grades(app_db, "keys") == {(first, MODEL_1): (2, ""), (first, MODEL_2): (4, "")}
    assert _pairwise(app_db, "keys") == [(first, MODEL_1, MODEL_2, "right", 0, None)]
    # typing a comment never triggers shortcuts
    page.locator("#comment-0 textarea").fill("")
    page.locator("#comment-0 textarea").type("5 stars n")
    assert _text(page, "comment-0") == "5 stars n"
    assert page.locator("#grade-0 input:checked").count() == 0


@pytest.mark.browser
@pytest.mark.slow
def test_grading_needs_a_name(page, app_db):
    page.locator("#grade-0").get_by_label("5 · excellent").check()
    page.locator("#save").click()
    page.get_by_text("Enter your name").first.wait_for()
    with sqlite3.connect(app_db) as conn:
        assert conn.execute(
            "SELECT COUNT(*) FROM grades WHERE reviewer_id IN (SELECT id FROM reviewers WHERE name = '')"
        ).fetchone() == (0,)


@pytest.mark.browser
@pytest.mark.slow
def test_blind_ab_hides_names_until_the_vote(page, app_db):
    _sign_in(page, "blinder")
    _open_tab(page, "Blind A/B")
    page.wait_for_function("document.querySelector('#blind-response-left textarea')?.value.length > 0")
    panel = (
        page.locator("#blind-panel").inner_text()
        + _text(page, "blind-response-left")
        + _text(page, "blind-response-right")
        + _text(page, "blind-reveal")
    )
    assert MODEL_1 not in panel and MODEL_2 not in panel
    instruction, left_text = _text(page, "blind-instruction"), _text(page, "blind-response-left")
    page.locator("#blind-left").click()
    page.wait_for_function(
        "document.querySelector('#blind-reveal textarea, #blind-reveal input').value.startsWith('A = ')"
    )
    revealed = re.fullmatch(r"A = (.+) · B = (.+)", _text(page, "blind-reveal"))
    left_model, right_model = revealed.groups()
    assert {left_model, right_model} == {MODEL_1, MODEL_2}
    db = store.open_db(app_db)
    item = next(
        row for row in store.response_rows(db, dataset=BOOK, models=[left_model]) if row["instruction"] == instruction
    )
    db.close()
    assert item["text"] == left_text
    assert _pairwise(app_db, "blinder") == [(instruction, left_model, right_model, "left", 1, None)]
    assert page.locator("#blind-left").is_disabled()


@pytest.mark.browser
@pytest.mark.slow
def test_html_in_data_shows_as_text_and_runs_nothing(page):
    page.locator("#scope-dataset input").click()
    page.get_by_role("option", name="xss-check").click()
    page.wait_for_function(
        "(payload) => document.querySelector('#response-0 textarea').value.includes(payload)", arg=XSS_SCRIPT
    )
    assert _text(page, "response-0") == f"Hi! {XSS_SCRIPT}"
    assert _text(page, "response-1") == f"Hello {XSS_IMG}"
    assert _text(page, "instruction") == f"Say hello {XSS_IMG}"
    assert XSS_SCRIPT in _text(page, "flag-0")
    assert XSS_IMG in page.locator("#judges-0").inner_text()
    _sign_in(page, "xss")
    _open_tab(page, "Queues")
    page.locator("#queue-refresh").click()
    _wait_for_text(page, "#queue-table", "Say hello")
    assert XSS_IMG in page.locator("#queue-table").inner_text()
    _open_tab(page, "Blind A/B")
    page.wait_for_function("document.querySelector('#blind-response-left textarea')?.value.length > 0")
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("#review-panel img[src='x'], #queue-table img[src='x']").count() == 0


@pytest.mark.browser
@pytest.mark.slow
def test_two_reviewers_grading_at_once_lose_nothing(browser, server, app_db):
    pages = []
    for name in ("ann", "ben"):
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(server)
        _wait_for_item(page)
        _sign_in(page, name)
        pages.append(page)
    expected = {"ann": {}, "ben": {}}
    for round_number in range(3):
        shown = []
        for page, name, grades in zip(pages, ("ann", "ben"), ("12", "54"), strict=True):
            instruction = _text(page, "instruction")
            shown.append(instruction)
            for key, model in zip(grades, (MODEL_1, MODEL_2), strict=True):
                page.keyboard.press(key)
                expected[name][(instruction, model)] = (int(key), "")
        for page in pages:  # both save before either waits
            page.keyboard.press("n")
        for page, instruction in zip(pages, shown, strict=True):
            page.wait_for_function(
                "(old) => document.querySelector('#instruction textarea').value !== old", arg=instruction
            )
            _wait_for_text(page, "#progress", rf"You: {2 * (round_number + 1)} / 200")
    for page in pages:
        page.context.close()
    assert _grades(app_db, "ann") == expected["ann"]
    assert _grades(app_db, "ben") == expected["ben"]
    assert len(expected["ann"]) == 6


@pytest.mark.browser
@pytest.mark.slow
def test_every_tab_renders_with_data(page):
    _sign_in(page, "tabs")
    _open_tab(page, "Queues")
    page.locator("#queue-refresh").click()
    _wait_for_text(page, "#queue-table", "Calculate the hypotenuse")
    _open_tab(page, "Calibration")
    _wait_for_text(page, "#cal-me-judges", "gpt4")
    _open_tab(page, "Leaderboard")
    _wait_for_text(page, "#leaderboard-table", "Bradley-Terry")
    table = page.locator("#leaderboard-table").inner_text()
    assert MODEL_1 in table and MODEL_2 in table and "mmlu · 0-shot · 4 q: acc_macro" in table and "0.5" in table
    _open_tab(page, "Agreement")
    _wait_for_text(page, "#agreement-table", "spearman")
    assert re.search(r"\b10[0-9]\b", page.locator("#agreement-table").inner_text())  # >= 100 responses
    page.locator("#agreement-plot img, #agreement-plot svg, #agreement-plot canvas").first.wait_for()
    _open_tab(page, "Benchmarks")
    _wait_for_text(page, "#bench-results", "astronomy")
    _wait_for_text(page, "#bench-wrong", "How far is the Moon")
    assert "Which planet is red" not in page.locator("#bench-wrong").inner_text()
    page.locator("#bench-chart img").wait_for()
    _open_tab(page, "Training")
    _wait_for_text(page, "#training-table", "tiny-run")
    page.locator("#training-plot img, #training-plot svg, #training-plot canvas").first.wait_for()
    _open_tab(page, "Data")
    page.locator("#export-format input").wait_for()
    _open_tab(page, "Review")
    _wait_for_item(page)


@pytest.mark.browser
@pytest.mark.slow
def test_data_tab_imports_an_upload_and_exports(page, app_db, tmp_path):
    upload = tmp_path / "uploaded-set.json"
    upload.write_text(json.dumps([{"instruction": "Add 2 and 2.", "input": "", "output": "4", "m": "4"}]))
    _open_tab(page, "Data")
    page.locator("#data-files input[type=file]").set_input_files(str(upload))
    page.locator("#data-import").click()
    page.wait_for_function("document.querySelector('#data-result textarea')?.value.length > 0")
    db = store.open_db(app_db)
    assert [row["text"] for row in store.response_rows(db, dataset="uploaded-set")] == ["4"]
    db.close()
    page.locator("#scope-dataset input").click()  # the new data set can be picked at once, no reload
    page.get_by_role("option", name="uploaded-set").wait_for()
    page.keyboard.press("Escape")
    page.locator("#data-export").click()
    link = page.locator("#export-file a").first
    link.wait_for()
    assert link.get_attribute("href").endswith(".json")


@pytest.mark.browser
@pytest.mark.slow
def test_login_refuses_a_wrong_password_and_names_the_reviewer(browser, app_db):
    logins = load_logins(["alice:right-pass", "bob:other"], admins=["alice"], warn=lambda message: None)
    blocks, url = _start(app_db, logins=logins)
    try:
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(url)
        page.get_by_label("username").fill("alice")
        page.get_by_label("password").fill("wrong-pass")
        page.get_by_role("button", name="Login").click()
        page.get_by_text("Incorrect Credentials").wait_for()
        assert page.locator("#review-panel").count() == 0
        page.get_by_label("username").fill("alice")  # the form clears itself after a refusal
        page.get_by_label("password").fill("right-pass")
        page.get_by_role("button", name="Login").click()
        _wait_for_item(page)
        assert _text(page, "reviewer-name") == "alice"
        page.locator("#item-header").click()
        page.keyboard.press("5")
        _wait_for(lambda: _grades(app_db, "alice"))
        assert _grades(app_db, "alice") == {
            ("Calculate the hypotenuse of a right triangle with legs of 6 cm and 8 cm.", MODEL_1): (5, "")
        }
        context.close()
    finally:
        blocks.close()


# --- store queries behind the app (no browser) ----------------------------------------------------------


@pytest.fixture
def graded_db(book_db):
    db = store.open_db(book_db)
    yield db
    db.close()


def _response_id(db, model: str, position: int) -> int:
    items = store.dataset_items(db, BOOK)
    return store.response_ids_by_item(db, model, BOOK)[items[position]["id"]]


def test_queue_filters_and_disagreement_order(graded_db):
    db = graded_db
    everything = store.review_queue(db, store.QueueFilter(dataset=BOOK))
    assert len(everything) == 100 and everything[0]["position"] == 0
    # item 0: gpt4 gave model 1 a 0 (1.0 on 1-5), a human says 5 -> gap 4; item 1: agreement
    store.add_grade(db, _response_id(db, MODEL_1, 0), "ann", 5)
    store.add_grade(db, _response_id(db, MODEL_1, 1), "ann", 5)
    ordered = store.review_queue(db, store.QueueFilter(dataset=BOOK, judge="gpt4", order="disagreement"))
    assert [row["position"] for row in ordered[:2]] == [0, 1]
    assert ordered[0]["disagreement"] == 4.0
    ungraded = store.review_queue(db, store.QueueFilter(dataset=BOOK, models=(MODEL_1,), ungraded_for="ann"))
    assert len(ungraded) == 98
    scores = store.rater_scores(db, "judge:gpt4", dataset=BOOK, models=[MODEL_1])
    in_range = store.review_queue(
        db, store.QueueFilter(dataset=BOOK, models=(MODEL_1,), judge="gpt4", score_min=90, score_max=100)
    )
    assert len(in_range) == sum(90 <= score <= 100 for score in scores.values())
    assert store.review_queue(db, store.QueueFilter(dataset=BOOK, flagged=True)) == []
    assert store.progress(db, "ann", dataset=BOOK) == {
        "total": 200,
        "mine": 2,
        "anyone": 2,
        "grades": 2,
        "items": 100,
    }


def test_blind_pairs_swap_sides_when_asked_again(graded_db):
    db = graded_db
    rng = random.Random(0)
    sides, votes = set(), []
    for _ in range(8):
        pair = store.next_blind_pair(db, "bea", dataset=BOOK, repeat_share=0.0, rng=rng)
        assert pair["repeat_of"] is None
        sides.add(pair["left_model"])
        votes.append(
            store.add_pairwise_grade(
                db, pair["item_id"], pair["left_model"], pair["right_model"], "bea", "left", blind=True
            )
        )
    assert sides == {MODEL_1, MODEL_2}  # sides are random
    repeat = store.next_blind_pair(db, "bea", dataset=BOOK, repeat_share=1.0, rng=rng)
    original = next(row for row in store.pairwise_grade_rows(db) if row["id"] == repeat["repeat_of"])
    assert repeat["repeat_of"] in votes[:-REPEAT_MIN_GAP]  # recent votes are not asked again yet
    assert (repeat["left_model"], repeat["right_model"]) == (original["right_model"], original["left_model"])
    assert repeat["item_id"] == original["item_id"]
    # bea picks the same model again (now on the right): consistent, and her first-position share is known
    store.add_pairwise_grade(
        db,
        repeat["item_id"],
        repeat["left_model"],
        repeat["right_model"],
        "bea",
        "right",
        blind=True,
        repeat_of=repeat["repeat_of"],
    )
    [row] = store.reviewer_consistency(db)
    assert (row["reviewer"], row["blind_votes"], row["repeats"], row["consistent"]) == ("bea", 9, 1, 1)
    assert row["self_consistency"] == 1.0 and row["first_position_share"] == pytest.approx(8 / 9)
    # a repeat never counts twice towards the models' win rates
    assert len(store.pairwise_outcomes(db, source="human", dataset=BOOK)) == 8


def test_judge_position_bias_counts_the_first_shown_answer(graded_db):
    db = graded_db
    judge = store.get_or_create_llm_judge(
        db, kind="ollama", name="pairs", model="m", digest="d", template_hash="t", options={}, mode="pairwise"
    )
    items = store.dataset_items(db, BOOK)
    ids = (store.model_id(db, MODEL_1), store.model_id(db, MODEL_2))
    # (verdict with A shown first, verdict with B shown first): the first-shown answer wins 2, 1 and 1 times
    verdicts = [("A", "B"), ("A", "A"), ("B", "B")]
    common = {
        "model_a_id": ids[0],
        "model_b_id": ids[1],
        "repeat": 0,
        "raw_output": "",
        "latency_s": 0.1,
        "error": None,
    }
    rows = [
        {
            **common,
            "item_id": item["id"],
            "verdict_ab": ab,
            "verdict_ba": ba,
            "winner": ab if ab == ba else "tie",
            "consistent": int(ab == ba),
        }
        for item, (ab, ba) in zip(items, verdicts, strict=False)
    ]
    store.save_judge_pairwise(db, judge["id"], rows)
    [row] = store.judge_position_bias(db)
    assert row["comparisons"] == 3
    assert row["first_position_share"] == pytest.approx(4 / 6)
    assert row["consistency"] == pytest.approx(2 / 3)


def test_score_outcomes_turn_scores_into_comparisons(graded_db):
    outcomes = store.score_outcomes(graded_db, "judge:gpt4", dataset=BOOK)
    assert len(outcomes) == 100
    assert outcomes[0] == (MODEL_1, MODEL_2, 0.5)  # gpt4 gave both answers of item 0 a 0
