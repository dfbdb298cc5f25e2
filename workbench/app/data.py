"""The Data tab (admins): upload files to import, download exports and the report, and choose blind review per
data set.

Uploads are all or nothing across files (one transaction), limited in size by ``launch(max_upload_mb=...)``,
and copied into a folder of their own that is removed afterwards; exports are written to the app's scratch
folder, which is emptied as it goes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import gradio as gr

from trainer.errors import UserError
from workbench import importing, report, store
from workbench.app.core import App, Refused, inline


def build(app: App) -> None:
    gr.Markdown(
        "Admins only. Import with the same importers as `workbench import` / `import-scores`. Upload JSON, "
        "JSONL, CSV or Parquet files (instruction data, chat records, responses, preference data; add "
        "`FILE.meta.json` to import trainer output), a run folder's `config.json` + `metrics.jsonl`, or a judge's "
        "score lists. Several files are imported together: all of them, or none when one is refused."
    )
    with gr.Row():
        files = gr.File(label="Files", file_count="multiple", elem_id="data-files")
        with gr.Column():
            kind = gr.Radio(
                [("data, responses or run folder", "data"), ("judge scores", "scores")],
                value="data",
                label="What is it?",
                elem_id="data-kind",
            )
            dataset = gr.Textbox(label="Data set name (default: file name)", elem_id="data-dataset")
            model = gr.Textbox(label="Model name for a single response key (optional)", elem_id="data-model")
            judge = gr.Textbox(label="Judge name (scores)", elem_id="data-judge")
            response_key = gr.Textbox(label="Model the scores are for (scores)", elem_id="data-response-key")
            import_button = gr.Button("Import", variant="primary", elem_id="data-import")
    result = gr.Textbox(label="Import result", interactive=False, elem_id="data-result")
    status = gr.Markdown(elem_id="data-status")
    with gr.Row():
        fmt = gr.Dropdown(importing.EXPORT_FORMATS, value="json", label="Export format", elem_id="export-format")
        export_button = gr.Button("Export", elem_id="data-export")
        download = gr.File(label="Download", interactive=False, elem_id="export-file")
    with gr.Row():
        report_button = gr.Button(
            "Build the report (HTML) for the data set and models chosen at the top", elem_id="data-report"
        )
        report_file = gr.File(label="Report", interactive=False, elem_id="report-file")
    with gr.Row():
        blind = gr.Checkbox(
            label="Blind review for the data set chosen at the top: models shown as A-D until graded",
            elem_id="data-blind",
        )
        blind_button = gr.Button("Apply", elem_id="data-blind-apply")
    blind_result = gr.Markdown(elem_id="data-blind-result")

    def do_import(request: gr.Request, uploaded, what, dataset_name, model_name, judge_name, key):
        app.require_admin(request, "import files")
        if not uploaded:
            raise Refused("Choose a file to upload first.")
        folder = Path(tempfile.mkdtemp(prefix="workbench-upload-"))
        try:
            paths = [Path(shutil.copy(path, folder / Path(path).name)) for path in uploaded]
            with app.connect() as db:
                summaries = importing.import_files(
                    db,
                    paths,
                    kind=what,
                    dataset=dataset_name.strip() or None,
                    model=model_name.strip() or None,
                    judge=judge_name.strip() or None,
                    response_key=key.strip() or None,
                )
                datasets = store.dataset_names(db)  # a new data set can be picked at once, without a reload
        except UserError as exc:
            message = str(exc).replace(str(folder) + "/", "")
            return f"Nothing was imported: {message}", gr.update(), ""
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return "\n".join(summary.describe() for summary in summaries), gr.update(choices=datasets), ""

    def do_export(request: gr.Request, chosen_format, current_dataset):
        app.require_admin(request, "export grades and scores")
        suffix = "csv" if chosen_format == "csv" else "json"
        out = app.scratch_file(f"workbench-{chosen_format}.{suffix}")
        try:
            with app.connect() as db:
                importing.export(db, chosen_format, out, dataset=current_dataset or None)
        except UserError as exc:
            raise Refused(str(exc)) from exc
        return str(out), ""

    def do_report(request: gr.Request, current_dataset, current_models):
        """``workbench report`` for the scope bar's data set and models (none chosen: all of them)."""
        app.require_admin(request, "download the report")
        out = app.scratch_file("workbench-report.html")
        try:
            report.write_report(app.db_path, out, dataset=current_dataset or None, models=current_models or None)
        except UserError as exc:
            raise Refused(str(exc)) from exc
        return str(out), ""

    def set_blind(request: gr.Request, chosen, current_dataset):
        app.require_admin(request, "change review settings")
        if not current_dataset:
            raise Refused("Choose a data set at the top first.")
        with app.connect() as db:
            store.set_blind_review(db, current_dataset, bool(chosen))
        state = "blind" if chosen else "not blind"
        return f"Review of this data set is now {state}; reload the page to apply it."

    import_outputs = [result, app.dataset, status]
    import_button.click(
        inline(do_import, import_outputs, status),
        inputs=[files, kind, dataset, model, judge, response_key],
        outputs=import_outputs,
    )
    export_button.click(
        inline(do_export, [download, status], status), inputs=[fmt, app.dataset], outputs=[download, status]
    )
    report_button.click(
        inline(do_report, [report_file, status], status),
        inputs=[app.dataset, app.models],
        outputs=[report_file, status],
    )
    blind_button.click(
        inline(set_blind, [blind_result], blind_result), inputs=[blind, app.dataset], outputs=blind_result
    )
