"""``workbench agreement``, ``stats`` and ``compare``: do the judges agree, how do models rank, is B better?

Each command gathers rows from the store, hands plain arrays to ``workbench.stats`` and prints a text table
(or ``--json``). The functions return plain dicts so the review app can show the same figures.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from trainer.errors import UserError
from workbench import stats, store

HUMAN = "human"  # the mean grade of all reviewers, usable wherever a judge name is
HUMAN_BLIND = "human blind votes"  # pairwise sources, kept apart: a vote with the names in view is another thing
HUMAN_OPEN = "human marks with names shown"


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


# --- agreement -------------------------------------------------------------------------------------------


def agreement(
    db: sqlite_utils.Database,
    judges: Sequence[str],
    *,
    models: Sequence[str] | None = None,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Correlations (with n and bootstrap CIs) between two raters over the responses both scored.

    For two reviewers (same 1-5 scale) also Cohen's kappa (unweighted, linear, quadratic); Krippendorff's
    alpha for the pair, and across all reviewers whenever human grades are involved.
    """
    if len(judges) != 2 or judges[0] == judges[1]:
        raise UserError(f"--judges takes two different names, got {list(judges)}")
    _check_models(db, models)
    first, second = (_rater_scores(db, name, models) for name in judges)
    shared = sorted(set(first) & set(second))
    scope = ", ".join(models) if models else "all models"
    if len(shared) < 3:
        raise UserError(f"{judges[0]} and {judges[1]} both rated only {len(shared)} responses of {scope}; need 3")
    x, y = np.array([first[r] for r in shared]), np.array([second[r] for r in shared])
    reviewers = set(store.reviewer_names(db)) - set(store.judge_names(db))
    both_reviewers = all(name in reviewers for name in judges)
    report: dict[str, Any] = {
        "judges": list(judges),
        "models": list(models) if models else None,
        "n": len(shared),
        "means": {judges[0]: float(x.mean()), judges[1]: float(y.mean())},
        "correlations": [c.to_dict() for c in stats.correlations(x, y, resamples=resamples, seed=seed)],
        "alpha": stats.krippendorff_alpha([x, y], level="ordinal" if both_reviewers else "interval"),
    }
    if both_reviewers:
        grades = store.HUMAN_SCORE_RANGE
        categories = range(grades[0], grades[1] + 1)
        report["kappa"] = {
            str(weights or "unweighted"): stats.cohen_kappa(x, y, weights=weights, categories=categories)
            for weights in stats.KAPPA_WEIGHTS
        }
    if HUMAN in judges or both_reviewers:
        names, table = _reviewer_table(db, shared)
        if len(names) >= 2:
            report["human_alpha"] = {"reviewers": names, "alpha": stats.krippendorff_alpha(table)}
    return report


# --- stats -----------------------------------------------------------------------------------------------


def _outcome_sources(db: sqlite_utils.Database) -> dict[str, list[stats.Outcome]]:
    """Pairwise outcomes in the order they were given: human grades (without the swapped-side repeats, as in
    the app's leaderboard: they measure the reviewer, not the models), then each pairwise judge."""
    sources: dict[str, list[stats.Outcome]] = {}
    for source, blind in ((HUMAN_BLIND, True), (HUMAN_OPEN, False)):  # votes given blind or with names in view
        outcomes = store.pairwise_outcomes(db, source="human", blind=blind)
        if outcomes:
            sources[source] = outcomes
    for row in store.judge_pairwise_rows(db):
        outcome = (row["model_a"], row["model_b"], stats.WINNER_RESULT[row["winner"]])
        sources.setdefault(row["judge"], []).append(outcome)
    return sources


def model_stats(db: sqlite_utils.Database, *, resamples: int = 1000, seed: int = 0) -> dict:
    """Per model: responses, mean judge score per judge, mean human grade; per source of pairwise outcomes:
    win rates, Bradley-Terry ratings with bootstrap CIs, and online Elo."""
    models: dict[str, dict] = {
        name: {"responses": count, "judges": {}, "human": None}
        for name, count in store.model_response_counts(db).items()
    }
    per_judge: dict[tuple, list[float]] = defaultdict(list)
    for row in store.judge_score_rows(db):
        per_judge[row["model"], row["judge"]].append(row["score"])
    for (model, judge), scores in per_judge.items():
        models[model]["judges"][judge] = {"mean": float(np.mean(scores)), "n": len(scores)}
    per_response: dict[tuple, list[int]] = defaultdict(list)
    for row in store.human_grade_rows(db):
        per_response[row["model"], row["response_id"]].append(row["score"])
    response_means: dict[str, list[float]] = defaultdict(list)
    for (model, _), grades in per_response.items():
        response_means[model].append(np.mean(grades))
    for model, means in response_means.items():
        models[model]["human"] = {"mean": float(np.mean(means)), "n": len(means)}
    pairwise = {}
    for source, outcomes in _outcome_sources(db).items():
        ratings = stats.bradley_terry(outcomes, resamples=resamples, seed=seed)
        elo = stats.elo_ratings(outcomes)
        pairwise[source] = {
            "comparisons": len(outcomes),
            "models": {
                model: {**record, "bradley_terry": ratings[model].to_dict(), "elo": elo[model]}
                for model, record in stats.win_rates(outcomes).items()
            },
        }
    return {"models": models, "pairwise": pairwise}


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
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Is ``model_b`` better than ``model_a``? Paired tests on the same items for every judge and for the
    human mean grade, head-to-head human preferences, and McNemar on per-question benchmark correctness."""
    if model_a == model_b:
        raise UserError(f"--models takes two different models, got {model_a!r} twice")
    _check_models(db, (model_a, model_b))
    responses_a, responses_b = store.response_ids_by_item(db, model_a), store.response_ids_by_item(db, model_b)
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
    questions = sorted(set(correct_a) & set(correct_b), key=str)
    benchmark = None
    if questions:
        benchmark = stats.mcnemar([correct_a[q] for q in questions], [correct_b[q] for q in questions]).to_dict()
    return {
        "model_a": model_a,
        "model_b": model_b,
        "differences": differences,
        "pairwise": head_to_head if sum(head_to_head.values()) else None,
        "benchmark": benchmark,
    }


# --- text output -----------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _p(value: float) -> str:
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def format_agreement(report: dict) -> str:
    first, second = report["judges"]
    scope = ", ".join(report["models"]) if report["models"] else "all models"
    means = ", ".join(f"{name} {_fmt(mean, 2)}" for name, mean in report["means"].items())
    rows = [
        (c["method"], _fmt(c["value"]), f"[{_fmt(c['low'])}, {_fmt(c['high'])}]", _p(c["p_value"]))
        for c in report["correlations"]
    ]
    lines = [
        f"{first} vs {second} on {scope}: n = {report['n']} responses (means: {means})",
        _table(("correlation", "value", "95% CI (bootstrap)", "p"), rows),
        f"Krippendorff's alpha: {_fmt(report['alpha'])}",
    ]
    if "kappa" in report:
        lines.append("Cohen's kappa: " + ", ".join(f"{k} {_fmt(v)}" for k, v in report["kappa"].items()))
    if "human_alpha" in report:
        human = report["human_alpha"]
        lines.append(f"alpha among {len(human['reviewers'])} reviewers (ordinal): {_fmt(human['alpha'])}")
    return "\n".join(lines)


def _rating(estimate: dict) -> str:
    return f"{estimate['value']:.0f} {stats.interval_text(stats.Estimate(**estimate))}"


def format_stats(report: dict) -> str:
    judges = sorted({judge for record in report["models"].values() for judge in record["judges"]})
    rows = [
        (
            model,
            str(record["responses"]),
            *(_fmt((record["judges"].get(j) or {}).get("mean"), 1) for j in judges),
            _fmt((record["human"] or {}).get("mean"), 2),
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
                _fmt(r["win_rate"]),
                _rating(r["bradley_terry"]),
                f"{r['elo']:.0f}",
            )
            for model, r in sorted(
                report["pairwise"][source]["models"].items(),
                key=lambda item: -item[1]["bradley_terry"]["value"],
            )
        ]
        lines.append(_table(("model", "wins", "losses", "ties", "win rate", "Bradley-Terry [95% CI]", "Elo"), rows))
    return "\n".join(lines)


def format_compare(report: dict) -> str:
    a, b = report["model_a"], report["model_b"]
    lines = [f"{b} (B) vs {a} (A): mean difference B - A on the same items"]
    rows = [
        (
            rater,
            str(d["n"]),
            _fmt(d["mean_a"], 2),
            _fmt(d["mean_b"], 2),
            _fmt(d["mean_difference"], 2),
            f"[{_fmt(d['low'], 2)}, {_fmt(d['high'], 2)}]",
            _p(d["p_value"]),
        )
        for rater, d in report["differences"].items()
    ]
    if rows:
        lines.append(_table(("rater", "n", "mean A", "mean B", "B - A", "95% CI (bootstrap)", "p (Wilcoxon)"), rows))
    else:
        lines.append("no judge scores or grades cover both models on the same items")
    if report["pairwise"]:
        lines.append("human pairwise preferences: " + ", ".join(f"{k} {v}" for k, v in report["pairwise"].items()))
    if report["benchmark"]:
        m = report["benchmark"]
        lines.append(
            f"benchmark questions: n = {m['n']}, accuracy A {_fmt(m['accuracy_a'])}, "
            f"B {_fmt(m['accuracy_b'])}; "
            f"only A right {m['only_a']}, only B right {m['only_b']}; McNemar exact p = {_p(m['p_value'])}"
        )
    return "\n".join(lines)


# --- CLI -------------------------------------------------------------------------------------------------


def _emit(report: dict, as_json: bool, formatter) -> None:
    print(json.dumps(report, indent=2) if as_json else formatter(report))


def _run_agreement(args: argparse.Namespace) -> None:
    db = store.open_db(args.db)
    report = agreement(db, args.judges, models=args.response_key, resamples=args.resamples, seed=args.seed)
    _emit(report, args.json, format_agreement)


def _run_stats(args: argparse.Namespace) -> None:
    _emit(model_stats(store.open_db(args.db), resamples=args.resamples, seed=args.seed), args.json, format_stats)


def _run_compare(args: argparse.Namespace) -> None:
    db = store.open_db(args.db)
    _emit(compare(db, *args.models, resamples=args.resamples, seed=args.seed), args.json, format_compare)


def _common(parser: argparse.ArgumentParser, resamples: int) -> None:
    parser.add_argument("--db", required=True, type=Path, help="workbench SQLite file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a text table")
    parser.add_argument("--resamples", type=int, default=resamples, help="bootstrap resamples (default %(default)s)")
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
    _common(parser, stats.DEFAULT_RESAMPLES)
    parser.set_defaults(func=_run_agreement)

    parser = subparsers.add_parser(
        "stats", help="per-model scores, grades, win rates and ratings", description=model_stats.__doc__
    )
    _common(parser, 1000)
    parser.set_defaults(func=_run_stats)

    parser = subparsers.add_parser(
        "compare", help="is model B really better than model A? (paired tests)", description=compare.__doc__
    )
    parser.add_argument("--models", nargs=2, required=True, metavar=("A", "B"))
    _common(parser, stats.DEFAULT_RESAMPLES)
    parser.set_defaults(func=_run_compare)
