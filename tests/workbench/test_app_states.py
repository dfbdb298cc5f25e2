"""What a new user sees in real Chromium: on an empty database every tab says what to do next, and a refused
action is said inline, where it stays, instead of in a pop-up that vanishes or a red badge over the inputs."""

from __future__ import annotations

import json

import pytest

from tests.workbench.test_app import _open_tab, _start, _wait_for_text, open_page
from workbench import importing, store


@pytest.fixture
def empty_app(browser, tmp_path):
    blocks, url = _start(tmp_path / "empty.db")
    page = open_page(browser, url)
    yield page
    page.context.close()
    blocks.close()


# (tab, element, words of its hint)
HINTS = [
    ("Review", "#item-header", "Nothing to review yet.*workbench import"),
    ("Queues", "#queue-table", "No items match"),
    ("Campaigns", "#campaigns-table", "No campaigns yet"),
    ("Adjudication", "#adj-queue", "No campaigns yet"),
    ("Calibration", "#cal-me-judges", "Enter your name"),
    ("Calibration", "#cal-consistency", "No blind votes yet"),
    ("Calibration", "#cal-judge-bias", "No pairwise judge verdicts yet"),
    ("Leaderboard", "#leaderboard-table", "No models yet"),
    ("Agreement", "#agreement-table", "Two raters are needed"),
    ("Benchmarks", "#bench-runs", "no benchmark runs yet"),
    ("Training", "#training-table", "no runs yet"),
]


@pytest.mark.browser
@pytest.mark.slow
def test_every_empty_tab_says_what_to_do(empty_app):
    page = empty_app
    for tab, selector, hint in HINTS:
        _open_tab(page, tab)
        _wait_for_text(page, selector, hint)
    assert page.locator(".toast-body").count() == 0


@pytest.mark.browser
@pytest.mark.slow
def test_refusals_are_inline_and_stay(empty_app):
    page = empty_app
    _wait_for_text(page, "#item-header", "Nothing to review yet")
    page.locator("#next-ungraded").click()  # no name given
    _wait_for_text(page, "#save-status", "Enter your name")
    _open_tab(page, "Blind A/B")
    page.locator("#blind-next").click()
    _wait_for_text(page, "#blind-status", "Enter your name")
    _open_tab(page, "Data")
    page.locator("#data-import").click()  # no file chosen
    _wait_for_text(page, "#data-status", "Choose a file to upload first")
    page.wait_for_timeout(5000)  # a pop-up would be gone by now; these stay
    assert "Choose a file" in page.locator("#data-status").inner_text()
    _open_tab(page, "Blind A/B")
    assert "Enter your name" in page.locator("#blind-status").inner_text()
    assert page.locator(".toast-body").count() == 0
    assert page.locator("[data-testid=status-tracker].error, .error-message").count() == 0


@pytest.mark.browser
@pytest.mark.slow
def test_a_long_queue_draws_its_first_rows_and_says_how_many(browser, tmp_path):
    """A Dataframe of thousands of rows takes the browser seconds to draw; Review steps through all of them."""
    entries = [{"instruction": f"Question {index}", "input": "", "output": "x", "m": "y"} for index in range(250)]
    source = tmp_path / "long.json"
    source.write_text(json.dumps(entries), encoding="utf-8")
    db = store.open_db(tmp_path / "long.db")
    importing.import_path(db, source)
    db.close()
    blocks, url = _start(tmp_path / "long.db")
    try:
        page = open_page(browser, url)
        _open_tab(page, "Queues")
        _wait_for_text(page, "#queue-table", "Queue: 250 items \\(the first 200 shown\\)")
        assert int(page.locator("#queue-table [role=grid]").get_attribute("aria-rowcount")) - 1 == 200
        page.context.close()
    finally:
        blocks.close()
