"""Issue #12's probes, each a test in real Chromium with rows checked in SQLite: no click is lost, blind means
blind, reviewers do not see each other's grades, data stays text, and stepping costs the same at any size.

Each test here failed on the app before the rewrite (one module, save on button only).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.workbench.test_app import (
    BOOK,
    MODEL_1,
    MODEL_2,
    _add_training_run,
    _grades,
    _open_tab,
    _start,
    _text,
    _wait_for,
    _wait_for_item,
    _wait_for_text,
    open_page,
)
from workbench import app, importing, store
from workbench.auth import load_logins

FIRST = "Calculate the hypotenuse of a right triangle with legs of 6 cm and 8 cm."
HTML_NAME = '<form action="https://example.invalid/"><input type="password" name="p"></form>'
MATH_NAME = r"$\frac{$"


@pytest.fixture(scope="module")
def trust_db(_book_db_template, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "trust.db"
    shutil.copyfile(_book_db_template, path)
    db = store.open_db(path)
    _add_training_run(db)
    model_id = store.get_or_create_model(db, MATH_NAME, "run", "/runs/math", {"name": MATH_NAME})
    store.replace_training_metrics(db, model_id, [{"step": 0, "train_loss": 3.0, "val_loss": 3.1}])
    db.close()
    return path


@pytest.fixture(scope="module")
def server(trust_db):
    blocks, url = _start(trust_db)
    yield url
    blocks.close()


def _open(browser, url: str, *, wait: bool = True):
    page = open_page(browser, url)
    if wait:
        _wait_for_item(page)
    return page


def _name_box(page):
    return page.locator("#reviewer-name textarea, #reviewer-name input").first


def _drafts(db_path: Path, reviewer: str) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT gd.comment FROM grade_drafts gd JOIN reviewers rv ON rv.id = gd.reviewer_id WHERE rv.name = ?",
                [reviewer],
            )
        ]


# --- no click is lost ---------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("leave_with", ["Tab", "Enter", None])
def test_name_then_tab_or_enter_then_one_click_stores_one_grade(browser, server, trust_db, leave_with):
    """The old app re-rendered the item when the name box lost focus, unchecking the first grade."""
    reviewer = f"first-click-{leave_with}"
    page = _open(browser, server)
    _name_box(page).fill(reviewer)
    if leave_with:
        _name_box(page).press(leave_with)
    page.locator("#grade-0").get_by_label("3 · partly right").click()
    _wait_for(lambda: _grades(trust_db, reviewer))
    page.wait_for_timeout(1000)  # any late re-render would land by now
    assert page.locator("#grade-0 input[value='3']").is_checked()
    assert _grades(trust_db, reviewer) == {(FIRST, MODEL_1): (3, "")}
    assert _text(page, "instruction") == FIRST  # still on the same item
    page.context.close()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("button", ["skip", "previous", "next-ungraded"])
def test_grade_and_comment_survive_moving_away(browser, server, trust_db, button):
    reviewer = f"mover-{button}"
    page = _open(browser, server)
    _name_box(page).fill(reviewer)
    page.locator("#item-header").click()
    instruction = _text(page, "instruction")
    page.locator("#grade-0").get_by_label("4 · good: minor issues").click()
    page.locator("#comment-0 textarea").fill("close enough")
    page.locator("#comment-1 textarea").fill("no grade yet, but keep this")
    page.locator(f"#{button}").click()  # at once: no Save, no pause for the autosave
    page.wait_for_function("(old) => document.querySelector('#instruction textarea').value !== old", arg=instruction)
    _wait_for(lambda: _grades(trust_db, reviewer).get((instruction, MODEL_1)) == (4, "close enough"))
    assert _drafts(trust_db, reviewer) == ["no grade yet, but keep this"]
    # coming back shows both, and nothing asks for a Save
    page.locator("#previous" if button != "previous" else "#skip").click()
    page.wait_for_function("(old) => document.querySelector('#instruction textarea').value === old", arg=instruction)
    assert page.locator("#grade-0 input[value='4']").is_checked()
    assert _text(page, "comment-1") == "no grade yet, but keep this"
    page.context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_marks_given_before_a_name_are_stored_once_it_is_typed(browser, server, trust_db):
    page = _open(browser, server)
    page.locator("#grade-1").get_by_label("2 · poor: major errors").click()
    _wait_for_text(page, "#save-status", "Enter your name")
    page.locator("#skip").click()  # refused: the mark would be lost
    page.wait_for_timeout(500)
    assert _text(page, "instruction") == FIRST
    _name_box(page).fill("late-name")
    _name_box(page).press("Enter")
    _wait_for(lambda: _grades(trust_db, "late-name") == {(FIRST, MODEL_2): (2, "")})
    assert page.locator("#grade-1 input[value='2']").is_checked()
    page.context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_the_name_is_remembered_by_the_browser(browser, server):
    page = _open(browser, server)
    _name_box(page).fill("remembered")
    _name_box(page).press("Enter")
    _wait_for_text(page, "#progress", "You: ")
    page.reload()
    _wait_for_item(page)
    page.wait_for_function("document.querySelector('#reviewer-name textarea, #reviewer-name input').value")
    assert _name_box(page).input_value() == "remembered"
    page.context.close()


# --- responses are versioned --------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_a_changed_response_is_ungraded_and_the_old_grade_stays_with_the_old_text(browser, trust_db, tmp_path):
    db = store.open_db(trust_db)
    first_item = store.dataset_items(db, BOOK)[0]["id"]
    old_id = store.response_ids_by_item(db, MODEL_1, BOOK)[first_item]
    store.add_grade(db, old_id, "versioned", 5, "right answer")
    entries = [dict(row) for row in store.response_rows(db, dataset=BOOK)]
    db.close()
    book = {}
    for row in entries:
        entry = book.setdefault(row["item_id"], {"instruction": row["instruction"], "input": row["input"]})
        entry["output"] = row["reference_output"]
        entry[row["model"]] = row["text"]
    book[first_item][MODEL_1] = "The hypotenuse is 12 cm."
    path = tmp_path / f"{BOOK}.json"
    path.write_text(json.dumps(list(book.values())))
    db = store.open_db(trust_db)
    importing.import_path(db, path)
    db.close()
    blocks, url = _start(trust_db)
    try:
        page = _open(browser, url)
        _name_box(page).fill("versioned")
        page.locator("#item-header").click()
        _wait_for_text(page, "#versions-note", "older version")
        assert _text(page, "response-0") == "The hypotenuse is 12 cm."
        assert page.locator("#grade-0 input:checked").count() == 0
        page.context.close()
    finally:
        blocks.close()
    with sqlite3.connect(trust_db) as conn:
        [(text, current, score)] = conn.execute(
            "SELECT v.text, v.is_current, g.score FROM grades g JOIN response_versions v ON v.id = g.response_id "
            "JOIN reviewers rv ON rv.id = g.reviewer_id WHERE rv.name = 'versioned'"
        ).fetchall()
    assert (text.strip(), current, score) == ("The hypotenuse of the triangle is 3 cm.", 0, 5)


# --- blind review and independence --------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_a_blind_data_set_names_no_model_before_the_grades_are_in(browser, trust_db):
    blocks, url = _start(trust_db, blind_datasets=(BOOK,))
    try:
        page = _open(browser, url)
        _name_box(page).fill("blind-reviewer")
        page.locator("#item-header").click()
        _wait_for_text(page, "#reveal", "hidden")
        html = page.content()
        assert MODEL_1 not in html and MODEL_2 not in html
        assert not page.locator("#scope-models").is_visible()
        page.keyboard.press("4")
        page.wait_for_timeout(300)
        assert MODEL_1 not in page.content()  # one of two graded: still hidden
        page.keyboard.press("2")
        _wait_for_text(page, "#reveal", "Models: A = ")
        revealed = dict(re.findall(r"([AB]) = (model \d response)", page.locator("#reveal").inner_text()))
        assert set(revealed.values()) == {MODEL_1, MODEL_2}
        assert _grades(trust_db, "blind-reviewer") == {(FIRST, revealed["A"]): (4, ""), (FIRST, revealed["B"]): (2, "")}
        page.context.close()
    finally:
        blocks.close()
        db = store.open_db(trust_db)
        store.set_blind_review(db, BOOK, False)
        db.close()


def test_blind_render_sends_no_model_name(trust_db):
    """What the server sends for a blind item (every output value and label) holds no model name."""
    from workbench.app.core import App
    from workbench.app.review import ReviewTab

    db = store.open_db(trust_db)
    store.set_blind_review(db, BOOK, True)
    try:
        tab = ReviewTab(App(trust_db))
        first = store.dataset_items(db, BOOK)[0]["id"]
        outputs = tab.render(db, first, BOOK, [], "api-reviewer", fresh=True)
        sent = json.dumps(outputs, default=str)
        assert MODEL_1 not in sent and MODEL_2 not in sent
        assert "Response A" in sent
        # the page holds only the item and response ids; the names stay on the server, in a per-reviewer order
        item_id, shown = tab.opened(db, outputs[0])
        assert item_id == first and {model for _, model in shown} == {MODEL_1, MODEL_2}
    finally:
        store.set_blind_review(db, BOOK, False)
        db.close()


def test_blind_pairs_leave_out_items_seen_with_names(graded_db_copy):
    db = graded_db_copy
    items = store.dataset_items(db, BOOK)
    for item in items[:-1]:
        store.record_view(db, "seen-all-but-one", item["id"])
    pair = store.next_blind_pair(db, "seen-all-but-one", dataset=BOOK, repeat_share=0.0)
    assert pair["item_id"] == items[-1]["id"]
    store.record_view(db, "seen-all-but-one", items[-1]["id"])
    assert store.next_blind_pair(db, "seen-all-but-one", dataset=BOOK, repeat_share=0.0) is None


@pytest.fixture
def graded_db_copy(book_db):
    db = store.open_db(book_db)
    yield db
    db.close()


@pytest.mark.browser
@pytest.mark.slow
def test_a_reviewer_cannot_read_another_reviewers_grades_nor_export(browser, trust_db):
    logins = load_logins(["boss:pw-admin", "rita:pw-r", "sam:pw-s"], admins=["boss"], warn=lambda message: None)
    blocks, url = _start(trust_db, logins=logins)

    def sign_in(name: str, password: str):
        page = _open(browser, url, wait=False)
        page.get_by_label("username").fill(name)
        page.get_by_label("password").fill(password)
        page.get_by_role("button", name="Login").click()
        _wait_for_item(page)
        return page

    try:
        rita = sign_in("rita", "pw-r")
        rita.locator("#comment-0 textarea").fill("rita-secret-comment")
        rita.locator("#grade-0").get_by_label("1 · wrong or unusable").click()
        _wait_for(lambda: _grades(trust_db, "rita") == {(FIRST, MODEL_1): (1, "rita-secret-comment")})
        sam = sign_in("sam", "pw-s")
        assert "rita-secret-comment" not in sam.content()
        assert sam.locator("#grade-0 input:checked").count() == 0
        _open_tab(sam, "Queues")
        sam.locator("#queue-refresh").click()
        _wait_for_text(sam, "#queue-table", "Calculate the hypotenuse")
        _open_tab(sam, "Calibration")
        _wait_for_text(sam, "#cal-me-judges", "gpt4")
        assert "rita" not in sam.locator("#cal-reviewers").inner_text()
        _open_tab(sam, "Agreement")
        sam.locator("#agreement-refresh").click()
        sam.wait_for_timeout(500)
        sam.locator("#agreement-first input").click()
        options = sam.get_by_role("option").all_inner_texts()
        assert options and not any("rita" in option or "humans" in option for option in options)
        sam.keyboard.press("Escape")
        _open_tab(sam, "Leaderboard")
        _wait_for_text(sam, "#leaderboard-table", "Bradley-Terry")
        assert "mean human grade" not in sam.locator("#leaderboard-table").inner_text()
        sam.locator("#leaderboard-source input").click()
        sources = sam.get_by_role("option").all_inner_texts()
        assert any("judge:gpt4" in source for source in sources) and not any("rita" in source for source in sources)
        sam.keyboard.press("Escape")
        _open_tab(sam, "Data")
        sam.locator("#data-export").click()
        sam.get_by_text("Only admins can export").first.wait_for()
        assert sam.locator("#export-file a").count() == 0
        sam.locator("#data-blind input").check()
        sam.locator("#data-blind-apply").click()
        sam.get_by_text("Only admins can change review settings").first.wait_for()
        boss = sign_in("boss", "pw-admin")
        _open_tab(boss, "Data")
        boss.locator("#data-export").click()
        boss.locator("#export-file a").first.wait_for()
        boss.locator("#data-blind input").check()
        boss.locator("#data-blind-apply").click()
        _wait_for_text(boss, "#data-blind-result", "now blind")
        db = store.open_db(trust_db)
        assert store.blind_review(db, BOOK)
        store.set_blind_review(db, BOOK, False)
        db.close()
    finally:
        blocks.close()


# --- data stays text ----------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_html_in_an_inline_refusal_or_an_import_error_shows_as_text(browser, server, tmp_path):
    page = _open(browser, server)
    _open_tab(page, "Queues")
    page.locator("#queue-min input, #queue-min textarea").first.fill(HTML_NAME)
    page.locator("#queue-refresh").click()
    _wait_for_text(page, "#queue-status", "is not a number")
    assert page.locator("form input[type=password]").count() == 0
    assert HTML_NAME in page.locator("#queue-status").inner_text()  # inline, as text
    page.wait_for_timeout(5000)  # and it stays: no toast that vanishes, no red badge over the filters
    assert "is not a number" in page.locator("#queue-status").inner_text()
    assert page.locator(".toast-body, [data-testid='toast-body']").count() == 0
    assert page.locator("#queue-min .error, #queue-table .error").count() == 0
    page.locator("#queue-min input, #queue-min textarea").first.fill("")
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps([50] * 100))
    _open_tab(page, "Data")
    page.locator("#data-files input[type=file]").set_input_files(str(scores))
    page.locator("#data-kind").get_by_label("judge scores").check()
    page.locator("#data-judge textarea, #data-judge input").first.fill("j")
    page.locator("#data-response-key textarea, #data-response-key input").first.fill(HTML_NAME)
    page.locator("#data-import").click()
    page.wait_for_function("document.querySelector('#data-result textarea')?.value.includes('Nothing was imported')")
    assert HTML_NAME in _text(page, "data-result")
    assert page.locator("form input[type=password]").count() == 0
    page.context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_the_browser_keeps_nothing_but_the_reviewer_name(browser, server, trust_db):
    """Gradio's run history copied every event's inputs and outputs (response texts, comments, grades) into
    localStorage, offered to upload them to a Hugging Face bucket, and rewrote them on every click: after 20
    graded items it held 1.6 MB and each step took three times as long."""
    page = _open(browser, server)
    _name_box(page).fill("storage")
    page.locator("#item-header").click()
    for _ in range(3):
        instruction = _text(page, "instruction")
        page.locator("#grade-0").get_by_label("4 · good: minor issues").click()
        page.locator("#comment-0 textarea").fill("a private remark")
        page.locator("#save-next").click()
        page.wait_for_function(
            "(old) => document.querySelector('#instruction textarea').value !== old", arg=instruction
        )
    _wait_for(lambda: len(_grades(trust_db, "storage")) == 3)
    keys = page.evaluate("Object.keys(localStorage)")
    assert keys == [app.NAME_STORAGE_KEY]
    stored = page.evaluate("JSON.stringify(localStorage)")
    assert "private remark" not in stored and FIRST not in stored
    footer = page.locator("footer").inner_text()
    assert "Runs" not in footer and "API" not in footer
    assert page.request.get(server + "gradio_api/runs").status == 404  # no run history page either
    page.context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_a_two_file_upload_with_one_bad_file_changes_nothing(browser, server, trust_db, tmp_path, db_snapshot):
    good = tmp_path / "good-set.json"
    good.write_text(json.dumps([{"instruction": "Add 1 and 1.", "input": "", "output": "2", "m": "2"}]))
    bad = tmp_path / "bad-set.json"
    bad.write_text('[{"instruction": "x", "input": ""}, {"instruction": 3}]')
    before = db_snapshot(trust_db)
    page = _open(browser, server)
    _open_tab(page, "Data")
    page.locator("#data-files input[type=file]").set_input_files([str(good), str(bad)])
    page.locator("#data-import").click()
    page.wait_for_function("document.querySelector('#data-result textarea')?.value.length > 0")
    assert "Nothing was imported" in _text(page, "data-result") and "bad-set.json" in _text(page, "data-result")
    assert db_snapshot(trust_db) == before
    page.context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_dollar_signs_in_names_draw_in_every_plot(browser, server, trust_db):
    db = store.open_db(trust_db)
    first = store.dataset_items(db, BOOK)[0]["id"]
    db.close()
    scores = trust_db.parent / "math-scores.json"
    scores.write_text(json.dumps([{"item_id": first, "score": 40}]))
    db = store.open_db(trust_db)
    importing.import_scores(db, scores, judge=MATH_NAME, response_key=MODEL_1, dataset=BOOK)
    db.close()
    page = _open(browser, server)
    _open_tab(page, "Training")
    _wait_for_text(page, "#training-table", re.escape(MATH_NAME))
    page.locator("#training-plot img, #training-plot svg, #training-plot canvas").first.wait_for()
    _open_tab(page, "Agreement")
    page.locator("#agreement-first input").click()
    page.get_by_role("option", name=f"judge:{MATH_NAME}").click()
    page.locator("#agreement-refresh").click()
    page.locator("#agreement-plot img, #agreement-plot svg, #agreement-plot canvas").first.wait_for()
    assert page.locator(".toast-body, [data-testid='toast-body']").count() == 0
    page.context.close()


# --- queues and navigation in the store ---------------------------------------------------------------------


def test_a_reviewers_queue_means_hold_only_their_own_grades(graded_db_copy):
    db = graded_db_copy
    first = store.dataset_items(db, BOOK)[0]["id"]
    store.add_grade(db, store.response_ids_by_item(db, MODEL_1, BOOK)[first], "rita", 1)
    everyone = store.review_queue(db, store.QueueFilter(dataset=BOOK))[0]
    own = store.review_queue(db, store.QueueFilter(dataset=BOOK, reviewer="sam", humans_of="sam"))[0]
    assert (everyone["mean_grade"], own["mean_grade"], own["disagreement"]) == (1.0, None, None)


def test_graded_by_me_counts_without_the_ungraded_filter(graded_db_copy):
    db = graded_db_copy
    first = store.dataset_items(db, BOOK)[0]["id"]
    store.add_grade(db, store.response_ids_by_item(db, MODEL_1, BOOK)[first], "counter", 4)
    rows = store.review_queue(db, store.QueueFilter(dataset=BOOK, reviewer="counter"))
    assert rows[0]["graded_by_me"] == 1 and sum(row["graded_by_me"] for row in rows) == 1


@settings(max_examples=25, deadline=None)
@given(
    models=st.sampled_from([(), (MODEL_1,), (MODEL_2,)]),
    ungraded=st.booleans(),
    score_range=st.sampled_from([(None, None), (0, 50), (60, 100), (None, 10)]),
    judge=st.sampled_from([None, "gpt4", "llama3"]),
    graded=st.lists(st.integers(0, 99), max_size=30),
    search=st.sampled_from([None, "", "the", "SENTENCE", "synonym  of", "_", "%", "water boil", "no-such-word"]),
)
def test_stepping_visits_the_queue_in_order(
    _book_db_template, tmp_path_factory, models, ungraded, score_range, judge, graded, search
):
    """``next_item`` (one indexed look-up per step) walks exactly the queue that ``review_queue`` ranks."""
    path = tmp_path_factory.mktemp("steps") / "steps.db"
    shutil.copyfile(_book_db_template, path)
    db = store.open_db(path)
    items = store.dataset_items(db, BOOK)
    ids = store.response_ids_by_item(db, MODEL_1, BOOK)
    for index in set(graded):
        store.add_grade(db, ids[items[index]["id"]], "stepper", 3)
    queue = store.QueueFilter(
        dataset=BOOK,
        models=models,
        ungraded_for="stepper" if ungraded else None,
        judge=judge,
        score_min=score_range[0],
        score_max=score_range[1],
        search=search,
    )
    expected = [row["item_id"] for row in store.review_queue(db, queue)]
    walked, current = [], store.next_item(db, queue)
    while current is not None and current not in walked:
        walked.append(current)
        current = store.next_item(db, queue, after=current)
    assert walked == expected
    if expected:
        assert store.next_item(db, queue, after=expected[0], direction=-1) == expected[-1]
    db.close()


@pytest.mark.browser
@pytest.mark.slow
def test_an_upload_over_the_size_limit_is_refused(browser, trust_db, tmp_path, db_snapshot):
    blocks, url = _start(trust_db, max_upload_mb=0.01)
    try:
        big = tmp_path / "big-set.json"
        big.write_text(json.dumps([{"instruction": f"Say {i}.", "input": "", "output": "x" * 100} for i in range(200)]))
        before = db_snapshot(trust_db)
        page = _open(browser, url)
        _open_tab(page, "Data")
        page.locator("#data-files input[type=file]").set_input_files(str(big))
        page.get_by_text(re.compile("exceeds|too large|maximum", re.IGNORECASE)).first.wait_for()
        page.locator("#data-import").click()
        page.wait_for_timeout(500)
        assert db_snapshot(trust_db) == before
        page.context.close()
    finally:
        blocks.close()


def test_scratch_files_are_pruned_as_the_app_goes(tmp_path, monkeypatch):
    from workbench.app import core

    app = core.App(tmp_path / "unused.db", scratch=tmp_path / "scratch")
    app.scratch.mkdir()
    old = app.scratch_file("export.csv")
    old.write_text("old export")
    monkeypatch.setattr(core.time, "time", lambda: old.stat().st_mtime + core.SCRATCH_MAX_AGE_S + 1)
    new = app.scratch_file("export.csv")
    assert not old.exists() and not old.parent.exists() and new.parent.is_dir() and new.parent != old.parent


def test_progress_counts_kept_by_saves_equal_a_fresh_count(graded_db_copy):
    """The app counts progress once per scope and then moves it by what each save reports."""
    import random

    from workbench.app.core import ProgressCounts

    db = graded_db_copy
    counts = ProgressCounts()
    scopes = [(BOOK, (MODEL_1, MODEL_2)), (BOOK, (MODEL_1,)), (BOOK, (MODEL_2,))]
    for reviewer in ("ann", "ben"):
        for dataset, models in scopes:
            counts.get(db, reviewer, dataset, models)
    items = store.dataset_items(db, BOOK)
    ids = {model: store.response_ids_by_item(db, model, BOOK) for model in (MODEL_1, MODEL_2)}
    rng = random.Random(3)
    for _ in range(60):
        reviewer, item = rng.choice(["ann", "ben"]), rng.choice(items[:10])["id"]
        marks = [store.Mark(ids[model][item], model, rng.choice([None, 1, 5])) for model in (MODEL_1, MODEL_2)]
        counts.record(reviewer, BOOK, store.save_marks(db, reviewer, item, marks, None))
    for reviewer in ("ann", "ben"):
        for dataset, models in scopes:
            kept = counts.get(db, reviewer, dataset, models)
            assert kept == store.progress(db, reviewer, dataset=dataset, models=list(models)), (reviewer, models)


def test_marks_go_to_the_item_the_event_names_and_forged_ids_are_dropped(graded_db_copy):
    """A save carries the item and response ids it was triggered on (not server state read later), and ids
    that do not belong to that item are ignored."""
    db = graded_db_copy
    items = store.dataset_items(db, BOOK)
    first, second = items[0]["id"], items[1]["id"]
    ids = {model: store.response_ids_by_item(db, model, BOOK) for model in (MODEL_1, MODEL_2)}
    assert store.response_models(db, first, [ids[MODEL_2][first], ids[MODEL_1][first]]) == [
        [ids[MODEL_2][first], MODEL_2],
        [ids[MODEL_1][first], MODEL_1],
    ]
    assert store.response_models(db, first, [ids[MODEL_1][second]]) == []


def test_the_app_notice_lives_in_the_database(graded_db_copy):
    db = graded_db_copy
    assert store.app_notice(db) is None
    store.set_app_notice(db, "trained from <b>random</b> weights")
    store.set_app_notice(db, "trained from random weights")
    assert store.app_notice(db) == "trained from random weights"
    store.set_app_notice(db, None)
    assert store.app_notice(db) is None


@pytest.mark.browser
@pytest.mark.slow
def test_blind_tab_loads_on_open_and_stores_both_bad_with_a_comment(browser, server, trust_db):
    page = _open(browser, server)
    _name_box(page).fill("arena")
    _name_box(page).press("Enter")
    _wait_for_text(page, "#progress", "You: ")
    _open_tab(page, "Blind A/B")  # no click on Next pair: the pair is there
    page.wait_for_function("document.querySelector('#blind-response-left textarea')?.value.length > 0")
    instruction = _text(page, "blind-instruction")
    page.locator("#blind-comment textarea").fill("both miss the point")
    page.locator("#blind-both-bad").click()
    page.wait_for_function("document.querySelector('#blind-reveal textarea, #blind-reveal input').value")
    assert page.locator("#blind-both-bad").get_attribute("class").split().count("primary") == 1  # stays marked
    assert page.locator("#blind-left").is_disabled() and page.locator("#blind-both-bad").is_disabled()
    with sqlite3.connect(trust_db) as conn:
        rows = conn.execute(
            "SELECT i.instruction, pg.preference, pg.both_bad, pg.blind, pg.comment FROM pairwise_grades pg "
            "JOIN reviewers rv ON rv.id = pg.reviewer_id JOIN items i ON i.id = pg.item_id WHERE rv.name = 'arena'"
        ).fetchall()
    assert rows == [(instruction, "tie", 1, 1, "both miss the point")]
    page.context.close()
