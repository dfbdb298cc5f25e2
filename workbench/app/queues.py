"""The Queues tab: filters that the Review tab follows, and the filtered queue as a table.

A reviewer who is not an admin sees only their own grades in the human means (and so in the disagreement
order): nobody sees another reviewer's grades before grading.
"""

from __future__ import annotations

import gradio as gr

from workbench import store
from workbench.app.core import App, Refused, inline, table

# rows drawn in the table (Review steps through the whole queue): a Dataframe of thousands of rows takes the
# browser seconds to draw
ROWS_SHOWN = 200
NO_ITEMS = "No items match: clear the filters, or pick another data set or models at the top."
ORDER_CHOICES = [("file order", "position"), ("judge and humans disagree most", "disagreement")]
COLUMNS = [
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


def make_filters(app: App) -> None:
    """The filters, made before the tabs (Review follows them) and rendered in Queues."""
    split = gr.Dropdown(label="Split", choices=[""], value="", elem_id="queue-split", render=False)
    judge = gr.Dropdown(
        label="Judge (for the score range and disagreement)",
        choices=[""],
        value="",
        elem_id="queue-judge",
        render=False,
    )
    score_min = gr.Textbox(label="Judge score ≥", placeholder="any", elem_id="queue-min", render=False)
    score_max = gr.Textbox(label="Judge score ≤", placeholder="any", elem_id="queue-max", render=False)
    ungraded = gr.Checkbox(label="Only items with responses I have not graded", elem_id="queue-ungraded", render=False)
    flagged = gr.Checkbox(label="Only prompt-injection flagged", elem_id="queue-flagged", render=False)
    order = gr.Radio(ORDER_CHOICES, value="position", label="Order", elem_id="queue-order", render=False)
    search = gr.Textbox(
        label="Search instruction and responses",
        placeholder="words that must all appear; Enter shows the queue",
        elem_id="queue-search",
        render=False,
    )
    # the order core.App.queue_filter unpacks
    app.filters = [split, ungraded, judge, score_min, score_max, flagged, order, search]
    # the same values as one server-side State: a step in Review sends it instead of eight components
    app.queue_settings = gr.State(["", False, "", "", "", False, "position", ""])


def build(app: App) -> None:
    split, ungraded, judge, score_min, score_max, flagged, order, search = app.filters
    search.render()
    with gr.Row():
        for component in (split, judge, score_min, score_max):
            component.render()
    with gr.Row():
        for component in (ungraded, flagged, order):
            component.render()
    refresh = gr.Button("Show queue", variant="primary", elem_id="queue-refresh")
    gr.Markdown("Click a row to open that item in the Review tab. Judge means are mapped onto 1-5.")
    status = gr.Markdown(elem_id="queue-status")
    queue_table = gr.Dataframe(label="Queue", interactive=False, wrap=True, elem_id="queue-table")
    item_ids = gr.State([])

    def show(request: gr.Request, name, dataset, models, *filters):
        reviewer = app.optional_reviewer(name, request)
        queue = app.queue_filter(dataset, models, filters, reviewer, request)
        with app.connect() as db:
            rows = store.review_queue(db, queue)
            splits = [""] + store.split_names(db, dataset or None)
            judges = [""] + store.score_judge_names(db)
        shown = rows[:ROWS_SHOWN]
        for row in shown:
            row["position"] += 1
            row["instruction"] = row["instruction"][:90]
        label = f"Queue: {len(rows)} items" + (f" (the first {ROWS_SHOWN} shown)" if len(rows) > ROWS_SHOWN else "")
        return (
            gr.update(value=table(shown, COLUMNS, empty=NO_ITEMS), label=label),
            [row["item_id"] for row in rows],
            gr.update(choices=splits),
            gr.update(choices=judges),
            "",
        )

    for component in app.filters:
        component.change(
            lambda *values: list(values),
            inputs=app.filters,
            outputs=app.queue_settings,
            queue=False,
            show_progress="hidden",
        )
    queue_inputs = [app.name_box, app.dataset, app.models, *app.filters]
    queue_outputs = [queue_table, item_ids, split, judge, status]
    for event in (refresh.click, search.submit):
        event(inline(show, queue_outputs, status), inputs=queue_inputs, outputs=queue_outputs)
    app.refreshers["queues"] = (inline(show, queue_outputs, status), queue_inputs, queue_outputs)

    open_handler, mark_inputs, item_outputs = app.open_item

    def open_item(event: gr.SelectData, request: gr.Request, ids, dataset, models, name, item_key, *marks):
        row = event.index[0]
        if not ids or row >= len(ids):
            raise Refused("That row is gone; refresh the queue.")
        reviewer = app.optional_reviewer(name, request)
        with app.connect() as db:
            rendered = open_handler(db, reviewer, item_key, marks, ids[row], dataset, models)
        return [gr.Tabs(selected="review"), *rendered, ""]

    open_outputs = [app.tabs, *item_outputs, status]
    queue_table.select(
        inline(open_item, open_outputs, status),
        inputs=[item_ids, app.dataset, app.models, *mark_inputs],
        outputs=open_outputs,
    )
