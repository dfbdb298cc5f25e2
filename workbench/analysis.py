"""``workbench agreement``, ``stats`` and ``compare``: do the judges agree, how do models rank, is B better?

Each command gathers rows from the store, hands plain arrays to ``workbench.stats`` and prints a text table
(or ``--json``). The review app calls the same functions (``rater_pair`` and ``pair_agreement``,
``outcome_sources`` and ``pairwise_summary``, ``benchmark_columns``) and rounds alike (``stats.significant``),
so that the app and the command line show the same figures for the same data.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from trainer.errors import UserError
from workbench import stats, store

HUMAN = "human"  # the mean grade of all reviewers, usable wherever a judge name is
HUMAN_BLIND = "human blind votes"  # pairwise sources, kept apart: a vote with the names in view is another thing
HUMAN_OPEN = "human marks with names shown"

# Kappa and alpha compare raters on the human grade scale; every other scale is mapped onto it.
GRADE_SCALE = (float(store.HUMAN_SCORE_RANGE[0]), float(store.HUMAN_SCORE_RANGE[1]))
GRADES = range(store.HUMAN_SCORE_RANGE[0], store.HUMAN_SCORE_RANGE[1] + 1)
# Krippendorff's alpha on whole grades (ordinal) or on the mapped scores themselves (interval).
ALPHA_LEVELS = ("ordinal", "interval")
DEFAULT_ALPHA_LEVEL = "ordinal"


# --- gathering ratings -----------------------------------------------------------------------------------


def _rater_key(db: sqlite_utils.Database, name: str) -> str:
    """The store's rater key for a judge name, a reviewer name, or ``human`` (the mean over reviewers)."""
    judges, reviewers = store.judge_names(db), store.reviewer_names(db)
    if name in judges:
        return f"judge:{name}"
    if name == HUMAN:
        return store.HUMANS
    if name in reviewers:
        return f"reviewer:{name}"
    raise UserError(f"unknown judge or reviewer {name!r}; known: {', '.join(judges + reviewers + [HUMAN])}")


def _rater_scores(db: sqlite_utils.Database, name: str, models: Sequence[str] | None) -> dict[int, float]:
    """Response id -> score for a judge (mean over repeats), a reviewer, or ``human`` (mean over reviewers)."""
    return store.rater_scores(db, _rater_key(db, name), models=models)


def _check_models(db: sqlite_utils.Database, models: Sequence[str] | None) -> None:
    for model in models or ():
        store.model_id(db, model)


def _reviewer_table(db: sqlite_utils.Database, responses: Sequence[int]) -> tuple[list[str], np.ndarray]:
    """Reviewers x responses grades (NaN where a reviewer did not grade), for Krippendorff's alpha."""
    column = {response: i for i, response in enumerate(responses)}
    grades = [r for r in store.human_grade_rows(db) if r["response_id"] in column]
    reviewers = sorted({r["reviewer"] for r in grades})
    table = np.full((len(reviewers), len(responses)), np.nan)
    for row in grades:
        table[reviewers.index(row["reviewer"]), column[row["response_id"]]] = row["score"]
    return reviewers, table


@dataclass(frozen=True)
class RaterPair:
    """Two raters' scores (response id -> score), their (min, max) scales and their names as shown."""

    scores: tuple[dict[int, float], dict[int, float]]
    scales: tuple[tuple[float, float], tuple[float, float]]
    labels: tuple[str, str]


def rater_pair(
    db: sqlite_utils.Database,
    first: str,
    second: str,
    *,
    dataset: str | None = None,
    models: Sequence[str] | None = None,
) -> RaterPair:
    """Two raters (store keys: ``judge:NAME``, ``reviewer:NAME``, ``store.HUMANS``) ready for ``pair_agreement``.

    A reviewer compared with the humans' mean is compared with the other reviewers: their own grades are left
    out of that mean, and its name says so (``humans (mean grade, without X)``); agreeing with a mean that
    holds one's own grades would flatter everyone.
    """
    scores, labels = [], []
    for rater, other in ((first, second), (second, first)):
        exclude = other.removeprefix("reviewer:") if rater == store.HUMANS and other.startswith("reviewer:") else None
        scores.append(store.rater_scores(db, rater, dataset=dataset, models=models, exclude=exclude))
        labels.append(store.humans_label(exclude) if rater == store.HUMANS else rater)
    scales = (store.rater_scale(db, first), store.rater_scale(db, second))
    return RaterPair((scores[0], scores[1]), scales, (labels[0], labels[1]))


# --- agreement -------------------------------------------------------------------------------------------


def on_grade_scale(value: float, scale: tuple[float, float]) -> float:
    """A score mapped linearly from its rater's (min, max) onto the 1-5 grades (0-100: 0 -> 1, 50 -> 3,
    100 -> 5), as the review queue's disagreement order maps it; a scale without width maps to the middle."""
    low, high = scale
    bottom, top = GRADE_SCALE
    if high <= low:
        return (bottom + top) / 2
    return bottom + (top - bottom) * (value - low) / (high - low)


def to_grade(value: float, scale: tuple[float, float]) -> int:
    """The whole 1-5 grade nearest to ``on_grade_scale(value)``: halves round up, the ends are clipped."""
    bottom, top = GRADES[0], GRADES[-1]
    return int(min(top, max(bottom, math.floor(on_grade_scale(value, scale) + 0.5))))


def kappa_label(weights: str) -> str:
    """Cohen's kappa as the app's column and the command line's line name it."""
    return f"kappa ({weights}, 1-5)"


def alpha_label(level: str) -> str:
    """Krippendorff's alpha with its level of measurement and its scale, as the app and the CLI name it."""
    return f"alpha ({level}, 1-5)"


def pair_agreement(
    first: Mapping[int, float],
    second: Mapping[int, float],
    scales: Sequence[tuple[float, float]],
    *,
    alpha_level: str = DEFAULT_ALPHA_LEVEL,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """How far two raters agree over the responses both scored: one function behind ``workbench agreement``
    and the app's Agreement and Calibration tabs.

    Correlations (Pearson, Spearman, Kendall tau-b, with bootstrap CIs) on each rater's own scale. Cohen's kappa
    and Krippendorff's alpha on the common 1-5 scale, each score mapped linearly from its rater's ``scales``
    (``on_grade_scale``), so that a 0-100 judge and 1-5 grades are never compared as raw numbers: kappa on
    whole grades (``to_grade``) with quadratic weights, and also unweighted and linear when both raters grade
    on 1-5 already; alpha ``ordinal`` on whole grades or ``interval`` on the mapped scores, unrounded. Means
    are on the raters' own scales. Fewer than 3 shared responses give only ``n``.
    """
    if alpha_level not in ALPHA_LEVELS:
        raise UserError(f"alpha level {alpha_level!r} must be one of {', '.join(ALPHA_LEVELS)}")
    common = sorted(first.keys() & second.keys())
    report: dict[str, Any] = {"n": len(common), "alpha_level": alpha_level}
    if len(common) < 3:
        return report
    values = [[float(scores[k]) for k in common] for scores in (first, second)]
    report["means"] = [float(np.mean(v)) for v in values]
    report["correlations"] = [c.to_dict() for c in stats.correlations(*values, resamples=resamples, seed=seed)]
    grades = [[to_grade(v, scale) for v in own] for own, scale in zip(values, scales, strict=True)]
    weighting = stats.KAPPA_WEIGHTS if all(tuple(scale) == GRADE_SCALE for scale in scales) else ("quadratic",)
    report["kappa"] = {
        weights or "unweighted": stats.cohen_kappa(*grades, weights=weights, categories=GRADES) for weights in weighting
    }
    if alpha_level == "ordinal":
        rated = grades
    else:
        rated = [[on_grade_scale(v, scale) for v in own] for own, scale in zip(values, scales, strict=True)]
    report["alpha"] = stats.krippendorff_alpha(rated, level=alpha_level)
    return report


def agreement(
    db: sqlite_utils.Database,
    judges: Sequence[str],
    *,
    models: Sequence[str] | None = None,
    dataset: str | None = None,
    alpha_level: str = DEFAULT_ALPHA_LEVEL,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Correlations (with n and bootstrap CIs), Cohen's kappa and Krippendorff's alpha between two raters over
    the responses both scored, as the app's Agreement tab shows them (``pair_agreement``: kappa and alpha on
    the common 1-5 scale, alpha ``ordinal`` or ``interval``). ``human`` against a reviewer is the other
    reviewers' mean. Whenever human grades are involved, also alpha among all reviewers of those responses.
    ``dataset`` keeps only that data set's responses (the report's ``--dataset``).
    """
    if len(judges) != 2 or judges[0] == judges[1]:
        raise UserError(f"--judges takes two different names, got {list(judges)}")
    _check_models(db, models)
    keys = [_rater_key(db, name) for name in judges]
    pair = rater_pair(db, *keys, dataset=dataset, models=models)
    shared = sorted(pair.scores[0].keys() & pair.scores[1].keys())
    scope = ", ".join(models) if models else "all models"
    if len(shared) < 3:
        raise UserError(f"{judges[0]} and {judges[1]} both rated only {len(shared)} responses of {scope}; need 3")
    result = pair_agreement(*pair.scores, pair.scales, alpha_level=alpha_level, resamples=resamples, seed=seed)
    report: dict[str, Any] = {
        "judges": list(judges),
        "raters": [
            label if key == store.HUMANS else name for name, key, label in zip(judges, keys, pair.labels, strict=True)
        ],
        "models": list(models) if models else None,
        "n": result["n"],
        "means": dict(zip(judges, result["means"], strict=True)),
        "correlations": result["correlations"],
        "kappa": result["kappa"],
        "alpha": result["alpha"],
        "alpha_level": alpha_level,
    }
    if store.HUMANS in keys or all(key.startswith("reviewer:") for key in keys):
        names, table = _reviewer_table(db, shared)
        if len(names) >= 2:
            alpha = stats.krippendorff_alpha(table, level=alpha_level)
            report["human_alpha"] = {"reviewers": names, "alpha": alpha, "level": alpha_level}
    return report


# --- stats -----------------------------------------------------------------------------------------------


def outcome_sources(
    db: sqlite_utils.Database, *, dataset: str | None = None
) -> dict[str, Callable[[], list[stats.Outcome]]]:
    """Every source of pairwise outcomes by name, each read only when called (the app reads the one it shows).

    Human blind votes; the Review tab's better/tie marks, given with the names in view; each pairwise judge
    (``judge:NAME``); and each rater of single responses (``store.rater_names``: ``judge:NAME``, the humans'
    mean grade, ``reviewer:NAME``) through the comparisons their scores imply, a reviewer's together with their
    own votes (``store.reviewer_outcomes``). ``workbench stats`` and the app's Leaderboard offer these sources.
    """
    sources: dict[str, Callable[[], list[stats.Outcome]]] = {
        HUMAN_BLIND: lambda: store.pairwise_outcomes(db, source="human", dataset=dataset, blind=True),
        HUMAN_OPEN: lambda: store.pairwise_outcomes(db, source="human", dataset=dataset, blind=False),
    }
    for judge in store.pairwise_judge_names(db):
        sources[f"judge:{judge}"] = lambda judge=judge: store.pairwise_outcomes(
            db, source="judge", dataset=dataset, judge=judge
        )
    for rater in store.rater_names(db):
        if rater.startswith("reviewer:"):
            name = rater.removeprefix("reviewer:")
            sources[rater] = lambda name=name: store.reviewer_outcomes(db, name, dataset=dataset)
        else:
            sources[rater] = lambda rater=rater: store.score_outcomes(db, rater, dataset=dataset)
    return sources


def pairwise_summary(
    outcomes: Sequence[stats.Outcome], *, resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 0
) -> dict:
    """One source's comparisons and, per model, its record (wins, losses, ties, win rate), Bradley-Terry rating
    with bootstrap CI (``too_few`` where it would mislead) and online Elo."""
    ratings = stats.bradley_terry(outcomes, resamples=resamples, seed=seed)
    elo = stats.elo_ratings(outcomes)
    return {
        "comparisons": len(outcomes),
        "models": {
            model: {**record, "bradley_terry": ratings[model].to_dict(), "elo": elo[model]}
            for model, record in stats.win_rates(outcomes).items()
        },
    }


def benchmark_label(configuration: Mapping[str, Any]) -> str:
    """A benchmark configuration (``store.CONFIGURATION``) as every table names it: task, data folder, shots
    and questions, e.g. ``mmlu · mc-sample · 0-shot · 32 q`` (a task of lm-eval's own names no folder)."""
    parts = [configuration["task"]]
    if configuration["data_dir"]:
        parts.append(Path(configuration["data_dir"]).name)
    if configuration["shots"] is not None:
        parts.append(f"{configuration['shots']}-shot")
    if configuration["questions"] is not None:
        parts.append(f"{configuration['questions']} q")
    return " · ".join(parts)


def benchmark_columns(db: sqlite_utils.Database) -> dict[str, dict[str, float]]:
    """``LABEL: metric`` -> model -> overall accuracy of the model's newest run of that configuration: the
    leaderboard's benchmark columns and ``workbench stats``' benchmark table."""
    columns: dict[str, dict[str, float]] = {}
    for row in store.benchmark_accuracy(db):
        columns.setdefault(f"{benchmark_label(row)}: {row['metric']}", {})[row["model"]] = row["accuracy"]
    return columns


def _human_mean(summary: dict) -> dict | None:
    """A model's mean human grade (mean over responses of each one's mean), the responses and the grades."""
    if not summary["graded"]:
        return None
    return {"mean": summary["mean_grade"], "n": summary["graded"], "grades": summary["grades"]}


def model_stats(
    db: sqlite_utils.Database,
    *,
    dataset: str | None = None,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Per model: responses, mean judge score per judge (own scale), mean human grade; per source of pairwise
    outcomes (``outcome_sources``): win rates, Bradley-Terry ratings with bootstrap CIs, and online Elo; per
    benchmark configuration, accuracy. The app's Leaderboard shows the same figures. ``dataset`` keeps only
    that data set's responses and comparisons (benchmarks are no data set's)."""
    models = {
        row["model"]: {
            "responses": row["responses"],
            "judges": row["judges"],
            "human": _human_mean(row),
        }
        for row in store.model_summary(db, dataset=dataset)
    }
    pairwise = {}
    for source, read in outcome_sources(db, dataset=dataset).items():
        outcomes = read()
        if outcomes:
            pairwise[source] = pairwise_summary(outcomes, resamples=resamples, seed=seed)
    return {"models": models, "pairwise": pairwise, "benchmarks": benchmark_columns(db)}


# --- compare ---------------------------------------------------------------------------------------------


def _item_scores(db: sqlite_utils.Database, rater: str, model: str, responses: dict[str, int]) -> dict[str, float]:
    """Item id -> ``rater``'s score of ``model``'s response (``responses``: item id -> response id)."""
    scores = _rater_scores(db, rater, [model])
    return {item: scores[response] for item, response in responses.items() if response in scores}


def compare(
    db: sqlite_utils.Database,
    model_a: str,
    model_b: str,
    *,
    dataset: str | None = None,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Is ``model_b`` better than ``model_a``? Paired tests on the same items for every judge and for the
    human mean grade, head-to-head human preferences, and McNemar on per-question benchmark correctness, per
    benchmark configuration both models ran (``benchmark_label``; a sample and the full set are not mixed).
    ``dataset`` keeps only that data set's items for the paired tests."""
    if model_a == model_b:
        raise UserError(f"--models takes two different models, got {model_a!r} twice")
    _check_models(db, (model_a, model_b))
    responses_a = store.response_ids_by_item(db, model_a, dataset)
    responses_b = store.response_ids_by_item(db, model_b, dataset)
    differences = {}
    raters = store.judge_names(db) + ([HUMAN] if store.reviewer_names(db) else [])
    for rater in raters:
        a = _item_scores(db, rater, model_a, responses_a)
        b = _item_scores(db, rater, model_b, responses_b)
        items = sorted(set(a) & set(b))
        if len(items) >= 2:
            differences[rater] = stats.paired_difference(
                [a[i] for i in items], [b[i] for i in items], resamples=resamples, seed=seed
            ).to_dict()
    head_to_head = {model_a: 0, model_b: 0, "tie": 0}
    for row in store.pairwise_grade_rows(db):
        if row["repeat_of"] is None and {row["left_model"], row["right_model"]} == {model_a, model_b}:
            winner = {"left": row["left_model"], "right": row["right_model"]}.get(row["preference"], "tie")
            head_to_head[winner] += 1
    correct_a, correct_b = store.benchmark_correctness(db, model_a), store.benchmark_correctness(db, model_b)
    benchmarks = {}
    for configuration in sorted(set(correct_a) & set(correct_b), key=str):
        answers_a, answers_b = correct_a[configuration], correct_b[configuration]
        questions = sorted(set(answers_a) & set(answers_b), key=str)
        if questions:
            label = benchmark_label(dict(zip(store.CONFIGURATION, configuration, strict=True)))
            benchmarks[label] = stats.mcnemar([answers_a[q] for q in questions], [answers_b[q] for q in questions])
    return {
        "model_a": model_a,
        "model_b": model_b,
        "differences": differences,
        "pairwise": head_to_head if sum(head_to_head.values()) else None,
        "benchmarks": {label: result.to_dict() for label, result in benchmarks.items()},
    }


# --- text output -----------------------------------------------------------------------------------------

_num = stats.significant_text  # every figure printed, as the app rounds it (3 significant digits)


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def format_agreement(report: dict) -> str:
    first, second = report["raters"]
    scope = ", ".join(report["models"]) if report["models"] else "all models"
    means = ", ".join(
        f"{name} {_num(mean)}" for name, mean in zip(report["raters"], report["means"].values(), strict=True)
    )
    rows = [
        (c["method"], _num(c["value"]), stats.bounds_text(c["low"], c["high"]), _num(c["p_value"]))
        for c in report["correlations"]
    ]
    lines = [
        f"{first} vs {second} on {scope}: n = {report['n']} responses (means on own scales: {means})",
        _table(("correlation", "value", "95% CI (bootstrap)", "p"), rows),
        "Cohen's " + "; ".join(f"{kappa_label(weights)}: {_num(v)}" for weights, v in report["kappa"].items()),
        f"Krippendorff's {alpha_label(report['alpha_level'])}: {_num(report['alpha'])}",
    ]
    if "human_alpha" in report:
        human = report["human_alpha"]
        label = alpha_label(human["level"])
        lines.append(f"Krippendorff's {label} among {len(human['reviewers'])} reviewers: {_num(human['alpha'])}")
    return "\n".join(lines)


def rating_text(estimate: dict) -> str:
    """A Bradley-Terry rating with its interval, as ``stats`` and the report print it: ``1023 [990, 1050]``."""
    return f"{_num(estimate['value'])} {stats.interval_text(stats.Estimate(**estimate))}"


def format_stats(report: dict) -> str:
    judges = list(dict.fromkeys(judge for record in report["models"].values() for judge in record["judges"]))
    rows = [
        (
            model,
            str(record["responses"]),
            *(_num((record["judges"].get(j) or {}).get("mean")) for j in judges),
            _num((record["human"] or {}).get("mean")),
        )
        for model, record in report["models"].items()
    ]
    lines = [_table(("model", "responses", *(f"{j} mean" for j in judges), "human mean"), rows)]
    for source, result in report["pairwise"].items():
        lines.append(f"\npairwise ({source}, {result['comparisons']} comparisons):")
        rows = [
            (
                model,
                str(r["wins"]),
                str(r["losses"]),
                str(r["ties"]),
                _num(r["win_rate"]),
                rating_text(r["bradley_terry"]),
                _num(r["elo"]),
            )
            for model, r in sorted(result["models"].items(), key=lambda item: -item[1]["bradley_terry"]["value"])
        ]
        lines.append(_table(("model", "wins", "losses", "ties", "win rate", "Bradley-Terry [95% CI]", "Elo"), rows))
    if report["benchmarks"]:
        models = list(dict.fromkeys(model for column in report["benchmarks"].values() for model in column))
        rows = [
            (column, *(_num(values.get(model)) for model in models)) for column, values in report["benchmarks"].items()
        ]
        lines.append("\nbenchmark accuracy (newest run per model and configuration):")
        lines.append(_table(("benchmark", *models), rows))
    return "\n".join(lines)


def format_compare(report: dict) -> str:
    a, b = report["model_a"], report["model_b"]
    lines = [f"{b} (B) vs {a} (A): mean difference B - A on the same items"]
    rows = [
        (
            rater,
            str(d["n"]),
            _num(d["mean_a"]),
            _num(d["mean_b"]),
            _num(d["mean_difference"]),
            stats.bounds_text(d["low"], d["high"]),
            _num(d["p_value"]),
        )
        for rater, d in report["differences"].items()
    ]
    if rows:
        lines.append(_table(("rater", "n", "mean A", "mean B", "B - A", "95% CI (bootstrap)", "p (Wilcoxon)"), rows))
    else:
        lines.append("no judge scores or grades cover both models on the same items")
    if report["pairwise"]:
        lines.append("human pairwise preferences: " + ", ".join(f"{k} {v}" for k, v in report["pairwise"].items()))
    for label, m in report["benchmarks"].items():
        lines.append(
            f"benchmark {label}: n = {m['n']} questions, accuracy A {_num(m['accuracy_a'])}, "
            f"B {_num(m['accuracy_b'])}; "
            f"only A right {m['only_a']}, only B right {m['only_b']}; McNemar exact p = {_num(m['p_value'])}"
        )
    return "\n".join(lines)


# --- CLI -------------------------------------------------------------------------------------------------


def _emit(report: dict, as_json: bool, formatter) -> None:
    print(json.dumps(report, indent=2) if as_json else formatter(report))


def _run_agreement(args: argparse.Namespace) -> None:
    db = store.open_db(args.db)
    report = agreement(
        db,
        args.judges,
        models=args.response_key,
        alpha_level=args.alpha_level,
        resamples=args.resamples,
        seed=args.seed,
    )
    _emit(report, args.json, format_agreement)


def _run_stats(args: argparse.Namespace) -> None:
    _emit(model_stats(store.open_db(args.db), resamples=args.resamples, seed=args.seed), args.json, format_stats)


def _run_compare(args: argparse.Namespace) -> None:
    db = store.open_db(args.db)
    _emit(compare(db, *args.models, resamples=args.resamples, seed=args.seed), args.json, format_compare)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, type=Path, help="workbench SQLite file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a text table")
    parser.add_argument(
        "--resamples",
        type=int,
        default=stats.DEFAULT_RESAMPLES,
        help="bootstrap resamples (default %(default)s, as the review app)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def add_cli(subparsers: Any) -> None:
    """Register ``agreement``, ``stats`` and ``compare``."""
    parser = subparsers.add_parser(
        "agreement",
        help="correlation/kappa/alpha between two judges or reviewers",
        description=agreement.__doc__,
    )
    parser.add_argument(
        "--judges",
        nargs=2,
        required=True,
        metavar=("A", "B"),
        help=f"two judge or reviewer names ({HUMAN!r} = mean human grade)",
    )
    parser.add_argument(
        "--response-key",
        action="append",
        metavar="MODEL",
        help="restrict to this model's responses (repeatable; default: all models)",
    )
    parser.add_argument(
        "--alpha-level",
        choices=ALPHA_LEVELS,
        default=DEFAULT_ALPHA_LEVEL,
        help="Krippendorff's alpha on whole 1-5 grades (ordinal) or on the scores mapped onto 1-5 (interval); "
        "default %(default)s, as the review app",
    )
    _common(parser)
    parser.set_defaults(func=_run_agreement)

    parser = subparsers.add_parser(
        "stats", help="per-model scores, grades, win rates and ratings", description=model_stats.__doc__
    )
    _common(parser)
    parser.set_defaults(func=_run_stats)

    parser = subparsers.add_parser(
        "compare", help="is model B really better than model A? (paired tests)", description=compare.__doc__
    )
    parser.add_argument("--models", nargs=2, required=True, metavar=("A", "B"))
    _common(parser)
    parser.set_defaults(func=_run_compare)
