"""The Leaderboard tab: per model, grades, judge means, win rates, Bradley-Terry (with intervals), Elo and
benchmark accuracy, from whichever source of comparisons the reviewer picks: the figures and sources of
``workbench stats`` (``analysis.outcome_sources``, ``analysis.pairwise_summary``)."""

from __future__ import annotations

import gradio as gr

from workbench import analysis, stats, store
from workbench.analysis import HUMAN_BLIND
from workbench.app.core import SHOWN_RESAMPLES, App, rounded, table

NO_MODELS = "No models yet: `workbench import RESPONSES.json --db DB` (or upload in Data), then judge or grade them."
# everyone's grades, aggregated: admins only (a reviewer's grading must not lean on the others')
ADMIN_COLUMNS = ("human grades", "mean human grade")


def build(app: App) -> None:
    with gr.Row():
        source = gr.Dropdown(label="Win rates and ratings from", choices=[], elem_id="leaderboard-source")
        refresh = gr.Button("Refresh", elem_id="leaderboard-refresh")
    gr.Markdown(
        "Mean judge scores are on each judge's own scale. Ratings: Bradley-Terry (Elo scale) with "
        "95% bootstrap intervals ('too few' under 10 comparisons or when a model won or lost them all); ties "
        "count half. A reviewer's source holds their votes and, for pairs they did not vote on, what their "
        "grades imply. Benchmark columns name their run: task · data folder · shots · questions."
    )
    board = gr.Dataframe(interactive=False, elem_id="leaderboard-table")

    def show(request: gr.Request, name, dataset, chosen_source, keep_choice=True):
        """``keep_choice=False`` (opening the tab) moves off a source without comparisons in this data
        set to the first one that has some; a source the reviewer picked stays picked. A reviewer who is not an
        admin ranks by judges, pairwise votes and their own grades only, and sees no other reviewer's grades."""
        dataset = dataset or None
        admin = app.is_admin(request)
        me = f"reviewer:{app.optional_reviewer(name, request)}"
        with app.connect() as db:
            outcomes_of = {
                source: read
                for source, read in analysis.outcome_sources(db, dataset=dataset).items()
                if admin or not (source == store.HUMANS or source.startswith("reviewer:")) or source == me
            }
            outcomes = outcomes_of[chosen_source]() if chosen_source in outcomes_of else []
            if not outcomes and not (keep_choice and chosen_source in outcomes_of):
                chosen_source, outcomes = next(
                    ((name, found) for name, get in outcomes_of.items() if (found := get())),
                    (HUMAN_BLIND, []),
                )
            rows = leaderboard_rows(store.model_summary(db, dataset=dataset), outcomes, analysis.benchmark_columns(db))
        if not admin:
            rows = [{k: v for k, v in row.items() if k not in ADMIN_COLUMNS} for row in rows]
        columns = list(rows[0]) if rows else ["model"]
        return gr.update(choices=list(outcomes_of), value=chosen_source), table(rows, columns, empty=NO_MODELS)

    def on_open(request: gr.Request, name, dataset, chosen):
        return show(request, name, dataset, chosen, keep_choice=False)

    inputs = [app.name_box, app.dataset, source]
    refresh.click(show, inputs=inputs, outputs=[source, board])
    source.input(show, inputs=inputs, outputs=[source, board])
    app.refreshers["leaderboard"] = (on_open, inputs, [source, board])


def leaderboard_rows(
    summary: list[dict], outcomes: list[stats.Outcome], benchmarks: dict[str, dict[str, float]]
) -> list[dict]:
    """One row per model, rounded for display: grades, judge means (``store.model_summary``), win rate,
    Bradley-Terry (with CI) and Elo (``analysis.pairwise_summary``) and one column per benchmark configuration
    (``analysis.benchmark_columns``): the figures ``workbench stats`` prints."""
    judges = list(dict.fromkeys(judge for row in summary for judge in row["judges"]))
    pairwise = analysis.pairwise_summary(outcomes, resamples=SHOWN_RESAMPLES)["models"]
    by_model = {row["model"]: row for row in summary}
    benchmarked = {model for column in benchmarks.values() for model in column}
    rows = []
    for model in list(by_model) + sorted(benchmarked - set(by_model)):
        row = by_model.get(model, {"responses": 0, "grades": 0, "mean_grade": None, "judges": {}})
        record = pairwise.get(model, {})
        rating = record.get("bradley_terry")
        rows.append(
            rounded(
                {
                    "model": model,
                    "responses": row["responses"],
                    "human grades": row["grades"],
                    "mean human grade": row["mean_grade"],
                    **{f"mean {judge}": (row["judges"].get(judge) or {}).get("mean") for judge in judges},
                    "comparisons": record.get("n"),
                    "win rate": record.get("win_rate"),
                    "Bradley-Terry": rating["value"] if rating else None,
                    "BT 95% CI": stats.interval_text(stats.Estimate(**rating)) if rating else None,
                    "Elo": record.get("elo"),
                    **{column: values.get(model) for column, values in benchmarks.items()},
                }
            )
        )
    return rows
