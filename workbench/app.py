"""``workbench serve``: the review app, where people grade responses next to the judges and benchmarks.

One Gradio page over the workbench's SQLite file. Every query lives in ``workbench.store`` (mostly
``store/review.py``), every statistic in ``workbench.stats`` and every import/export in
``workbench.importing``; this module only lays them out. Each request opens its own connection (SQLite
connections belong to one thread), so several reviewers grade at once and SQLite's write lock orders
their saves.

Everything that comes from data (instructions, responses, rationales, names) goes into text components
(Textbox, Dataframe, labels) or through ``html.escape``: a response holding ``<script>`` shows as text.
"""

from __future__ import annotations

import html
import random
import re
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import closing
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any

import gradio as gr
import sqlite_utils

from trainer.errors import UserError
from workbench import importing, stats, store

MAX_COLUMNS = 4  # responses side by side
LETTERS = "ABCD"
GRADE_ANCHORS = {
    1: "wrong or unusable",
    2: "poor: major errors",
    3: "partly right",
    4: "good: minor issues",
    5: "excellent",
}
GRADE_CHOICES = [(f"{score} · {anchor}", score) for score, anchor in GRADE_ANCHORS.items()]
ORDER_CHOICES = [("file order", "position"), ("judge and humans disagree most", "disagreement")]
DEFAULT_REPEAT_SHARE = 0.1
# Bootstrap resamples: few for the table refreshed on every save (its intervals are not shown), more where
# the intervals are shown. workbench.stats' defaults (1000-2000) take seconds on a laptop CPU.
LIVE_RESAMPLES = 30
SHOWN_RESAMPLES = 300

# Gradio 6 has no keyboard shortcuts: this listener clicks components by elem_id. Keys never fire while the
# reviewer types in a text field; SHORTCUTS_HELP below lists them.
SHORTCUTS_HELP = (
    "Keys: **1-5** grade the highlighted response (then the next one is highlighted), **←/→** move, "
    "**a/b/c/d** that response is better, **t** tie, **s** save, **n** save and next, **k** skip, "
    "**p** previous, **u** next ungraded for me."
)
KEYBOARD_JS = """
<script>
(() => {
  let active = 0;
  const shown = (id) => {
    const element = document.getElementById(id);
    return element && element.offsetParent !== null;
  };
  const columns = () => [...document.querySelectorAll('[id^="grade-"]')]
    .filter((el) => el.offsetParent !== null);
  const highlight = () => columns().forEach((el, index) =>
    el.closest('.wb-response')?.classList.toggle('wb-active', index === active));
  const press = (selector) => document.querySelector(selector)?.click();
  const typing = (target) => target.isContentEditable || ['TEXTAREA', 'SELECT'].includes(target.tagName)
    || (target.tagName === 'INPUT' && !['radio', 'checkbox', 'button'].includes(target.type));
  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (shown('review-panel')) {
      const grades = columns();
      if (/^[1-5]$/.test(key) && grades.length) {
        active = Math.min(active, grades.length - 1);
        grades[active].querySelector(`input[value="${key}"]`)?.click();
        active = (active + 1) % grades.length;
      } else if (key === 'ArrowRight' || key === 'ArrowLeft') {
        const step = key === 'ArrowRight' ? 1 : grades.length - 1;
        active = (active + step) % Math.max(grades.length, 1);
      } else if ('abcd'.includes(key)) press(`#better input[value="${key.toUpperCase()}"]`);
      else if (key === 't') press('#better input[value="tie"]');
      else if (key === 's') press('#save');
      else if (key === 'p') { press('#previous'); active = 0; }
      else if (key === 'k') { press('#skip'); active = 0; }
      else if (key === 'n') { press('#save-next'); active = 0; }
      else if (key === 'u') { press('#next-ungraded'); active = 0; }
      else return;
      event.preventDefault();
      highlight();
    } else if (shown('blind-panel')) {
      const buttons = {a: '#blind-left', b: '#blind-right', t: '#blind-tie', n: '#blind-next'};
      if (!(key in buttons)) return;
      event.preventDefault();
      press(buttons[key]);
    }
  });
  document.addEventListener('click', (event) => {
    const grade = event.target.closest?.('[id^="grade-"]');
    if (grade) active = columns().indexOf(grade);
    if (event.target.closest?.('#save-next, #next-ungraded, #previous, #skip')) active = 0;
    setTimeout(highlight, 0);
  });
})();
</script>
"""

CSS = """
.wb-response { border: 2px solid transparent; border-radius: 8px; padding: 4px; }
.wb-response.wb-active { border-color: var(--color-accent); }
#notice { background: #fff3cd; color: #664d03; border: 1px solid #ffecb5; border-radius: 6px;
          padding: 8px 12px; }
"""


def _md(text: Any) -> str:
    """Data made safe for a Markdown component: HTML escaped and Markdown's own markup neutralised."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>])", r"\\\1", html.escape(str(text), quote=False))


def _reviewer(name: str | None, request: gr.Request | None) -> str:
    """The signed-in user when the app has logins, otherwise the name typed in the box (required)."""
    username = getattr(request, "username", None) if request is not None else None
    if username:
        return username
    name = (name or "").strip()
    if not name:
        raise gr.Error("Enter your name (top left) before grading, so that your grades are yours.")
    return name


def _optional_reviewer(name: str | None, request: gr.Request | None) -> str | None:
    try:
        return _reviewer(name, request)
    except gr.Error:
        return None


def _table(records: Sequence[dict], columns: Sequence[str]) -> dict:
    """A Dataframe value (headers + rows); empty tables keep their headers."""
    rows = [[record.get(column) for column in columns] for record in records]
    return {"headers": list(columns), "data": rows or [[None] * len(columns)]}


def _number(text: str | None, label: str) -> float | None:
    """A filter bound typed by the reviewer; empty means no bound."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise gr.Error(f"{label}: {text!r} is not a number") from None


def _rounded(record: dict, digits: int = 3) -> dict:
    """The record with its floats rounded for display (counts, names and intervals unchanged)."""
    return {key: round(value, digits) if isinstance(value, float) else value for key, value in record.items()}


def _judge_table(scores: Sequence[dict]) -> dict:
    rows = []
    for score in scores:
        scale = f"{score['score_min']:g}-{score['score_max']:g}" if score["score_min"] is not None else ""
        value = "error" if score["score"] is None else f"{score['score']:g} ({scale})"
        run = f" #{score['repeat'] + 1}" if score["repeat"] else ""
        note = score["rationale"] or (f"error: {score['error']}" if score["error"] else "")
        rows.append({"judge": score["judge"] + run, "score": value, "rationale": note})
    return _table(rows, ["judge", "score", "rationale"])


def _on_grade_scale(value: float, scale: tuple[float, float]) -> int:
    """A score mapped linearly onto the 1-5 grades, so that kappa and alpha compare like with like."""
    low, high = scale
    return int(round(1 + 4 * (value - low) / (high - low))) if high > low else 3


def _agreement_row(
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
    grades_a = [_on_grade_scale(v, scales[0]) for v in a]
    grades_b = [_on_grade_scale(v, scales[1]) for v in b]
    row["kappa"] = stats.cohen_kappa(grades_a, grades_b, weights="quadratic", categories=range(1, 6))
    row["alpha"] = stats.krippendorff_alpha([grades_a, grades_b], level="ordinal")
    return row


class ReviewApp:
    """The app's state that every tab shares: the database path, the scope bar and the tab switcher."""

    def __init__(self, db_path: Path, *, notice: str | None, repeat_share: float, seed: int | None):
        self.db_path = db_path
        self.notice = notice
        self.repeat_share = repeat_share
        self.rng = random.Random(seed)

    def connect(self) -> closing[sqlite_utils.Database]:
        return closing(store.open_db(self.db_path))

    # --- layout -----------------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="Workbench review") as blocks:
            if self.notice:
                gr.Markdown(f"**Note:** {_md(self.notice)}", elem_id="notice")
            with gr.Row(equal_height=True):
                self.reviewer = gr.Textbox(
                    label="Your name (grades are stored under it)",
                    placeholder="e.g. alice",
                    elem_id="reviewer-name",
                    scale=1,
                )
                self.dataset = gr.Dropdown(label="Data set", choices=[], elem_id="scope-dataset", scale=1)
                self.models = gr.Dropdown(
                    label=f"Models side by side (2-{MAX_COLUMNS})",
                    choices=[],
                    multiselect=True,
                    max_choices=MAX_COLUMNS,
                    elem_id="scope-models",
                    scale=2,
                )
            self._make_filters()
            builders = {
                "Review": self._review_tab,
                "Blind A/B": self._blind_tab,
                "Queues": self._queues_tab,
                "Calibration": self._calibration_tab,
                "Leaderboard": self._leaderboard_tab,
                "Agreement": self._agreement_tab,
                "Benchmarks": self._benchmarks_tab,
                "Training": self._training_tab,
                "Data": self._data_tab,
            }
            # A tab that shows database-wide tables refreshes them when opened: (handler, inputs, outputs).
            self.refreshers: dict[str, tuple] = {}
            with gr.Tabs(elem_id="tabs") as self.tabs:
                for title, build_tab in builders.items():
                    tab_id = title.split()[0].lower()
                    with gr.Tab(title, id=tab_id, elem_id=f"{tab_id}-tab") as tab:
                        build_tab()
                    if tab_id in self.refreshers:
                        handler, inputs, outputs = self.refreshers[tab_id]
                        tab.select(handler, inputs=inputs, outputs=outputs)
            self._wire_scope(blocks)
        return blocks

    # --- scope bar: who grades, which data set, which models --------------------------------------------

    def _wire_scope(self, blocks: gr.Blocks) -> None:
        def on_load(request: gr.Request):
            with self.connect() as db:
                models_by_dataset = {name: store.models_with_responses(db, name) for name in store.dataset_names(db)}
            datasets = list(models_by_dataset)
            dataset = max(datasets, key=lambda name: len(models_by_dataset[name]), default=None)
            models = models_by_dataset.get(dataset, [])
            username = getattr(request, "username", None)
            reviewer = gr.update(value=username, interactive=False, label="Signed in as") if username else gr.update()
            return (
                reviewer,
                gr.update(choices=datasets, value=dataset),
                gr.update(choices=models, value=models[:MAX_COLUMNS]),
            )

        blocks.load(on_load, outputs=[self.reviewer, self.dataset, self.models]).then(
            self._first_item, inputs=self._item_inputs(), outputs=self._item_outputs()
        )

        def on_dataset(dataset):
            with self.connect() as db:
                models = store.models_with_responses(db, dataset)
            return gr.update(choices=models, value=models[:MAX_COLUMNS])

        self.dataset.input(on_dataset, inputs=self.dataset, outputs=self.models).then(
            self._first_item, inputs=self._item_inputs(), outputs=self._item_outputs()
        )
        self.models.input(self._show_current, inputs=self._item_inputs(), outputs=self._item_outputs())
        # a new name shows that reviewer's own grades and progress on the open item
        for event in (self.reviewer.blur, self.reviewer.submit):
            event(self._show_current, inputs=self._item_inputs(), outputs=self._item_outputs())

    def queue_filter(
        self,
        dataset,
        models,
        split,
        ungraded,
        judge,
        score_min,
        score_max,
        flagged,
        order,
        reviewer: str | None,
    ) -> store.QueueFilter:
        return store.QueueFilter(
            dataset=dataset or None,
            models=tuple(models or ()),
            split=split or None,
            ungraded_for=reviewer if ungraded else None,
            judge=judge or None,
            score_min=_number(score_min, "Judge score ≥"),
            score_max=_number(score_max, "Judge score ≤"),
            flagged=bool(flagged),
            order=order or "position",
        )

    # --- Review -----------------------------------------------------------------------------------------

    def _review_tab(self) -> None:
        self.item_id = gr.State(None)
        self.shown_responses = gr.State([])  # [(response_id, model)] in column order
        with gr.Column(elem_id="review-panel"):
            with gr.Row(equal_height=True):
                self.item_header = gr.Markdown(elem_id="item-header")
                self.progress_md = gr.Markdown(elem_id="progress")
            with gr.Row():
                self.instruction = gr.Textbox(label="Instruction", interactive=False, lines=2, elem_id="instruction")
                self.input = gr.Textbox(label="Input", interactive=False, lines=2, elem_id="input")
                self.reference = gr.Textbox(label="Reference answer", interactive=False, lines=2, elem_id="reference")
            self.columns, self.responses, self.flags, self.judge_tables = [], [], [], []
            self.grades, self.comments = [], []
            with gr.Row(equal_height=False):
                for index in range(MAX_COLUMNS):
                    with gr.Column(
                        visible=index < 2, elem_classes=["wb-response"], elem_id=f"response-col-{index}"
                    ) as column:
                        self.columns.append(column)
                        self.responses.append(
                            gr.Textbox(
                                label=f"Response {LETTERS[index]}",
                                interactive=False,
                                lines=6,
                                max_lines=20,
                                elem_id=f"response-{index}",
                            )
                        )
                        self.flags.append(
                            gr.Textbox(
                                label="⚠ Prompt-injection flag",
                                interactive=False,
                                visible=False,
                                elem_id=f"flag-{index}",
                            )
                        )
                        self.judge_tables.append(
                            gr.Dataframe(label="Judge scores", interactive=False, wrap=True, elem_id=f"judges-{index}")
                        )
                        self.grades.append(
                            gr.Radio(GRADE_CHOICES, label="Your grade (keys 1-5)", elem_id=f"grade-{index}")
                        )
                        self.comments.append(gr.Textbox(label="Comment", lines=1, elem_id=f"comment-{index}"))
            self.better = gr.Radio(choices=[], label="Which is better? (keys a/b/c/d, t = tie)", elem_id="better")
            with gr.Row():
                previous = gr.Button("◀ Previous (p)", elem_id="previous")
                skip = gr.Button("Skip ▶ (k)", elem_id="skip")
                save = gr.Button("Save (s)", variant="secondary", elem_id="save")
                save_next = gr.Button("Save and next ▶ (n)", variant="primary", elem_id="save-next")
                next_ungraded = gr.Button("Next ungraded for me » (u)", elem_id="next-ungraded")
            self.save_status = gr.Markdown(elem_id="save-status")
            gr.Markdown(SHORTCUTS_HELP)
            with gr.Accordion("Your running agreement with the judges (updated on every save)", open=True):
                self.live_calibration = gr.Dataframe(interactive=False, elem_id="live-calibration")

        item_inputs, item_outputs = self._item_inputs(), self._item_outputs()
        save_inputs = [
            self.reviewer,
            self.item_id,
            self.shown_responses,
            self.dataset,
            self.models,
            *self.grades,
            *self.comments,
            self.better,
        ]
        save_outputs = [self.save_status, self.progress_md, self.live_calibration]
        save.click(self._save, inputs=save_inputs, outputs=save_outputs)
        save_next.click(self._save, inputs=save_inputs, outputs=save_outputs).success(
            self._step(+1), inputs=item_inputs, outputs=item_outputs
        )
        previous.click(self._step(-1), inputs=item_inputs, outputs=item_outputs)
        skip.click(self._step(+1), inputs=item_inputs, outputs=item_outputs)
        next_ungraded.click(self._next_ungraded, inputs=item_inputs, outputs=item_outputs)

    def _item_inputs(self) -> list:
        return [self.reviewer, self.item_id, self.dataset, self.models, *self.filter_inputs]

    def _item_outputs(self) -> list:
        return [
            self.item_id,
            self.shown_responses,
            self.item_header,
            self.progress_md,
            self.instruction,
            self.input,
            self.reference,
            *self.columns,
            *self.responses,
            *self.flags,
            *self.judge_tables,
            *self.grades,
            *self.comments,
            self.better,
            self.save_status,
            self.live_calibration,
        ]

    def _render_item(
        self, db, item_id: str | None, dataset, models, reviewer: str | None, position_note: str = ""
    ) -> list:
        """Every output of the Review tab for one item (or an empty page when the queue is empty)."""
        models = list(models or [])
        view = store.item_view(db, item_id, models, reviewer) if item_id else None
        responses = view["responses"][:MAX_COLUMNS] if view else []
        shown = [(row["response_id"], row["model"]) for row in responses]
        if view:
            split = f" · split {_md(view['split'])}" if view["split"] else ""
            header = f"**{_md(view['dataset'])}** · item {view['position'] + 1}{split}{position_note}"
        else:
            header = "**Nothing to review** with this data set, these models and filters."
        columns, texts, flags, tables, grades, comments = [], [], [], [], [], []
        for index in range(MAX_COLUMNS):
            row = responses[index] if index < len(responses) else None
            columns.append(gr.update(visible=row is not None))
            if row is None:
                texts.append(gr.update(value=""))
                flags.append(gr.update(value="", visible=False))
                tables.append(_table([], ["judge", "score", "rationale"]))
                grades.append(None)
                comments.append("")
                continue
            texts.append(gr.update(value=row["text"], label=f"{LETTERS[index]} · {row['model']}"))
            flags.append(gr.update(value=row["injection_flag"] or "", visible=bool(row["injection_flag"])))
            tables.append(_judge_table(row["judge_scores"]))
            grades.append(row["my_grade"])
            comments.append(row["my_comment"] or "")
        better_choices = [(f"{LETTERS[i]} better", LETTERS[i]) for i in range(len(shown))] + [("Tie", "tie")]
        better_value = None
        if view and view["my_preference"]:
            names = [model for _, model in shown]
            preference = view["my_preference"]
            better_value = (
                "tie" if preference == "tie" else LETTERS[names.index(preference)] if preference in names else None
            )
        return [
            item_id if view else None,
            shown,
            header,
            self._progress_text(db, reviewer, dataset, models),
            view["instruction"] if view else "",
            view["input"] if view else "",
            (view["reference_output"] or "") if view else "",
            *columns,
            *texts,
            *flags,
            *tables,
            *grades,
            *comments,
            gr.update(choices=better_choices, value=better_value, visible=len(shown) > 1),
            "",
            self._live_calibration(db, reviewer, dataset),
        ]

    def _progress_text(self, db, reviewer: str | None, dataset, models) -> str:
        counts = store.progress(db, reviewer, dataset=dataset or None, models=models or None)
        total = counts["total"]
        mine = f"You: **{counts['mine']} / {total}** graded" if reviewer else "Enter your name to grade"
        return (
            f"{mine} · Everyone: **{counts['anyone']} / {total}** responses graded "
            f"({counts['grades']} grades) over {counts['items']} items"
        )

    def _live_calibration(self, db, reviewer: str | None, dataset) -> dict:
        columns = ["judge", "n", "spearman", "pearson", "kappa"]
        if not reviewer:
            return _table([], columns)
        mine = store.rater_scores(db, f"reviewer:{reviewer}", dataset=dataset or None)
        rows = []
        for judge in store.score_judge_names(db):
            rater = f"judge:{judge}"
            row = _agreement_row(
                mine,
                store.rater_scores(db, rater, dataset=dataset or None),
                (store.rater_scale(db, f"reviewer:{reviewer}"), store.rater_scale(db, rater)),
            )
            rows.append(_rounded({"judge": judge, **row}))
        return _table(rows, columns)

    def _queue_and_reviewer(self, reviewer_name, dataset, models, filters, request) -> tuple:
        reviewer = _optional_reviewer(reviewer_name, request)
        return self.queue_filter(dataset, models, *filters, reviewer=reviewer), reviewer

    def _first_item(self, request: gr.Request, reviewer_name, item_id, dataset, models, *filters):
        queue, reviewer = self._queue_and_reviewer(reviewer_name, dataset, models, filters, request)
        with self.connect() as db:
            first = None
            if reviewer:
                first = store.next_item(db, replace(queue, ungraded_for=reviewer))
            first = first or store.next_item(db, queue)
            return self._render_item(db, first, dataset, models, reviewer)

    def _show_current(self, request: gr.Request, reviewer_name, item_id, dataset, models, *filters):
        queue, reviewer = self._queue_and_reviewer(reviewer_name, dataset, models, filters, request)
        with self.connect() as db:
            return self._render_item(db, item_id or store.next_item(db, queue), dataset, models, reviewer)

    def _step(self, direction: int):
        def step(request: gr.Request, reviewer_name, item_id, dataset, models, *filters):
            queue, reviewer = self._queue_and_reviewer(reviewer_name, dataset, models, filters, request)
            with self.connect() as db:
                ids = [row["item_id"] for row in store.review_queue(db, queue)]
                if not ids:
                    return self._render_item(db, None, dataset, models, reviewer)
                index = (ids.index(item_id) + direction) % len(ids) if item_id in ids else 0
                note = f" · {index + 1} of {len(ids)} in queue"
                return self._render_item(db, ids[index], dataset, models, reviewer, note)

        return step

    def _next_ungraded(self, request: gr.Request, reviewer_name, item_id, dataset, models, *filters):
        reviewer = _reviewer(reviewer_name, request)
        queue = self.queue_filter(dataset, models, *filters, reviewer=reviewer)
        with self.connect() as db:
            found = store.next_item(db, replace(queue, ungraded_for=reviewer), after=item_id)
            rendered = self._render_item(db, found, dataset, models, reviewer)
        if found is None:
            gr.Info("You have graded every response in this queue.")
        return rendered

    def _save(self, request: gr.Request, reviewer_name, item_id, shown, dataset, scope_models, *values):
        """Grades, comments and the better/tie mark of one item in one transaction."""
        reviewer = _reviewer(reviewer_name, request)
        if not item_id or not shown:
            raise gr.Error("No item is open.")
        grades = values[:MAX_COLUMNS]
        comments = values[MAX_COLUMNS : 2 * MAX_COLUMNS]
        better = values[-1]
        if all(grade is None for grade in grades) and not better:
            raise gr.Error("Nothing to save: pick a grade (1-5) or which response is better.")
        models = [model for _, model in shown]
        saved = 0
        with self.connect() as db:
            try:
                with store.transaction(db):
                    for (response_id, _), grade, comment in zip(shown, grades, comments, strict=False):
                        if grade is not None:
                            store.add_grade(db, response_id, reviewer, int(grade), (comment or "").strip())
                            saved += 1
                    if better and len(models) > 1:
                        self._store_better(db, item_id, models, better, reviewer)
            except UserError as exc:
                raise gr.Error(str(exc)) from exc
            status = f"Saved {saved} grade{'s' * (saved != 1)}" + (" and your better/tie mark" if better else "")
            return (
                status + ".",
                self._progress_text(db, reviewer, dataset, scope_models),
                self._live_calibration(db, reviewer, dataset),
            )

    @staticmethod
    def _store_better(db, item_id: str, models: list[str], better: str, reviewer: str) -> None:
        """A better/tie mark becomes pairwise grades: the chosen model against each other model shown."""
        store.clear_open_preferences(db, item_id, reviewer)
        chosen = None if better == "tie" else models[LETTERS.index(better)]
        for left, right in combinations(models, 2):
            if chosen is None:
                preference = "tie"
            elif chosen in (left, right):
                preference = "left" if chosen == left else "right"
            else:
                continue
            store.add_pairwise_grade(db, item_id, left, right, reviewer, preference, blind=False)

    # --- Blind A/B --------------------------------------------------------------------------------------

    def _blind_tab(self) -> None:
        pair = gr.State(None)  # kept on the server: the browser never sees the model names before the vote
        with gr.Column(elem_id="blind-panel"):
            gr.Markdown(
                "Two answers to the same instruction, models hidden and sides shuffled; the models are named "
                "after your vote. Keys: **a** left better, **b** right better, **t** tie, **n** next pair."
            )
            with gr.Row():
                instruction = gr.Textbox(label="Instruction", interactive=False, lines=2, elem_id="blind-instruction")
                input_box = gr.Textbox(label="Input", interactive=False, lines=2, elem_id="blind-input")
            with gr.Row():
                left = gr.Textbox(label="Response A", interactive=False, lines=8, elem_id="blind-response-left")
                right = gr.Textbox(label="Response B", interactive=False, lines=8, elem_id="blind-response-right")
            with gr.Row():
                vote_left = gr.Button("A is better", elem_id="blind-left", interactive=False)
                vote_tie = gr.Button("Tie", elem_id="blind-tie", interactive=False)
                vote_right = gr.Button("B is better", elem_id="blind-right", interactive=False)
            reveal = gr.Textbox(label="Models (shown after your vote)", interactive=False, elem_id="blind-reveal")
            next_pair = gr.Button("Next pair (n)", variant="primary", elem_id="blind-next")
        buttons = [vote_left, vote_tie, vote_right]

        def load_pair(request: gr.Request, reviewer_name, dataset, models):
            reviewer = _reviewer(reviewer_name, request)
            with self.connect() as db:
                chosen = store.next_blind_pair(
                    db,
                    reviewer,
                    dataset=dataset or None,
                    models=models or None,
                    repeat_share=self.repeat_share,
                    rng=self.rng,
                )
            if chosen is None:
                gr.Info("No pair left for you to vote on with this data set and these models.")
                return None, "", "", "", "", "", *[gr.update(interactive=False)] * 3
            return (
                chosen,
                chosen["instruction"],
                chosen["input"],
                chosen["left_text"],
                chosen["right_text"],
                "",
                *[gr.update(interactive=True)] * 3,
            )

        def vote(preference: str):
            def record(request: gr.Request, reviewer_name, current):
                reviewer = _reviewer(reviewer_name, request)
                if not current:
                    raise gr.Error("Load a pair first (Next pair).")
                with self.connect() as db:
                    store.add_pairwise_grade(
                        db,
                        current["item_id"],
                        current["left_model"],
                        current["right_model"],
                        reviewer,
                        preference,
                        blind=True,
                        repeat_of=current["repeat_of"],
                    )
                names = f"A = {current['left_model']} · B = {current['right_model']}"
                return None, names, *[gr.update(interactive=False)] * 3

            return record

        def load_if_idle(request: gr.Request, reviewer_name, dataset, models, current):
            """Opening the tab shows a pair right away, unless one is waiting for a vote (or no name yet)."""
            if current or not _optional_reviewer(reviewer_name, request):
                return [gr.update()] * (6 + len(buttons))
            return load_pair(request, reviewer_name, dataset, models)

        pair_outputs = [pair, instruction, input_box, left, right, reveal, *buttons]
        next_pair.click(load_pair, inputs=[self.reviewer, self.dataset, self.models], outputs=pair_outputs)
        self.refreshers["blind"] = (
            load_if_idle,
            [self.reviewer, self.dataset, self.models, pair],
            pair_outputs,
        )
        for button, preference in zip(buttons, ("left", "tie", "right"), strict=True):
            button.click(vote(preference), inputs=[self.reviewer, pair], outputs=[pair, reveal, *buttons])

    # --- Queues -----------------------------------------------------------------------------------------

    def _make_filters(self) -> None:
        """The queue filters, created before the tabs (Review follows them) and rendered in Queues."""
        self.split = gr.Dropdown(label="Split", choices=[""], value="", elem_id="queue-split", render=False)
        self.judge = gr.Dropdown(
            label="Judge (for the score range and disagreement)",
            choices=[""],
            value="",
            elem_id="queue-judge",
            render=False,
        )
        self.score_min = gr.Textbox(label="Judge score ≥", placeholder="any", elem_id="queue-min", render=False)
        self.score_max = gr.Textbox(label="Judge score ≤", placeholder="any", elem_id="queue-max", render=False)
        self.ungraded = gr.Checkbox(
            label="Only items with responses I have not graded", elem_id="queue-ungraded", render=False
        )
        self.flagged = gr.Checkbox(label="Only prompt-injection flagged", elem_id="queue-flagged", render=False)
        self.order = gr.Radio(ORDER_CHOICES, value="position", label="Order", elem_id="queue-order", render=False)
        self.filter_inputs = [
            self.split,
            self.ungraded,
            self.judge,
            self.score_min,
            self.score_max,
            self.flagged,
            self.order,
        ]

    def _queues_tab(self) -> None:
        with gr.Row():
            for component in (self.split, self.judge, self.score_min, self.score_max):
                component.render()
        with gr.Row():
            for component in (self.ungraded, self.flagged, self.order):
                component.render()
        split, judge = self.split, self.judge
        refresh = gr.Button("Show queue", variant="primary", elem_id="queue-refresh")
        gr.Markdown("Click a row to open that item in the Review tab. Judge means are mapped onto 1-5.")
        table = gr.Dataframe(interactive=False, wrap=True, elem_id="queue-table")
        item_ids = gr.State([])
        columns = [
            "position",
            "split",
            "responses",
            "graded_by_me",
            "flagged",
            "mean_judge_1to5",
            "mean_grade",
            "disagreement",
            "instruction",
        ]

        def show(request: gr.Request, reviewer_name, dataset, models, *filters):
            queue, _ = self._queue_and_reviewer(reviewer_name, dataset, models, filters, request)
            with self.connect() as db:
                rows = store.review_queue(db, queue)
                splits = [""] + store.split_names(db, dataset or None)
                judges = [""] + store.score_judge_names(db)
            for row in rows:
                row["position"] += 1
                row["instruction"] = row["instruction"][:90]
            return (
                _table(rows, columns),
                [row["item_id"] for row in rows],
                gr.update(choices=splits),
                gr.update(choices=judges),
            )

        queue_inputs = [self.reviewer, self.dataset, self.models, *self.filter_inputs]
        refresh.click(show, inputs=queue_inputs, outputs=[table, item_ids, split, judge])
        self.refreshers["queues"] = (show, queue_inputs, [table, item_ids, split, judge])

        def open_item(event: gr.SelectData, request: gr.Request, ids, reviewer_name, dataset, models):
            row = event.index[0]
            if not ids or row >= len(ids):
                raise gr.Error("That row is gone; refresh the queue.")
            reviewer = _optional_reviewer(reviewer_name, request)
            with self.connect() as db:
                return [
                    gr.Tabs(selected="review"),
                    *self._render_item(db, ids[row], dataset, models, reviewer),
                ]

        table.select(
            open_item,
            inputs=[item_ids, self.reviewer, self.dataset, self.models],
            outputs=[self.tabs, *self._item_outputs()],
        )

    # --- Calibration ------------------------------------------------------------------------------------

    def _calibration_tab(self) -> None:
        gr.Markdown(
            "How far to trust each rater: you against each judge, reviewers against each other, each "
            "reviewer's consistency on blind pairs shown again with sides swapped, and the share of "
            "decided votes that went to whichever answer was shown first (0.5 = no position bias)."
        )
        refresh = gr.Button("Refresh", elem_id="calibration-refresh")
        me_vs_judges = gr.Dataframe(label="You vs each judge", interactive=False, elem_id="cal-me-judges")
        between = gr.Dataframe(label="Between reviewers", interactive=False, elem_id="cal-reviewers")
        consistency = gr.Dataframe(label="Reviewers on blind pairs", interactive=False, elem_id="cal-consistency")
        judge_bias = gr.Dataframe(label="Pairwise judges' position bias", interactive=False, elem_id="cal-judge-bias")

        def show(request: gr.Request, reviewer_name, dataset):
            reviewer = _optional_reviewer(reviewer_name, request)
            with self.connect() as db:
                mine = self._live_calibration(db, reviewer, dataset)
                pairs = []
                reviewers = store.reviewer_names(db)
                scores = {
                    name: store.rater_scores(db, f"reviewer:{name}", dataset=dataset or None) for name in reviewers
                }
                for first, second in combinations(reviewers, 2):
                    scales = (store.rater_scale(db, f"reviewer:{first}"), store.rater_scale(db, f"reviewer:{second}"))
                    row = _agreement_row(scores[first], scores[second], scales)
                    if row["n"]:
                        pairs.append(_rounded({"reviewers": f"{first} / {second}", **row}))
                reviewer_rows = store.reviewer_consistency(db)
                bias_rows = store.judge_position_bias(db)
            reviewer_rows = [_rounded(row) for row in reviewer_rows]
            bias_rows = [_rounded(row) for row in bias_rows]
            return (
                mine,
                _table(pairs, ["reviewers", "n", "spearman", "pearson", "kendall", "kappa", "alpha"]),
                _table(
                    reviewer_rows,
                    [
                        "reviewer",
                        "blind_votes",
                        "first_position_share",
                        "repeats",
                        "consistent",
                        "self_consistency",
                    ],
                ),
                _table(bias_rows, ["judge", "comparisons", "first_position_share", "consistency"]),
            )

        outputs = [me_vs_judges, between, consistency, judge_bias]
        refresh.click(show, inputs=[self.reviewer, self.dataset], outputs=outputs)
        self.refreshers["calibration"] = (show, [self.reviewer, self.dataset], outputs)

    # --- Leaderboard ------------------------------------------------------------------------------------

    def _leaderboard_tab(self) -> None:
        with gr.Row():
            source = gr.Dropdown(label="Win rates and ratings from", choices=[], elem_id="leaderboard-source")
            refresh = gr.Button("Refresh", elem_id="leaderboard-refresh")
        gr.Markdown(
            "Mean judge scores are on each judge's own scale. Ratings: Bradley-Terry (Elo scale) with "
            "95% bootstrap intervals; ties count half."
        )
        table = gr.Dataframe(interactive=False, elem_id="leaderboard-table")

        def show(dataset, chosen_source, keep_choice=True):
            """``keep_choice=False`` (opening the tab) moves off a source without comparisons in this data
            set to the first one that has some; a source the reviewer picked stays picked."""
            dataset = dataset or None
            with self.connect() as db:
                outcomes_of = {
                    "human pairwise votes": lambda: store.pairwise_outcomes(db, source="human", dataset=dataset),
                    "judge pairwise verdicts": lambda: store.pairwise_outcomes(db, source="judge", dataset=dataset),
                }
                for rater in store.rater_names(db):
                    outcomes_of[rater] = lambda rater=rater: store.score_outcomes(db, rater, dataset=dataset)
                outcomes = outcomes_of[chosen_source]() if chosen_source in outcomes_of else []
                if not outcomes and not (keep_choice and chosen_source in outcomes_of):
                    chosen_source, outcomes = next(
                        ((name, found) for name, get in outcomes_of.items() if (found := get())),
                        ("human pairwise votes", []),
                    )
                summary = store.model_summary(db, dataset=dataset)
                accuracy = store.benchmark_accuracy(db)
            rows = self._leaderboard_rows(summary, outcomes, accuracy)
            columns = list(rows[0]) if rows else ["model"]
            return gr.update(choices=list(outcomes_of), value=chosen_source), _table(rows, columns)

        refresh.click(show, inputs=[self.dataset, source], outputs=[source, table])
        source.input(show, inputs=[self.dataset, source], outputs=[source, table])
        self.refreshers["leaderboard"] = (
            lambda dataset, chosen: show(dataset, chosen, keep_choice=False),
            [self.dataset, source],
            [source, table],
        )

    @staticmethod
    def _leaderboard_rows(summary: list[dict], outcomes: list, accuracy: list[dict]) -> list[dict]:
        """One row per model: grades, judge means, win rate, Bradley-Terry (with CI) and Elo, accuracy."""
        judges = sorted({judge for row in summary for judge in row["judges"]})
        wins = stats.win_rates(outcomes)
        ratings = stats.bradley_terry(outcomes, resamples=SHOWN_RESAMPLES)
        elo = stats.elo_ratings(outcomes)
        by_model = {row["model"]: row for row in summary}
        models = list(by_model) + sorted({row["model"] for row in accuracy} - set(by_model))
        rows = []
        for model in models:
            row = by_model.get(model, {"responses": 0, "grades": 0, "mean_grade": None, "judges": {}})
            record = {
                "model": model,
                "responses": row["responses"],
                "human grades": row["grades"],
                "mean human grade": row["mean_grade"],
                **{f"mean {judge}": row["judges"].get(judge) for judge in judges},
                "comparisons": wins.get(model, {}).get("n"),
                "win rate": wins.get(model, {}).get("win_rate"),
                "Bradley-Terry": ratings[model].value if model in ratings else None,
                "BT 95% CI": (f"{ratings[model].low:.0f} to {ratings[model].high:.0f}" if model in ratings else None),
                "Elo": elo.get(model),
            }
            for bench in accuracy:
                if bench["model"] == model:
                    record[f"{bench['task']} {bench['metric']}"] = bench["accuracy"]
            rows.append(_rounded(record))
        columns = list(dict.fromkeys(key for record in rows for key in record))
        return [{column: record.get(column) for column in columns} for record in rows]

    # --- Agreement --------------------------------------------------------------------------------------

    def _agreement_tab(self) -> None:
        with gr.Row():
            first = gr.Dropdown(label="Rater 1", choices=[], elem_id="agreement-first")
            second = gr.Dropdown(label="Rater 2", choices=[], elem_id="agreement-second")
            refresh = gr.Button("Compare", variant="primary", elem_id="agreement-refresh")
        table = gr.Dataframe(label="Agreement", interactive=False, elem_id="agreement-table")
        plot = gr.Plot(label="Scores of both raters, one point per response", elem_id="agreement-plot")

        def show(dataset, models, rater_a, rater_b):
            with self.connect() as db:
                raters = store.rater_names(db)
                rater_a = rater_a if rater_a in raters else (raters[0] if raters else None)
                rater_b = rater_b if rater_b in raters else (raters[1] if len(raters) > 1 else None)
                if not rater_a or not rater_b:
                    return gr.update(choices=raters), gr.update(choices=raters), _table([], ["n"]), None
                a = store.rater_scores(db, rater_a, dataset=dataset or None, models=models or None)
                b = store.rater_scores(db, rater_b, dataset=dataset or None, models=models or None)
                scales = (store.rater_scale(db, rater_a), store.rater_scale(db, rater_b))
            row = _agreement_row(a, b, scales, resamples=SHOWN_RESAMPLES)
            common = sorted(a.keys() & b.keys())
            figure = scatter_figure([a[k] for k in common], [b[k] for k in common], rater_a, rater_b)
            return (
                gr.update(choices=raters, value=rater_a),
                gr.update(choices=raters, value=rater_b),
                _table([_rounded(row)], list(row)),
                figure if common else None,
            )

        inputs = [self.dataset, self.models, first, second]
        outputs = [first, second, table, plot]
        refresh.click(show, inputs=inputs, outputs=outputs)
        self.refreshers["agreement"] = (show, inputs, outputs)

    # --- Benchmarks -------------------------------------------------------------------------------------

    def _benchmarks_tab(self) -> None:
        with gr.Row():
            run = gr.Dropdown(label="Benchmark run", choices=[], elem_id="bench-run")
            refresh = gr.Button("Show", variant="primary", elem_id="bench-refresh")
        runs_table = gr.Dataframe(label="Runs", interactive=False, elem_id="bench-runs")
        results = gr.Dataframe(label="Results", interactive=False, elem_id="bench-results")
        chart = gr.Image(label="Per-subject accuracy", type="filepath", elem_id="bench-chart")
        wrong = gr.Dataframe(
            label="Questions this model got wrong", interactive=False, wrap=True, elem_id="bench-wrong"
        )

        def show(run_label):
            with self.connect() as db:
                runs = store.benchmark_runs(db)
                labels = [f"#{row['id']} · {row['model_name']} · {row['tasks']}" for row in runs]
                chosen = labels.index(run_label) if run_label in labels else 0
                if not runs:
                    return (
                        gr.update(choices=[]),
                        _table([], ["model_name"]),
                        _table([], ["task"]),
                        None,
                        _table([], ["task"]),
                    )
                run_id = runs[chosen]["id"]
                result_rows = store.benchmark_results(db, run_id)
                wrong_rows = store.benchmark_samples(db, run_id, wrong_only=True)
            chart_path = None
            try:
                chart_path = bench_plot(result_rows, runs[chosen]["model_name"])
            except UserError:  # no per-subject scores in this run
                pass
            for row in wrong_rows:
                row["model_choice"] = _choice_text(row, row["model_choice"])
                row["correct_choice"] = _choice_text(row, row["correct_choice"])
            run_columns = [
                "id",
                "model_name",
                "tasks",
                "num_fewshot",
                "limit_n",
                "lm_eval_version",
                "finished_at",
            ]
            return (
                gr.update(choices=labels, value=labels[chosen]),
                _table(runs, run_columns),
                _table(
                    [_rounded(row, 4) for row in result_rows],
                    ["task", "subject", "metric", "value", "stderr", "n", "shots"],
                ),
                chart_path,
                _table(wrong_rows, ["task", "subject", "doc_id", "prompt", "model_choice", "correct_choice"]),
            )

        outputs = [run, runs_table, results, chart, wrong]
        refresh.click(show, inputs=[run], outputs=outputs)
        run.input(show, inputs=[run], outputs=outputs)
        self.refreshers["benchmarks"] = (show, [run], outputs)

    # --- Training ---------------------------------------------------------------------------------------

    def _training_tab(self) -> None:
        with gr.Row():
            runs = gr.Dropdown(label="Runs", choices=[], multiselect=True, elem_id="training-runs")
            refresh = gr.Button("Show", variant="primary", elem_id="training-refresh")
        plot = gr.Plot(label="Loss", elem_id="training-plot")
        table = gr.Dataframe(label="Evaluations", interactive=False, elem_id="training-table")

        def show(chosen):
            with self.connect() as db:
                names = store.training_models(db)
                chosen = [name for name in chosen or [] if name in names] or names
                curves = {name: store.training_metrics(db, name) for name in chosen}
            rows = [{"model": name, **row} for name, metrics in curves.items() for row in metrics]
            columns = ["model", "step", "epoch", "tokens_seen", "train_loss", "val_loss"]
            return (
                gr.update(choices=names, value=chosen),
                loss_figure(curves) if rows else None,
                _table(rows, columns),
            )

        refresh.click(show, inputs=[runs], outputs=[runs, plot, table])
        self.refreshers["training"] = (show, [runs], [runs, plot, table])

    # --- Data -------------------------------------------------------------------------------------------

    def _data_tab(self) -> None:
        gr.Markdown(
            "Import with the same importers as `workbench import` / `import-scores`. Upload a JSON or "
            "JSONL file (instruction data, responses, preference data; add `FILE.meta.json` to import "
            "trainer output), a run folder's `config.json` + `metrics.jsonl`, or a judge's score list."
        )
        with gr.Row():
            files = gr.File(label="Files", file_count="multiple", elem_id="data-files")
            with gr.Column():
                kind = gr.Radio(
                    [("data, responses or run folder", "data"), ("judge scores", "scores")],
                    value="data",
                    label="What is it?",
                    elem_id="data-kind",
                )
                dataset = gr.Textbox(label="Data set name (default: file name)", elem_id="data-dataset")
                model = gr.Textbox(label="Model name for a single response key (optional)", elem_id="data-model")
                judge = gr.Textbox(label="Judge name (scores)", elem_id="data-judge")
                response_key = gr.Textbox(label="Model the scores are for (scores)", elem_id="data-response-key")
                import_button = gr.Button("Import", variant="primary", elem_id="data-import")
        result = gr.Textbox(label="Import result", interactive=False, elem_id="data-result")
        with gr.Row():
            fmt = gr.Dropdown(importing.EXPORT_FORMATS, value="json", label="Export format", elem_id="export-format")
            export_button = gr.Button("Export", elem_id="data-export")
            download = gr.File(label="Download", interactive=False, elem_id="export-file")

        def do_import(uploaded, what, dataset_name, model_name, judge_name, key):
            if not uploaded:
                raise gr.Error("Choose a file to upload first.")
            folder = Path(tempfile.mkdtemp(prefix="workbench-upload-"))
            paths = [Path(shutil.copy(path, folder / Path(path).name)) for path in uploaded]
            try:
                with self.connect() as db:
                    return self._import_uploads(
                        db,
                        folder,
                        paths,
                        what,
                        dataset_name.strip() or None,
                        model_name.strip() or None,
                        judge_name.strip(),
                        key.strip(),
                    )
            except UserError as exc:
                raise gr.Error(str(exc).replace(str(folder) + "/", "")) from exc
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        def do_export(chosen_format, current_dataset):
            folder = Path(tempfile.mkdtemp(prefix="workbench-export-"))
            suffix = "csv" if chosen_format == "csv" else "json"
            out = folder / f"workbench-{chosen_format}.{suffix}"
            try:
                with self.connect() as db:
                    importing.export(db, chosen_format, out, dataset=current_dataset or None)
            except UserError as exc:
                raise gr.Error(str(exc)) from exc
            return str(out)

        import_button.click(do_import, inputs=[files, kind, dataset, model, judge, response_key], outputs=result)
        export_button.click(do_export, inputs=[fmt, self.dataset], outputs=download)

    @staticmethod
    def _import_uploads(
        db,
        folder: Path,
        paths: list[Path],
        what: str,
        dataset: str | None,
        model: str | None,
        judge: str,
        response_key: str,
    ) -> str:
        if what == "scores":
            if not judge or not response_key:
                raise UserError("judge scores need the judge's name and the model they are for")
            summaries = [
                importing.import_scores(db, path, judge=judge, response_key=response_key, dataset=dataset)
                for path in paths
            ]
        elif any(path.name == "config.json" for path in paths):
            summaries = [importing.import_path(db, folder)]
        else:
            data_files = [path for path in paths if not path.name.endswith(".meta.json")]
            summaries = [importing.import_path(db, path, dataset=dataset, model=model) for path in data_files]
        return "\n".join(summary.describe() for summary in summaries)


def _choice_text(sample: dict, index: int | None) -> str | None:
    if index is None:
        return None
    choices = sample["choices"]
    return f"{index}: {choices[index].strip()}" if 0 <= index < len(choices) else str(index)


def bench_plot(results: list[dict], model: str) -> str:
    """The per-subject accuracy chart of bench.py, written to a temporary PNG for the Image component."""
    from workbench.bench import plot_subject_accuracy

    out = Path(tempfile.mkdtemp(prefix="workbench-chart-")) / "subjects.png"
    return str(plot_subject_accuracy(results, out, title=f"{model}: MMLU accuracy per subject"))


def scatter_figure(x: Sequence[float], y: Sequence[float], x_label: str, y_label: str):
    """One marker per distinct (x, y), its area growing with how many responses share it (scores repeat)."""
    from collections import Counter

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = Counter(zip(x, y, strict=True))
    figure, axes = plt.subplots(figsize=(6, 5))
    axes.scatter([p[0] for p in counts], [p[1] for p in counts], s=[20 * n for n in counts.values()], alpha=0.5)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(f"{len(x)} responses scored by both")
    figure.tight_layout()
    plt.close(figure)
    return figure


def loss_figure(curves: dict[str, list[dict]]):
    """Train and validation loss against tokens seen (or step), one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4))
    for index, (name, rows) in enumerate(curves.items()):
        x_key = "tokens_seen" if all(row["tokens_seen"] is not None for row in rows) else "step"
        x = [row[x_key] for row in rows]
        colour = f"C{index % 10}"
        axes.plot(x, [row["train_loss"] for row in rows], color=colour, label=f"{name} train")
        axes.plot(x, [row["val_loss"] for row in rows], color=colour, linestyle="--", label=f"{name} val")
        axes.set_xlabel(x_key.replace("_", " "))
    axes.set_ylabel("loss")
    axes.legend()
    figure.tight_layout()
    plt.close(figure)
    return figure


def build_app(
    db_path: str | Path,
    *,
    notice: str | None = None,
    repeat_share: float = DEFAULT_REPEAT_SHARE,
    seed: int | None = None,
) -> gr.Blocks:
    """The review app over one database file. ``notice`` is a banner (the demo says when its model was
    trained from random weights); ``repeat_share`` is the share of blind votes that re-ask an earlier pair."""
    db_path = Path(db_path)
    with closing(store.open_db(db_path)):  # create or migrate now, and fail with a one-line error for a bad path
        pass
    app = ReviewApp(db_path, notice=notice, repeat_share=repeat_share, seed=seed)
    blocks = app.build()
    return blocks


def launch(
    blocks: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    auth: list[tuple[str, str]] | None = None,
    **options: Any,
):
    """Start the server with the keyboard shortcuts and styles; never a public share link."""
    return blocks.launch(
        server_name=host,
        server_port=port,
        auth=auth or None,
        share=False,
        head=KEYBOARD_JS,
        css=CSS,
        ssr_mode=False,
        auth_message="Sign in: your login is your reviewer name.",
        **options,
    )
