"""The Agreement tab: any two raters (judges, reviewers, the humans' mean) side by side, with a scatter plot.

Reviewers who are not admins can compare only the judges and themselves.
"""

from __future__ import annotations

import gradio as gr

from workbench import store
from workbench.app import plots
from workbench.app.core import SHOWN_RESAMPLES, App, agreement_row, rounded, table


def build(app: App) -> None:
    with gr.Row():
        first = gr.Dropdown(label="Rater 1", choices=[], elem_id="agreement-first")
        second = gr.Dropdown(label="Rater 2", choices=[], elem_id="agreement-second")
        refresh = gr.Button("Compare", variant="primary", elem_id="agreement-refresh")
    result = gr.Dataframe(label="Agreement", interactive=False, elem_id="agreement-table")
    plot = gr.Plot(label="Scores of both raters, one point per response", elem_id="agreement-plot")

    def show(request: gr.Request, name, dataset, models, rater_a, rater_b):
        reviewer = app.optional_reviewer(name, request)
        with app.connect() as db:
            raters = store.rater_names(db)
            if not app.is_admin(request):
                raters = [r for r in raters if r.startswith("judge:") or r == f"reviewer:{reviewer}"]
            rater_a = rater_a if rater_a in raters else (raters[0] if raters else None)
            rater_b = rater_b if rater_b in raters else (raters[1] if len(raters) > 1 else None)
            if not rater_a or not rater_b:
                return gr.update(choices=raters), gr.update(choices=raters), table([], ["n"]), None
            a = store.rater_scores(db, rater_a, dataset=dataset or None, models=models or None)
            b = store.rater_scores(db, rater_b, dataset=dataset or None, models=models or None)
            scales = (store.rater_scale(db, rater_a), store.rater_scale(db, rater_b))
        row = agreement_row(a, b, scales, resamples=SHOWN_RESAMPLES)
        common = sorted(a.keys() & b.keys())
        figure = plots.scatter_figure([a[k] for k in common], [b[k] for k in common], rater_a, rater_b)
        return (
            gr.update(choices=raters, value=rater_a),
            gr.update(choices=raters, value=rater_b),
            table([rounded(row)], list(row)),
            figure if common else None,
        )

    inputs = [app.name_box, app.dataset, app.models, first, second]
    outputs = [first, second, result, plot]
    refresh.click(show, inputs=inputs, outputs=outputs)
    app.refreshers["agreement"] = (show, inputs, outputs)
