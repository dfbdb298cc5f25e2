"""Issue #13, reading responses, in real Chromium: Markdown rendered with nothing in it run, loaded or
followed; a toggle to the raw text that stays through steps; four models as a 2x2 grid; search in Queues
that the Review tab follows (and the store's search, checked without a browser).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.workbench.test_app import (
    XSS_IMG,
    XSS_SCRIPT,
    _open_tab,
    _sign_in,
    _start,
    _text,
    _wait_for_item,
    _wait_for_text,
    open_page,
)
from workbench import importing, store

MODELS = ("alpha-model", "beta-model", "gamma-model", "delta-model")
# a response written in Markdown, with every kind of payload that must stay text; two leading blank lines
MARKDOWN = (
    "\n\n## Steps\n\n"
    "1. Mix the flour\n"
    "2. Bake for **20** minutes\n\n"
    "- first point\n"
    "- second point\n\n"
    "```python\n"
    "def greet(name):\n"
    '    return f"Hello {{ name }} ${1+1}"\n'
    "```\n\n"
    f"{XSS_SCRIPT}\n\n"
    f"{XSS_IMG}\n\n"
    "[click](javascript:window.__xss=1) and [docs](http://127.0.0.1:9/docs)\n\n"
    "![img](http://127.0.0.1:9/x.png)\n"
)
LONG = "\n".join(f"Line {number} of a long answer." for number in range(1, 81))
READING = [
    {
        "instruction": "Explain lists in Markdown.",
        "input": "",
        "output": "ref",
        MODELS[0]: MARKDOWN,
        MODELS[1]: LONG,
        MODELS[2]: "Short *c* answer.",
        MODELS[3]: "Plain d answer.",
    },
    {
        "instruction": "Name a striped animal.",
        "input": "",
        "output": "zebra",
        MODELS[0]: "A horse.",
        MODELS[1]: "A tiger.",
        MODELS[2]: "The ZEBRA, of course.",
        MODELS[3]: "A cat.",
    },
    {
        "instruction": "Count to three.",
        "input": "",
        "output": "1 2 3",
        MODELS[0]: "one cat",
        MODELS[1]: "100 cats",
        MODELS[2]: "1 2 3",
        MODELS[3]: "1 2 3",
    },
    {"instruction": "Is a zebra crossing safe?", "input": "", "output": "yes", **dict.fromkeys(MODELS, "Yes.")},
    {
        "instruction": "How sure are you?",
        "input": "Answer in snake_case.",
        "output": "very",
        **dict.fromkeys(MODELS, "100% sure"),
    },
]
PAIR = [{"instruction": "Two models only.", "input": "", "output": "x", MODELS[0]: "left", MODELS[1]: "right"}]


@pytest.fixture(scope="module")
def reading_db(tmp_path_factory) -> Path:
    """Data set ``reading`` (five items, four models, Markdown and payloads) and ``pair`` (two models)."""
    folder = tmp_path_factory.mktemp("reading")
    path = folder / "reading.db"
    db = store.open_db(path)
    for name, entries in (("reading", READING), ("pair", PAIR)):
        file = folder / f"{name}.json"
        file.write_text(json.dumps(entries), encoding="utf-8")
        importing.import_path(db, file)
    db.close()
    return path


@pytest.fixture(scope="module")
def server(reading_db):
    blocks, url = _start(reading_db)
    yield url
    blocks.close()


@pytest.fixture
def requests_made() -> list[str]:
    """Every URL the page asked for."""
    return []


@pytest.fixture
def page(browser, server, requests_made):
    page = open_page(browser, server, requests=requests_made)
    _wait_for_item(page)
    yield page
    page.context.close()


def _bad_attributes(page, selector: str) -> list[str]:
    """Names of href, src, srcset, xlink:href and on* attributes on any element under ``selector``."""
    return page.evaluate(
        """(selector) => [...document.querySelectorAll(`${selector} *`)].flatMap((element) =>
             [...element.attributes].map((attribute) => attribute.name.toLowerCase()))
           .filter((name) => name.includes('href') || name.includes('src') || name.startsWith('on'))""",
        selector,
    )


def _wait_for_queue_rows(page, rows: int) -> None:
    """Wait until the Queues table shows ``rows`` rows (its grid counts the header row too): the table before a
    refresh may already hold the text a test looks for."""
    page.wait_for_function(
        "rows => Number(document.querySelector('#queue-table [role=grid]')?.getAttribute('aria-rowcount'))"
        " === rows + 1",
        arg=rows,
    )


def _step(page, button: str) -> None:
    before = _text(page, "instruction")
    page.locator(f"#{button}").click()
    page.wait_for_function("(old) => document.querySelector('#instruction textarea').value !== old", arg=before)


# --- Markdown, rendered safely ------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_markdown_is_rendered_and_nothing_in_it_runs_loads_or_links(page, requests_made, server):
    rendered = page.locator("#response-md-0")
    rendered.locator("pre code").wait_for()
    assert "def greet(name):" in rendered.locator("pre code").inner_text()
    assert rendered.locator("h2").inner_text() == "Steps"
    assert rendered.locator("li").all_inner_texts() == [
        "Mix the flour",
        "Bake for 20 minutes",
        "first point",
        "second point",
    ]
    assert rendered.locator("strong").inner_text() == "20"
    text = rendered.inner_text()
    assert "A · alpha-model" in text  # the rendered view carries the column's label
    assert XSS_SCRIPT in text and XSS_IMG in text  # raw HTML shows as text
    assert "{{ name }} ${1+1}" in text  # template syntax is not evaluated by the page
    assert "[click](javascript:window.__xss=1)" in text and "docs (http://127.0.0.1:9/docs)" in text
    assert "image: img (http://127.0.0.1:9/x.png)" in text
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__xss") == "undefined"
    every_rendering = "[id^='response-md-']"
    assert page.locator(f"{every_rendering} :is(a, img, script, iframe, object, embed, svg image)").count() == 0
    assert _bad_attributes(page, "#response-md-0 .wb-markdown") == []
    assert _bad_attributes(page, every_rendering) == []
    rendered.get_by_text("docs", exact=True).click()
    rendered.get_by_text("[click](javascript:window.__xss=1)", exact=False).click()
    page.locator("#raw-toggle input").check()
    page.locator("#raw-toggle input").uncheck()
    page.wait_for_timeout(300)
    assert page.url == server  # nothing was followed
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert not [url for url in requests_made if "127.0.0.1:9/" in url or url.endswith("/x")]


@pytest.mark.browser
@pytest.mark.slow
def test_the_raw_toggle_shows_the_exact_text_and_stays_through_steps(page):
    raw, rendered = page.locator("#response-0 textarea"), page.locator("#response-md-0")
    rendered.locator("pre code").wait_for()
    assert not raw.is_visible()
    page.locator("#raw-toggle input").check()
    raw.wait_for(state="visible")
    assert raw.input_value() == MARKDOWN.lstrip("\n")  # exactly as stored, leading blank lines trimmed
    for index in range(len(MODELS)):
        assert page.locator(f"#response-{index} textarea").is_visible()
        assert not page.locator(f"#response-md-{index}").is_visible()
    _step(page, "skip")
    assert _text(page, "instruction") == "Name a striped animal."
    assert page.locator("#raw-toggle input").is_checked()
    assert raw.is_visible() and raw.input_value() == "A horse."
    assert not rendered.is_visible()
    page.locator("#raw-toggle input").uncheck()
    rendered.wait_for(state="visible")
    assert rendered.locator(".wb-markdown").inner_text() == "A horse."
    assert not raw.is_visible()
    _step(page, "previous")
    rendered.locator("pre code").wait_for()
    assert not raw.is_visible()


@pytest.mark.browser
@pytest.mark.slow
def test_a_long_rendered_response_scrolls(page):
    body = page.locator("#response-md-1 .wb-markdown")
    body.wait_for()
    overflow, client, scroll, font = body.evaluate(
        "(element) => [getComputedStyle(element).overflowY, element.clientHeight, element.scrollHeight,"
        " parseFloat(getComputedStyle(element).fontSize)]"
    )
    assert overflow == "auto"
    assert scroll > client and client <= 25 * font  # 80 lines in a box of about 24 lines


# --- four models as a 2x2 grid ------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_four_models_form_a_two_by_two_grid_and_two_sit_side_by_side(page):
    boxes = [page.locator(f"#response-col-{index}").bounding_box() for index in range(4)]
    panel = page.locator("#review-panel").bounding_box()
    top_left, top_right, bottom_left, bottom_right = boxes
    assert abs(top_left["y"] - top_right["y"]) < 2 and abs(bottom_left["y"] - bottom_right["y"]) < 2
    assert bottom_left["y"] >= top_left["y"] + top_left["height"]
    assert abs(top_left["x"] - bottom_left["x"]) < 2 and abs(top_right["x"] - bottom_right["x"]) < 2
    assert top_right["x"] > top_left["x"] + top_left["width"] - 2
    for box in boxes:
        assert 0.4 * panel["width"] < box["width"] <= 0.5 * panel["width"]
    # the keys still walk the columns in reading order: 0, 1, then 2, 3
    _sign_in(page, "grid-keys")
    for key in "1234":
        page.keyboard.press(key)
    for index, key in enumerate("1234"):
        page.locator(f"#grade-{index} input[value='{key}']").wait_for(state="attached")
        assert page.locator(f"#grade-{index} input[value='{key}']").is_checked()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert "wb-active" in page.locator("#response-col-2").get_attribute("class")
    page.locator("#scope-dataset input").click()
    page.get_by_role("option", name="pair").click()
    _wait_for_text(page, "#item-header", "pair")
    left, right = (page.locator(f"#response-col-{index}").bounding_box() for index in range(2))
    assert abs(left["y"] - right["y"]) < 2 and right["x"] > left["x"] + left["width"] - 2
    assert not page.locator("#response-col-2").is_visible() and not page.locator("#response-col-3").is_visible()


# --- search in Queues ---------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_search_in_queues_shows_only_matching_items_and_review_steps_within_them(page):
    _open_tab(page, "Queues")
    page.locator("#queue-search textarea, #queue-search input").first.fill("zebra")
    page.locator("#queue-refresh").click()
    _wait_for_queue_rows(page, 2)
    table = page.locator("#queue-table")
    assert "Name a striped animal" in table.inner_text()
    assert "Is a zebra crossing safe?" in table.inner_text()
    assert "Explain lists" not in table.inner_text() and "Count to three" not in table.inner_text()
    table.get_by_text("Name a striped animal.").first.click()  # opens the item in Review
    page.wait_for_function("document.querySelector('#instruction textarea').value === 'Name a striped animal.'")
    _step(page, "skip")
    assert _text(page, "instruction") == "Is a zebra crossing safe?"
    _step(page, "skip")  # wraps round within the search
    assert _text(page, "instruction") == "Name a striped animal."
    _step(page, "previous")
    assert _text(page, "instruction") == "Is a zebra crossing safe?"
    _open_tab(page, "Queues")
    page.locator("#queue-search textarea, #queue-search input").first.fill("")
    page.locator("#queue-refresh").click()
    _wait_for_queue_rows(page, len(READING))
    assert "Explain lists" in page.locator("#queue-table").inner_text()


# --- Blind A/B reads the same way ---------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_blind_ab_renders_markdown_with_its_own_raw_toggle_and_no_names(page):
    _sign_in(page, "blind-reader")
    _open_tab(page, "Blind A/B")
    page.wait_for_function("document.querySelector('#blind-response-left textarea')?.value.length > 0")
    for side in ("left", "right"):
        rendered = page.locator(f"#blind-response-md-{side}")
        rendered.locator(".wb-markdown").wait_for()
        first_line = re.sub(r"[#*]", "", _text(page, f"blind-response-{side}").strip().splitlines()[0]).strip()
        assert first_line in rendered.locator(".wb-markdown").inner_text()
        assert not page.locator(f"#blind-response-{side} textarea").is_visible()
    assert _bad_attributes(page, "#blind-panel [id^='blind-response-md-']") == []
    panel = page.locator("#blind-panel").inner_html()
    assert not any(model in panel for model in MODELS)
    page.locator("#blind-raw-toggle input").check()
    page.locator("#blind-response-left textarea").wait_for(state="visible")
    assert not page.locator("#blind-response-md-left").is_visible()
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__xss") == "undefined"


# --- the store's search -------------------------------------------------------------------------------------


@pytest.fixture
def reading_store(reading_db, tmp_path):
    copy = tmp_path / "copy.db"
    copy.write_bytes(reading_db.read_bytes())
    db = store.open_db(copy)
    yield db
    db.close()


@pytest.mark.parametrize(
    ("search", "models", "expected"),
    [
        ("zebra", (), ["Name a striped animal.", "Is a zebra crossing safe?"]),  # a response, any case; an instruction
        ("zebra", MODELS[:2], ["Is a zebra crossing safe?"]),  # a response of a model out of scope does not count
        ("striped tiger", (), ["Name a striped animal."]),  # every word, each anywhere in the item
        ("striped  horse zebra", (), ["Name a striped animal."]),
        ("zebra safe", (), ["Is a zebra crossing safe?"]),
        ("SNAKE_case", (), ["How sure are you?"]),  # the input counts; '_' is a character, not a wildcard
        ("e_c", (), ["How sure are you?"]),  # not 'one cat'
        ("100%", (), ["How sure are you?"]),  # '%' is a character, not a wildcard: not '100 cats'
        ("no such words", (), []),
        ("  ", (), [item["instruction"] for item in READING]),  # blank: no filter
    ],
)
def test_search_matches_every_word_in_the_instruction_input_or_a_response_in_scope(
    reading_store, search, models, expected
):
    queue = store.QueueFilter(dataset="reading", models=models, search=search)
    rows = store.review_queue(reading_store, queue)
    assert [row["instruction"] for row in rows] == expected
    walked, current = [], store.next_item(reading_store, queue)
    while current is not None and current not in walked:
        walked.append(current)
        current = store.next_item(reading_store, queue, after=current)
    assert walked == [row["item_id"] for row in rows]
