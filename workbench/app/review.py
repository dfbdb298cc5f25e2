"""The Review tab: one item, up to four responses side by side, grades that are stored the moment they are given.

No grade is ever lost: every click and comment is saved at once (comments as the reviewer types, at most one
save in flight), and every way of leaving an item (Previous, Skip, Next ungraded, a queue row, another data
set or model) stores what is on screen first. Without a name the marks stay on screen and are stored as soon
as a name is given. Every event carries the ids of the item it was triggered on, so a save that runs after a
step still lands on its own item. A step costs one indexed look-up of the neighbouring item and that item's own
rows; progress is counted once per scope and then moved by each save, and calibration runs only on request.

In a blind data set (``workbench serve --blind-review``) models are shown as A-D in an order of their own for
each reviewer and item, and named only once that reviewer has graded every response of the item.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import gradio as gr

from trainer.errors import UserError
from workbench import store
from workbench.app.core import (
    GRADE_CHOICES,
    LETTERS,
    MAX_COLUMNS,
    App,
    Refused,
    html_table,
    inline,
    md,
    my_agreement_with_judges,
)
from workbench.app.markdown import RAW_CLASS, READING_CLASS, raw_toggle, rendered_view, safe_markdown

SHORTCUTS_HELP = (
    "Keys: **1-5** grade the highlighted response (then the next one is highlighted), **←/→** move, "
    "**a/b/c/d** that response is better, **t** tie, **s** save, **n** save and next, **k** skip, "
    "**p** previous, **u** next ungraded for me. Everything is saved as you click and type."
)
# Positions in ``item_outputs()`` of the components only the server writes (columns, rendered responses, flags,
# judge tables and the versions note): five single outputs, then eight groups of MAX_COLUMNS, then better and
# the versions note.
SERVER_WRITTEN = (
    *range(5, 5 + MAX_COLUMNS),
    *range(5 + 2 * MAX_COLUMNS, 5 + 5 * MAX_COLUMNS),
    5 + 8 * MAX_COLUMNS + 1,
)
STATUS_AT = 5 + 8 * MAX_COLUMNS + 3
HEADER_AT = 1
NO_NAME = "Enter your name (top left): your marks stay on screen and are stored as soon as you do."
NO_DATA = (
    "**Nothing to review yet**: import responses (`workbench import FILE --db DB`, or upload them in Data), "
    "then pick the data set at the top."
)
NO_NAME_CAMPAIGN = "Enter your name (top left) to be handed your first item of this campaign."


class ReviewTab:
    """Components and handlers of the Review tab; ``build`` lays them out and wires the events."""

    def __init__(self, app: App):
        self.app = app

    # --- layout -----------------------------------------------------------------------------------------

    def build(self) -> None:
        app = self.app
        # The open item and its responses' ids, in column order, kept in the page (hidden): an event carries the
        # ids it was triggered on. A server-side State is read when the event runs, so a save queued behind a
        # step would land on the next item. No model names here: blind review keeps them on the server.
        self.item_key = gr.Textbox(visible=False, elem_id="item-key")
        # what the last step sent to the components only the server writes, so the next step sends changes only
        self.screen = gr.State({})
        with gr.Column(elem_id="review-panel", elem_classes=[READING_CLASS]):
            with gr.Row(equal_height=True):
                self.header = gr.Markdown(elem_id="item-header")
                self.progress = gr.Markdown(elem_id="progress")
            with gr.Row():
                self.instruction = gr.Textbox(label="Instruction", interactive=False, lines=2, elem_id="instruction")
                self.input = gr.Textbox(label="Input", interactive=False, lines=2, elem_id="input")
                self.reference = gr.Textbox(label="Reference answer", interactive=False, lines=2, elem_id="reference")
            self.columns, self.responses, self.rendered, self.flags, self.judges = [], [], [], [], []
            self.grades, self.comments, self.saved = [], [], []
            raw_toggle("review-panel", "raw-toggle")
            for first in range(0, MAX_COLUMNS, 2):  # two by two: four responses get half the width each
                with gr.Row(equal_height=False):
                    for index in range(first, first + 2):
                        self._column(index)
            self.better = gr.Radio(choices=[], label="Which is better? (keys a/b/c/d, t = tie)", elem_id="better")
            self.versions_note = gr.Markdown(elem_id="versions-note")
            self.reveal = gr.Markdown(elem_id="reveal")
            with gr.Row():
                previous = gr.Button("◀ Previous (p)", elem_id="previous")
                skip = gr.Button("Skip ▶ (k)", elem_id="skip")
                save = gr.Button("Save (s)", variant="secondary", elem_id="save")
                save_next = gr.Button("Save and next ▶ (n)", variant="primary", elem_id="save-next")
                next_ungraded = gr.Button("Next ungraded for me » (u)", elem_id="next-ungraded")
            self.status = gr.Markdown(elem_id="save-status")
            gr.Markdown(SHORTCUTS_HELP)
            with gr.Accordion("Your running agreement with the judges", open=False):
                refresh = gr.Button("Refresh", size="sm", elem_id="live-calibration-refresh")
                live = gr.Dataframe(interactive=False, elem_id="live-calibration")

        marks = [*self.grades, *self.comments, self.better]
        self.mark_inputs = [app.name_box, self.item_key, *marks]
        # autosave never writes to the marks themselves (nor shows a spinner over them): a click is never undone
        self.autosave_outputs = [*self.saved, self.status, self.progress, self.reveal]
        autosave_inputs = [*self.mark_inputs, app.dataset, app.models, app.campaign]
        # One autosave at a time, in click order: each reports the progress after its own save, so the last one
        # to arrive is never older than the one before it (a step leaves progress alone when it saved nothing).
        autosave = {
            "inputs": autosave_inputs,
            "outputs": self.autosave_outputs,
            "show_progress": "hidden",
            "concurrency_id": "autosave",
            "concurrency_limit": 1,
        }
        autosave_handler = inline(self._autosave, self.autosave_outputs, self.status)
        for grade in self.grades:
            grade.input(autosave_handler, **autosave)
        for comment in self.comments:
            comment.input(autosave_handler, trigger_mode="always_last", **autosave)
            comment.blur(autosave_handler, **autosave)
        self.better.input(autosave_handler, **autosave)
        save.click(autosave_handler, **autosave)

        nav_inputs = [*self.mark_inputs, self.screen, app.dataset, app.models, app.queue_settings, app.campaign]
        # A step is short: no spinner over forty components, and no queue (a plain request saves about 20 ms of
        # the event stream; SQLite's write lock orders concurrent saves anyway).
        step = {"inputs": nav_inputs, "outputs": self.item_outputs(), "show_progress": "hidden", "queue": False}
        written = [*self.columns, *self.rendered, *self.flags, *self.judges, self.versions_note]
        assert [step["outputs"][index] for index in SERVER_WRITTEN] == written, "SERVER_WRITTEN is out of date"
        assert step["outputs"][STATUS_AT] is self.status, "STATUS_AT is out of date"
        assert step["outputs"][HEADER_AT] is self.header, "HEADER_AT is out of date"
        for button, handler in (
            (previous, self._navigate(-1)),
            (skip, self._navigate(+1, skip=True)),
            (save_next, self._navigate(+1)),
            (next_ungraded, self._navigate(+1, ungraded=True)),
        ):
            button.click(inline(handler, step["outputs"], self.status), **step)
        refresh.click(self._calibration, inputs=[app.name_box, app.dataset], outputs=live)
        app.open_item = (self.open_item, self.mark_inputs, self.item_outputs())

    def _column(self, index: int) -> None:
        with gr.Column(visible=index < 2, elem_classes=["wb-response"], elem_id=f"response-col-{index}") as column:
            self.columns.append(column)
            self.responses.append(
                gr.Textbox(
                    label=f"Response {LETTERS[index]}",
                    interactive=False,
                    lines=6,
                    max_lines=20,
                    elem_id=f"response-{index}",
                    elem_classes=[RAW_CLASS],
                )
            )
            self.rendered.append(rendered_view(f"Response {LETTERS[index]}", f"response-md-{index}"))
            self.flags.append(
                gr.Textbox(label="⚠ Prompt-injection flag", interactive=False, visible=False, elem_id=f"flag-{index}")
            )
            self.judges.append(gr.HTML(elem_id=f"judges-{index}"))
            self.grades.append(gr.Radio(GRADE_CHOICES, label="Your grade (keys 1-5)", elem_id=f"grade-{index}"))
            self.comments.append(gr.Textbox(label="Comment", lines=1, elem_id=f"comment-{index}"))
            self.saved.append(gr.Markdown(elem_id=f"saved-{index}", elem_classes=["wb-saved"]))

    def item_outputs(self) -> list:
        return [
            self.item_key,
            self.header,
            self.instruction,
            self.input,
            self.reference,
            *self.columns,
            *self.responses,
            *self.rendered,
            *self.flags,
            *self.judges,
            *self.grades,
            *self.comments,
            *self.saved,
            self.better,
            self.versions_note,
            self.reveal,
            self.status,
            self.progress,
            self.screen,
        ]

    # --- saving -----------------------------------------------------------------------------------------

    @staticmethod
    def _marks(shown, values) -> tuple[list[store.Mark], str | None]:
        grades = values[:MAX_COLUMNS]
        comments = values[MAX_COLUMNS : 2 * MAX_COLUMNS]
        better = values[2 * MAX_COLUMNS]
        marks = [
            store.Mark(int(response_id), model, int(grade) if grade is not None else None, comment or "")
            for (response_id, model), grade, comment in zip(shown or [], grades, comments, strict=False)
        ]
        models = [model for _, model in shown or []]
        if better and better in LETTERS[: len(models)]:
            better = models[LETTERS.index(better)]
        elif better != store.review_state.TIE:
            better = None
        return marks, better

    @staticmethod
    def opened(db, item_key: str | None) -> tuple[str | None, list]:
        """The item an event was triggered on and its [[response id, model], ...] in column order."""
        try:
            key = json.loads(item_key or "null") or {}
            item_id, response_ids = key["item"], key["responses"]
        except (ValueError, KeyError, TypeError):
            return None, []
        return item_id, store.response_models(db, item_id, response_ids)

    def keep_marks(self, db, reviewer: str | None, item_key, values, dataset) -> tuple[str | None, list, store.Saved]:
        """Store the marks on screen for the item they were given on and move the progress counts.

        Returns that item, its [[response id, model], ...] and what the save wrote (``store.Saved``: rows
        changed, campaigns whose item it finished). With no name, refuses (so the reviewer cannot leave) while
        any marks are on screen. Every handler that saves or leaves an item calls this first.
        """
        item_id, shown = self.opened(db, item_key)
        marks, better = self._marks(shown, values)
        if not item_id or not marks:
            return item_id, shown, store.Saved()
        if not any(mark.grade is not None or mark.comment.strip() for mark in marks) and not better:
            return item_id, shown, store.Saved()
        if reviewer is None:
            raise Refused(NO_NAME)
        try:
            saved = store.save_marks(db, reviewer, item_id, marks, better)
        except UserError as exc:
            raise Refused(str(exc)) from exc
        self.app.progress.record(reviewer, dataset, saved)
        return item_id, shown, saved

    def _autosave(self, request: gr.Request, name, item_key, *rest):
        values, (dataset, models, campaign) = rest[: 2 * MAX_COLUMNS + 1], rest[2 * MAX_COLUMNS + 1 :]
        reviewer = self.app.optional_reviewer(name, request)
        if reviewer is None:
            grades, comments, better = values[:MAX_COLUMNS], values[MAX_COLUMNS:-1], values[-1]
            waiting = any(grade is not None for grade in grades) or any((c or "").strip() for c in comments) or better
            return *[gr.update()] * MAX_COLUMNS, NO_NAME if waiting else "", gr.update(), gr.update()
        with self.app.connect() as db:
            item_id, shown, saved = self.keep_marks(db, reviewer, item_key, values, dataset)
            view = store.item_view(db, item_id, [model for _, model in shown], reviewer) if item_id else None
            rows = {row["response_id"]: row for row in view["responses"]} if view else {}
            statuses = [saved_text(view, rows.get(response_id)) for response_id, _ in shown]
            reveal = self.reveal_text(db, view, shown, reviewer)
            models = [] if campaign else self.resolve_models(db, dataset, models)
            progress = self.progress_text(db, reviewer, dataset, models, campaign=campaign)
        statuses += [""] * (MAX_COLUMNS - len(statuses))
        # nothing new to say leaves the status alone: a step's message (nothing left, finish this item first)
        # must not be overwritten by the autosave of a click that the step has saved already
        changed = saved.changed
        status = f"Saved ({changed} change{'s' * (changed != 1)})." if changed else gr.update()
        if campaign in saved.completed:
            status += " This item is done: **n** for your next one."
        return *statuses, status, progress, reveal

    # --- moving between items ---------------------------------------------------------------------------

    def _navigate(self, direction: int, *, ungraded: bool = False, skip: bool = False):
        def navigate(request: gr.Request, name, item_key, *rest):
            marks = rest[: 2 * MAX_COLUMNS + 1]
            screen, dataset, models, filters, campaign = rest[2 * MAX_COLUMNS + 1 :]
            reviewer = self.app.optional_reviewer(name, request)
            if (ungraded or campaign) and reviewer is None:
                raise Refused(NO_NAME)
            with self.app.connect() as db:
                item_id, _, _ = self.keep_marks(db, reviewer, item_key, marks, dataset)
                if campaign:
                    return self._campaign_step(db, campaign, reviewer, item_id, direction, skip, screen)
                queue = self.app.queue_filter(dataset, models, filters, reviewer, request)
                if ungraded:
                    queue = replace(queue, ungraded_for=reviewer)
                target = store.next_item(db, queue, after=item_id, direction=direction)
                values = self.render(db, target, dataset, models, reviewer, screen=screen)
            if ungraded and target is None:
                values[STATUS_AT] = "You have graded every response in this queue."
            return values

        return navigate

    def _campaign_step(self, db, campaign: str, reviewer: str, item_id, direction: int, skip: bool, screen) -> list:
        """A step in a campaign: Previous goes back through the reviewer's own items; Skip hands the item back
        and takes the next open one; Next keeps an unfinished item on screen (finish it, or skip it)."""
        found = store.get_campaign(db, campaign)
        if direction < 0:
            target = store.previous_assignment(db, campaign, reviewer, before=item_id)
        else:
            target = store.next_assignment(db, campaign, reviewer, after=item_id, skip=skip)
        values = self.render(db, target, found.dataset, list(found.models), reviewer, screen=screen, campaign=campaign)
        if target is None:
            values[HEADER_AT] = campaign_done_text(found)
        elif direction > 0 and not skip and target == item_id:
            values[STATUS_AT] = "Grade every response of this item first, or **Skip** (k) to hand it to someone else."
        return values

    def open_item(self, db, reviewer: str | None, item_key, marks, target: str, dataset, models) -> list:
        """Store the marks of the open item, then render ``target`` (Queues opens its rows here)."""
        self.keep_marks(db, reviewer, item_key, marks, dataset)
        return self.render(db, target, dataset, models, reviewer)

    def first_item(self, db, queue: store.QueueFilter, dataset, models, reviewer: str | None) -> list:
        """The reviewer's first ungraded item in the queue, else the queue's first item."""
        first = store.next_item(db, replace(queue, ungraded_for=reviewer)) if reviewer else None
        return self.render(db, first or store.next_item(db, queue), dataset, models, reviewer, fresh=True)

    def first_in_campaign(self, db, campaign: str, reviewer: str | None) -> list:
        """The item the campaign hands the reviewer (their own reservation first); none until they give a name."""
        found = store.get_campaign(db, campaign)
        target = store.next_assignment(db, campaign, reviewer) if reviewer else None
        values = self.render(db, target, found.dataset, list(found.models), reviewer, fresh=True, campaign=campaign)
        if target is None and reviewer:
            values[HEADER_AT] = campaign_done_text(found)
        elif target is None:
            values[HEADER_AT] = f"**{md(found.name)}**: a campaign on {md(found.dataset)}"
            values[STATUS_AT] = NO_NAME_CAMPAIGN
        return values

    # --- one item on screen -----------------------------------------------------------------------------

    def render(
        self,
        db,
        item_id: str | None,
        dataset,
        models,
        reviewer: str | None,
        *,
        fresh: bool = False,
        screen=None,
        campaign: str | None = None,
    ) -> list:
        """Every output of the Review tab for one item (or an empty page when the queue is empty).

        ``fresh`` recounts the progress from the database (opening the page or another scope); otherwise it
        comes from the counts this app keeps up to date as it saves.

        ``screen`` is what the previous step sent to the components that only the server writes (columns,
        rendered responses, flags, judge tables, the versions note); those that would not change are left alone
        (``gr.update()``), which saves the browser most of a step's work. Marks are always sent: the reviewer may
        have changed them. In a ``campaign`` the progress line is the campaign's.
        """
        blind = store.blind_review(db, dataset)
        models = list(models) if campaign else self.models_in_view(db, dataset, models, blind)
        view = store.item_view(db, item_id, models, reviewer) if item_id else None
        rows = view["responses"][:MAX_COLUMNS] if view else []
        if blind and reviewer and rows:
            random.Random(f"{reviewer}\x1f{item_id}").shuffle(rows)
        shown = [[row["response_id"], row["model"]] for row in rows]
        columns, texts, rendered, flags, judges, grades, comments, saved = [], [], [], [], [], [], [], []
        for index in range(MAX_COLUMNS):
            row = rows[index] if index < len(rows) else None
            columns.append(gr.update(visible=row is not None))
            if row is None:
                texts.append(gr.update(value=""))
                rendered.append("")
                flags.append(gr.update(value="", visible=False))
                judges.append("")
                grades.append(None)
                comments.append("")
                saved.append("")
                continue
            label = f"Response {LETTERS[index]}" if blind else f"{LETTERS[index]} · {row['model']}"
            text = row["text"].lstrip("\n") or row["text"]
            texts.append(gr.update(value=text, label=label))
            rendered.append(gr.update(value=safe_markdown(text), label=label))
            flags.append(gr.update(value=row["injection_flag"] or "", visible=bool(row["injection_flag"])))
            judges.append(judges_html(row["judge_scores"]))
            grades.append(row["my_grade"])
            comments.append(row["my_comment"] or "")
            saved.append(saved_text(view, row))
        values = [
            json.dumps({"item": item_id, "responses": [response_id for response_id, _ in shown]}) if view else "",
            self._header(view, dataset),
            view["instruction"] if view else "",
            view["input"] if view else "",
            (view["reference_output"] or "") if view else "",
            *columns,
            *texts,
            *rendered,
            *flags,
            *judges,
            *grades,
            *comments,
            *saved,
            self.better_update(view, shown),
            self._versions_note(db, view, shown, blind),
            self.reveal_text(db, view, shown, reviewer, blind=blind),
            "" if reviewer or not view else NO_NAME,
            self.progress_text(db, reviewer, dataset, models, fresh=fresh, campaign=campaign),
        ]
        return self._changes_only(values, screen or {})

    @staticmethod
    def _changes_only(values: list, screen: dict) -> list:
        sent = {}
        for index in SERVER_WRITTEN:
            sent[str(index)] = repr(values[index])
            if screen.get(str(index)) == sent[str(index)]:
                values[index] = gr.update()
        return [*values, sent]

    @staticmethod
    def models_in_view(db, dataset, chosen, blind: bool) -> list[str]:
        """The models side by side: the reviewer's choice, or in a blind data set the first four."""
        if blind or not chosen:
            return store.models_with_responses(db, dataset or None)[:MAX_COLUMNS]
        return list(chosen)

    @staticmethod
    def _header(view: dict | None, dataset: str | None) -> str:
        if not view and not dataset:
            return NO_DATA
        if not view:
            return "**Nothing to review** with this data set, these models and filters: clear the filters in Queues."
        split = f" · split {md(view['split'])}" if view["split"] else ""
        return f"**{md(view['dataset'])}** · item {view['position'] + 1}{split}"

    @staticmethod
    def better_update(view: dict | None, shown: list) -> Any:
        choices = [(f"{LETTERS[i]} better", LETTERS[i]) for i in range(len(shown))] + [("Tie", "tie")]
        value = None
        preference = view["my_preference"] if view else None
        names = [model for _, model in shown]
        if preference == "tie":
            value = "tie"
        elif preference in names:
            value = LETTERS[names.index(preference)]
        return gr.update(choices=choices, value=value, visible=len(shown) > 1)

    @staticmethod
    def _versions_note(db, view: dict | None, shown: list, blind: bool) -> str:
        """Say when a response changed since it was graded: those grades stay with the older text."""
        if not view:
            return ""
        names = [model for _, model in shown]
        older = store.older_graded_versions(db, view["item_id"], names)
        notes = []
        for index, model in enumerate(names):
            if older.get(model):
                who = f"Response {LETTERS[index]}" if blind else f"{LETTERS[index]} ({md(model)})"
                notes.append(f"{who} changed since {older[model]} grade(s) were given to an older version")
        return ("ℹ " + "; ".join(notes) + ". Those grades stay with the older text.") if notes else ""

    @staticmethod
    def reveal_text(db, view: dict | None, shown: list, reviewer: str | None, *, blind: bool | None = None) -> str:
        """In a blind data set, the models' names once this reviewer has graded every response shown.

        Whenever names are on screen (always, outside blind review) the item is recorded as seen with names,
        so that Blind A/B leaves it out for this reviewer."""
        if not view or not reviewer:
            return ""
        if blind is None:
            blind = store.blind_review(db, view["dataset"])
        graded = all(
            row["my_grade"] is not None for row in view["responses"] if [row["response_id"], row["model"]] in shown
        )
        if blind and not graded:
            return "Models are hidden in this data set until you have graded every response."
        store.record_view(db, reviewer, view["item_id"])
        if not blind:
            return ""
        names = " · ".join(f"{LETTERS[index]} = {md(model)}" for index, (_, model) in enumerate(shown))
        return f"Models: {names}"

    @classmethod
    def resolve_models(cls, db, dataset, chosen) -> list[str]:
        """``models_in_view`` for a handler that has not looked up whether the data set is blind."""
        return cls.models_in_view(db, dataset, chosen, store.blind_review(db, dataset))

    def progress_text(
        self, db, reviewer: str | None, dataset, models: list[str], *, fresh: bool = False, campaign: str | None = None
    ) -> str:
        """The progress line over ``models`` as shown (already resolved by ``models_in_view``), or the campaign's."""
        if campaign:
            return campaign_progress_text(store.campaign_progress(db, campaign, reviewer))
        counts = self.app.progress.get(db, reviewer, dataset, models, fresh=fresh)
        total = counts["total"]
        mine = f"You: **{counts['mine']} / {total}** graded" if reviewer else "Enter your name to grade"
        return (
            f"{mine} · Everyone: **{counts['anyone']} / {total}** responses graded "
            f"({counts['grades']} grades) over {counts['items']} items"
        )

    def _calibration(self, request: gr.Request, name, dataset):
        reviewer = self.app.optional_reviewer(name, request)
        with self.app.connect() as db:
            return my_agreement_with_judges(db, reviewer, dataset)


def campaign_progress_text(progress: dict) -> str:
    """The progress line in a campaign: the reviewer's finished items and the campaign's (read, not counted)."""
    everyone = (
        f"Campaign: **{progress['complete']} / {progress['items']}** items have their "
        f"{progress['overlap']} reviewer{'s' * (progress['overlap'] != 1)}"
    )
    if progress["closed"]:
        return f"{everyone} · closed"
    if progress["mine_done"] is None:
        return f"Enter your name to get your items · {everyone}"
    done = progress["mine_done"]
    return f"You: **{done}** item{'s' * (done != 1)} done · {everyone}"


def campaign_done_text(campaign: store.Campaign) -> str:
    if not campaign.is_open:
        return f"Campaign {md(campaign.name)} is closed: every item has its reviewers (or an admin closed it)."
    return (
        f"Nothing left for you in campaign {md(campaign.name)}: the other items have their reviewers or are being "
        "graded right now. Thank you!"
    )


def saved_text(view: dict | None, row: dict | None) -> str:
    """What is stored for one response, naming the item: a save that lands after the reviewer moved on still
    tells the truth about the item it was for."""
    if view is None or row is None:
        return ""
    item = f"item {view['position'] + 1}"
    if row["my_grade"] is not None:
        return f"✓ {item}: grade {row['my_grade']} saved" + (" with comment" if row["my_comment"] else "")
    return f"✓ {item}: comment saved (no grade yet)" if row["my_comment"] else ""


def judges_html(scores: list[dict]) -> str:
    """The judges' scores and rationales of one response as an escaped HTML table (lighter than a Dataframe)."""
    rows = []
    for score in scores:
        scale = f"{score['score_min']:g}-{score['score_max']:g}" if score["score_min"] is not None else ""
        value = "error" if score["score"] is None else f"{score['score']:g} ({scale})"
        run = f" #{score['repeat'] + 1}" if score["repeat"] else ""
        note = score["rationale"] or (f"error: {score['error']}" if score["error"] else "")
        rows.append((score["judge"] + run, value, note))
    return html_table(rows, ("judge", "score", "rationale"), empty="No judge scores yet: run workbench judge.")
