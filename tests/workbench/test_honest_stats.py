"""Honest statistics: the app's tables and the command line give the same figures for the same data, kappa and
alpha compare raters on one 1-5 scale, a reviewer is never compared with their own grades, a reviewer's source
holds their votes, and each benchmark configuration is a column of its own."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import krippendorff
import numpy as np
import pytest

from workbench import analysis, cli, stats, store
from workbench.app.agreement import agreement_table
from workbench.app.leaderboard import leaderboard_rows

M1, M2 = "model 1 response", "model 2 response"
BOOK = "eval-example-data"
SAMPLE = "mmlu · mc-sample · 0-shot · 32 q"
FULL = "mmlu · mmlu · 5-shot · 1000 q"


def _same(shown, value) -> bool:
    """The app's shown figure equals the command line's figure rounded for display (NaN equals NaN)."""
    expected = stats.significant(value)
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(shown, float) and math.isnan(shown)
    return shown == expected


def _benchmark(db, model: str, key: str, folder: str, shots: int, questions: int, accuracy: float, correct=()):
    """One stored MMLU run of ``model`` on ``folder`` (as ``workbench bench`` records it)."""
    results = [
        {
            "task": "mmlu",
            "subject": None,
            "metric": "acc_macro",
            "value": accuracy,
            "stderr": 0.05,
            "n": questions,
            "shots": shots,
            "limit_n": None,
        }
    ]
    samples = [
        {
            "task": "mmlu",
            "subject": "anatomy",
            "doc_id": doc,
            "prompt": f"question {doc}",
            "choices": [" A", " B"],
            "model_choice": 0 if right else 1,
            "correct_choice": 0,
            "correct": right,
            "loglikelihoods": [-1.0, -2.0],
        }
        for doc, right in enumerate(correct)
    ]
    store.save_benchmark_run(
        db,
        model={"name": model},
        cache_key=key,
        tasks=["mmlu"],
        num_fewshot=shots,
        limit_n=None,
        settings={"mmlu": {"dir": f"/data/{folder}"}},
        lm_eval_version="0.4.13",
        started_at=store.utc_now(),
        finished_at=store.utc_now(),
        results=results,
        samples=samples,
    )


def _pairwise_judge(db, items) -> None:
    """Judge ``pairs`` prefers model 1 on 10 of the first 15 items, model 2 on 3, ties 2."""
    judge = store.get_or_create_llm_judge(
        db, kind="ollama", name="pairs", model="m", digest="d", template_hash="t", options={}, mode="pairwise"
    )
    ids = (store.model_id(db, M1), store.model_id(db, M2))
    winners = ["A"] * 10 + ["B"] * 3 + ["tie"] * 2
    rows = [
        {
            "item_id": item["id"],
            "model_a_id": ids[0],
            "model_b_id": ids[1],
            "repeat": 0,
            "verdict_ab": winner,
            "verdict_ba": winner,
            "winner": winner,
            "consistent": 1,
            "raw_output": "",
            "latency_s": 0.1,
            "error": None,
        }
        for item, winner in zip(items, winners, strict=False)
    ]
    store.save_judge_pairwise(db, judge["id"], rows)


@pytest.fixture
def graded(book_db):
    """The book's data with three reviewers' grades, blind votes, marks given with names shown, a swapped-side
    repeat, a pairwise judge and MMLU runs on the 32-question sample and on the full set."""
    db = store.open_db(book_db)
    items = store.dataset_items(db, BOOK)
    first, second = store.response_ids_by_item(db, M1, BOOK), store.response_ids_by_item(db, M2, BOOK)
    for i, item in enumerate(items[:40]):  # alice: both models of items 0-39
        store.add_grade(db, first[item["id"]], "alice", i % 5 + 1)
        store.add_grade(db, second[item["id"]], "alice", (i + 2) % 5 + 1)
    for i, item in enumerate(items[:30]):  # bob: model 1 of items 0-29, close to alice
        store.add_grade(db, first[item["id"]], "bob", min(5, i % 5 + 1 + (i % 3 == 0)))
    for i, item in enumerate(items[20:50], start=20):  # carol: model 1 of items 20-49 (40-49 hers alone)
        store.add_grade(db, first[item["id"]], "carol", max(1, i % 5))
    for i, item in enumerate(items[:12]):  # alice votes blind on items 0-11 ...
        vote = store.add_pairwise_grade(db, item["id"], M1, M2, "alice", "left" if i % 4 else "right", True)
    store.add_pairwise_grade(db, items[11]["id"], M2, M1, "alice", "right", True, repeat_of=vote)  # ... a repeat
    store.add_pairwise_grade(db, items[12]["id"], M1, M2, "alice", "tie", False)  # and marks item 12 a tie
    for i, item in enumerate(items[:15]):
        store.add_pairwise_grade(db, item["id"], M2, M1, "bob", "right" if i % 3 else "tie", True)
    _pairwise_judge(db, items)
    correct_1, correct_2 = [1] * 20 + [0] * 12, [1] * 12 + [0] * 20
    _benchmark(db, M1, "m1-sample-old", "mc-sample", 0, 32, 0.4, correct_2)
    _benchmark(db, M1, "m1-full", "mmlu", 5, 1000, 0.45)
    _benchmark(db, M2, "m2-sample", "mc-sample", 0, 32, 0.3, correct_2)
    _benchmark(db, M1, "m1-sample-new", "mc-sample", 0, 32, 0.5, correct_1)  # newer: replaces the old column value
    yield db
    db.close()


def _cli_json(capsys, *argv: str) -> dict:
    assert cli.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --- agreement -------------------------------------------------------------------------------------------

# the same raters as the app's rater keys and as the command line's names
RATERS = {"judge:gpt4": "gpt4", "judge:llama3": "llama3", "reviewer:alice": "alice", "reviewer:bob": "bob"}
RATERS[store.HUMANS] = analysis.HUMAN
PAIRS = [
    ("judge:gpt4", "judge:llama3"),
    ("judge:gpt4", "reviewer:alice"),
    ("reviewer:alice", "reviewer:bob"),
    ("reviewer:alice", store.HUMANS),
    (store.HUMANS, "judge:gpt4"),
]


@pytest.mark.parametrize("level", analysis.ALPHA_LEVELS)
def test_the_app_and_the_cli_agree_on_every_agreement_figure(graded, book_db, capsys, level):
    for first, second in PAIRS:
        row, _ = agreement_table(graded, first, second, alpha_level=level)
        names = (RATERS[first], RATERS[second])
        report = _cli_json(capsys, "agreement", "--db", str(book_db), "--judges", *names, "--alpha-level", level)
        assert row["n"] == report["n"] >= 10
        assert [row["mean 1"], row["mean 2"]] == [stats.significant(m) for m in report["means"].values()]
        for correlation in report["correlations"]:
            method = correlation["method"]
            assert _same(row[method], correlation["value"]), (first, second, method)
            assert row[f"{method} 95% CI"] == stats.bounds_text(correlation["low"], correlation["high"])
        kappas = {column for column in row if column.startswith("kappa")}
        assert kappas == {analysis.kappa_label(weights) for weights in report["kappa"]}
        for weights, kappa in report["kappa"].items():
            assert _same(row[analysis.kappa_label(weights)], kappa), (first, second, weights)
        assert report["alpha_level"] == level
        assert _same(row[analysis.alpha_label(level)], report["alpha"]), (first, second)
        text = analysis.format_agreement(report)
        assert f"Krippendorff's alpha ({level}, 1-5): {stats.significant_text(report['alpha'])}" in text
    both_reviewers = agreement_table(graded, "reviewer:alice", "reviewer:bob")[0]
    assert {"kappa (unweighted, 1-5)", "kappa (linear, 1-5)", "kappa (quadratic, 1-5)"} <= set(both_reviewers)


def test_the_app_and_the_cli_default_to_the_same_alpha_level(graded, book_db):
    args = cli.build_parser().parse_args(["agreement", "--db", str(book_db), "--judges", "gpt4", "alice"])
    assert args.alpha_level == analysis.DEFAULT_ALPHA_LEVEL == "ordinal"
    row, _ = agreement_table(graded, "judge:gpt4", "reviewer:alice")
    assert "alpha (ordinal, 1-5)" in row and "alpha (interval, 1-5)" not in row


def test_alpha_and_kappa_put_a_0_100_judge_and_1_5_grades_on_one_scale():
    judge = {1: 0.0, 2: 25.0, 3: 50.0, 4: 75.0, 5: 100.0}
    grades = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
    for level in analysis.ALPHA_LEVELS:
        report = analysis.pair_agreement(judge, grades, [(0, 100), (1, 5)], alpha_level=level, resamples=10)
        assert report["alpha"] == pytest.approx(1.0)  # perfect agreement, once on one scale
        assert report["kappa"] == {"quadratic": pytest.approx(1.0)}
    on_raw_values = stats.krippendorff_alpha([list(judge.values()), list(grades.values())], level="interval")
    assert on_raw_values < 0  # what comparing 0-100 with 1-5 as raw numbers says
    judge[6], grades[6] = 62.5, 4  # 3.5 on 1-5: the whole grade 4 (halves round up), but not 4 itself
    ordinal = analysis.pair_agreement(judge, grades, [(0, 100), (1, 5)], alpha_level="ordinal", resamples=10)
    interval = analysis.pair_agreement(judge, grades, [(0, 100), (1, 5)], alpha_level="interval", resamples=10)
    assert ordinal["alpha"] == pytest.approx(1.0) and interval["alpha"] < 0.99
    assert [analysis.to_grade(score, (0, 100)) for score in (37.5, 62.5, 120)] == [3, 4, 5]


def test_alpha_interval_on_the_book_judge_and_a_reviewer_matches_krippendorff_on_hand_mapped_values(graded):
    gpt4, alice = store.rater_scores(graded, "judge:gpt4"), store.rater_scores(graded, "reviewer:alice")
    shared = sorted(gpt4.keys() & alice.keys())
    mapped = [1 + 4 * gpt4[r] / 100 for r in shared]
    grades = [alice[r] for r in shared]
    interval = analysis.agreement(graded, ["gpt4", "alice"], alpha_level="interval", resamples=10)
    assert interval["n"] == len(shared) == 80
    expected = krippendorff.alpha(reliability_data=[mapped, grades], level_of_measurement="interval")
    assert interval["alpha"] == pytest.approx(expected)
    raw = krippendorff.alpha(reliability_data=[[gpt4[r] for r in shared], grades], level_of_measurement="interval")
    assert interval["alpha"] != pytest.approx(raw)
    ordinal = analysis.agreement(graded, ["gpt4", "alice"], alpha_level="ordinal", resamples=10)
    whole = [math.floor(value + 0.5) for value in mapped]
    assert ordinal["alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=[whole, grades], level_of_measurement="ordinal")
    )


def test_a_reviewers_own_grades_are_left_out_of_the_humans_mean(graded, book_db, capsys):
    others: dict[int, list[int]] = {}
    for row in store.human_grade_rows(graded):
        if row["reviewer"] != "alice":
            others.setdefault(row["response_id"], []).append(row["score"])
    without_alice = {response: float(np.mean(scores)) for response, scores in others.items()}
    assert store.rater_scores(graded, store.HUMANS, exclude="alice") == pytest.approx(without_alice)
    alice = store.rater_scores(graded, "reviewer:alice")
    shared = sorted(alice.keys() & without_alice.keys())  # items 0-39 of model 1 (40-49: carol's alone)
    assert len(shared) == 40
    for names in (["alice", "human"], ["human", "alice"]):
        report = analysis.agreement(graded, names, resamples=10)
        assert report["n"] == 40
        assert report["means"]["human"] == pytest.approx(np.mean([without_alice[r] for r in shared]))
        assert "humans (mean grade, without alice)" in report["raters"]
    row, pair = agreement_table(graded, "reviewer:alice", store.HUMANS)
    assert (row["rater 2"], row["n"]) == ("humans (mean grade, without alice)", 40)
    assert row["mean 2"] == stats.significant(np.mean([without_alice[r] for r in shared]))
    everyone = store.rater_scores(graded, store.HUMANS)
    assert any(everyone[r] != pair.scores[1][r] for r in shared)  # alice's grades would have pulled it her way
    assert cli.main(["agreement", "--db", str(book_db), "--judges", "alice", "human"]) == 0
    assert capsys.readouterr().out.startswith("alice vs humans (mean grade, without alice) on all models: n = 40")
    assert analysis.agreement(graded, ["gpt4", "human"], resamples=10)["raters"] == ["gpt4", store.HUMANS]
    with pytest.raises(ValueError, match="only 'humans \\(mean grade\\)' can leave a reviewer out"):
        store.rater_scores(graded, "judge:gpt4", exclude="alice")


# --- win rates and ratings -------------------------------------------------------------------------------


def test_a_reviewer_source_holds_their_votes_once_and_their_grades_where_they_did_not_vote(graded):
    outcomes = store.reviewer_outcomes(graded, "alice")
    votes = [(M1, M2, 0.0 if i % 4 == 0 else 1.0) for i in range(12)] + [(M1, M2, 0.5)]
    assert outcomes[:13] == votes  # the swapped-side repeat of item 11 is not a vote on the models
    items = store.dataset_items(graded, BOOK)[13:40]
    implied = [(M1, M2, 1.0 if i % 5 > (i + 2) % 5 else 0.0) for i in range(13, 40)]
    assert Counter(outcomes[13:]) == Counter(implied) and len(outcomes) == 13 + len(items)
    bob = store.reviewer_outcomes(graded, "bob")  # bob graded model 1 only: his votes are all there is
    assert bob == store.pairwise_outcomes(graded, source="human", blind=True)[12:]


def test_the_app_and_the_cli_offer_the_same_sources_with_the_same_figures(graded, book_db, capsys):
    report = _cli_json(capsys, "stats", "--db", str(book_db))
    shown = {source: read() for source, read in analysis.outcome_sources(graded).items()}
    assert set(report["pairwise"]) == {source for source, outcomes in shown.items() if outcomes}
    assert {"reviewer:alice", "reviewer:bob", "judge:pairs", analysis.HUMAN_OPEN} <= set(report["pairwise"])
    assert shown["reviewer:carol"] == []  # she graded one model only and never voted
    assert report["pairwise"]["reviewer:alice"]["comparisons"] == 40
    assert report["pairwise"]["judge:pairs"]["comparisons"] == 15
    text = analysis.format_stats(report)
    summary, columns = store.model_summary(graded), analysis.benchmark_columns(graded)
    for source, result in report["pairwise"].items():
        rows = {row["model"]: row for row in leaderboard_rows(summary, shown[source], columns)}
        assert f"pairwise ({source}, {result['comparisons']} comparisons):" in text
        for model, record in result["models"].items():
            row, rating = rows[model], record["bradley_terry"]
            assert row["comparisons"] == record["n"]
            assert _same(row["win rate"], record["win_rate"]) and _same(row["Elo"], record["elo"])
            assert _same(row["Bradley-Terry"], rating["value"])
            assert row["BT 95% CI"] == stats.interval_text(stats.Estimate(**rating))
            shown_rating = f"{stats.significant_text(rating['value'])} {row['BT 95% CI']}"
            assert shown_rating in text.split(f"pairwise ({source},")[1]
    for model, record in report["models"].items():
        row = next(row for row in leaderboard_rows(summary, [], columns) if row["model"] == model)
        assert _same(row["mean human grade"], record["human"]["mean"])
        assert row["human grades"] == record["human"]["grades"]
        for judge, mean in record["judges"].items():
            assert _same(row[f"mean {judge}"], mean["mean"])
        for column, values in report["benchmarks"].items():
            assert row[column] == (stats.significant(values[model]) if model in values else None)


# --- benchmarks ------------------------------------------------------------------------------------------


def test_two_benchmark_configurations_are_two_columns_never_merged(graded, book_db, capsys):
    columns = analysis.benchmark_columns(graded)
    assert columns == {
        f"{SAMPLE}: acc_macro": {M1: 0.5, M2: 0.3},  # model 1's newest run on the sample, not its full MMLU run
        f"{FULL}: acc_macro": {M1: 0.45},
    }
    rows = {row["model"]: row for row in leaderboard_rows(store.model_summary(graded), [], columns)}
    assert (rows[M1][f"{FULL}: acc_macro"], rows[M2][f"{FULL}: acc_macro"]) == (0.45, None)
    assert cli.main(["stats", "--db", str(book_db)]) == 0
    text = capsys.readouterr().out
    assert f"{SAMPLE}: acc_macro  0.500" in text and f"{FULL}: acc_macro" in text
    report = analysis.compare(graded, M1, M2, resamples=10)
    assert list(report["benchmarks"]) == [SAMPLE]  # only the configuration both models ran
    assert (report["benchmarks"][SAMPLE]["only_a"], report["benchmarks"][SAMPLE]["n"]) == (8, 32)
    assert analysis.benchmark_label({"task": "arc_easy", "data_dir": None, "shots": 0, "questions": 100}) == (
        "arc_easy · 0-shot · 100 q"
    )
    assert Path(store.benchmark_accuracy(graded)[0]["data_dir"]).name == "mc-sample"


# --- the Agreement tab in a browser ----------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_the_agreement_tab_computes_alpha_at_the_level_picked(browser, graded, book_db):
    from tests.workbench.test_app import _open_tab, _start, _wait_for_text, open_page

    blocks, url = _start(book_db)
    try:
        page = open_page(browser, url)
        _open_tab(page, "Agreement")
        _wait_for_text(page, "#agreement-table", r"alpha \(ordinal, 1-5\)")  # judge:gpt4 vs judge:llama3
        page.locator("#agreement-alpha-level input").click()
        page.get_by_role("option", name="interval: scores mapped onto 1-5, unrounded").click()
        _wait_for_text(page, "#agreement-table", r"alpha \(interval, 1-5\)")
        row, _ = agreement_table(graded, "judge:gpt4", "judge:llama3", alpha_level="interval")
        assert str(row["alpha (interval, 1-5)"]) in page.locator("#agreement-table").inner_text()
        page.context.close()
    finally:
        blocks.close()
