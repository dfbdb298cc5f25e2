"""The Adjudication tab (admins): items of a campaign where reviewers disagree, every grade and comment on them,
and the final grade the admin records.

An item is here when one response's grades are two or more apart, or two reviewers preferred opposite
responses of a pair (``store.disagreements``). The final grades go to ``adjudications``; the raw grades stay
as they were, and exports carry both. Like the Review tab, every save carries the ids of the item it was
given on (a hidden textbox), so a save can never land on another item.
"""

from __future__ import annotations

import json

import gradio as gr

from workbench import store
from workbench.app.core import GRADE_CHOICES, LETTERS, MAX_COLUMNS, App, Refused, html_table, inline, md, table

QUEUE_COLUMNS = ["item", "grade_spread", "opposite_votes", "reviewers", "resolved", "instruction"]
# rows drawn in the table: a Dataframe of 1,000 rows takes the browser a second to draw and slows every step
# after it; Save and next walks the whole list, which the server keeps
QUEUE_ROWS_SHOWN = 50


def build(app: App) -> None:
    gr.Markdown(
        "Admins only. Items where reviewers disagree (grades of one response two or more apart, or opposite "
        "votes on a pair): read every grade and comment, then record the final grade of each response. The raw "
        "grades stay as they are; exports carry both."
    )
    with gr.Row():
        campaign = gr.Dropdown(label="Campaign", choices=[], elem_id="adj-campaign")
        unresolved = gr.Checkbox(label="Only items without final grades", value=True, elem_id="adj-unresolved")
        refresh = gr.Button("Show", variant="primary", elem_id="adj-refresh")
    queue_table = gr.Dataframe(label="Items to adjudicate", interactive=False, wrap=True, elem_id="adj-queue")
    item_ids = gr.State([])
    key = gr.Textbox(visible=False, elem_id="adj-key")
    header = gr.Markdown(elem_id="adj-header")
    with gr.Row():
        instruction = gr.Textbox(label="Instruction", interactive=False, lines=2, elem_id="adj-instruction")
        input_box = gr.Textbox(label="Input", interactive=False, lines=2, elem_id="adj-input")
        reference = gr.Textbox(label="Reference answer", interactive=False, lines=2, elem_id="adj-reference")
    columns, texts, grade_tables, finals, notes = [], [], [], [], []
    for row_start in range(0, MAX_COLUMNS, 2):
        with gr.Row(equal_height=False):
            for index in range(row_start, row_start + 2):
                with gr.Column(visible=False, elem_id=f"adj-col-{index}") as column:
                    columns.append(column)
                    texts.append(
                        gr.Textbox(
                            label=f"Response {LETTERS[index]}",
                            interactive=False,
                            lines=4,
                            max_lines=12,
                            elem_id=f"adj-response-{index}",
                        )
                    )
                    grade_tables.append(gr.HTML(elem_id=f"adj-grades-{index}"))
                    finals.append(gr.Radio(GRADE_CHOICES, label="Final grade", elem_id=f"adj-grade-{index}"))
                    notes.append(gr.Textbox(label="Note (optional)", lines=1, elem_id=f"adj-note-{index}"))
    votes = gr.HTML(elem_id="adj-votes")
    with gr.Row():
        save = gr.Button("Save final grades", elem_id="adj-save")
        save_next = gr.Button("Save and next ▶", variant="primary", elem_id="adj-save-next")
    status = gr.Markdown(elem_id="adj-status")
    item_outputs = [
        key,
        header,
        instruction,
        input_box,
        reference,
        *columns,
        *texts,
        *grade_tables,
        *finals,
        *notes,
        votes,
    ]

    def render(db, name: str | None, item_id: str | None) -> list:
        view = store.adjudication_view(db, name, item_id) if name and item_id else None
        rows = view["responses"][:MAX_COLUMNS] if view else []
        cells: list[list] = [[], [], [], [], []]
        for index in range(MAX_COLUMNS):
            row = rows[index] if index < len(rows) else None
            cells[0].append(gr.update(visible=row is not None))
            cells[1].append(gr.update(value=row["text"], label=f"{LETTERS[index]} · {row['model']}") if row else "")
            cells[2].append(_grades_html(row["grades"]) if row else "")
            cells[3].append(row["final_grade"] if row else None)
            cells[4].append((row["final_note"] or "") if row else "")
        ids = {"campaign": name, "item": item_id, "responses": [row["response_id"] for row in rows]}
        heading = f"**Item {view['position'] + 1}** of campaign {md(name)}" if view else "Choose an item in the table."
        return [
            json.dumps(ids) if view else "",
            heading,
            view["instruction"] if view else "",
            view["input"] if view else "",
            (view["reference_output"] or "") if view else "",
            *[cell for group in cells for cell in group],
            _votes_html(view["votes"]) if view else "",
        ]

    def show(request: gr.Request, picked, only_unresolved, item_key):
        """The queue; the item on screen stays (no redraw of two dozen components) while it is still listed."""
        app.require_admin(request, "adjudicate")
        opened = json.loads(item_key or "null") or {}
        with app.connect() as db:
            names = store.campaign_names(db)
            picked = picked if picked in names else (names[0] if names else None)
            rows = store.disagreements(db, picked, unresolved_only=bool(only_unresolved)) if picked else []
            listed = [row["item_id"] for row in rows]
            if opened.get("campaign") == picked and opened.get("item") in listed:
                rendered = [gr.update()] * len(item_outputs)
            else:
                rendered = render(db, picked, listed[0] if listed else None)
        shown_rows = rows[:QUEUE_ROWS_SHOWN]
        for row in shown_rows:
            row["item"] = row["position"] + 1
            row["instruction"] = row["instruction"][:90]
        label = f"Items to adjudicate: {len(rows)}"
        if len(rows) > QUEUE_ROWS_SHOWN:
            label += f" (the first {QUEUE_ROWS_SHOWN} shown; Save and next goes through all of them)"
        hint = (
            "No campaigns yet: create one in the Campaigns tab."
            if not picked
            else "Nothing to adjudicate: no grades two or more apart and no opposite votes"
            + (" left without final grades." if only_unresolved else ".")
        )
        return (
            gr.update(choices=names, value=picked),
            gr.update(value=table(shown_rows, QUEUE_COLUMNS, empty=hint), label=label),
            listed,
            "",
            *rendered,
        )

    shown = [campaign, queue_table, item_ids, status, *item_outputs]
    show_inputs = [campaign, unresolved, key]
    for trigger in (refresh.click, campaign.input, unresolved.input):  # reads only: no spinner, no queue
        trigger(inline(show, shown, status), inputs=show_inputs, outputs=shown, show_progress="hidden", queue=False)
    app.refreshers["adjudication"] = (inline(show, shown, status), show_inputs, shown)

    def open_row(event: gr.SelectData, request: gr.Request, ids, picked):
        app.require_admin(request, "adjudicate")
        row = event.index[0]
        if row >= len(ids):
            raise Refused("That row is gone: press Show.")
        with app.connect() as db:
            return "", *render(db, picked, ids[row])

    row_outputs = [status, *item_outputs]
    queue_table.select(
        inline(open_row, row_outputs, status),
        inputs=[item_ids, campaign],
        outputs=row_outputs,
        show_progress="hidden",
        queue=False,
    )

    def saver(move_on: bool):
        def handler(request: gr.Request, name_box, item_key, ids, *values):
            app.require_admin(request, "adjudicate")
            opened = json.loads(item_key or "null")
            if not opened:
                raise Refused("Choose an item in the table first.")
            grades, texts_typed = values[:MAX_COLUMNS], values[MAX_COLUMNS:]
            responses = opened["responses"]
            missing = [LETTERS[i] for i in range(len(responses)) if grades[i] is None]
            if missing:
                raise Refused(f"Give a final grade to every response (missing: {', '.join(missing)}).")
            adjudicator = app.optional_reviewer(name_box, request) or "admin"
            finals_given = [(response, int(grades[i]), texts_typed[i] or "") for i, response in enumerate(responses)]
            with app.connect() as db:
                store.save_adjudication(db, opened["campaign"], adjudicator, finals_given)
                target = opened["item"]
                if move_on and opened["item"] in ids:
                    position = ids.index(opened["item"])
                    target = ids[position + 1] if position + 1 < len(ids) else None
                rendered = render(db, opened["campaign"], target)
            message = f"Final grades saved by {md(adjudicator)}."
            if move_on and target is None:
                message += " That was the last item in the list: press **Show** to see what is left."
            return message, *rendered

        return handler

    save_inputs = [app.name_box, key, item_ids, *finals, *notes]
    # a save and a step are short: no spinner over two dozen components and no queue (as in the Review tab)
    for button, move_on in ((save, False), (save_next, True)):
        button.click(
            inline(saver(move_on), row_outputs, status),
            inputs=save_inputs,
            outputs=row_outputs,
            show_progress="hidden",
            queue=False,
        )


def _grades_html(grades: list[dict]) -> str:
    """Every reviewer's grade and comment of one response, escaped."""
    rows = [(grade["reviewer"], grade["score"], grade["comment"]) for grade in grades]
    return html_table(rows, ("reviewer", "grade", "comment"), empty="No grades yet.")


def _votes_html(votes: list[dict]) -> str:
    """Every reviewer's pairwise votes on the item (blind or not), escaped."""
    if not votes:
        return ""
    rows = []
    for vote in votes:
        if vote["both_bad"]:
            verdict = "both bad"
        elif vote["preference"] == "tie":
            verdict = "tie"
        else:
            verdict = vote["left_model"] if vote["preference"] == "left" else vote["right_model"]
            verdict = f"{verdict} better"
        pair = f"{vote['left_model']} vs {vote['right_model']}"
        rows.append((vote["reviewer"], pair, verdict, "blind" if vote["blind"] else "names shown", vote["comment"]))
    return "<h4>Pairwise votes</h4>" + html_table(rows, ("reviewer", "pair", "vote", "how", "comment"))
