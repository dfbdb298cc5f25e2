"""The Training tab: loss curves and evaluations of the fine-tuning runs in the store."""

from __future__ import annotations

import gradio as gr

from workbench import plots, store
from workbench.app.core import App, table

COLUMNS = ["model", "step", "epoch", "tokens_seen", "train_loss", "val_loss", *store.JUDGE_COLUMNS]


def build(app: App) -> None:
    with gr.Row():
        runs = gr.Dropdown(label="Runs", choices=[], multiselect=True, elem_id="training-runs")
        refresh = gr.Button("Show", variant="primary", elem_id="training-refresh")
    plot = gr.Plot(label="Loss", elem_id="training-plot")
    evaluations = gr.Dataframe(label="Evaluations", interactive=False, elem_id="training-table")

    def show(chosen):
        with app.connect() as db:
            names = store.training_models(db)
            chosen = [name for name in chosen or [] if name in names] or names
            curves = {name: store.training_metrics(db, name) for name in chosen}
        rows = [{"model": name, **row} for name, metrics in curves.items() for row in metrics]
        if not rows:
            return gr.update(choices=[]), None, table([], ["no runs yet: workbench import runs/RUN --db DB"])
        return gr.update(choices=names, value=chosen), plots.loss_figure(curves), table(rows, COLUMNS)

    refresh.click(show, inputs=[runs], outputs=[runs, plot, evaluations])
    app.refreshers["training"] = (show, [runs], [runs, plot, evaluations])
