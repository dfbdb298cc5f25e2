"""What every tab of the review app shares: the database, who is asking and what they may see, escaping,
tables and the agreement rows that Review and Calibration both show.

Everything that comes from data (instructions, responses, rationales, names, file names in errors) reaches
the page as text: Textbox and Dataframe values, or HTML/Markdown built with ``html.escape``. Pop-ups render
HTML, so ``fail`` and ``inform`` escape their message.
"""

from __future__ import annotations

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

from workbench import stats, store

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
# Bootstrap resamples: few for the reviewer's own running agreement (its intervals are not shown), more where
# the intervals are shown. workbench.stats' defaults (1000-2000) take seconds on a laptop CPU.
LIVE_RESAMPLES = 30
SHOWN_RESAMPLES = 300
SCRATCH_MAX_AGE_S = 600
# a reviewer name nobody can type: a reviewer who has not given a name sees nobody's grades in the queue
NO_REVIEWER = "\x00"


def md(text: Any) -> str:
    """Data made safe for a Markdown component: HTML escaped and Markdown's own markup neutralised."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>$])", r"\\\1", html.escape(str(text), quote=False))


def fail(message: str) -> gr.Error:
    """An error pop-up whose text stays text (Gradio renders pop-up messages as HTML)."""
    return gr.Error(html.escape(message))


def inform(message: str) -> None:
    gr.Info(html.escape(message))


def table(records: Sequence[dict], columns: Sequence[str]) -> dict:
    """A Dataframe value (headers + rows); empty tables keep their headers."""
    rows = [[record.get(column) for column in columns] for record in records]
    return {"headers": list(columns), "data": rows or [[None] * len(columns)]}


def number(text: str | None, label: str) -> float | None:
    """A filter bound typed by the reviewer; empty means no bound."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise fail(f"{label}: {text!r} is not a number") from None


def rounded(record: dict, digits: int = 3) -> dict:
    """The record with its floats rounded for display (counts, names and intervals unchanged)."""
    return {key: round(value, digits) if isinstance(value, float) else value for key, value in record.items()}


def on_grade_scale(value: float, scale: tuple[float, float]) -> int:
    """A score mapped linearly onto the 1-5 grades, so that kappa and alpha compare like with like."""
    low, high = scale
    return int(round(1 + 4 * (value - low) / (high - low))) if high > low else 3


def agreement_row(
    first: dict[int, float], second: dict[int, float], scales: tuple, *, resamples: int = LIVE_RESAMPLES
) -> dict:
    """Correlations (own scales), quadratic kappa and ordinal alpha (on 1-5) over the responses both scored.

    ``workbench.stats`` does the maths; fewer than 3 shared responses give only the count.
    """
    common = sorted(first.keys() & second.keys())
    row: dict[str, Any] = {"n": len(common)}
    if len(common) < 3:
        return row
    a, b = [first[k] for k in common], [second[k] for k in common]
    for correlation in stats.correlations(a, b, resamples=resamples):
        row[correlation.method] = correlation.value
        row[f"{correlation.method} 95% CI"] = f"{correlation.low:.2f} to {correlation.high:.2f}"
    grades_a = [on_grade_scale(v, scales[0]) for v in a]
    grades_b = [on_grade_scale(v, scales[1]) for v in b]
    row["kappa"] = stats.cohen_kappa(grades_a, grades_b, weights="quadratic", categories=range(1, 6))
    row["alpha"] = stats.krippendorff_alpha([grades_a, grades_b], level="ordinal")
    return row


def my_agreement_with_judges(db: sqlite_utils.Database, reviewer: str | None, dataset: str | None) -> dict:
    """The reviewer's running agreement with each judge (their own grades only)."""
    columns = ["judge", "n", "spearman", "pearson", "kappa"]
    if not reviewer:
        return table([], columns)
    me = f"reviewer:{reviewer}"
    mine = store.rater_scores(db, me, dataset=dataset or None)
    rows = []
    for judge in store.score_judge_names(db):
        rater = f"judge:{judge}"
        scores = store.rater_scores(db, rater, dataset=dataset or None)
        row = agreement_row(mine, scores, (store.rater_scale(db, me), store.rater_scale(db, rater)))
        rows.append(rounded({"judge": judge, **row}))
    return table(rows, columns)


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
            raise fail("Enter your name (top left) before grading, so that your grades are yours.")
        return name

    def optional_reviewer(self, name: str | None, request: gr.Request | None) -> str | None:
        try:
            return self.reviewer(name, request)
        except gr.Error:
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
            raise fail(f"Only admins can {action}.")

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
