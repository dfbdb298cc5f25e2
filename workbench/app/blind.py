"""The Blind A/B tab, like Chatbot Arena's battles: two answers to one instruction, models hidden and sides
shuffled; A, B, tie or both bad, with an optional comment; the vote stays marked and the models are named after it.

The pair (with its model names) stays in server-side state; the browser gets only the texts until the vote.
A pair loads as soon as the tab opens. Items the reviewer has seen with names in the Review tab are left out.
"""

from __future__ import annotations

import gradio as gr

from workbench import store
from workbench.app.core import App, Refused, inline
from workbench.app.markdown import RAW_CLASS, READING_CLASS, raw_toggle, rendered_view, safe_markdown

BOTH_BAD = "both bad"
NO_PAIR = "No pair left for you to vote on with this data set and these models: pick others at the top."


def build(app: App) -> None:
    pair = gr.State(None)
    with gr.Column(elem_id="blind-panel", elem_classes=[READING_CLASS]):
        gr.Markdown(
            "Two answers to the same instruction, models hidden and sides shuffled; the models are named "
            "after your vote. Keys: **a** left better, **b** right better, **t** tie, **x** both bad, "
            "**n** next pair."
        )
        with gr.Row():
            instruction = gr.Textbox(label="Instruction", interactive=False, lines=2, elem_id="blind-instruction")
            input_box = gr.Textbox(label="Input", interactive=False, lines=2, elem_id="blind-input")
        raw_toggle("blind-panel", "blind-raw-toggle")
        sides = []
        with gr.Row():
            for letter, side in (("A", "left"), ("B", "right")):
                with gr.Column():
                    label, elem_id = f"Response {letter}", f"blind-response-{side}"
                    raw = gr.Textbox(label=label, interactive=False, lines=8, elem_id=elem_id, elem_classes=[RAW_CLASS])
                    sides += [raw, rendered_view(label, f"blind-response-md-{side}")]
        left, left_md, right, right_md = sides
        with gr.Row():
            vote_left = gr.Button("A is better", elem_id="blind-left", interactive=False)
            vote_tie = gr.Button("Tie", elem_id="blind-tie", interactive=False)
            vote_right = gr.Button("B is better", elem_id="blind-right", interactive=False)
            vote_bad = gr.Button("Both are bad", elem_id="blind-both-bad", interactive=False)
        comment = gr.Textbox(label="Comment (optional, stored with your vote)", lines=1, elem_id="blind-comment")
        status = gr.Markdown(elem_id="blind-status")
        reveal = gr.Textbox(label="Models (shown after your vote)", interactive=False, elem_id="blind-reveal")
        next_pair = gr.Button("Next pair (n)", variant="primary", elem_id="blind-next")
    buttons = [vote_left, vote_tie, vote_right, vote_bad]
    votes = ("left", "tie", "right", BOTH_BAD)
    fresh_buttons = [gr.update(interactive=True, variant="secondary")] * len(buttons)
    idle_buttons = [gr.update(interactive=False, variant="secondary")] * len(buttons)

    def load_pair(request: gr.Request, name, dataset, models):
        reviewer = app.reviewer(name, request)
        with app.connect() as db:
            chosen = store.next_blind_pair(
                db,
                reviewer,
                dataset=dataset or None,
                models=models or None,
                repeat_share=app.repeat_share,
                rng=app.rng,
            )
        if chosen is None:
            return None, "", "", "", "", "", "", "", "", *idle_buttons, NO_PAIR
        left_text, right_text = chosen["left_text"], chosen["right_text"]
        texts = (chosen["instruction"], chosen["input"], left_text, right_text)
        return chosen, *texts, safe_markdown(left_text), safe_markdown(right_text), "", "", *fresh_buttons, ""

    def vote(choice: str):
        def record(request: gr.Request, name, current, note):
            reviewer = app.reviewer(name, request)
            if not current:
                raise Refused("Load a pair first (Next pair).")
            with app.connect() as db:
                store.add_pairwise_grade(
                    db,
                    current["item_id"],
                    current["left_model"],
                    current["right_model"],
                    reviewer,
                    "tie" if choice == BOTH_BAD else choice,
                    blind=True,
                    repeat_of=current["repeat_of"],
                    comment=(note or "").strip(),
                    both_bad=choice == BOTH_BAD,
                )
            names = f"A = {current['left_model']} · B = {current['right_model']}"
            marked = [  # the vote given stays marked; no second vote on this pair
                gr.update(interactive=False, variant="primary" if value == choice else "secondary") for value in votes
            ]
            return None, names, *marked, "Vote stored."

        return record

    def load_if_idle(request: gr.Request, name, dataset, models, current):
        """Opening the tab shows a pair right away, unless one is waiting for a vote (or no name yet)."""
        if current or not app.optional_reviewer(name, request):
            return [gr.update()] * len(pair_outputs)
        return load_pair(request, name, dataset, models)

    pair_outputs = [pair, instruction, input_box, left, right, left_md, right_md, reveal, comment, *buttons, status]
    next_pair.click(
        inline(load_pair, pair_outputs, status), inputs=[app.name_box, app.dataset, app.models], outputs=pair_outputs
    )
    app.refreshers["blind"] = (
        inline(load_if_idle, pair_outputs, status),
        [app.name_box, app.dataset, app.models, pair],
        pair_outputs,
    )
    vote_outputs = [pair, reveal, *buttons, status]
    for button, choice in zip(buttons, votes, strict=True):
        button.click(
            inline(vote(choice), vote_outputs, status), inputs=[app.name_box, pair, comment], outputs=vote_outputs
        )
