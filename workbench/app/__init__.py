"""``workbench serve``: the review app, where people grade responses next to the judges and benchmarks.

One Gradio page over the workbench's SQLite file, one module per tab (``review``, ``blind``, ``queues``,
``calibration``, ``leaderboard``, ``agreement``, ``benchmarks``, ``training``, ``data``) around a small shared
``core``. Every query lives in ``workbench.store``, every statistic in ``workbench.stats`` and every
import/export in ``workbench.importing``; the tabs only lay them out. Each request opens its own connection,
so several reviewers grade at once and SQLite's write lock orders their saves.

This module lays out the page and wires the scope bar (who grades, which data set, which models).
"""

from __future__ import annotations

import atexit
import random
import shutil
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

import gradio as gr

from workbench import store
from workbench.app import (
    adjudication,
    agreement,
    benchmarks,
    blind,
    calibration,
    campaigns,
    data,
    leaderboard,
    queues,
    training,
)
from workbench.app.core import FREE_REVIEW, MAX_COLUMNS, App, guidelines_html, inline, md
from workbench.app.markdown import CSS as READING_CSS
from workbench.app.review import ReviewTab, saved_text

KEYBOARD_JS = (Path(__file__).with_name("keyboard.js")).read_text(encoding="utf-8")
NAME_STORAGE_KEY = "workbench-reviewer-name"
DEFAULT_REPEAT_SHARE = 0.1
DEFAULT_MAX_UPLOAD_MB = 50
# Gradio's own cache of uploads and downloads: checked hourly, files older than a day removed.
CACHE_CLEANUP = (3600, 86400)

CSS = """
.wb-response { border: 2px solid transparent; border-radius: 8px; padding: 4px; }
.wb-response.wb-active { border-color: var(--color-accent); }
.wb-response textarea { max-height: 24em; overflow-y: auto; }
.wb-judges { font-size: 0.85em; width: 100%; }
.wb-judges td, .wb-judges th { padding: 2px 6px; vertical-align: top; text-align: left; }
.wb-refusal { color: var(--error-text-color, #b91c1c); }
.wb-saved { color: var(--color-accent); min-height: 1.2em; }
.wb-muted { color: var(--body-text-color-subdued); font-size: 0.85em; }
#guidelines-panel { border-left: 1px solid var(--border-color-primary); padding-left: 12px;
                    max-height: 80vh; overflow-y: auto; }
#notice { background: #fff3cd; color: #664d03; border: 1px solid #ffecb5; border-radius: 6px;
          padding: 8px 12px; }
"""

TABS = (
    ("Review", "review"),
    ("Blind A/B", "blind"),
    ("Queues", "queues"),
    ("Campaigns", "campaigns"),
    ("Adjudication", "adjudication"),
    ("Calibration", "calibration"),
    ("Leaderboard", "leaderboard"),
    ("Agreement", "agreement"),
    ("Benchmarks", "benchmarks"),
    ("Training", "training"),
    ("Data", "data"),
)


def _layout(app: App) -> gr.Blocks:
    with gr.Blocks(title="Workbench review", delete_cache=CACHE_CLEANUP) as blocks:
        if app.notice:
            gr.Markdown(f"**Note:** {md(app.notice)}", elem_id="notice")
        with gr.Row(equal_height=True):
            app.name_box = gr.Textbox(
                label="Your name (grades are stored under it)",
                placeholder="e.g. alice",
                elem_id="reviewer-name",
                scale=1,
            )
            app.campaign = gr.Dropdown(
                label="Campaign", choices=[FREE_REVIEW], value="", elem_id="scope-campaign", scale=1
            )
            app.dataset = gr.Dropdown(label="Data set", choices=[], elem_id="scope-dataset", scale=1)
            app.models = gr.Dropdown(
                label=f"Models side by side (2-{MAX_COLUMNS})",
                choices=[],
                multiselect=True,
                max_choices=MAX_COLUMNS,
                elem_id="scope-models",
                scale=2,
            )
        queues.make_filters(app)
        review = ReviewTab(app)
        builders = {
            "review": lambda: _review_beside_guidelines(app, review),
            "blind": lambda: blind.build(app),
            "queues": lambda: queues.build(app),
            "campaigns": lambda: campaigns.build(app),
            "adjudication": lambda: adjudication.build(app),
            "calibration": lambda: calibration.build(app),
            "leaderboard": lambda: leaderboard.build(app),
            "agreement": lambda: agreement.build(app),
            "benchmarks": lambda: benchmarks.build(app),
            "training": lambda: training.build(app),
            "data": lambda: data.build(app),
        }
        with gr.Tabs(elem_id="tabs") as app.tabs:
            for title, tab_id in TABS:
                with gr.Tab(title, id=tab_id, elem_id=f"{tab_id}-tab") as tab:
                    builders[tab_id]()
                if tab_id in app.refreshers:
                    handler, inputs, outputs = app.refreshers[tab_id]
                    tab.select(handler, inputs=inputs, outputs=outputs)
        _wire_scope(app, review, blocks)
    return blocks


def _review_beside_guidelines(app: App, review: ReviewTab) -> None:
    """The Review tab, with the campaign's guidelines in a column beside every item (hidden outside campaigns)."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=640):
            review.build()
        with gr.Column(scale=1, min_width=240, visible=False, elem_id="guidelines-panel") as app.guidelines_panel:
            app.guidelines = gr.HTML(elem_id="guidelines")


def _wire_scope(app: App, review: ReviewTab, blocks: gr.Blocks) -> None:
    """Page load, the name box and the campaign, data set and model pickers; none of them ever drops a mark on
    screen. In a campaign the data set and models are the campaign's (the pickers are locked) and the Review
    tab hands out the campaign's items beside its guidelines."""
    saved_name = gr.BrowserState("", storage_key=NAME_STORAGE_KEY)
    current_dataset = gr.State(None)
    current_campaign = gr.State("")
    item_outputs = review.item_outputs()
    scope_outputs = [app.dataset, app.models, current_dataset, current_campaign, app.guidelines_panel, app.guidelines]

    def scope(db, request, reviewer, campaign, dataset, filters) -> list:
        """The scope bar and the first item for a campaign, or for ``dataset`` (None: the one with most models)."""
        found = store.get_campaign(db, campaign) if campaign else None
        datasets = store.dataset_names(db)
        if found:
            dataset = found.dataset
        elif dataset not in datasets:
            counts = {name: len(store.models_with_responses(db, name)) for name in datasets}
            dataset = max(datasets, key=counts.get, default=None)
        all_models = store.models_with_responses(db, dataset)
        models = list(found.models) if found else all_models[:MAX_COLUMNS]
        if found:
            rendered = review.first_in_campaign(db, found.name, reviewer)
        else:
            rendered = review.first_item(
                db, app.queue_filter(dataset, models, filters, reviewer, request), dataset, models, reviewer
            )
        return [
            gr.update(choices=datasets, value=dataset, interactive=found is None),
            _models_update(all_models, models, store.blind_review(db, dataset), locked=found is not None),
            dataset,
            found.name if found else "",
            gr.update(visible=found is not None),
            guidelines_html(found.guidelines) if found else "",
            *rendered,
        ]

    def on_load(request: gr.Request, remembered, filters):
        username = getattr(request, "username", None)
        name = username or (remembered or "").strip()
        with app.connect() as db:
            open_campaigns = store.campaign_names(db, open_only=True)
            campaign = open_campaigns[0] if open_campaigns else ""  # the newest open campaign is everyone's work
            rendered = scope(db, request, name or None, campaign, None, filters)
        if username:
            name_update = gr.update(value=username, interactive=False, label="Signed in as")
        else:
            name_update = gr.update(value=name)
        return name_update, campaign_choices(open_campaigns, campaign), *rendered

    blocks.load(
        on_load,
        inputs=[saved_name, app.queue_settings],
        outputs=[app.name_box, app.campaign, *scope_outputs, *item_outputs],
    )

    def on_campaign(request: gr.Request, name, item_key, *rest):
        marks, (campaign, shown, current, filters) = rest[: 2 * MAX_COLUMNS + 1], rest[2 * MAX_COLUMNS + 1 :]
        if (campaign or "") == (shown or ""):  # tabbing through the picker is not a change of campaign
            return [gr.update()] * (len(scope_outputs) + len(item_outputs))
        reviewer = app.optional_reviewer(name, request)
        with app.connect() as db:
            review.keep_marks(db, reviewer, item_key, marks, current)
            return scope(db, request, reviewer, campaign, current, filters)

    outputs = [*scope_outputs, *item_outputs]
    app.campaign.input(
        inline(on_campaign, outputs, review.status),
        inputs=[*review.mark_inputs, app.campaign, current_campaign, current_dataset, app.queue_settings],
        outputs=outputs,
        show_progress="hidden",
    )

    def on_dataset(request: gr.Request, name, item_key, *rest):
        marks, (dataset, current, filters) = rest[: 2 * MAX_COLUMNS + 1], rest[2 * MAX_COLUMNS + 1 :]
        if dataset == current:  # tabbing through the picker is not a change of data set
            return gr.update(), gr.update(), *[gr.update()] * len(item_outputs)
        reviewer = app.optional_reviewer(name, request)
        with app.connect() as db:
            review.keep_marks(db, reviewer, item_key, marks, current)
            all_models = store.models_with_responses(db, dataset)
            models = all_models[:MAX_COLUMNS]
            queue = app.queue_filter(dataset, models, filters, reviewer, request)
            rendered = review.first_item(db, queue, dataset, models, reviewer)
            blind_now = store.blind_review(db, dataset)
        return _models_update(all_models, models, blind_now), dataset, *rendered

    outputs = [app.models, current_dataset, *item_outputs]
    app.dataset.input(
        inline(on_dataset, outputs, review.status),
        inputs=[*review.mark_inputs, app.dataset, current_dataset, app.queue_settings],
        outputs=outputs,
        show_progress="hidden",  # tabbing through the picker fires this too: no spinner over the grades
    )

    def on_models(request: gr.Request, name, item_key, *rest):
        marks, (dataset, models) = rest[: 2 * MAX_COLUMNS + 1], rest[2 * MAX_COLUMNS + 1 :]
        reviewer = app.optional_reviewer(name, request)
        with app.connect() as db:
            item_id, _, _ = review.keep_marks(db, reviewer, item_key, marks, dataset)
            return review.render(db, item_id, dataset, models, reviewer, fresh=True)

    app.models.input(
        inline(on_models, item_outputs, review.status),
        inputs=[*review.mark_inputs, app.dataset, app.models],
        outputs=item_outputs,
    )

    # Set by a name given while a campaign shows no item yet; its change hands out the first item. A second event
    # chained to every name change would carry the item's outputs (the grades among them) after every name, and
    # a click landing meanwhile could be undone: this one only fires when no item is on screen.
    campaign_start = gr.Textbox(visible=False, elem_id="campaign-start")
    name_outputs = [
        saved_name,
        *review.grades,
        *review.comments,
        review.better,
        *review.autosave_outputs,
        campaign_start,
    ]

    def on_name(request: gr.Request, name, item_key, *rest):
        """A new name keeps the marks on screen (stored under it) and shows that reviewer's own earlier
        marks only where the screen has none, so a click racing this event is never undone."""
        marks, (remembered, dataset, scope_models, campaign) = rest[: 2 * MAX_COLUMNS + 1], rest[2 * MAX_COLUMNS + 1 :]
        start = (app.optional_reviewer(name, request) or "") if campaign and not item_key else gr.update()
        unchanged = [gr.update()] * (len(name_outputs) - 2)
        if getattr(request, "username", None):
            return gr.update(), *unchanged, start
        reviewer = (name or "").strip() or None
        if reviewer == ((remembered or "").strip() or None):
            return gr.update(), *unchanged, start
        with app.connect() as db:
            item_id, shown, _ = review.keep_marks(db, reviewer, item_key, marks, dataset)
            models = [model for _, model in shown]
            view = store.item_view(db, item_id, models, reviewer) if item_id and reviewer else None
            rows = {row["response_id"]: row for row in view["responses"]} if view else {}
            grades, comments, statuses = [], [], []
            for index in range(MAX_COLUMNS):
                row = rows.get(shown[index][0]) if index < len(shown) else None
                stored_grade = row["my_grade"] if row else None
                stored_comment = row["my_comment"] if row else None
                grades.append(stored_grade if stored_grade is not None else gr.update())
                comments.append(stored_comment if stored_comment else gr.update())
                statuses.append(saved_text(view, row))
            better = review.better_update(view, shown) if view and view["my_preference"] else gr.update()
            reveal = review.reveal_text(db, view, shown, reviewer)
            models = [] if campaign else review.resolve_models(db, dataset, scope_models)
            progress = review.progress_text(db, reviewer, dataset, models, campaign=campaign)
        status = "" if reviewer else "Enter your name to grade."
        return reviewer or "", *grades, *comments, better, *statuses, status, progress, reveal, start

    for event in (app.name_box.blur, app.name_box.submit):
        event(
            inline(on_name, name_outputs, review.status),
            inputs=[*review.mark_inputs, saved_name, app.dataset, app.models, app.campaign],
            outputs=name_outputs,
            show_progress="hidden",  # a spinner over the grades would swallow the click that follows
        )

    def first_campaign_item(request: gr.Request, name, item_key, campaign):
        """In a campaign nothing is on screen until a name is given; then the reviewer's first item."""
        reviewer = app.optional_reviewer(name, request)
        if not (campaign and reviewer) or item_key:
            return [gr.update()] * len(item_outputs)
        with app.connect() as db:
            return review.first_in_campaign(db, campaign, reviewer)

    campaign_start.change(
        first_campaign_item,
        inputs=[app.name_box, review.item_key, app.campaign],
        outputs=item_outputs,
        show_progress="hidden",
    )


def _models_update(all_models: list[str], chosen: list[str], blind_now: bool, *, locked: bool = False) -> Any:
    """The model picker; hidden with no names in it for a blind data set, locked to a campaign's models."""
    if blind_now:
        return gr.update(choices=[], value=[], visible=False)
    return gr.update(choices=all_models, value=chosen, visible=True, interactive=not locked)


def campaign_choices(open_campaigns: list[str], chosen: str) -> Any:
    """The campaign picker: free review, then the open campaigns (newest first)."""
    return gr.update(choices=[FREE_REVIEW, *open_campaigns], value=chosen)


def build_app(
    db_path: str | Path,
    *,
    notice: str | None = None,
    repeat_share: float = DEFAULT_REPEAT_SHARE,
    seed: int | None = None,
    logins: Any = None,
    blind_datasets: tuple[str, ...] = (),
) -> gr.Blocks:
    """The review app over one database file.

    ``notice`` is a banner (default: the one stored in the database, where the demo says that its model was
    trained from random weights); ``repeat_share`` is the share of blind votes that re-ask an earlier pair;
    ``logins`` (``workbench.auth.Logins``) decide roles; ``blind_datasets`` make the Review tab blind there."""
    db_path = Path(db_path)
    with closing(store.open_db(db_path)) as db:  # create or migrate now, and fail with a one-line error
        for dataset in blind_datasets:
            store.set_blind_review(db, dataset, True)
        notice = notice if notice is not None else store.app_notice(db)
    app = App(db_path, notice=notice, repeat_share=repeat_share, rng=random.Random(seed), logins=logins)
    app.scratch = Path(tempfile.mkdtemp(prefix="workbench-app-"))
    atexit.register(shutil.rmtree, app.scratch, True)
    return _layout(app)


def launch(
    blocks: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    logins: Any = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    **options: Any,
):
    """Start the server with the keyboard shortcuts and styles; never a public share link, and nothing of the
    data kept in the browser beyond the reviewer's name."""
    login_options: dict[str, Any] = {}
    if logins is not None:
        from workbench.auth import launch_options

        login_options = launch_options(logins)
    return blocks.launch(
        # Gradio builds its own address from the name: an IPv6 one needs the brackets of a URL ("[::]:7860")
        server_name=f"[{host}]" if ":" in host and not host.startswith("[") else host,
        server_port=port,
        share=False,
        # Gradio's run history would copy every event's inputs and outputs (responses, comments, grades) into the
        # browser's localStorage, where anyone at that browser can read them, offer to upload them to a Hugging
        # Face bucket, and rewrite them on every click: 1.6 MB after 20 graded items, each step 3x slower.
        run_history=False,
        footer_links=["gradio", "settings"],
        head=f"<script>{KEYBOARD_JS}</script>",
        css=CSS + READING_CSS,
        ssr_mode=False,
        max_file_size=int(max_upload_mb * 1024 * 1024),
        **login_options,
        **options,
    )
