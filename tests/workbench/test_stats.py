"""Known-answer tests for the statistics: textbook examples and direct scipy calls on fixed data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from workbench import stats

X = [1, 3, 2, 5, 4, 6, 8, 7, 9, 10, 10, 12]
Y = [2, 1, 4, 3, 6, 5, 7, 9, 8, 12, 11, 11]


def test_correlations_match_scipy_with_n_and_a_seeded_bootstrap_interval():
    results = {c.method: c for c in stats.correlations(X, Y, resamples=500, seed=3)}
    expected = {
        "pearson": scipy_stats.pearsonr(X, Y),
        "spearman": scipy_stats.spearmanr(X, Y),
        "kendall": scipy_stats.kendalltau(X, Y, variant="b"),
    }
    for method, reference in expected.items():
        result = results[method]
        assert result.value == pytest.approx(reference.statistic, abs=1e-12)
        assert result.p_value == pytest.approx(reference.pvalue, abs=1e-12)
        assert result.n == 12
        assert result.low < result.value < result.high <= 1
    assert stats.correlations(X, Y, resamples=500, seed=3) == list(results.values())  # seeded: repeatable
    reference = scipy_stats.bootstrap(
        (np.array(X, float), np.array(Y, float)),
        lambda a, b: scipy_stats.kendalltau(a, b).statistic,
        paired=True,
        vectorized=False,
        n_resamples=500,
        method="percentile",
        rng=np.random.default_rng(3),
    ).confidence_interval
    assert (results["kendall"].low, results["kendall"].high) == pytest.approx((reference.low, reference.high))


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 100)), min_size=2, max_size=40),
    resamples=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_the_bootstrap_correlations_equal_scipy_on_every_resample(data, resamples, seed):
    """The bootstrap computes all resamples at once (ranks and Kendall's pairs from each resample's counts of
    score levels); every resample must give scipy's Pearson r, Spearman rho and Kendall tau-b (ties
    corrected), NaN where a resample is constant."""
    x, y = (np.array(column, float) for column in zip(*data, strict=True))
    picks = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    ours = stats._three_correlations(x[picks], y[picks])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [
            [test(x[row], y[row]).statistic for row in picks]
            for test in (scipy_stats.pearsonr, scipy_stats.spearmanr, scipy_stats.kendalltau)
        ]
    np.testing.assert_allclose(ours, expected, atol=1e-12, equal_nan=True)


def test_kendall_on_continuous_scores_falls_back_to_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 200)), rng.normal(size=(3, 200))  # 200 x 200 levels: too many for one table
    expected = [scipy_stats.kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(stats._kendall(x, y), expected, atol=1e-12)


def test_correlation_intervals_survive_constant_resamples():
    results = stats.correlations([1, 2, 2, 3, 5], [1, 3, 2, 3, 4], resamples=300)
    assert all(not math.isnan(c.low) and not math.isnan(c.high) for c in results)


def test_cohen_kappa_known_answers():
    # Wikipedia "Cohen's kappa" example: 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert stats.cohen_kappa(a, b) == pytest.approx(0.4)
    # ordinal grades; reference values from sklearn.metrics.cohen_kappa_score(weights=...)
    a = [1, 2, 3, 4, 5, 3, 2, 4, 5, 1, 2, 3]
    b = [1, 3, 3, 5, 4, 3, 2, 4, 4, 2, 2, 1]
    assert stats.cohen_kappa(a, b) == pytest.approx(0.368421052631579)
    assert stats.cohen_kappa(a, b, weights="linear") == pytest.approx(0.5922330097087378)
    assert stats.cohen_kappa(a, b, weights="quadratic") == pytest.approx(0.7672413793103449)
    assert stats.cohen_kappa(a, a, weights="quadratic", categories=range(1, 6)) == 1.0
    assert math.isnan(stats.cohen_kappa([3, 3], [3, 3]))


def test_krippendorff_alpha_reproduces_krippendorff_2011():
    # "Computing Krippendorff's Alpha-Reliability" (2011), 4 observers x 12 units with missing values
    nan = np.nan
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    assert stats.krippendorff_alpha(data, level="nominal") == pytest.approx(0.743, abs=5e-4)
    assert stats.krippendorff_alpha(data, level="ordinal") == pytest.approx(0.815, abs=5e-4)
    assert stats.krippendorff_alpha(data, level="interval") == pytest.approx(0.849, abs=5e-4)


def test_bradley_terry_recovers_a_known_odds_ratio():
    # A beats B 75 times out of 100: odds 3, so A is 400*log10(3) = 190.85 Elo points above B
    outcomes = [("A", "B", 1.0)] * 75 + [("A", "B", 0.0)] * 25
    ratings = stats.bradley_terry(outcomes, resamples=400)
    assert ratings["A"].value - ratings["B"].value == pytest.approx(400 * math.log10(3), abs=0.5)
    assert ratings["A"].value + ratings["B"].value == pytest.approx(2000)
    assert ratings["A"].low < ratings["A"].value < ratings["A"].high
    swapped = stats.bradley_terry([(b, a, 1 - r) for a, b, r in outcomes], resamples=400)
    assert swapped["A"].value == pytest.approx(ratings["A"].value)
    # ties count half: 50 wins, 50 ties -> 75 % -> the same gap
    tied = stats.bradley_terry([("A", "B", 1.0)] * 50 + [("A", "B", 0.5)] * 50, resamples=10)
    assert tied["A"].value - tied["B"].value == pytest.approx(400 * math.log10(3), abs=0.5)


def test_bradley_terry_stays_finite_for_an_unbeaten_model():
    ratings = stats.bradley_terry([("chosen", "rejected", 1.0)] * 200, resamples=50)
    assert all(math.isfinite(v) for r in ratings.values() for v in (r.value, r.low, r.high))
    assert ratings["chosen"].value > ratings["rejected"].value


def test_elo_and_win_rates():
    assert stats.elo_ratings([("A", "B", 1.0)]) == {"A": 1016.0, "B": 984.0}
    after_two = stats.elo_ratings([("A", "B", 1.0), ("B", "A", 1.0)])
    expected_b = 1 / (1 + 10 ** ((1016 - 984) / 400))
    assert after_two["B"] == pytest.approx(984 + 32 * (1 - expected_b))
    assert stats.win_rates([("A", "B", 1.0), ("A", "C", 0.5), ("C", "B", 0.0)]) == {
        "A": {"wins": 1, "losses": 0, "ties": 1, "n": 2, "win_rate": 0.75},
        "B": {"wins": 1, "losses": 1, "ties": 0, "n": 2, "win_rate": 0.5},
        "C": {"wins": 0, "losses": 1, "ties": 1, "n": 2, "win_rate": 0.25},
    }


def test_paired_difference():
    a = [3, 4, 2, 5, 4, 3, 4, 5, 2, 3]
    b = [4, 5, 2, 5, 5, 4, 4, 5, 3, 4]
    result = stats.paired_difference(a, b, resamples=1000)
    assert (result.n, result.mean_a, result.mean_b, result.mean_difference) == (
        10,
        3.5,
        4.1,
        pytest.approx(0.6),
    )
    assert 0 < result.low < 0.6 < result.high <= 1
    assert result.p_value == pytest.approx(scipy_stats.wilcoxon(np.subtract(b, a)).pvalue)
    shifted = stats.paired_difference([1, 2, 3], [2, 3, 4], resamples=100)
    assert (shifted.low, shifted.high) == (1.0, 1.0)
    assert stats.paired_difference([1, 2], [1, 2], resamples=10).p_value == 1.0


def test_mcnemar_exact_known_answer():
    # 10 questions only A got right, 2 only B: p = 2 * (C(12,0) + C(12,1) + C(12,2)) / 2**12 = 158/4096
    a = [True] * 10 + [False] * 2 + [True] * 30 + [False] * 8
    b = [False] * 10 + [True] * 2 + [True] * 30 + [False] * 8
    result = stats.mcnemar(a, b)
    assert (result.n, result.only_a, result.only_b) == (50, 10, 2)
    assert result.p_value == pytest.approx(158 / 4096)
    assert (result.accuracy_a, result.accuracy_b) == (0.8, 0.64)
    assert stats.mcnemar([True, False], [True, False]).p_value == 1.0


def test_bradley_terry_intervals_from_too_few_comparisons_or_perfect_separation_say_so():
    two = stats.bradley_terry([("A", "B", 1.0), ("A", "B", 0.5)], resamples=50)
    assert two["A"].too_few and two["B"].too_few
    assert stats.interval_text(two["A"]) == "too few"
    mixed = stats.bradley_terry([("A", "B", 1.0)] * 25 + [("A", "B", 0.0)] * 15, resamples=50)
    assert not mixed["A"].too_few and stats.interval_text(mixed["A"]).startswith("[")
    unbeaten = stats.bradley_terry([("A", "B", 1.0)] * 40, resamples=50)  # a zero-width CI would look sure
    assert unbeaten["A"].too_few and unbeaten["B"].too_few


def test_the_app_and_the_cli_show_the_same_rating_interval(book_db, capsys):
    from workbench import cli, store
    from workbench.app.leaderboard import leaderboard_rows

    db = store.open_db(book_db)
    items = store.dataset_items(db, "eval-example-data")
    for item in items[:2]:
        store.add_pairwise_grade(db, item["id"], "model 1 response", "model 2 response", "ann", "left", blind=True)
    outcomes = store.pairwise_outcomes(db, source="human", blind=True)
    rows = leaderboard_rows(store.model_summary(db), outcomes, {})
    db.close()
    assert {row["BT 95% CI"] for row in rows} == {"too few"}
    assert cli.main(["stats", "--db", str(book_db)]) == 0
    human_table = capsys.readouterr().out.split("pairwise (human blind votes,")[1].split("\npairwise (")[0]
    assert human_table.count("too few") == 2


def test_blind_votes_and_marks_with_names_shown_are_separate_sources(book_db):
    from workbench import analysis, store

    db = store.open_db(book_db)
    first, second = store.dataset_items(db, "eval-example-data")[:2]
    store.add_pairwise_grade(db, first["id"], "model 1 response", "model 2 response", "ann", "left", blind=True)
    store.add_pairwise_grade(db, second["id"], "model 1 response", "model 2 response", "ann", "right", blind=False)
    assert store.pairwise_outcomes(db, source="human", blind=True) == [("model 1 response", "model 2 response", 1.0)]
    assert store.pairwise_outcomes(db, source="human", blind=False) == [("model 1 response", "model 2 response", 0.0)]
    assert len(store.pairwise_outcomes(db, source="human")) == 2
    sources = analysis.model_stats(db, resamples=20)["pairwise"]
    assert sources[analysis.HUMAN_BLIND]["comparisons"] == sources[analysis.HUMAN_OPEN]["comparisons"] == 1
    db.close()


def test_three_significant_digits_keep_whole_numbers_whole():
    assert [stats.significant(v) for v in (74.09, 0.80512, -17.52, 0.0386, 3.15, 988.4)] == [
        74.1,
        0.805,
        -17.5,
        0.0386,
        3.15,
        988.0,
    ]
    assert stats.significant(1023.4) == 1023  # a rating keeps its whole points: not 1020
    assert stats.significant(12345.6) == 12346
    assert [stats.significant(v) for v in (7, None, 0.0)] == [7, None, 0.0]  # counts and blanks stay
    assert math.isnan(stats.significant(float("nan")))
    texts = [stats.significant_text(v) for v in (0.5, 74.09, 999.6, 1023.4, 4.123e-5, 0.0, None, float("nan"), 12)]
    assert texts == ["0.500", "74.1", "1000", "1023", "4.12e-05", "0", "n/a", "n/a", "12"]
    estimate = stats.Estimate(1023.4, 987.65, 1061.2)
    assert stats.interval_text(estimate) == "[988, 1061]" == stats.bounds_text(987.65, 1061.2)
    assert stats.bounds_text(0.69412, 0.8981) == "[0.694, 0.898]"
