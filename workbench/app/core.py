"""What every tab of the review app shares: the database, who is asking and what they may see, escaping,
tables and the agreement rows that Review and Calibration both show.

Everything that comes from data (instructions, responses, rationales, names, file names in errors) reaches
the page as text: Textbox and Dataframe values, HTML/Markdown built with ``html.escape``, or Markdown rendered by
``markdown.safe_markdown`` (no raw HTML, no links, no images; sanitised by nh3). The app shows no
pop-ups: a refusal (``Refused``) is written into the tab's own status line by ``inline``, escaped, and stays.
"""

from __future__ import annotations

import functools
import html
import random
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import sqlite_utils

from workbench import analysis, stats, store
from workbench.app.markdown import safe_markdown

MAX_COLUMNS = 4  # responses side by side
LETTERS = "ABCD"
ADMIN, REVIEWER = "admin", "reviewer"
GRADE_ANCHORS = {
    1: "wrong or unusable",
    2: "poor: major errors",
    3: "partly right",
    4: "good: minor issues",
    5: "excellent",
}
GRADE_CHOICES = [(f"{score} · {anchor}", score) for score, anchor in GRADE_ANCHORS.items()]
# Bootstrap resamples: few for the reviewer's own running agreement (its intervals are not shown); where the
# intervals are shown, as many as the command line takes by default, so that both show the same interval.
LIVE_RESAMPLES = 30
SHOWN_RESAMPLES = stats.DEFAULT_RESAMPLES
SCRATCH_MAX_AGE_S = 600
# a reviewer name nobody can type: a reviewer who has not given a name sees nobody's grades in the queue
NO_REVIEWER = "\x00"
NO_JUDGE_SCORES = (
    "No judge scores yet: run `workbench judge --db DB --judge-model MODEL` (or `workbench import-scores`)."
)
# the campaign picker's choice for reviewing without a campaign
FREE_REVIEW = ("(none: free review)", "")


def md(text: Any) -> str:
    """Data made safe for a Markdown component: HTML escaped and Markdown's own markup neutralised."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>$])", r"\\\1", html.escape(str(text), quote=False))


class Refused(Exception):
    """A request the app turns down (no name yet, not an admin, a bad number). Handlers wrapped by ``inline``
    show it in their tab's status line, where it stays, and change nothing else on the page: no pop-up that
    vanishes, no red error badge over the inputs."""


def inline(handler: Callable, outputs: Sequence, status: Any) -> Callable:
    """``handler`` with every ``Refused`` turned into a message in ``status`` (one of ``outputs``); the other
    outputs are left as they are. Gradio reads the wrapped function's signature (``functools.wraps``), so
    ``gr.Request`` and event data still reach it."""
    position = next(index for index, output in enumerate(outputs) if output is status)

    @functools.wraps(handler)
    def guarded(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Refused as refused:
            values: list = [gr.update()] * len(outputs)
            values[position] = refusal(str(refused))
            return values[0] if len(outputs) == 1 else values

    return guarded


def guidelines_html(text: str) -> str:
    """A campaign's guidelines: Markdown written by an admin, still data, so rendered as responses are."""
    return "<h3>Guidelines</h3>" + safe_markdown(text or "No guidelines given.")


def refusal(message: str) -> str:
    """A refusal for a tab's inline status line (Markdown): unlike a pop-up it stays on screen. An HTML block of
    escaped text, so Markdown leaves it alone (no emphasis, no links made of addresses) and it shows as typed."""
    text = " ".join(str(message).split())  # one line: a blank line would end the HTML block
    return f'<div class="wb-refusal">⚠ {html.escape(text)}</div>'


def html_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], *, empty: str = "") -> str:
    """Rows as an escaped HTML table: far lighter for the browser than a Dataframe where nobody sorts or clicks
    (a Dataframe update costs a step about 100 ms). ``empty`` is the hint shown instead of an empty table."""
    if not rows:
        return f"<p class='wb-muted'>{html.escape(empty)}</p>" if empty else ""
    head = "".join(f"<th>{html.escape(str(header))}</th>" for header in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if cell is None else str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table class='wb-judges'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table(records: Sequence[dict], columns: Sequence[str], *, empty: str | None = None) -> dict:
    """A Dataframe value (headers + rows). An empty table keeps its headers, or with ``empty`` says what to do
    instead (its one column is the hint)."""
    rows = [[record.get(column) for column in columns] for record in records]
    if not rows and empty:
        return {"headers": [empty], "data": [[None]]}
    return {"headers": list(columns), "data": rows or [[None] * len(columns)]}


def number(text: str | None, label: str) -> float | None:
    """A filter bound typed by the reviewer; empty means no bound."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise Refused(f"{label}: {text!r} is not a number") from None


def rounded(record: dict, digits: int = stats.SIGNIFICANT_DIGITS) -> dict:
    """The record with its floats rounded for display to significant digits, as the command line prints them
    (``stats.significant``: 74.09 -> 74.1, a rating of 1023.4 -> 1023); counts, names and intervals unchanged."""
    return {
        key: stats.significant(value, digits) if isinstance(value, float) else value for key, value in record.items()
    }


def agreement_row(
    first: dict[int, float],
    second: dict[int, float],
    scales: tuple,
    *,
    alpha_level: str = analysis.DEFAULT_ALPHA_LEVEL,
    resamples: int = LIVE_RESAMPLES,
) -> dict:
    """``analysis.pair_agreement`` (the statistics of ``workbench agreement``) as one table row, its columns
    named as the command line names them; fewer than 3 shared responses give only the count."""
    report = analysis.pair_agreement(first, second, scales, alpha_level=alpha_level, resamples=resamples)
    row: dict[str, Any] = {"n": report["n"]}
    if "means" in report:
        row["mean 1"], row["mean 2"] = report["means"]
    for correlation in report.get("correlations", ()):
        method = correlation["method"]
        row[method] = correlation["value"]
        row[f"{method} 95% CI"] = stats.bounds_text(correlation["low"], correlation["high"])
    for weights, kappa in report.get("kappa", {}).items():
        row[analysis.kappa_label(weights)] = kappa
    if "alpha" in report:
        row[analysis.alpha_label(alpha_level)] = report["alpha"]
    return row


def my_agreement_with_judges(db: sqlite_utils.Database, reviewer: str | None, dataset: str | None) -> dict:
    """The reviewer's running agreement with each judge (their own grades only)."""
    columns = [
        "judge",
        "n",
        "spearman",
        "pearson",
        analysis.kappa_label("quadratic"),
        analysis.alpha_label(analysis.DEFAULT_ALPHA_LEVEL),
    ]
    if not reviewer:
        return table([], columns, empty="Enter your name (top left) to see your agreement with the judges.")
    rows = []
    for judge in store.score_judge_names(db):
        pair = analysis.rater_pair(db, f"reviewer:{reviewer}", f"judge:{judge}", dataset=dataset or None)
        rows.append(rounded({"judge": judge, **agreement_row(*pair.scores, pair.scales)}))
    return table(rows, columns, empty=NO_JUDGE_SCORES)


class ProgressCounts:
    """Progress per (reviewer, data set, models), counted by SQL once and then moved by this app's own saves.

    Counting from scratch scans every response in scope (200 ms at 20,000 items x 4 models), too slow for every
    step and every click; a save knows exactly what it added. Opening the page or another scope counts afresh,
    which also takes in what other processes (imports, other servers) wrote meanwhile.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple, dict] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(reviewer: str | None, dataset: str | None, models: Sequence[str]) -> tuple:
        return (reviewer or "", dataset or "", tuple(models))

    def get(self, db, reviewer: str | None, dataset: str | None, models: Sequence[str], *, fresh: bool = False) -> dict:
        key = self._key(reviewer, dataset, models)
        with self._lock:
            found = None if fresh else self._counts.get(key)
        if found is None:
            found = store.progress(db, reviewer, dataset=dataset or None, models=list(models) or None)
            with self._lock:
                self._counts[key] = found
        with self._lock:
            return dict(found)

    def record(self, reviewer: str, dataset: str | None, saved: store.Saved) -> None:
        """Move every count this save touches: the reviewer's own, and everyone's in each scope holding it."""
        with self._lock:
            for (who, scope_dataset, models), counts in self._counts.items():
                if scope_dataset and scope_dataset != dataset:
                    continue
                for model, first in saved.new_grades:
                    if models and model not in models:
                        continue
                    counts["grades"] += 1
                    counts["anyone"] += int(first)
                    counts["mine"] += int(who == reviewer)


@dataclass
class App:
    """The app's shared state: the database, logins and the scope bar's components, which every tab reads.

    A tab module builds its components with ``build(app)`` and may register ``refreshers[tab_id]`` (run when
    the tab is opened): (handler, inputs, outputs). ``open_item`` is set by the Review tab so that Queues can
    open an item there: (handler, outputs).
    """

    db_path: Path
    notice: str | None = None
    repeat_share: float = 0.1
    rng: random.Random = field(default_factory=random.Random)
    logins: Any = None  # workbench.auth.Logins, or None: no logins, the person at this machine is the admin
    refreshers: dict[str, tuple] = field(default_factory=dict)
    open_item: Callable | None = None
    # the scope bar, made by build_app before the tabs: who grades, which data set, which models, and the
    # queue filters (made before the tabs, rendered in Queues, followed by Review)
    name_box: Any = None
    dataset: Any = None
    models: Any = None
    filters: list = field(default_factory=list)
    queue_settings: Any = None
    tabs: Any = None
    progress: ProgressCounts = field(default_factory=ProgressCounts)
    # a folder of this app's own temporary files (exports, charts), emptied as it goes and removed at exit
    scratch: Path | None = None

    def scratch_file(self, name: str) -> Path:
        """A new path for a file handed to the browser (an export, a chart) in a folder of its own.

        Gradio copies what a handler returns into its own cache (cleaned by ``delete_cache``), so files here
        older than ``SCRATCH_MAX_AGE_S`` are no longer needed and are removed on the way.
        """
        assert self.scratch is not None
        now = time.time()
        for old in self.scratch.iterdir():
            if now - old.stat().st_mtime > SCRATCH_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(dir=self.scratch))
        return folder / name

    def connect(self) -> closing[sqlite_utils.Database]:
        """One connection per request: SQLite connections belong to the thread that opened them."""
        return closing(store.open_db(self.db_path))

    # --- who is asking ------------------------------------------------------------------------------------

    def reviewer(self, name: str | None, request: gr.Request | None) -> str:
        """The signed-in user when the app has logins, otherwise the name typed in the box (required)."""
        username = getattr(request, "username", None) if request is not None else None
        if username:
            return username
        name = (name or "").strip()
        if not name:
            raise Refused("Enter your name (top left) before grading, so that your grades are yours.")
        return name

    def optional_reviewer(self, name: str | None, request: gr.Request | None) -> str | None:
        try:
            return self.reviewer(name, request)
        except Refused:
            return None

    def role(self, request: gr.Request | None) -> str:
        """``admin`` or ``reviewer``. Without logins the app serves the person at this machine: an admin."""
        if self.logins is None:
            return ADMIN
        username = getattr(request, "username", None) if request is not None else None
        return (self.logins.role(username) if username else None) or REVIEWER

    def is_admin(self, request: gr.Request | None) -> bool:
        return self.role(request) == ADMIN

    def require_admin(self, request: gr.Request | None, action: str) -> None:
        if not self.is_admin(request):
            raise Refused(f"Only admins can {action}.")

    def queue_filter(self, dataset, models, filters: Sequence, reviewer: str | None, request) -> store.QueueFilter:
        """The queue the reviewer asked for; a reviewer who is not an admin sees only their own grades."""
        split, ungraded, judge, score_min, score_max, flagged, order, search = filters
        return store.QueueFilter(
            dataset=dataset or None,
            models=tuple(models or ()),
            split=split or None,
            ungraded_for=reviewer if ungraded else None,
            judge=judge or None,
            score_min=number(score_min, "Judge score ≥"),
            score_max=number(score_max, "Judge score ≤"),
            flagged=bool(flagged),
            search=search or None,
            order=order or "position",
            reviewer=reviewer,
            humans_of=None if self.is_admin(request) else (reviewer or NO_REVIEWER),
        )
