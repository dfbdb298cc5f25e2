"""The Agreement tab: any two raters (judges, reviewers, the humans' mean) side by side, with a scatter plot.

Reviewers who are not admins can compare only the judges and themselves. The figures are ``workbench
agreement``'s (``analysis.pair_agreement``), for the same choice of alpha level.
"""

from __future__ import annotations

from collections.abc import Sequence

import gradio as gr
import sqlite_utils

from workbench import analysis, plots, store
from workbench.app.core import SHOWN_RESAMPLES, App, agreement_row, rounded, table

NEED_TWO = "Two raters are needed: run `workbench judge`, import a judge's scores, or grade in Review."
ALPHA_CHOICES = [
    ("ordinal: whole 1-5 grades", "ordinal"),
    ("interval: scores mapped onto 1-5, unrounded", "interval"),
]


def build(app: App) -> None:
    with gr.Row():
        first = gr.Dropdown(label="Rater 1", choices=[], elem_id="agreement-first")
        second = gr.Dropdown(label="Rater 2", choices=[], elem_id="agreement-second")
        level = gr.Dropdown(
            label="Krippendorff's alpha",
            choices=ALPHA_CHOICES,
            value=analysis.DEFAULT_ALPHA_LEVEL,
            elem_id="agreement-alpha-level",
        )
        refresh = gr.Button("Compare", variant="primary", elem_id="agreement-refresh")
    gr.Markdown(
        "Correlations on each rater's own scale; kappa and alpha on the 1-5 grades, other scales mapped "
        "linearly onto them. A reviewer against the humans' mean is compared with the others' grades only."
    )
    result = gr.Dataframe(label="Agreement", interactive=False, elem_id="agreement-table")
    plot = gr.Plot(label="Scores of both raters, one point per response", elem_id="agreement-plot")

    def show(request: gr.Request, name, dataset, models, rater_a, rater_b, alpha_level):
        reviewer = app.optional_reviewer(name, request)
        with app.connect() as db:
            raters = store.rater_names(db)
            if not app.is_admin(request):
                raters = [r for r in raters if r.startswith("judge:") or r == f"reviewer:{reviewer}"]
            rater_a = rater_a if rater_a in raters else (raters[0] if raters else None)
            rater_b = rater_b if rater_b in raters else (raters[1] if len(raters) > 1 else None)
            if not rater_a or not rater_b:
                return gr.update(choices=raters), gr.update(choices=raters), table([], ["n"], empty=NEED_TWO), None
            row, pair = agreement_table(
                db, rater_a, rater_b, dataset=dataset or None, models=models or None, alpha_level=alpha_level
            )
        a, b = pair.scores
        common = sorted(a.keys() & b.keys())
        figure = plots.scatter_figure([a[k] for k in common], [b[k] for k in common], *pair.labels)
        return (
            gr.update(choices=raters, value=rater_a),
            gr.update(choices=raters, value=rater_b),
            table([row], list(row)),
            figure if common else None,
        )

    inputs = [app.name_box, app.dataset, app.models, first, second, level]
    outputs = [first, second, result, plot]
    refresh.click(show, inputs=inputs, outputs=outputs)
    level.input(show, inputs=inputs, outputs=outputs)
    app.refreshers["agreement"] = (show, inputs, outputs)


def agreement_table(
    db: sqlite_utils.Database,
    rater_a: str,
    rater_b: str,
    *,
    dataset: str | None = None,
    models: Sequence[str] | None = None,
    alpha_level: str | None = None,
) -> tuple[dict, analysis.RaterPair]:
    """The tab's row (who against whom, then ``agreement_row`` rounded for display) and the raters' scores."""
    pair = analysis.rater_pair(db, rater_a, rater_b, dataset=dataset, models=models)
    level = alpha_level or analysis.DEFAULT_ALPHA_LEVEL
    row = agreement_row(*pair.scores, pair.scales, alpha_level=level, resamples=SHOWN_RESAMPLES)
    return rounded({"rater 1": pair.labels[0], "rater 2": pair.labels[1], **row}), pair
