"""The Benchmarks tab: lm-eval runs in the store, per-subject accuracy and the questions a model got wrong."""

from __future__ import annotations

import gradio as gr

from trainer.errors import UserError
from workbench import plots, store
from workbench.app.core import App, rounded, table

RUN_COLUMNS = ["id", "model_name", "tasks", "num_fewshot", "limit_n", "lm_eval_version", "finished_at"]


def build(app: App) -> None:
    with gr.Row():
        run = gr.Dropdown(label="Benchmark run", choices=[], elem_id="bench-run")
        refresh = gr.Button("Show", variant="primary", elem_id="bench-refresh")
    runs_table = gr.Dataframe(label="Runs", interactive=False, elem_id="bench-runs")
    results = gr.Dataframe(label="Results", interactive=False, elem_id="bench-results")
    chart = gr.Image(label="Per-subject accuracy", type="filepath", elem_id="bench-chart")
    wrong = gr.Dataframe(label="Questions this model got wrong", interactive=False, wrap=True, elem_id="bench-wrong")

    def show(run_label):
        with app.connect() as db:
            runs = store.benchmark_runs(db)
            if not runs:
                empty = table([], ["no benchmark runs yet: run `workbench bench --db DB --run RUN --tasks mmlu`"])
                return gr.update(choices=[]), empty, table([], ["task"]), None, table([], ["task"])
            labels = [f"#{row['id']} · {row['model_name']} · {row['tasks']}" for row in runs]
            chosen = labels.index(run_label) if run_label in labels else 0
            run_id = runs[chosen]["id"]
            result_rows = store.benchmark_results(db, run_id)
            wrong_rows = store.benchmark_samples(db, run_id, wrong_only=True)
        chart_path = None
        try:
            chart_path = plots.bench_chart(result_rows, runs[chosen]["model_name"], app.scratch_file("subjects.png"))
        except UserError:  # no per-subject scores in this run
            pass
        for row in wrong_rows:
            row["model_choice"] = _choice_text(row, row["model_choice"])
            row["correct_choice"] = _choice_text(row, row["correct_choice"])
        return (
            gr.update(choices=labels, value=labels[chosen]),
            table(runs, RUN_COLUMNS),
            table(
                [rounded(row) for row in result_rows],
                ["task", "subject", "metric", "value", "stderr", "n", "shots"],
            ),
            chart_path,
            table(wrong_rows, ["task", "subject", "doc_id", "prompt", "model_choice", "correct_choice"]),
        )

    outputs = [run, runs_table, results, chart, wrong]
    refresh.click(show, inputs=[run], outputs=outputs)
    run.input(show, inputs=[run], outputs=outputs)
    app.refreshers["benchmarks"] = (show, [run], outputs)


def _choice_text(sample: dict, index: int | None) -> str | None:
    if index is None:
        return None
    choices = sample["choices"]
    return f"{index}: {choices[index].strip()}" if 0 <= index < len(choices) else str(index)
