"""Review app speed in a real browser: first item on page load, Skip to the next item, grade to SQLite, and the
campaign views (the next item a campaign hands out, the adjudication queue, campaign progress).

A reviewer waits on two things: the first item after opening the page, and the next item after every Skip.
Both are measured in headless Chromium (Playwright) against ``workbench.app`` over databases of 100, 2,000 and
20,000 items x 4 models x 3 judges, with 5 reviewers' grades on 10 % of the responses each. The databases are
built with the project's own importers (``importing.import_path`` and ``import_scores``), as a user would,
and cached in ``--out-db-dir``; every run measures a fresh copy, so the grades it writes never accumulate.

Times are taken inside the page: ``performance.now()`` just before ``element.click()``, then a
MutationObserver plus a 4 ms poll until ``#instruction textarea`` holds new text (a textarea's value is a
property, not an attribute, so the poll is what sees it; the observer catches the same render flush early).
First load is ``performance.now()`` when the first instruction appears, which counts from navigation start.
Grading is the time from a click on the first grade button until the row is in SQLite (polled from Python);
when a click alone stores nothing within ``--autosave-wait`` s, the app needs Save, and the time is measured
from the Save click instead (the report says which).

The peer, in the same run and browser: Gradio's floor, a minimal ``gr.Blocks`` whose one button rewrites 12
textboxes of 50 words (about the text one navigation rewrites: instruction, input, reference, four responses
and their comments), with no work in its handler. Its clicks are interleaved one for one with ours, so the
machine's noise hits both. Each click also reports when the event finished (no Gradio status tracker busy):
until then Gradio drops a new click on the same button (``trigger_mode="once"``), so a fast ``k`` is lost.
Targets (at 2,000 items): first item within 2 s of page load; Skip at most 150 ms median and 300 ms p95.

Campaign views, on a copy of the same database with a campaign (4 models, overlap 2) half done by five other
reviewers, 10 % of the finished items with grades two or more apart, and the same targets: in the Review tab
with the campaign picked, Skip (the campaign hands out the next open item) and "grade all four, then n" (the
grades, the completion and the next assignment); in Adjudication, "set the final grades, then Save and next";
in Campaigns, Refresh of the progress while another reviewer finishes an item between clicks. Each is
interleaved one for one with the floor's clicks.

    python benchmarks/bench_app.py [--sizes 100 2000 20000] [--navigations 30] [--json out.json]
    python benchmarks/bench_app.py --build-only --sizes 2000 20000      # time the database builder only
    python benchmarks/bench_app.py --sizes 2000 --only campaign             # only the campaign views
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from tests.workbench.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from workbench import importing, store  # noqa: E402

TARGET_SIZE = 2000
TARGET_FIRST_LOAD_S = 2.0
TARGET_MEDIAN_MS = 150.0
TARGET_P95_MS = 300.0
FLOOR_BOXES = 12
WORDS_PER_TEXT = 50
GRADE_SHARE = 0.10  # of all responses, per reviewer
BUILDER_VERSION = 1  # bump when build_db changes, so cached databases are rebuilt
CAMPAIGN_VERSION = 1  # likewise for campaign_db
CAMPAIGN = "bench campaign"
CAMPAIGNERS = [f"campaigner-{index + 1}" for index in range(5)]
DISAGREEMENT_SHARE = 0.10
SAMPLE = REPO / "datasets" / "instruction-sample.json"

# Gradio's status trackers carry these classes while an event runs on the components they cover.
BUSY_SELECTOR = "[data-testid=status-tracker].pending, [data-testid=status-tracker].generating"

# Resolves with {ms, idle_ms} once `selector`'s value differs from its value before the click (ms) and then no
# status tracker is busy any more (idle_ms: the event has finished, so the button takes a new click), or with
# {ms: null} after `timeout` ms. The observer reacts to the render flush that writes the new text; the 4 ms
# poll is the fallback (a textarea's value is not an attribute, so no mutation may announce it).
CLICK_AND_WAIT_JS = """
async ([selector, button, busy, timeout]) => {
  const value = () => {  // a textarea's value, or the text of any other element (a Markdown block)
    const element = document.querySelector(selector);
    return element ? (element.value ?? element.innerText) : undefined;
  };
  const before = value();
  const target = document.querySelector(button);
  if (!target) return {ms: null, error: `no element ${button}`};
  return await new Promise((resolve) => {
    let ms = null, done = false;
    const observer = new MutationObserver(() => check());
    const finish = (result) => { done = true; observer.disconnect(); resolve(result); };
    const check = () => {
      if (done) return;
      const elapsed = performance.now() - start;
      if (ms === null) {
        const now = value();
        if (now !== undefined && now !== before) ms = elapsed;
      }
      if (ms !== null && !document.querySelector(busy)) finish({ms, idle_ms: elapsed});
      else if (elapsed > timeout) finish({ms, idle_ms: null, error: ms === null ? 'timeout' : 'still busy'});
    };
    const poll = () => { check(); if (!done) setTimeout(poll, 4); };
    observer.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
    const start = performance.now();
    target.click();
    poll();
  });
}
"""

# What the app's status lines say, to explain a click that changed nothing.
STATUS_LINES_JS = """
[...document.querySelectorAll('#save-status, #adj-status, #campaign-status, #item-header')]
  .map((element) => element.innerText.trim()).filter(Boolean).join(' | ')
"""

# Installed before the page's own scripts: records performance.now() (ms since navigation start) when the first
# instruction appears.
FIRST_ITEM_JS = """
(() => {
  const poll = () => {
    const value = document.querySelector('#instruction textarea')?.value;
    if (value) window.__firstItemMs = performance.now();
    else setTimeout(poll, 4);
  };
  poll();
})();
"""


# --- the database ---------------------------------------------------------------------------------------


def _vocabulary() -> list[str]:
    """Real words from the bundled sample, so responses look like text to the browser's layout."""
    words = {
        word
        for entry in json.loads(SAMPLE.read_text(encoding="utf-8"))
        for value in entry.values()
        if isinstance(value, str)
        for word in value.split()
    }
    return sorted(words)


def build_db(path: str | Path, items: int, models: int = 4, judges: int = 3, reviewers: int = 5, seed: int = 0) -> dict:
    """A review database of ``items`` items built through the importers, as a user would build one.

    One JSON file with ``models`` response keys (~50 words each) goes through ``import_path``; each judge's
    0-100 scores for each model through ``import_scores``; each reviewer grades ``GRADE_SHARE`` of all
    responses (1-5) in one transaction. Returns the counts and seconds per phase.
    """
    path = Path(path)
    rng = random.Random(seed)
    vocabulary = _vocabulary()
    model_names = [f"model-{chr(ord('a') + index)}" for index in range(models)]
    timings: dict[str, float] = {}

    def text(words: int) -> str:
        return " ".join(rng.choices(vocabulary, k=words))

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        entries = []
        for index in range(items):
            # unique instructions: a navigation is seen as done when the instruction's text changes
            entry = {"instruction": f"Item {index + 1}: {text(12)}", "input": text(8) if index % 3 else ""}
            entry["output"] = text(WORDS_PER_TEXT)
            entry.update({name: text(rng.randint(40, 60)) for name in model_names})
            entries.append(entry)
        data_file = Path(tmp) / f"bench-{items}.json"
        data_file.write_text(json.dumps(entries), encoding="utf-8")
        score_files = []
        for judge in range(judges):
            for name in model_names:
                score_file = Path(tmp) / f"judge-{judge + 1}-{name}.json"
                score_file.write_text(json.dumps([rng.randint(0, 100) for _ in range(items)]), encoding="utf-8")
                score_files.append((f"judge-{judge + 1}", name, score_file))
        timings["write_files_s"] = time.perf_counter() - start

        db = store.open_db(path)
        try:
            start = time.perf_counter()
            summary = importing.import_path(db, data_file)
            timings["import_responses_s"] = time.perf_counter() - start
            start = time.perf_counter()
            for judge, name, score_file in score_files:
                importing.import_scores(db, score_file, judge=judge, response_key=name, dataset=summary.dataset)
            timings["import_scores_s"] = time.perf_counter() - start
            start = time.perf_counter()
            response_ids = [
                response_id
                for name in model_names
                for response_id in store.response_ids_by_item(db, name, summary.dataset).values()
            ]
            per_reviewer = round(len(response_ids) * GRADE_SHARE)
            with store.transaction(db):
                for reviewer in range(reviewers):
                    for response_id in rng.sample(response_ids, per_reviewer):
                        store.add_grade(db, response_id, f"reviewer-{reviewer + 1}", rng.randint(1, 5))
            timings["grades_s"] = time.perf_counter() - start
        finally:
            db.close()  # the last connection checkpoints the WAL, so the .db file alone is complete
    return {
        "items": items,
        "models": models,
        "judges": judges,
        "reviewers": reviewers,
        "responses": len(response_ids),
        "judge_scores": len(response_ids) * judges,
        "grades": per_reviewer * reviewers,
        **timings,
    }


def cached_db(out_dir: Path, items: int, seed: int = 0) -> tuple[Path, dict | None]:
    """The database of ``items`` items from ``out_dir``, built first if missing (then with its build record)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench-app-{items}-s{seed}-v{BUILDER_VERSION}.db"
    if path.is_file():
        return path, None
    partial = path.with_name(path.name + ".building")
    for leftover in out_dir.glob(partial.name + "*"):
        leftover.unlink()
    start = time.perf_counter()
    record = build_db(partial, items, seed=seed)
    record["build_s"] = time.perf_counter() - start
    partial.replace(path)  # only a finished build is ever cached
    print(
        f"built {items:,} items ({record['responses']:,} responses, {record['judge_scores']:,} judge scores, "
        f"{record['grades']:,} grades) in {record['build_s']:.1f} s: files {record['write_files_s']:.1f} s, "
        f"import {record['import_responses_s']:.1f} s, scores {record['import_scores_s']:.1f} s, "
        f"grades {record['grades_s']:.1f} s, {path.stat().st_size / 1e6:.0f} MB",
        flush=True,
    )
    return path, record


def campaign_db(out_dir: Path, items: int, base: Path, seed: int = 0) -> Path:
    """A copy of ``base`` with a campaign over all its items and models (overlap 2), half done: two of five
    reviewers graded every response of each item of the first half, 10 % of those items two grades apart.
    Built through the store (``create_campaign``, ``next_assignment``, ``save_marks``), cached beside ``base``."""
    path = out_dir / f"bench-campaign-{items}-s{seed}-v{BUILDER_VERSION}.{CAMPAIGN_VERSION}.db"
    if path.is_file():
        return path
    partial = path.with_name(path.name + ".building")
    shutil.copyfile(base, partial)
    start = time.perf_counter()
    rng = random.Random(seed)
    db = store.open_db(partial)
    try:
        dataset = store.dataset_names(db)[0]
        models = store.models_with_responses(db, dataset)
        store.create_campaign(db, CAMPAIGN, dataset=dataset, models=models, overlap=2, guidelines="# Grade facts")
        first_grades: dict[str, int] = {}
        with store.transaction(db):
            for _ in range(items):  # two reviews per item, handed out in order: the first half gets both
                reviewer = rng.choice(CAMPAIGNERS)
                item = store.next_assignment(db, CAMPAIGN, reviewer)
                if item is None:
                    continue
                if item in first_grades:  # the second reviewer: two grades apart on some items
                    grade = first_grades[item] + (2 if rng.random() < DISAGREEMENT_SHARE else 0)
                else:
                    grade = first_grades[item] = rng.randint(1, 3)
                complete_item(db, reviewer, item, models, grade)
    finally:
        db.close()
    partial.replace(path)
    print(f"built the campaign on {items:,} items in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def complete_item(db, reviewer: str, item: str, models: list[str], grade: int) -> None:
    """One reviewer grades every response of an item, as the Review tab's autosave stores it."""
    view = store.item_view(db, item, models, reviewer)
    marks = [store.Mark(row["response_id"], row["model"], grade) for row in view["responses"]]
    store.save_marks(db, reviewer, item, marks, None)


# --- the two apps ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ours(db_path: Path):
    """The review app over ``db_path``, as ``workbench serve`` starts it; returns (blocks, url, start seconds)."""
    from workbench import app

    start = time.perf_counter()
    blocks = app.build_app(db_path, notice=None)
    port = _free_port()
    app.launch(blocks, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    return blocks, f"http://127.0.0.1:{port}/", time.perf_counter() - start


def close(blocks) -> None:
    """Stop a Gradio server without its "Closing server" line in the middle of the report."""
    with contextlib.redirect_stdout(io.StringIO()):
        blocks.close()


def start_floor(seed: int = 0):
    """Gradio's floor: one button rewrites 12 textboxes of ~50 words, no database, no work in the handler."""
    import gradio as gr

    rng = random.Random(seed)
    vocabulary = _vocabulary()
    pages = [[" ".join(rng.choices(vocabulary, k=WORDS_PER_TEXT)) for _ in range(FLOOR_BOXES)] for _ in range(64)]

    def next_page(counter: int):
        counter = (counter + 1) % len(pages)
        return [counter, *(f"{counter} {text}" for text in pages[counter])]

    with gr.Blocks(title="Gradio floor") as blocks:
        counter = gr.State(0)
        boxes = [
            gr.Textbox(
                value=pages[0][index], label=f"Text {index}", interactive=False, lines=2, elem_id=f"floor-{index}"
            )
            for index in range(FLOOR_BOXES)
        ]
        gr.Button("Next", elem_id="floor-next").click(next_page, inputs=counter, outputs=[counter, *boxes])
    port = _free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    return blocks, f"http://127.0.0.1:{port}/"


# --- measuring -------------------------------------------------------------------------------------------


class Tab:
    """One browser page of an app, a button on it and the text that button changes.

    Gradio drops a button's click while that button's previous event is still pending (``trigger_mode="once"``)
    and new text shows a few ms before the event completes, so every click first waits until the page is idle:
    no status tracker busy and no request in flight (Gradio's event stream included).
    """

    def __init__(self, page, text: str, button: str, timeout_s: float) -> None:
        self.page, self.text, self.button, self.timeout_s = page, text, button, timeout_s
        self.in_flight: set = set()  # Gradio's event requests (join, event stream); not its heartbeat stream
        page.on("request", self._started)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)

    def _started(self, request) -> None:
        if "/queue/" in request.url:
            self.in_flight.add(request)

    def _ended(self, request) -> None:
        self.in_flight.discard(request)

    def wait_until_idle(self) -> None:
        self.page.wait_for_function(
            "(busy) => !document.querySelector(busy)", arg=BUSY_SELECTOR, timeout=self.timeout_s * 1000, polling=5
        )
        deadline = time.perf_counter() + self.timeout_s
        while self.in_flight and time.perf_counter() < deadline:
            self.page.wait_for_timeout(5)
        self.page.wait_for_timeout(20)

    def click_and_wait(self) -> tuple[float | None, float | None]:
        """Milliseconds from the button's click until the text changes, and until the event has also finished
        (the button takes clicks again), measured in the page; None on timeout."""
        self.wait_until_idle()
        self.page.bring_to_front()
        result = self.page.evaluate(CLICK_AND_WAIT_JS, [self.text, self.button, BUSY_SELECTOR, self.timeout_s * 1000])
        if result.get("error"):
            said = self.page.evaluate(STATUS_LINES_JS)
            print(f"  {self.button}: {result['error']}; the page says: {said}", flush=True)
        return result["ms"], result["idle_ms"]


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (of 30 values, the second largest)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


def summary(values: Sequence[float]) -> dict:
    if not values:
        return {"n": 0, "median_ms": None, "p95_ms": None, "max_ms": None}
    return {"n": len(values), "median_ms": statistics.median(values), "p95_ms": p95(values), "max_ms": max(values)}


def _max_grade_id(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT COALESCE(MAX(id), 0) FROM grades").fetchone()[0]


def _wait_for_grade(db_path: Path, after_id: int, reviewer: str, timeout_s: float) -> bool:
    """Poll SQLite every 2 ms until ``reviewer`` has a grade row newer than ``after_id``."""
    deadline = time.perf_counter() + timeout_s
    with sqlite3.connect(db_path) as conn:
        while time.perf_counter() < deadline:
            row = conn.execute(
                "SELECT 1 FROM grades g JOIN reviewers r ON r.id = g.reviewer_id WHERE g.id > ? AND r.name = ?",
                [after_id, reviewer],
            ).fetchone()
            if row:
                return True
            time.sleep(0.002)
    return False


def sign_in(ours: Tab, reviewer: str) -> None:
    """Type a reviewer name and leave the field; the app then re-renders the open item for that reviewer."""
    field = ours.page.locator("#reviewer-name textarea, #reviewer-name input").first
    field.fill(reviewer)
    field.blur()
    ours.page.wait_for_timeout(200)  # let the blur's event start before waiting for it to end
    ours.wait_until_idle()


def measure_loads(browser, url: str, timeout_s: float, reloads: int) -> dict:
    """Cold first load in a fresh context (empty HTTP cache), then ``reloads`` warm reloads; seconds."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(FIRST_ITEM_JS)
    page = context.new_page()
    times, walls = [], []
    try:
        for attempt in range(1 + reloads):
            start = time.perf_counter()
            if attempt == 0:
                page.goto(url, wait_until="commit")
            else:
                page.reload(wait_until="commit")
            page.wait_for_function("window.__firstItemMs !== undefined", timeout=timeout_s * 1000, polling=10)
            walls.append(time.perf_counter() - start)
            times.append(page.evaluate("window.__firstItemMs") / 1000)
    finally:
        context.close()
    return {
        "first_load_s": times[0],
        "first_load_wall_s": walls[0],
        "reload_s": statistics.median(times[1:]) if reloads else None,
    }


def measure_size(browser, floor: Tab, db_path: Path, args, size: int) -> dict:
    """Loads, navigations (interleaved with the floor's) and grades of one database size."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / db_path.name
        shutil.copyfile(db_path, copy)
        blocks, url, start_s = start_ours(copy)
        try:
            result = {"items": size, "app_start_s": start_s}
            result.update(measure_loads(browser, url, args.load_timeout, args.reloads))
            reload = f", warm reload {result['reload_s']:.2f} s" if result["reload_s"] is not None else ""
            print(
                f"  first item {result['first_load_s']:.2f} s after page load (cold cache){reload}; "
                f"app built and started in {start_s:.2f} s",
                flush=True,
            )
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(args.nav_timeout * 1000)
            page = context.new_page()
            ours = Tab(page, "#instruction textarea", "#skip", args.nav_timeout)
            try:
                page.goto(url)
                page.wait_for_function("document.querySelector('#instruction textarea')?.value.length > 0")
                reviewer = f"bench-{os.getpid()}"
                sign_in(ours, reviewer)
                result.update(navigate(ours, floor, args))
                result.update(grade(ours, copy, reviewer, args))
                save_next = Tab(page, "#instruction textarea", "#save-next", args.nav_timeout)
                rng = random.Random(2)

                def grade_all_then_next():
                    page.evaluate(GRADE_ALL_JS, str(rng.randint(1, 5)))
                    save_next.wait_until_idle()  # the grades' autosaves have run: the step is measured alone
                    return save_next.click_and_wait()

                result["grade_next"] = interleave(grade_all_then_next, floor, args)
            finally:
                context.close()
        finally:
            close(blocks)
    return result


def navigate(ours: Tab, floor: Tab, args) -> dict:
    """``--navigations`` Skips, each followed by one click of the floor's button; stops early past the budget."""
    times, idle, floor_times, floor_idle, failures = [], [], [], [], 0
    budget_end = time.perf_counter() + args.budget
    # the first Skips of a page also warm Chromium and the server, as the floor's warm-up clicks do; kept apart
    warmup = [ours.click_and_wait()[0] for _ in range(args.warmup)]
    for index in range(args.navigations):
        ms, idle_ms = ours.click_and_wait()
        if ms is None:
            failures += 1
            print(f"  navigation {index + 1}: no new item within {args.nav_timeout:.0f} s", flush=True)
            if failures >= 2:
                break
            continue
        times.append(ms)
        idle.append(idle_ms)
        floor_ms, floor_idle_ms = floor.click_and_wait()
        if floor_ms is not None:
            floor_times.append(floor_ms)
            floor_idle.append(floor_idle_ms)
        if time.perf_counter() > budget_end and index + 1 < args.navigations:
            print(f"  stopped after {index + 1} navigations: --budget {args.budget:.0f} s spent", flush=True)
            break
    # the floor's clicks are cheap: top them up to --navigations so its median and p95 stay comparable
    while len(floor_times) < args.navigations:
        floor_ms, floor_idle_ms = floor.click_and_wait()
        if floor_ms is None:
            break
        floor_times.append(floor_ms)
        floor_idle.append(floor_idle_ms)

    def idle_median(values: list) -> float | None:
        values = [value for value in values if value is not None]
        return statistics.median(values) if values else None

    return {
        "navigation": {
            **summary(times),
            "idle_median_ms": idle_median(idle),
            "failures": failures,
            "all_ms": times,
            "warmup_ms": warmup,
        },
        "floor": {**summary(floor_times), "idle_median_ms": idle_median(floor_idle), "all_ms": floor_times},
    }


def grade(ours: Tab, db_path: Path, reviewer: str, args) -> dict:
    """Click to row in SQLite: the first grade button of response A on ``--grades`` new items."""
    times, mode, page = [], None, ours.page
    for _ in range(args.grades):
        if ours.click_and_wait()[0] is None:
            break
        ours.wait_until_idle()
        before = _max_grade_id(db_path)
        start = time.perf_counter()
        clicked = page.evaluate(
            "(() => { const radio = document.querySelector('#grade-0 input[type=radio]');"
            " if (!radio) return false; radio.click(); return true; })()"
        )
        if not clicked:
            print("  no #grade-0 radio button: grading not measured", flush=True)
            break
        if mode != "save" and _wait_for_grade(db_path, before, reviewer, args.autosave_wait):
            mode = "click"
        else:
            mode = "save"
            ours.wait_until_idle()
            start = time.perf_counter()
            page.evaluate("document.querySelector('#save').click()")
            if not _wait_for_grade(db_path, before, reviewer, args.nav_timeout):
                print(f"  grade not stored within {args.nav_timeout:.0f} s of Save", flush=True)
                break
        times.append((time.perf_counter() - start) * 1000)
    label = {"click": "grade click to row", "save": "Save click to row (a grade click alone stores nothing)"}
    return {"grade": {**summary(times), "mode": mode, "what": label.get(mode)}}


# --- campaign views --------------------------------------------------------------------------------------

GRADE_ALL_JS = """
(value) => {
  const radios = [...document.querySelectorAll(`[id^="grade-"] input[value="${value}"]`)]
    .filter((radio) => radio.offsetParent !== null);
  radios.forEach((radio) => radio.click());
  return radios.length;
}
"""
FINAL_GRADES_JS = GRADE_ALL_JS.replace('[id^="grade-"]', '[id^="adj-grade-"]')
CAMPAIGN_VIEWS = {
    "campaign_skip": "campaign Skip (next item handed out)",
    "campaign_grade_next": "campaign: grade all, then n",
    "campaign_progress": "Campaigns tab: refresh progress",
    "adjudication": "Adjudication: final grades, then Save and next",
    "adjudication_queue": "Adjudication: Show the queue (one item fewer each time)",
}


def interleave(step, floor: Tab, args) -> dict:
    """``--navigations`` runs of ``step`` (a callable returning click_and_wait's pair, or None when there is
    nothing left to do), each followed by one click of the floor's button; warm-up runs reported apart."""
    times, floor_times = [], []
    warmup = []
    for _ in range(args.warmup):
        result = step()
        warmup.append(result[0] if result else None)
    budget_end = time.perf_counter() + args.budget
    for _ in range(args.navigations):
        result = step()
        if result is None or result[0] is None:
            break
        times.append(result[0])
        floor_ms, _ = floor.click_and_wait()
        if floor_ms is not None:
            floor_times.append(floor_ms)
        if time.perf_counter() > budget_end:
            break
    return {**summary(times), **drift(times), "warmup_ms": warmup, "all_ms": times, "floor": summary(floor_times)}


def drift(times: Sequence[float]) -> dict:
    """Median of the last third over the first third: a page that slows as the reviewer works shows here
    (Gradio's run history once took a step from 60 to 200 ms over 20 graded items)."""
    third = len(times) // 3
    if third < 3:
        return {"drift": None}
    return {"drift": statistics.median(times[-third:]) / statistics.median(times[:third])}


def measure_campaign(browser, floor: Tab, db_path: Path, args, size: int) -> dict:
    """The campaign views on a copy of the campaign database: Review with the campaign picked, Campaigns'
    progress while another reviewer finishes items, and Adjudication."""
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / db_path.name
        shutil.copyfile(db_path, copy)
        blocks, url, _ = start_ours(copy)
        other = store.open_db(copy)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(args.nav_timeout * 1000)
        page = context.new_page()
        try:
            page.goto(url)
            page.wait_for_function("/Enter your name/.test(document.querySelector('#save-status')?.innerText ?? '')")
            skip = Tab(page, "#instruction textarea", "#skip", args.nav_timeout)
            sign_in(skip, f"bench-{os.getpid()}")
            page.wait_for_function("document.querySelector('#instruction textarea')?.value.length > 0")
            results = {"items": size, "campaign_skip": interleave(skip.click_and_wait, floor, args)}

            grade_next = Tab(page, "#instruction textarea", "#save-next", args.nav_timeout)

            def grade_then_next():
                page.evaluate(GRADE_ALL_JS, str(rng.randint(1, 5)))
                grade_next.wait_until_idle()  # the grades' autosaves have run: the step measures the handing out
                return grade_next.click_and_wait()

            results["campaign_grade_next"] = interleave(grade_then_next, floor, args)

            page.get_by_role("tab", name="Campaigns").click()
            page.wait_for_function("document.querySelector('#campaign-progress')?.innerText.length > 0")
            # the rendered text itself: the block around it also holds the status tracker's "processing" text
            refresh = Tab(page, "#campaign-progress [data-testid=markdown]", "#campaign-refresh", args.nav_timeout)
            models = store.get_campaign(other, CAMPAIGN).models

            def someone_finishes_then_refresh():
                reviewer = rng.choice(CAMPAIGNERS)
                item = store.next_assignment(other, CAMPAIGN, reviewer)
                if item is None:
                    return None
                complete_item(other, reviewer, item, list(models), rng.randint(1, 5))
                return refresh.click_and_wait()

            results["campaign_progress"] = interleave(someone_finishes_then_refresh, floor, args)

            page.get_by_role("tab", name="Adjudication").click()
            page.wait_for_function("document.querySelector('#adj-instruction textarea')?.value.length > 0")
            page.wait_for_timeout(500)  # the response columns were hidden until now: let their radios mount
            adjudicate = Tab(page, "#adj-instruction textarea", "#adj-save-next", args.nav_timeout)

            def final_grades_then_next():
                if not page.evaluate("document.querySelector('#adj-instruction textarea')?.value"):
                    return None  # the list is done
                page.evaluate(FINAL_GRADES_JS, str(rng.randint(1, 5)))
                adjudicate.wait_until_idle()
                return adjudicate.click_and_wait()

            results["adjudication"] = interleave(final_grades_then_next, floor, args)

            # the table's rows, not the block around them (its status tracker has text of its own)
            show = Tab(page, "#adj-queue .table-container", "#adj-refresh", args.nav_timeout)

            def resolve_one_then_show():
                if not page.evaluate("document.querySelector('#adj-instruction textarea')?.value"):
                    return None
                page.evaluate(FINAL_GRADES_JS, str(rng.randint(1, 5)))
                adjudicate.wait_until_idle()
                adjudicate.click_and_wait()  # not timed: the item is resolved, so the queue loses a row
                return show.click_and_wait()

            results["adjudication_queue"] = interleave(resolve_one_then_show, floor, args)
        finally:
            context.close()
            other.close()
            close(blocks)
    return results


def print_view(label: str, view: dict, items: int) -> None:
    """One interleaved series: median, p95, max against the targets, the floor's median and the drift."""
    target_note = "" if items == TARGET_SIZE else f" (targets set at {TARGET_SIZE:,} items)"
    floor = view["floor"]
    ratio = view["median_ms"] / floor["median_ms"] if view["median_ms"] and floor["median_ms"] else None
    view["ratio_median"] = ratio
    met = [
        "met" if value is not None and value <= target else "not met"
        for value, target in ((view["median_ms"], TARGET_MEDIAN_MS), (view["p95_ms"], TARGET_P95_MS))
    ]
    ratio_text = f"; floor {_ms(floor['median_ms'])} ms, ours / floor {ratio:.2f}x" if ratio else ""
    drift_text = f"; last third / first third {view['drift']:.2f}x" if view.get("drift") else ""
    print(
        f"  {label}, {view['n']} runs: median {_ms(view['median_ms'])} ms, p95 {_ms(view['p95_ms'])} ms, "
        f"max {_ms(view['max_ms'])} ms; targets {met[0]} / {met[1]}{target_note}{ratio_text}{drift_text}"
    )


def print_campaign(result: dict) -> None:
    for key, label in CAMPAIGN_VIEWS.items():
        print_view(label, result[key], result["items"])
    print(flush=True)


def print_campaign_growth(results: list[dict]) -> None:
    print("campaign views, median / p95 ms by size:")
    header = ["items", *CAMPAIGN_VIEWS]
    rows = [
        [f"{result['items']:,}"]
        + [f"{_ms(result[key]['median_ms'])} / {_ms(result[key]['p95_ms'])}" for key in CAMPAIGN_VIEWS]
        for result in results
    ]
    widths = [max(len(column), *(len(row[index]) for row in rows)) for index, column in enumerate(header)]
    for row in [header, *rows]:
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


# --- report ----------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def verdict(result: dict) -> dict:
    nav = result["navigation"]
    checks = {
        "first_load": result["first_load_s"] <= TARGET_FIRST_LOAD_S,
        "median": nav["median_ms"] is not None and nav["median_ms"] <= TARGET_MEDIAN_MS,
        "p95": nav["p95_ms"] is not None and nav["p95_ms"] <= TARGET_P95_MS,
    }
    return {name: "met" if ok else "not met" for name, ok in checks.items()}


def print_size(result: dict) -> None:
    nav, floor, graded = result["navigation"], result["floor"], result["grade"]
    ratio = nav["median_ms"] / floor["median_ms"] if nav["median_ms"] and floor["median_ms"] else None
    result["ratio_median"] = ratio
    checks = result["targets"] = verdict(result)
    target_note = "" if result["items"] == TARGET_SIZE else f" (the targets are set at {TARGET_SIZE:,} items)"
    print(f"  first item: {result['first_load_s']:.2f} s, target <= {TARGET_FIRST_LOAD_S:g} s: {checks['first_load']}")
    warmup = ", ".join(_ms(ms) for ms in nav["warmup_ms"])
    warmup = f" after {len(nav['warmup_ms'])} unmeasured ({warmup} ms)" if warmup else ""
    print(
        f"  Skip, {nav['n']} navigations{warmup}: "
        f"median {_ms(nav['median_ms'])} ms, p95 {_ms(nav['p95_ms'])} ms, max {_ms(nav['max_ms'])} ms; "
        f"targets <= {TARGET_MEDIAN_MS:g} / {TARGET_P95_MS:g} ms: "
        f"{checks['median']} / {checks['p95']}{target_note}"
    )
    print(
        f"  event finished (Skip takes a new click) after median {_ms(nav['idle_median_ms'])} ms; "
        f"the floor's {_ms(floor['idle_median_ms'])} ms"
    )
    print(
        f"  Gradio floor, {floor['n']} clicks: median {_ms(floor['median_ms'])} ms, p95 {_ms(floor['p95_ms'])} ms; "
        f"ours / floor (medians) {ratio:.2f}x"
        if ratio
        else f"  Gradio floor: median {_ms(floor['median_ms'])} ms"
    )
    if graded["n"]:
        print(f"  grading, {graded['n']} grades: median {_ms(graded['median_ms'])} ms, {graded['what']}")
    print_view("grade every response, then n (Save and next)", result["grade_next"], result["items"])
    print(flush=True)


def print_growth(results: list[dict], builds: dict[int, dict]) -> None:
    """One row per size, and how much each figure grew from the previous size."""
    columns = [
        "items",
        "build s",
        "first load s",
        "Skips",
        "median",
        "p95",
        "max",
        "floor median",
        "ours/floor",
        "grade",
        "grade all, n",
    ]
    rows = []
    for result in results:
        nav, build = result["navigation"], builds.get(result["items"], {})
        rows.append(
            [
                f"{result['items']:,}",
                f"{build['build_s']:.1f}" if build.get("build_s") else "cached",
                f"{result['first_load_s']:.2f}",
                str(nav["n"]),
                _ms(nav["median_ms"]),
                _ms(nav["p95_ms"]),
                _ms(nav["max_ms"]),
                _ms(result["floor"]["median_ms"]),
                f"{result['ratio_median']:.2f}x" if result.get("ratio_median") else "-",
                _ms(result["grade"]["median_ms"]),
                f"{_ms(result['grade_next']['median_ms'])} / {_ms(result['grade_next']['p95_ms'])}",
            ]
        )
    widths = [max(len(column), *(len(row[index]) for row in rows)) for index, column in enumerate(columns)]
    print("how cost grows with size (times in ms unless marked s):")
    for row in [columns, *rows]:
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    for before, after in zip(results, results[1:], strict=False):
        factor = after["items"] / before["items"]
        parts = [f"first load x{after['first_load_s'] / before['first_load_s']:.2f}"]
        if before["navigation"]["median_ms"] and after["navigation"]["median_ms"]:
            parts.append(f"Skip median x{after['navigation']['median_ms'] / before['navigation']['median_ms']:.2f}")
        print(f"  {before['items']:,} -> {after['items']:,} items (x{factor:g}): " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 2000, 20000], help="items per database")
    parser.add_argument("--navigations", type=int, default=30, help="Skips measured per size")
    parser.add_argument("--warmup", type=int, default=2, help="Skips before the measured ones (reported apart)")
    parser.add_argument("--grades", type=int, default=10, help="grade clicks measured per size")
    parser.add_argument(
        "--out-db-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "workbench-bench-app",
        help="where built databases are cached, one per size",
    )
    parser.add_argument("--json", type=Path, help="write every result to this file")
    parser.add_argument("--build-only", action="store_true", help="build (or find) the databases and stop")
    parser.add_argument("--rebuild", action="store_true", help="build the databases even if cached")
    parser.add_argument("--nav-timeout", type=float, default=60.0, help="seconds one navigation may take")
    parser.add_argument("--load-timeout", type=float, default=300.0, help="seconds the first load may take")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds of navigations per size, at most")
    parser.add_argument("--reloads", type=int, default=2, help="warm reloads measured after the cold load")
    parser.add_argument("--autosave-wait", type=float, default=3.0, help="seconds to wait for a grade without Save")
    parser.add_argument(
        "--only", choices=["review", "campaign"], help="measure only the Review tab, or only the campaign views"
    )
    args = parser.parse_args()

    builds: dict[int, dict] = {}
    paths: dict[int, Path] = {}
    campaign_paths: dict[int, Path] = {}
    for size in args.sizes:
        if args.rebuild:
            for old in args.out_db_dir.glob(f"bench-app-{size}-*.db"):
                old.unlink()
        paths[size], record = cached_db(args.out_db_dir, size)
        if record:
            builds[size] = record
        else:
            print(f"using cached {paths[size]}", flush=True)
        if args.only != "review":
            campaign_paths[size] = campaign_db(args.out_db_dir, size, paths[size])
    output: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "builds": builds,
    }
    if args.build_only:
        if args.json:
            args.json.write_text(json.dumps(output, indent=2), encoding="utf-8")
        return

    import gradio
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        sys.exit(f"error: {CHROMIUM} not installed (apt-get install chromium)")
    results, campaign_results = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        output["machine"].update(gradio=gradio.__version__, chromium=browser.version)
        floor_blocks, floor_url = start_floor()
        floor_context = browser.new_context(viewport={"width": 1400, "height": 1000})
        floor_page = floor_context.new_page()
        floor = Tab(floor_page, "#floor-0 textarea", "#floor-next", args.nav_timeout)
        floor_page.goto(floor_url)
        floor_page.wait_for_function("document.querySelector('#floor-0 textarea')?.value.length > 0")
        try:
            for _ in range(max(args.warmup, 1)):  # warm the floor's server and page as ours is warmed
                floor.click_and_wait()
            for size in args.sizes:
                print(f"{size:,} items ({paths[size].name}):", flush=True)
                try:
                    if args.only != "campaign":
                        result = measure_size(browser, floor, paths[size], args, size)
                        print_size(result)
                        results.append(result)
                    if args.only != "review":
                        result = measure_campaign(browser, floor, campaign_paths[size], args, size)
                        print_campaign(result)
                        campaign_results.append(result)
                except PlaywrightError as exc:  # e.g. a first load past --load-timeout: report it, go on
                    print(f"  gave up on {size:,} items: {str(exc).splitlines()[0]}\n", flush=True)
                    output.setdefault("failed", {})[size] = str(exc)
                    continue
        finally:
            floor_context.close()
            close(floor_blocks)
            browser.close()
    print(f"Chromium {output['machine']['chromium']}, Gradio {output['machine']['gradio']}, {os.cpu_count()} CPUs")
    if results:
        print_growth(results, builds)
    if campaign_results:
        print_campaign_growth(campaign_results)
    if args.json:
        output["results"] = results
        output["campaign_results"] = campaign_results
        args.json.write_text(json.dumps(output, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
