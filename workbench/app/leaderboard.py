"""The Leaderboard tab: per model, grades, judge means, win rates, Bradley-Terry (with intervals), Elo and
benchmark accuracy, from whichever source of comparisons the reviewer picks."""

from __future__ import annotations

import gradio as gr

from workbench import stats, store
from workbench.analysis import HUMAN_BLIND, HUMAN_OPEN
from workbench.app.core import SHOWN_RESAMPLES, App, rounded, table

# everyone's grades, aggregated: admins only (a reviewer's grading must not lean on the others')
ADMIN_COLUMNS = ("human grades", "mean human grade")


def build(app: App) -> None:
    with gr.Row():
        source = gr.Dropdown(label="Win rates and ratings from", choices=[], elem_id="leaderboard-source")
        refresh = gr.Button("Refresh", elem_id="leaderboard-refresh")
    gr.Markdown(
        "Mean judge scores are on each judge's own scale. Ratings: Bradley-Terry (Elo scale) with "
        "95% bootstrap intervals; ties count half."
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
            outcomes_of = {  # blind votes and marks given with the names in view are separate sources
                HUMAN_BLIND: lambda: store.pairwise_outcomes(db, source="human", dataset=dataset, blind=True),
                HUMAN_OPEN: lambda: store.pairwise_outcomes(db, source="human", dataset=dataset, blind=False),
                "judge pairwise verdicts": lambda: store.pairwise_outcomes(db, source="judge", dataset=dataset),
            }
            for rater in store.rater_names(db):
                if admin or rater.startswith("judge:") or rater == me:
                    outcomes_of[rater] = lambda rater=rater: store.score_outcomes(db, rater, dataset=dataset)
            outcomes = outcomes_of[chosen_source]() if chosen_source in outcomes_of else []
            if not outcomes and not (keep_choice and chosen_source in outcomes_of):
                chosen_source, outcomes = next(
                    ((name, found) for name, get in outcomes_of.items() if (found := get())),
                    (HUMAN_BLIND, []),
                )
            summary = store.model_summary(db, dataset=dataset)
            accuracy = store.benchmark_accuracy(db)
        rows = leaderboard_rows(summary, outcomes, accuracy)
        if not admin:
            rows = [{k: v for k, v in row.items() if k not in ADMIN_COLUMNS} for row in rows]
        columns = list(rows[0]) if rows else ["model"]
        return gr.update(choices=list(outcomes_of), value=chosen_source), table(rows, columns)

    def on_open(request: gr.Request, name, dataset, chosen):
        return show(request, name, dataset, chosen, keep_choice=False)

    inputs = [app.name_box, app.dataset, source]
    refresh.click(show, inputs=inputs, outputs=[source, board])
    source.input(show, inputs=inputs, outputs=[source, board])
    app.refreshers["leaderboard"] = (on_open, inputs, [source, board])


def leaderboard_rows(summary: list[dict], outcomes: list, accuracy: list[dict]) -> list[dict]:
    """One row per model: grades, judge means, win rate, Bradley-Terry (with CI) and Elo, accuracy."""
    judges = sorted({judge for row in summary for judge in row["judges"]})
    wins = stats.win_rates(outcomes)
    ratings = stats.bradley_terry(outcomes, resamples=SHOWN_RESAMPLES)
    elo = stats.elo_ratings(outcomes)
    by_model = {row["model"]: row for row in summary}
    models = list(by_model) + sorted({row["model"] for row in accuracy} - set(by_model))
    rows = []
    for model in models:
        row = by_model.get(model, {"responses": 0, "grades": 0, "mean_grade": None, "judges": {}})
        record = {
            "model": model,
            "responses": row["responses"],
            "human grades": row["grades"],
            "mean human grade": row["mean_grade"],
            **{f"mean {judge}": row["judges"].get(judge) for judge in judges},
            "comparisons": wins.get(model, {}).get("n"),
            "win rate": wins.get(model, {}).get("win_rate"),
            "Bradley-Terry": ratings[model].value if model in ratings else None,
            "BT 95% CI": stats.interval_text(ratings[model]) if model in ratings else None,
            "Elo": elo.get(model),
        }
        for bench in accuracy:
            if bench["model"] == model:
                record[f"{bench['task']} {bench['metric']}"] = bench["accuracy"]
        rows.append(rounded(record))
    columns = list(dict.fromkeys(key for record in rows for key in record))
    return [{column: record.get(column) for column in columns} for record in rows]
