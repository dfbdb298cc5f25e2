"""Statistics for judge agreement, model ratings and paired comparisons: pure functions over plain arrays.

scipy does the estimating (correlations, bootstrap, binomial and signed-rank tests, optimisation); this module
only shapes the inputs and names the results, so the CLI and the review app report the same numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special, stats

# Bootstrap resamples for every interval shown, by the command line and the review app alike, so both print the
# same interval for the same data (the app's live figures whose intervals are not shown use fewer).
DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
ELO_SCALE = 400 / math.log(10)  # log-strength -> Elo points: a 400-point gap means 10:1 odds
ELO_BASE = 1000.0
KAPPA_WEIGHTS = (None, "linear", "quadratic")


class _Result:
    """Results turn into plain dicts for JSON output and the app's tables."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Estimate(_Result):
    """A point estimate with its bootstrap confidence interval.

    ``too_few`` says the interval is not worth showing: too few comparisons, or perfect separation (a model
    that won or lost every decided comparison), where the bootstrap gives a narrow interval that looks surer
    than it is. ``interval_text`` is how the app and the command line both show it.
    """

    value: float
    low: float
    high: float
    too_few: bool = False


# Fewer comparisons than this give a rating without an interval ("too few"), in the app and the CLI alike.
MIN_COMPARISONS = 10


def interval_text(estimate: Estimate) -> str:
    """``[low, high]`` (rounded like every shown number), or ``too few`` where the interval would mislead."""
    if estimate.too_few:
        return "too few"
    return bounds_text(estimate.low, estimate.high)


def bounds_text(low: float, high: float) -> str:
    """A confidence interval as the app and the command line both print it: ``[0.694, 0.898]``."""
    return f"[{significant_text(low)}, {significant_text(high)}]"


# --- rounding for display --------------------------------------------------------------------------------

SIGNIFICANT_DIGITS = 3


def _decimals(value: float, digits: int) -> int:
    """Decimals that leave ``digits`` significant digits, never fewer than none: whole numbers stay whole."""
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def significant(value, digits: int = SIGNIFICANT_DIGITS):
    """A float rounded to ``digits`` significant digits for display (74.09 -> 74.1, 0.80512 -> 0.805).

    Numbers of ``digits`` or more whole digits keep all of them and lose only their decimals (an Elo or
    Bradley-Terry rating of 1023.4 -> 1023, not 1020): a rating is read in whole points. Integers (counts),
    None, NaN and infinities are returned unchanged. The app's tables and the command line's text
    (``significant_text``) both round with this, so they print the same figures.
    """
    if value is None or isinstance(value, (bool, int)) or not math.isfinite(value) or value == 0:
        return value
    return round(float(value), _decimals(value, digits))


def significant_text(value, digits: int = SIGNIFICANT_DIGITS) -> str:
    """``significant(value)`` as text, trailing zeros kept (0.5 -> ``0.500``); below 0.001 in scientific
    notation (``4.12e-05``); None and NaN read ``n/a``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = significant(value, digits)
    if isinstance(value, (bool, int)):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"  # 0 and inf
    if abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{_decimals(value, digits)}f}"


@dataclass(frozen=True)
class Correlation(_Result):
    method: str
    value: float
    p_value: float
    n: int
    low: float
    high: float


def _bootstrap_interval(data: tuple, statistic, *, paired: bool, resamples: int, seed: int) -> tuple:
    """Percentile interval of scipy's bootstrap distribution, skipping degenerate resamples: (low, high) floats,
    or arrays of them for a statistic with several values (every one computed on the same resamples).

    With few ratings or many ties (a judge giving 100 to most answers) some resamples are constant and their
    correlation is undefined (NaN); they are left out instead of turning the whole interval into NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns about each constant resample
        result = stats.bootstrap(
            data,
            statistic,
            paired=paired,
            vectorized=True,  # every statistic here takes an axis: all resamples in one call
            n_resamples=resamples,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        distribution = result.bootstrap_distribution
    tail = (1 - CONFIDENCE) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a statistic NaN on every resample: its interval is NaN
        low, high = np.nanpercentile(distribution, [tail, 100 - tail], axis=-1)
    return (float(low), float(high)) if np.ndim(low) == 0 else (low, high)


# The bootstrap statistics below take a whole batch of resamples (rows) at once. On 1,000 resamples of 8,000
# responses scipy's own functions took 4.5 s for the three correlations; these take a fraction of that and
# agree with scipy on every resample (tests/workbench/test_stats.py).


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson's r along ``axis``; NaN for a constant resample."""
    x, y = np.moveaxis(np.asarray(x, float), axis, -1), np.moveaxis(np.asarray(y, float), axis, -1)
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    xy, xx, yy = (np.einsum("...i,...i->...", a, b) for a, b in ((x, y), (x, x), (y, y)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return xy / np.sqrt(xx * yy)


def _levels(values: np.ndarray, most: int) -> tuple[np.ndarray, int] | None:
    """Each value's index among the distinct values (in order) and how many there may be; None past ``most``.
    Whole numbers (grades, a judge's 0-100) index by subtraction, which is far cheaper than a search."""
    low, high = values.min(initial=0), values.max(initial=0)
    if high - low < most and np.array_equal(values, np.floor(values)):
        return (values - low).astype(np.intp), int(high - low) + 1
    levels = np.unique(values)
    return (np.searchsorted(levels, values), len(levels)) if len(levels) <= most else None


def _ranks(values: np.ndarray) -> np.ndarray:
    """Tie-averaged ranks along the last axis. Scores with few distinct values are ranked from each row's count
    of every value, far faster than sorting; others by scipy's ``rankdata``."""
    found = _levels(values, KENDALL_TABLE_CELLS)
    if found is None:
        return stats.rankdata(values, axis=-1)
    index, count = found
    index = index.reshape(-1, values.shape[-1])
    offsets = np.arange(len(index))[:, None] * count
    counts = np.bincount((index + offsets).ravel(), minlength=len(index) * count).reshape(len(index), count)
    level_ranks = counts.cumsum(axis=1) - (counts - 1) / 2  # the mean of the ranks a tied value spans
    return np.take_along_axis(level_ranks, index, axis=1).reshape(values.shape)


def _three_correlations(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson's r, Spearman's rho (Pearson's r of the tie-averaged ranks) and Kendall's tau-b of each resample,
    so that one set of resamples serves all three."""
    x, y = np.moveaxis(np.asarray(x, float), axis, -1), np.moveaxis(np.asarray(y, float), axis, -1)
    return np.stack([_pearson(x, y), _pearson(_ranks(x), _ranks(y)), _kendall(x, y)])


# Kendall's tau-b of many resamples at once from each one's table of (x level, y level) counts, where the two
# raters use few distinct scores (grades 1-5, a judge's whole 0-100): one scipy call per resample took 4.9 s
# for 1,000 resamples of 8,000 responses. Cells of one table, and cells held in memory at once.
KENDALL_TABLE_CELLS = 20_000
_KENDALL_CHUNK_CELLS = 2_000_000


def _kendall(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's tau-b (scipy's default variant, ties corrected) along ``axis``, for a batch of resamples."""
    x, y = np.moveaxis(np.asarray(x, float), axis, -1), np.moveaxis(np.asarray(y, float), axis, -1)
    shape, n = x.shape[:-1], x.shape[-1]
    x, y = x.reshape(-1, n), y.reshape(-1, n)
    found_x, found_y = _levels(x, KENDALL_TABLE_CELLS), _levels(y, KENDALL_TABLE_CELLS)
    if found_x is None or found_y is None or found_x[1] * found_y[1] > KENDALL_TABLE_CELLS:
        # (nearly) continuous scores: scipy, one resample at a time
        taus = [stats.kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)]
        return np.asarray(taus, float).reshape(shape)
    (index_x, rows), (index_y, columns) = found_x, found_y
    codes = index_x * columns + index_y
    chunk = max(1, _KENDALL_CHUNK_CELLS // (rows * columns))
    taus = [_kendall_from_tables(codes[start : start + chunk], rows, columns) for start in range(0, len(codes), chunk)]
    return np.concatenate(taus).reshape(shape)


def _kendall_from_tables(codes: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """tau-b = (concordant - discordant) / sqrt((pairs - ties in x) (pairs - ties in y)), each resample's pairs
    counted from its contingency table with cumulative sums instead of over all n^2 pairs."""
    count, n = codes.shape
    offsets = np.arange(count)[:, None] * (rows * columns)
    table = np.bincount((codes + offsets).ravel(), minlength=count * rows * columns).reshape(count, rows, columns)
    table = table.astype(float)
    # cells below and right of (i, j): x and y both larger (concordant); below and left: discordant
    below_right = table[:, ::-1, ::-1].cumsum(1).cumsum(2)[:, ::-1, ::-1]
    below_left = table[:, ::-1, :].cumsum(1)[:, ::-1, :].cumsum(2)
    concordant = (table[:, :-1, :-1] * below_right[:, 1:, 1:]).sum(axis=(1, 2))
    discordant = (table[:, :-1, 1:] * below_left[:, 1:, :-1]).sum(axis=(1, 2))
    pairs = n * (n - 1) / 2
    row_totals, column_totals = table.sum(axis=2), table.sum(axis=1)
    ties_x = (row_totals * (row_totals - 1) / 2).sum(axis=1)
    ties_y = (column_totals * (column_totals - 1) / 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant resample: NaN, left out of the interval
        return (concordant - discordant) / np.sqrt((pairs - ties_x) * (pairs - ties_y))


# method -> scipy's test (value and p-value), in the order ``_three_correlations`` returns them
_CORRELATIONS = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}


def correlations(
    x: Sequence[float], y: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> list[Correlation]:
    """Pearson, Spearman and Kendall tau-b of paired scores, each with p-value, n and a bootstrap CI."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired scores need equal 1-D shapes, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"correlations need at least 3 pairs, got {len(x)}")
    lows, highs = _bootstrap_interval((x, y), _three_correlations, paired=True, resamples=resamples, seed=seed)
    results = []
    for (method, test), low, high in zip(_CORRELATIONS.items(), lows, highs, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant input: the value is NaN, reported so
            result = test(x, y)
        results.append(
            Correlation(method, float(result.statistic), float(result.pvalue), len(x), float(low), float(high))
        )
    return results


def cohen_kappa(a: Sequence, b: Sequence, *, weights: str | None = None, categories: Sequence | None = None) -> float:
    """Cohen's kappa of two raters over the same units; ``linear``/``quadratic`` weights for ordinal grades.

    kappa = 1 - sum(w * observed) / sum(w * expected), with w the disagreement weight of each cell.
    """
    if weights not in KAPPA_WEIGHTS:
        raise ValueError(f"weights must be one of {KAPPA_WEIGHTS}, got {weights!r}")
    if len(a) != len(b) or not len(a):
        raise ValueError(f"kappa needs two equally long, non-empty rating lists ({len(a)} and {len(b)})")
    labels = sorted(set(a) | set(b)) if categories is None else list(categories)
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    observed = np.zeros((k, k))
    np.add.at(observed, ([index[v] for v in a], [index[v] for v in b]), 1)
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    distance = np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(float)
    disagreement = {None: (distance > 0).astype(float), "linear": distance, "quadratic": distance**2}[weights]
    expected_disagreement = (disagreement * expected).sum()
    if expected_disagreement == 0:
        return float("nan")  # both raters used a single, identical category: kappa is undefined
    return float(1 - (disagreement * observed).sum() / expected_disagreement)


def krippendorff_alpha(ratings: Sequence[Sequence[float]], *, level: str = "ordinal") -> float:
    """Krippendorff's alpha for raters x units (NaN = not rated); handles missing ratings and many raters."""
    import krippendorff

    data = np.asarray(ratings, dtype=float)
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"alpha needs a raters x units table with at least 2 raters, got shape {data.shape}")
    if np.unique(data[~np.isnan(data)]).size < 2:
        return float("nan")  # a single value everywhere: no variation to agree about
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))


# --- pairwise outcomes: win rates, Bradley-Terry, Elo ----------------------------------------------------

# An outcome is (model_a, model_b, result) with result 1.0 (a won), 0.0 (b won) or 0.5 (tie).
Outcome = tuple[str, str, float]
WINNER_RESULT = {"A": 1.0, "B": 0.0, "tie": 0.5}  # a pairwise verdict (A, B or tie) as an outcome's result


def win_rates(outcomes: Sequence[Outcome]) -> dict[str, dict]:
    """Wins, losses and ties per model; the win rate counts a tie as half a win."""
    table: dict[str, dict] = {}
    for a, b, result in outcomes:
        for model, score in ((a, result), (b, 1 - result)):
            row = table.setdefault(model, {"wins": 0, "losses": 0, "ties": 0, "n": 0})
            row["n"] += 1
            row["wins" if score == 1 else "losses" if score == 0 else "ties"] += 1
    for row in table.values():
        row["win_rate"] = (row["wins"] + row["ties"] / 2) / row["n"]
    return dict(sorted(table.items()))


def _fit_bradley_terry(
    size: int, a: np.ndarray, b: np.ndarray, result: np.ndarray, weights: np.ndarray, ridge: float
) -> np.ndarray:
    """Maximum-likelihood log-strengths (mean 0) for each row of ``weights`` (counts of distinct outcomes).

    Newton steps on all bootstrap resamples at once (a few models, so the Hessians are tiny); the small ridge
    keeps a model that never lost finite and makes the problem strictly convex.
    """
    design = np.zeros((len(a), size))
    design[np.arange(len(a)), a] += 1
    design[np.arange(len(a)), b] -= 1
    theta = np.zeros((len(weights), size))
    for _ in range(100):
        p = special.expit(theta @ design.T)
        grad = (weights * (p - result)) @ design + 2 * ridge * theta
        hessian = np.einsum("rk,ki,kj->rij", weights * p * (1 - p), design, design) + 2 * ridge * np.eye(size)
        step = np.clip(np.linalg.solve(hessian, grad[..., None])[..., 0], -2, 2)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return theta - theta.mean(axis=1, keepdims=True)


def bradley_terry(
    outcomes: Sequence[Outcome], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, ridge: float = 0.01
) -> dict[str, Estimate]:
    """Bradley-Terry ratings on the Elo scale (mean 1000) with bootstrap CIs over the comparisons.

    A tie counts as half a win for each side. Unlike online Elo, the fit does not depend on grading order.
    Identical outcomes are pooled with counts, so a bootstrap resample is a multinomial draw of those counts.
    """
    if not outcomes:
        return {}
    models = sorted({m for a, b, _ in outcomes for m in (a, b)})
    index = {m: i for i, m in enumerate(models)}
    distinct, counts = np.unique(
        np.array([(index[a], index[b], 2 * result) for a, b, result in outcomes], dtype=int),
        axis=0,
        return_counts=True,
    )
    a, b, result = distinct[:, 0], distinct[:, 1], distinct[:, 2] / 2
    theta = _fit_bradley_terry(len(models), a, b, result, counts[None, :].astype(float), ridge)[0]
    draws = np.random.default_rng(seed).multinomial(len(outcomes), counts / counts.sum(), size=resamples)
    samples = _fit_bradley_terry(len(models), a, b, result, draws.astype(float), ridge)
    tail = (1 - CONFIDENCE) / 2 * 100
    lows, highs = np.percentile(samples, [tail, 100 - tail], axis=0)

    def elo(log_strength: float) -> float:
        return float(ELO_BASE + ELO_SCALE * log_strength)

    record = win_rates(outcomes)

    def too_few(model: str) -> bool:
        row = record[model]
        decided = row["wins"] + row["losses"]
        return row["n"] < MIN_COMPARISONS or (decided > 0 and (row["wins"] == decided or row["losses"] == decided))

    return {m: Estimate(elo(theta[i]), elo(lows[i]), elo(highs[i]), too_few(m)) for i, m in enumerate(models)}


def elo_ratings(outcomes: Sequence[Outcome], *, k: float = 32, initial: float = ELO_BASE) -> dict[str, float]:
    """Online Elo in the given (grading) order, as chess rates players."""
    ratings: dict[str, float] = {}
    for a, b, result in outcomes:
        ra, rb = ratings.setdefault(a, initial), ratings.setdefault(b, initial)
        expected_a = 1 / (1 + 10 ** ((rb - ra) / 400))
        ratings[a] = ra + k * (result - expected_a)
        ratings[b] = rb - k * (result - expected_a)
    return dict(sorted(ratings.items()))


# --- paired comparisons ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedDifference(_Result):
    """Mean of (b - a) over the same items, its bootstrap CI and Wilcoxon's signed-rank p-value."""

    n: int
    mean_a: float
    mean_b: float
    mean_difference: float
    low: float
    high: float
    p_value: float


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> PairedDifference:
    """Is b better than a on the same items? A CI that excludes 0 says the gap is not resampling noise."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"paired scores need equal lengths of at least 2, got {len(a)} and {len(b)}")
    difference = b - a
    low, high = _bootstrap_interval((difference,), np.mean, paired=False, resamples=resamples, seed=seed)
    p_value = float(stats.wilcoxon(difference).pvalue) if np.any(difference) else 1.0
    means = float(a.mean()), float(b.mean()), float(difference.mean())
    return PairedDifference(len(a), *means, low, high, p_value)


@dataclass(frozen=True)
class McNemar(_Result):
    """Questions only a got right (``only_a``) against those only b got right; exact binomial p-value."""

    n: int
    accuracy_a: float
    accuracy_b: float
    only_a: int
    only_b: int
    p_value: float


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    """McNemar's exact test: under H0 the discordant questions split 50/50 between the two models."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or not len(a):
        raise ValueError(f"McNemar needs two equally long, non-empty lists, got {len(a)} and {len(b)}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    p_value = float(stats.binomtest(only_b, discordant, 0.5).pvalue) if discordant else 1.0
    return McNemar(len(a), float(a.mean()), float(b.mean()), only_a, only_b, p_value)
