"""The Campaigns tab: every campaign's progress, per-reviewer progress, and (admins) creating, closing and
exporting campaigns.

A reviewer works on a campaign by picking it in the Campaign box at the top: the Review tab then hands out the
campaign's items, beside its guidelines. The rules (overlap, reservations, closing) live in
``workbench.store.campaigns``; this tab only lays them out. Refusals and results are written inline, under the
buttons, and stay there.
"""

from __future__ import annotations

import gradio as gr

from trainer.errors import UserError
from workbench import importing, store
from workbench.app.core import FREE_REVIEW, MAX_COLUMNS, App, Refused, html_table, inline, md
from workbench.campaigns import progress_summary

OVERVIEW_COLUMNS = ["campaign", "dataset", "split", "models", "overlap", "items", "complete", "reviews", "status"]
REVIEWER_COLUMNS = ["reviewer", "done", "in_progress", "last_done"]
NO_CAMPAIGNS = "No campaigns yet: an admin creates one below (or `workbench campaign create`)."


def build(app: App) -> None:
    gr.Markdown(
        "A campaign hands each reviewer the next item that still needs them, beside its guidelines, until every "
        "item has its reviewers. To grade, pick the campaign in **Campaign** at the top and open **Review**."
    )
    overview = gr.HTML(label="Campaigns", elem_id="campaigns-table")
    with gr.Row():
        chosen = gr.Dropdown(label="Campaign", choices=[], elem_id="campaign-pick")
        refresh = gr.Button("Refresh", elem_id="campaign-refresh")
    progress = gr.Markdown(elem_id="campaign-progress")
    reviewers = gr.HTML(label="Reviewers", elem_id="campaign-reviewers")
    with gr.Row():
        close = gr.Button("Close campaign", elem_id="campaign-close")
        reopen = gr.Button("Reopen", elem_id="campaign-reopen")
        export = gr.Button("Export its grades (raw, adjudicated, final)", elem_id="campaign-export")
    download = gr.File(label="Campaign export", interactive=False, elem_id="campaign-export-file")
    status = gr.Markdown(elem_id="campaign-status")
    with gr.Accordion("New campaign (admins)", open=False, elem_id="campaign-new"):
        name = gr.Textbox(label="Name", placeholder="e.g. sft-vs-base-round-1", elem_id="campaign-name")
        with gr.Row():
            dataset = gr.Dropdown(label="Data set", choices=[], elem_id="campaign-dataset")
            models = gr.Dropdown(
                label=f"Models side by side (1-{MAX_COLUMNS})",
                choices=[],
                multiselect=True,
                max_choices=MAX_COLUMNS,
                elem_id="campaign-models",
            )
            split = gr.Dropdown(label="Split", choices=[("all items", "")], value="", elem_id="campaign-split")
            overlap = gr.Number(
                label="Reviewers per item (overlap)",
                value=store.DEFAULT_OVERLAP,
                precision=0,
                minimum=1,
                elem_id="campaign-overlap",
            )
        guidelines = gr.Textbox(
            label="Guidelines (Markdown), shown to reviewers beside every item",
            lines=6,
            elem_id="campaign-guidelines",
        )
        create = gr.Button("Create campaign", variant="primary", elem_id="campaign-create")

    def show(request: gr.Request, name_box, picked):
        reviewer = app.optional_reviewer(name_box, request)
        with app.connect() as db:
            rows = store.campaign_overview(db)
            names = [row["campaign"] for row in rows]
            picked = picked if picked in names else (names[0] if names else None)
            datasets = store.dataset_names(db)
            text, people = "", []
            if picked:
                text = _progress_text(store.campaign_progress(db, picked, reviewer, open_for_me=True))
                people = [
                    row
                    for row in store.reviewer_progress(db, picked)
                    if app.is_admin(request) or row["reviewer"] == reviewer
                ]
        return (
            _rows_html(rows, OVERVIEW_COLUMNS, NO_CAMPAIGNS),
            gr.update(choices=names, value=picked),
            text,
            _rows_html(people, REVIEWER_COLUMNS, "Nobody has been handed an item of this campaign yet."),
            gr.update(choices=datasets),
        )

    shown = [overview, chosen, progress, reviewers, dataset]
    for trigger in (refresh.click, chosen.input):  # a few reads: no spinner, no queue (like a Review step)
        trigger(show, inputs=[app.name_box, chosen], outputs=shown, show_progress="hidden", queue=False)
    app.refreshers["campaigns"] = (show, [app.name_box, chosen], shown)

    def scope_of(picked_dataset):
        with app.connect() as db:
            names = store.models_with_responses(db, picked_dataset or None) if picked_dataset else []
            splits = store.split_names(db, picked_dataset) if picked_dataset else []
        return (
            gr.update(choices=names, value=names[:MAX_COLUMNS]),
            gr.update(choices=[("all items", ""), *splits], value=""),
        )

    dataset.input(scope_of, inputs=dataset, outputs=[models, split])

    def do_create(request: gr.Request, name_box, new_name, picked_dataset, picked_models, picked_split, quota, text):
        app.require_admin(request, "create campaigns")
        creator = app.optional_reviewer(name_box, request)
        try:
            with app.connect() as db:
                campaign = store.create_campaign(
                    db,
                    new_name,
                    dataset=picked_dataset or "",
                    models=picked_models or [],
                    overlap=int(quota) if quota is not None else 0,
                    split=picked_split or None,
                    guidelines=text or "",
                    created_by=creator,
                )
                items = campaign.items
                open_campaigns = store.campaign_names(db, open_only=True)
        except UserError as exc:
            raise Refused(f"Not created: {exc}") from exc
        message = (
            f"Created campaign **{md(campaign.name)}**: {items} items, {campaign.overlap} reviewer(s) each. "
            "Reviewers pick it in **Campaign** at the top."
        )
        return message, *show(request, name_box, campaign.name)[:4], gr.update(choices=[FREE_REVIEW, *open_campaigns])

    create_outputs = [status, overview, chosen, progress, reviewers, app.campaign]
    create.click(
        inline(do_create, create_outputs, status),
        inputs=[app.name_box, name, dataset, models, split, overlap, guidelines],
        outputs=create_outputs,
    )

    def set_open(reopen_it: bool):
        def handler(request: gr.Request, name_box, picked):
            app.require_admin(request, "close or reopen campaigns")
            if not picked:
                raise Refused("Choose a campaign first.")
            with app.connect() as db:
                campaign = store.close_campaign(db, picked, reopen=reopen_it)
            state = "open again" if campaign.is_open else "closed: nothing more is handed out"
            return f"Campaign **{md(picked)}** is {state}.", *show(request, name_box, picked)[:4]

        return handler

    open_outputs = [status, overview, chosen, progress, reviewers]
    for button, reopen_it in ((close, False), (reopen, True)):
        button.click(
            inline(set_open(reopen_it), open_outputs, status), inputs=[app.name_box, chosen], outputs=open_outputs
        )

    def do_export(request: gr.Request, picked):
        app.require_admin(request, "export grades")
        if not picked:
            raise Refused("Choose a campaign first.")
        out = app.scratch_file(f"campaign-{picked}.json" if picked.isidentifier() else "campaign.json")
        with app.connect() as db:
            count = importing.export(db, "campaign", out, campaign=picked)
        return f"Exported {count} items with raw, adjudicated and final grades.", str(out)

    export.click(inline(do_export, [status, download], status), inputs=[chosen], outputs=[status, download])


def _rows_html(records: list[dict], columns: list[str], empty: str) -> str:
    return html_table([[record.get(column) for column in columns] for record in records], columns, empty=empty)


def _progress_text(progress: dict) -> str:
    state = "closed" if progress["closed"] else "open"
    mine = ""
    if progress["open_for_me"] is not None:
        mine = f" · you: {progress['mine_done']} done, {progress['open_for_me']} more waiting for you"
    return (
        f"**{md(progress['campaign'])}** ({state}) on {md(progress['dataset'])}: {md(progress_summary(progress))}{mine}"
    )
