"""Review campaigns in real Chromium: an admin creates a campaign in the browser, three reviewers with overlap 2
grade side by side with the guidelines in view, an admin adjudicates a disagreement, and the export carries
the final and the raw grades. Every count is read from the SQLite file itself.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from urllib.parse import urljoin

import pytest

from tests.workbench.test_app import _open_tab, _start, _text, _wait_for, _wait_for_text, open_page, readme_screenshot
from workbench import importing, store
from workbench.app.core import guidelines_html
from workbench.auth import load_logins

PILOT = "pilot-set"
MODELS = ("base", "sft")
INSTRUCTIONS = [
    "Name the capital of France.",
    "Add 2 and 3.",
    "Give a synonym of fast.",
    "Translate 'cat' into German.",
]
GUIDELINES = """# How to grade

- A wrong fact is a **1**, whatever the style.
- Grade the answer to the instruction, not how close it is to the reference's wording.
- Pick the better answer only after grading both."""


@pytest.fixture
def pilot_db(tmp_path) -> Path:
    """Four instructions answered by two models: small enough for three people to finish in a test."""
    entries = [
        {"instruction": text, "input": "", "output": "ref", "base": f"base answer {i}", "sft": f"sft answer {i}"}
        for i, text in enumerate(INSTRUCTIONS)
    ]
    source = tmp_path / f"{PILOT}.json"
    source.write_text(json.dumps(entries), encoding="utf-8")
    path = tmp_path / "pilot.db"
    db = store.open_db(path)
    importing.import_path(db, source)
    db.close()
    return path


@pytest.fixture
def server(pilot_db):
    blocks, url = _start(pilot_db)
    yield url
    blocks.close()


def _page(browser, url: str):
    page = open_page(browser, url)
    page.locator("#scope-campaign input").wait_for()
    return page


def _pick(page, selector: str, option: str) -> None:
    page.locator(f"{selector} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def _create_campaign(page, name: str, overlap: int = 2, guidelines: str = GUIDELINES) -> None:
    _open_tab(page, "Campaigns")
    page.locator("#campaign-new").get_by_text("New campaign").click()
    page.locator("#campaign-name input, #campaign-name textarea").first.fill(name)
    _pick(page, "#campaign-dataset", PILOT)
    _wait_for_text(page, "#campaign-models", "sft")  # the data set's models are filled in
    page.locator("#campaign-overlap input").fill(str(overlap))
    page.locator("#campaign-guidelines textarea").fill(guidelines)
    page.locator("#campaign-create").click()
    _wait_for_text(page, "#campaign-status", f"Created campaign {name}")


def _sign_in(page, name: str) -> None:
    _wait_for_text(page, "#save-status", "Enter your name")  # the page has loaded the campaign
    box = page.locator("#reviewer-name textarea, #reviewer-name input").first
    box.fill(name)
    box.press("Enter")


def _grades_by_item(db_path: Path) -> dict[str, Counter]:
    """instruction -> reviewer -> responses of it they graded."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT i.instruction, rv.name FROM grades g JOIN reviewers rv ON rv.id = g.reviewer_id "
            "JOIN response_versions r ON r.id = g.response_id JOIN items i ON i.id = r.item_id"
        ).fetchall()
    found: dict[str, Counter] = {}
    for instruction, reviewer in rows:
        found.setdefault(instruction, Counter())[reviewer] += 1
    return found


def _grade_and_next(page, reviewer: str, grades: tuple[int, int]) -> str | None:
    """Grade both responses of the item on screen and press n; returns the item graded (None: nothing left)."""
    instruction = _text(page, "instruction")
    if not instruction:
        return None
    for column, grade in enumerate(grades):
        page.locator(f"#grade-{column} input[value='{grade}']").check()
    page.keyboard.press("n")
    page.wait_for_function(
        """(old) => document.querySelector('#instruction textarea').value !== old
               || /Nothing left|closed/.test(document.querySelector('#item-header')?.innerText ?? '')""",
        arg=instruction,
    )
    return instruction


@pytest.mark.browser
@pytest.mark.slow
def test_a_three_reviewer_campaign_runs_from_creation_to_adjudicated_export(browser, server, pilot_db, tmp_path):
    admin = _page(browser, server)
    _create_campaign(admin, "round 1")
    _wait_for_text(admin, "#campaigns-table", "round 1")
    _wait_for_text(admin, "#campaign-progress", "0 / 4")

    reviewers = {name: _page(browser, server) for name in ("alice", "bob", "carol")}
    for name, page in reviewers.items():
        _wait_for_text(page, "#save-status", "Enter your name")  # nothing is handed out before a name
        assert _text(page, "instruction") == ""
        _sign_in(page, name)
        page.wait_for_function("document.querySelector('#instruction textarea')?.value.length > 0")
        guidelines = page.locator("#guidelines")
        assert "A wrong fact is a" in guidelines.inner_text()  # the guidelines beside the item
        assert page.locator("#guidelines-panel").is_visible()
    # the first two reviewers were handed the first item, the third the second one
    assert [_text(page, "instruction") for page in reviewers.values()] == INSTRUCTIONS[:1] * 2 + INSTRUCTIONS[1:2]

    handed: dict[str, list[str]] = {name: [] for name in reviewers}
    active = list(reviewers)
    first_disagreement = True
    shot_taken = False
    while active:
        for name in list(active):
            page = reviewers[name]
            grades = (4, 4)
            if name == "bob" and first_disagreement:
                grades, first_disagreement = (1, 1), False  # alice gives 4, bob 1 on the first item
            graded = _grade_and_next(page, name, grades)
            if graded is None:
                active.remove(name)
                _wait_for_text(page, "#item-header", "Nothing left for you|is closed")
                continue
            handed[name].append(graded)
            if not shot_taken and sum(map(len, handed.values())) == 3:
                readme_screenshot(page, "campaign.png", tmp_path)  # a campaign in progress
                shot_taken = True
    by_item = _grades_by_item(pilot_db)
    assert set(by_item) == set(INSTRUCTIONS)
    for instruction, reviewers_of_item in by_item.items():
        assert sorted(reviewers_of_item.values()) == [2, 2], instruction  # exactly two reviewers, both responses
    for name, items in handed.items():
        assert len(items) == len(set(items)), name  # nobody was handed an item twice
    db = store.open_db(pilot_db)
    assert not store.get_campaign(db, "round 1").is_open  # closed once every item had its two reviewers
    db.close()

    # the admin adjudicates the one disagreement
    _open_tab(admin, "Adjudication")
    _wait_for_text(admin, "#adj-queue", INSTRUCTIONS[0][:20])
    assert INSTRUCTIONS[1] not in admin.locator("#adj-queue").inner_text()
    assert _text(admin, "adj-instruction") == INSTRUCTIONS[0]
    grades_shown = admin.locator("#adj-grades-0").inner_text()
    assert "alice" in grades_shown and "bob" in grades_shown
    admin.locator("#adj-grade-0 input[value='2']").check()
    admin.locator("#adj-save").click()
    _wait_for_text(admin, "#adj-status", "Give a final grade to every response")  # inline, and it stays
    admin.wait_for_timeout(1500)
    assert "missing: B" in admin.locator("#adj-status").inner_text()
    admin.locator("#adj-grade-1 input[value='3']").check()
    admin.locator("#adj-note-1 textarea").fill("right idea, wrong number")
    admin.locator("#adj-save-next").click()
    _wait_for_text(admin, "#adj-status", "Final grades saved")

    _open_tab(admin, "Campaigns")
    _pick(admin, "#campaign-pick", "round 1")
    admin.locator("#campaign-export").click()
    link = admin.locator("#campaign-export-file a").first
    link.wait_for()
    exported = json.loads(admin.request.get(urljoin(admin.url, link.get_attribute("href"))).text())
    first = next(entry for entry in exported if entry["instruction"] == INSTRUCTIONS[0])
    assert (first["base adjudicated grade"], first["sft adjudicated grade"]) == (2, 3)
    assert (first["base final grade"], first["sft final grade"]) == (2, 3)
    assert sorted(grade["grade"] for grade in first["base grades"]) == [1, 4]
    second = next(entry for entry in exported if entry["instruction"] == INSTRUCTIONS[1])
    assert (second["base adjudicated grade"], second["base final grade"]) == (None, 4)
    for page in [admin, *reviewers.values()]:
        page.context.close()


def test_guidelines_render_as_markdown_that_runs_and_links_nothing():
    shown = guidelines_html("# Rules\n\n**bold** <script>window.__xss=1</script> [x](javascript:alert(1))")
    assert "<h1>Rules</h1>" in shown and "<strong>bold</strong>" in shown
    assert "<script" not in shown and "&lt;script&gt;" in shown
    assert "href" not in shown and "<a" not in shown


@pytest.mark.browser
@pytest.mark.slow
def test_next_keeps_an_unfinished_item_skip_moves_on_and_previous_comes_back(browser, server, pilot_db):
    """As a reviewer would: grade one of two responses, press n (refused: finish it), skip it (it stays hers:
    she graded part of it), skip an untouched item (handed back), then come back with Previous."""
    admin = _page(browser, server)
    _create_campaign(admin, "skips", overlap=1)
    admin.context.close()
    page = _page(browser, server)
    _sign_in(page, "dora")
    page.wait_for_function("document.querySelector('#instruction textarea')?.value.length > 0")
    assert _text(page, "instruction") == INSTRUCTIONS[0]
    page.locator("#grade-0 input[value='3']").check()  # one of two responses
    page.locator("#save-next").click()
    _wait_for_text(page, "#save-status", "Grade every response of this item first")
    assert _text(page, "instruction") == INSTRUCTIONS[0]
    for skipped in range(2):  # item 1 half graded, item 2 untouched
        page.locator("#skip").click()
        _wait_for(lambda skipped=skipped: _text(page, "instruction") == INSTRUCTIONS[skipped + 1])
    other = _page(browser, server)
    _sign_in(other, "emil")
    other.wait_for_function("document.querySelector('#instruction textarea')?.value.length > 0")
    assert _text(other, "instruction") == INSTRUCTIONS[1]  # the untouched item went back; the first stays dora's
    page.locator("#previous").click()
    _wait_for(lambda: _text(page, "instruction") == INSTRUCTIONS[0])
    assert page.locator("#grade-0 input[value='3']").is_checked()  # her grade, shown again
    assert _grades_by_item(pilot_db)[INSTRUCTIONS[0]] == Counter({"dora": 1})
    for context in (page.context, other.context):
        context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_only_admins_create_campaigns_and_adjudicate_and_refusals_stay_inline(browser, pilot_db):
    logins = load_logins(["ada:pw-ada-123", "rex:pw-rex-123"], admins=["ada"], warn=lambda message: None)
    blocks, url = _start(pilot_db, logins=logins)
    try:
        pages = {}
        for user in ("ada", "rex"):
            page = open_page(browser, url)
            page.get_by_label("username").fill(user)
            page.get_by_label("password").fill(f"pw-{user}-123")
            page.get_by_role("button", name="Login").click()
            page.locator("#scope-campaign input").wait_for()
            pages[user] = page
        rex = pages["rex"]
        _open_tab(rex, "Campaigns")
        _wait_for_text(rex, "#campaigns-table", "No campaigns yet")  # an empty table says what to do
        rex.locator("#campaign-new").get_by_text("New campaign").click()
        rex.locator("#campaign-name input, #campaign-name textarea").first.fill("mine")
        rex.locator("#campaign-create").click()
        _wait_for_text(rex, "#campaign-status", "Only admins can create campaigns")
        _open_tab(rex, "Adjudication")
        _wait_for_text(rex, "#adj-status", "Only admins can adjudicate")

        ada = pages["ada"]
        _open_tab(ada, "Campaigns")
        ada.locator("#campaign-new").get_by_text("New campaign").click()
        ada.locator("#campaign-name input, #campaign-name textarea").first.fill("no models")
        ada.locator("#campaign-create").click()
        _wait_for_text(ada, "#campaign-status", "Not created: choose the data set")
        ada.wait_for_timeout(5000)  # no toast that vanishes: the refusal is still there
        assert "Not created" in ada.locator("#campaign-status").inner_text()
        assert ada.locator(".toast-body").count() == 0
        assert ada.locator("#campaign-dataset .error, #campaign-models .error").count() == 0
        with sqlite3.connect(pilot_db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM campaigns").fetchone() == (0,)
        for page in pages.values():
            page.context.close()
    finally:
        blocks.close()
