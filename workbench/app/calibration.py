"""The Calibration tab: how far to trust each rater.

Everyone sees their own agreement with each judge and their own consistency on blind pairs; only admins see
the agreement between reviewers and the other reviewers' rows (nobody reads another reviewer's grades).
"""

from __future__ import annotations

from itertools import combinations

import gradio as gr

from workbench import analysis, stats, store
from workbench.app.core import App, agreement_row, my_agreement_with_judges, rounded, table

# two reviewers grade on 1-5 alike: all three kappas (``analysis.pair_agreement``); no intervals here
BETWEEN_COLUMNS = [
    "reviewers",
    "n",
    "spearman",
    "pearson",
    "kendall",
    *(analysis.kappa_label(weights or "unweighted") for weights in stats.KAPPA_WEIGHTS),
    analysis.alpha_label(analysis.DEFAULT_ALPHA_LEVEL),
]
NO_PAIRS = "No two reviewers have graded the same responses yet: a campaign with overlap 2 gives every item two."
NO_BLIND_VOTES = "No blind votes yet: vote in the Blind A/B tab (some pairs come back with sides swapped)."
NO_PAIRWISE_JUDGE = "No pairwise judge verdicts yet: run `workbench judge --mode pairwise --response-key A B ...`."
CONSISTENCY_COLUMNS = ["reviewer", "blind_votes", "first_position_share", "repeats", "consistent", "self_consistency"]


def build(app: App) -> None:
    gr.Markdown(
        "How far to trust each rater: you against each judge, reviewers against each other (admins), each "
        "reviewer's consistency on blind pairs shown again with sides swapped, and the share of "
        "decided votes that went to whichever answer was shown first (0.5 = no position bias)."
    )
    refresh = gr.Button("Refresh", elem_id="calibration-refresh")
    me_vs_judges = gr.Dataframe(label="You vs each judge", interactive=False, elem_id="cal-me-judges")
    between = gr.Dataframe(label="Between reviewers (admins only)", interactive=False, elem_id="cal-reviewers")
    consistency = gr.Dataframe(label="Reviewers on blind pairs", interactive=False, elem_id="cal-consistency")
    judge_bias = gr.Dataframe(label="Pairwise judges' position bias", interactive=False, elem_id="cal-judge-bias")

    def show(request: gr.Request, name, dataset):
        reviewer = app.optional_reviewer(name, request)
        admin = app.is_admin(request)
        with app.connect() as db:
            mine = my_agreement_with_judges(db, reviewer, dataset)
            pairs = _between_reviewers(db, dataset) if admin else []
            reviewer_rows = [
                rounded(row) for row in store.reviewer_consistency(db) if admin or row["reviewer"] == reviewer
            ]
            bias_rows = [rounded(row) for row in store.judge_position_bias(db)]
        return (
            mine,
            table(
                pairs,
                BETWEEN_COLUMNS,
                empty=NO_PAIRS if admin else "Admins only: reviewers never see each other's grades.",
            ),
            table(reviewer_rows, CONSISTENCY_COLUMNS, empty=NO_BLIND_VOTES),
            table(bias_rows, ["judge", "comparisons", "first_position_share", "consistency"], empty=NO_PAIRWISE_JUDGE),
        )

    outputs = [me_vs_judges, between, consistency, judge_bias]
    refresh.click(show, inputs=[app.name_box, app.dataset], outputs=outputs)
    app.refreshers["calibration"] = (show, [app.name_box, app.dataset], outputs)


def _between_reviewers(db, dataset) -> list[dict]:
    reviewers = store.reviewer_names(db)
    scores = {name: store.rater_scores(db, f"reviewer:{name}", dataset=dataset or None) for name in reviewers}
    pairs = []
    for first, second in combinations(reviewers, 2):
        scales = (store.rater_scale(db, f"reviewer:{first}"), store.rater_scale(db, f"reviewer:{second}"))
        row = agreement_row(scores[first], scores[second], scales)
        if row["n"]:
            pairs.append(rounded({"reviewers": f"{first} / {second}", **row}))
    return pairs
