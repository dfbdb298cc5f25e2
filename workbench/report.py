"""``workbench report``: one file to share what the store knows about some models, as HTML or Markdown.

The HTML file is self-contained: figures are inline SVG, there is no script, and a Content-Security-Policy
forbids fetching anything, so it opens offline and from an e-mail. Sections: the models and where they came
from, loss curves, the leaderboard with intervals, judge score distributions, judge-judge and judge-human
agreement, pairwise judges (position bias, length preference, length-controlled win rate), paired comparisons
with a verdict in words, per-subject benchmark accuracy, and the items where two models differ most.

Every figure comes from the functions behind ``workbench stats``, ``compare`` and ``agreement``
(``workbench.analysis``) and the judge's own pairwise summary, rounded as they round, so the report prints the
numbers they print. Everything taken from data is escaped in one place per format: the Jinja template's
autoescaping (HTML), one escaping function (Markdown); figures draw their texts literally (no math text) and as
paths.
"""

from __future__ import annotations

import argparse
import html
import io
import itertools
import json
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import sqlite_utils

from trainer.errors import UserError
from workbench import analysis, stats, store

FORMATS = ("html", "md")
DEFAULT_TOP_ITEMS = 5
TEXT_LIMIT = 600  # characters of an instruction or response shown in the table of differing items
SIGNIFICANCE = round(1 - stats.CONFIDENCE, 10)  # a McNemar p-value below this is called a difference
_num = stats.significant_text


# --- the report as data: sections of notes, tables and figures ---------------------------------------------


@dataclass(frozen=True)
class Note:
    """A paragraph of plain text (data in it is escaped when rendered)."""

    text: str
    kind: ClassVar[str] = "note"


@dataclass(frozen=True)
class Table:
    """Rows of text under headers; ``folded`` (a summary line) keeps a long table closed until opened (HTML)."""

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    folded: str | None = None
    kind: ClassVar[str] = "table"


@dataclass(frozen=True)
class Figure:
    """An inline SVG drawn by matplotlib with every text as paths; shown in HTML, named in Markdown."""

    svg: str
    caption: str
    kind: ClassVar[str] = "figure"


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


@dataclass
class Report:
    title: str
    scope: str
    sections: list[Section]


# --- figures ------------------------------------------------------------------------------------------------


def _svg(figure: Any, caption: str) -> Figure:
    """A matplotlib figure as inline SVG: texts drawn literally and as paths, no date, stable ids."""
    import matplotlib

    from workbench.plots import literal_text

    literal_text(figure)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "workbench-report", "svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return Figure(text[text.index("<svg") :], caption)


def _svg_file(path: Path, caption: str) -> Figure:
    text = path.read_text(encoding="utf-8")
    return Figure(text[text.index("<svg") :], caption)


def _histogram(judge: str, scores: dict[str, list[float]], scale: tuple[float, float]) -> Figure:
    """One outline histogram per model over the judge's scale."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.2))
    bins = np.linspace(scale[0], scale[1], 21) if scale[1] > scale[0] else 20
    for model, values in scores.items():
        axes.hist(values, bins=bins, histtype="step", linewidth=1.6, label=f"{model} (n = {len(values)})")
    axes.set_xlabel(f"{judge} score")
    axes.set_ylabel("responses")
    axes.legend(fontsize="small")
    figure.tight_layout()
    plt.close(figure)
    return _svg(figure, f"{judge}: scores per model")


# --- gathering ----------------------------------------------------------------------------------------------


@dataclass
class _Scope:
    """What the report covers and what several sections share (computed once)."""

    db: sqlite_utils.Database
    dataset: str | None
    models: list[str]
    chosen: list[str] | None  # the models asked for, passed on to the analysis functions (None: all, as the CLIs)
    resamples: int
    seed: int
    top: int
    summary: dict = field(default_factory=dict)
    comparisons: list[dict] = field(default_factory=list)


def _rater_key(rater: str) -> str:
    """``analysis.compare``'s rater names (a judge's name, or ``human``) as store rater keys."""
    return store.HUMANS if rater == analysis.HUMAN else f"judge:{rater}"


def _clip(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + f"… ({len(text):,} characters)"


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _models_section(scope: _Scope) -> Section:
    section = Section("models", "Models and where they came from")
    origins = {row["name"]: row for row in store.model_origins(scope.db)}
    checkpoints: dict[str, set[str]] = {}
    for run in store.benchmark_runs(scope.db):
        settings = json.loads(run["settings_json"] or "{}")
        checkpoint = (settings.get("model") or {}).get("checkpoint")
        if checkpoint:
            checkpoints.setdefault(run["model_name"], set()).add(checkpoint)
    rows = []
    for model in scope.models:
        origin, config = origins[model], origins[model]["config"] or {}
        record = scope.summary["models"].get(model) or {}
        rows.append(
            [
                model,
                origin["kind"],
                str(record.get("responses", 0)),
                str(config.get("weights") or config.get("model_name") or "-"),
                Path(config["data"]).name if isinstance(config.get("data"), str) else "-",
                str(config.get("data_sha256") or "-")[:16],
                origin["run_dir"] or "-",
                ", ".join(sorted(checkpoints.get(model, ()))) or "-",
            ]
        )
    section.blocks.append(
        Table(
            ["model", "kind", "responses", "started from", "trained on", "data SHA-256", "run folder", "benchmarked"],
            rows,
        )
    )
    runs = {model: _flatten(origins[model]["config"]) for model in scope.models if origins[model]["config"]}
    if runs:
        keys = list(dict.fromkeys(key for flat in runs.values() for key in flat))
        rows = [[key, *(str(flat.get(key, "-")) for flat in runs.values())] for key in keys]
        folded = f"All {len(keys)} recorded settings (a run folder's config.json, a responses file's .meta.json)"
        section.blocks.append(Table(["setting", *runs], rows, folded=folded))
    else:
        section.blocks.append(Note("No model here comes from a trainer run folder (responses imported only)."))
    return section


def _training_section(scope: _Scope) -> Section:
    from workbench.plots import loss_figure

    section = Section("training", "Loss curves")
    runs = [model for model in store.training_models(scope.db) if model in scope.models]
    if not runs:
        section.blocks.append(Note("No training runs of these models: `workbench import runs/RUN --db DB` adds one."))
        return section
    curves = {model: store.training_metrics(scope.db, model) for model in runs}
    section.blocks.append(_svg(loss_figure(curves), "train and validation loss"))
    rows = [
        [model, str(len(metrics)), str(last["step"]), str(last["tokens_seen"]), _num(last["train_loss"])]
        + [_num(last["val_loss"])]
        for model, metrics in curves.items()
        for last in metrics[-1:]
    ]
    section.blocks.append(Table(["run", "evaluations", "last step", "tokens seen", "train loss", "val loss"], rows))
    return section


def _leaderboard_section(scope: _Scope) -> Section:
    section = Section("leaderboard", "Leaderboard")
    summary = scope.summary
    records = {model: record for model, record in summary["models"].items() if model in scope.models}
    judges = list(dict.fromkeys(judge for record in records.values() for judge in record["judges"]))
    if records:
        rows = [
            [model, str(record["responses"])]
            + [_num((record["judges"].get(judge) or {}).get("mean")) for judge in judges]
            + [_num((record["human"] or {}).get("mean"))]
            for model, record in records.items()
        ]
        section.blocks.append(Table(["model", "responses", *(f"{j} mean" for j in judges), "human mean"], rows))
    else:
        section.blocks.append(Note("None of these models has responses in scope."))
    section.blocks.append(
        Note(
            "Ratings: Bradley-Terry on the Elo scale with 95 % bootstrap intervals ('too few' under "
            f"{stats.MIN_COMPARISONS} comparisons or when a model won or lost them all); ties count half. "
            "Fitted on every model's comparisons in scope, as `workbench stats` fits them."
        )
    )
    for source, result in summary["pairwise"].items():
        ranked = sorted(
            ((m, r) for m, r in result["models"].items() if m in scope.models),
            key=lambda item: -item[1]["bradley_terry"]["value"],
        )
        if not ranked:
            continue
        section.blocks.append(Note(f"Pairwise outcomes from {source} ({result['comparisons']} comparisons):"))
        rows = [
            [model, str(r["wins"]), str(r["losses"]), str(r["ties"]), _num(r["win_rate"])]
            + [analysis.rating_text(r["bradley_terry"]), _num(r["elo"])]
            for model, r in ranked
        ]
        section.blocks.append(
            Table(["model", "wins", "losses", "ties", "win rate", "Bradley-Terry [95% CI]", "Elo"], rows)
        )
    benchmarks = {
        column: {model: value for model, value in values.items() if model in scope.models}
        for column, values in summary["benchmarks"].items()
    }
    benchmarks = {column: values for column, values in benchmarks.items() if values}
    if benchmarks:
        models = list(dict.fromkeys(model for values in benchmarks.values() for model in values))
        section.blocks.append(Note("Benchmark accuracy (newest run per model and configuration):"))
        rows = [[column, *(_num(values.get(model)) for model in models)] for column, values in benchmarks.items()]
        section.blocks.append(Table(["benchmark", *models], rows))
    return section


def _scores_section(scope: _Scope) -> Section:
    section = Section("scores", "Judge score distributions")
    judges = store.score_judge_names(scope.db)
    for judge in judges:
        key = f"judge:{judge}"
        scores = {
            model: list(store.rater_scores(scope.db, key, dataset=scope.dataset, models=[model]).values())
            for model in scope.models
        }
        scores = {model: values for model, values in scores.items() if values}
        if not scores:
            continue
        section.blocks.append(_histogram(judge, scores, store.rater_scale(scope.db, key)))
        means = {model: (scope.summary["models"][model]["judges"].get(judge) or {}) for model in scores}
        rows = [[model, str(len(values)), _num(means[model].get("mean"))] for model, values in scores.items()]
        section.blocks.append(Table(["model", f"responses scored by {judge}", "mean score"], rows))
    if not section.blocks:
        section.blocks.append(Note("No judge scores in the store: `workbench judge` or `import-scores` adds them."))
    return section


def _agreement_section(scope: _Scope) -> Section:
    from workbench.plots import scatter_figure

    section = Section("agreement", "Agreement between judges and humans")
    raters = store.score_judge_names(scope.db) + ([analysis.HUMAN] if store.reviewer_names(scope.db) else [])
    if not store.reviewer_names(scope.db):
        section.blocks.append(Note("No human grades in the store: grade responses in the Review tab to compare."))
    rows, figures, too_few, methods = [], [], [], []
    for first, second in itertools.combinations(raters, 2):
        try:
            report = analysis.agreement(
                scope.db,
                [first, second],
                models=scope.chosen,
                dataset=scope.dataset,
                resamples=scope.resamples,
                seed=scope.seed,
            )
        except UserError as exc:
            too_few.append(str(exc))
            continue
        methods = [c["method"] for c in report["correlations"]]  # the same three for every pair
        rows.append(
            [f"{first} vs {second}", str(report["n"])]
            + [f"{_num(c['value'])} {stats.bounds_text(c['low'], c['high'])}" for c in report["correlations"]]
            + [_num(report["kappa"]["quadratic"]), _num(report["alpha"])]
        )
        pair = analysis.rater_pair(
            scope.db, _rater_key(first), _rater_key(second), dataset=scope.dataset, models=scope.chosen
        )
        a, b = pair.scores
        common = sorted(a.keys() & b.keys())
        figure = scatter_figure([a[k] for k in common], [b[k] for k in common], *pair.labels)
        figures.append(_svg(figure, f"{first} against {second}"))
    if rows:
        headers = ["raters", "n", *(f"{m} [95% CI]" for m in methods), analysis.kappa_label("quadratic")]
        headers.append(analysis.alpha_label(analysis.DEFAULT_ALPHA_LEVEL))
        section.blocks.append(Table(headers, rows))
        section.blocks.extend(figures)
    elif len(raters) < 2:
        section.blocks.append(Note("Agreement needs two raters: two judges, or a judge and human grades."))
    section.blocks.extend(Note(f"Not compared: {line}.") for line in too_few)
    return section


def _pairwise_section(scope: _Scope) -> Section:
    from workbench.judge import pairwise_summary

    section = Section("pairwise", "Pairwise judges")
    items = {row["id"] for row in store.dataset_items(scope.db, scope.dataset)} if scope.dataset else None
    rows = []
    for judge, verdicts in store.pairwise_verdicts_by_judge(scope.db).items():
        pairs: dict[tuple[str, str], list[dict]] = {}
        for row in verdicts:
            if {row["model_a"], row["model_b"]} <= set(scope.models) and (items is None or row["item_id"] in items):
                pairs.setdefault((row["model_a"], row["model_b"]), []).append(row)
        for (model_a, model_b), pair_rows in pairs.items():
            s = pairwise_summary(pair_rows)
            rows.append(
                [judge, model_a, model_b, str(s["judged"]), f"{s['wins_a']} / {s['wins_b']} / {s['ties']}"]
                + [_num(s[key]) for key in ("win_rate_a", "lc_win_rate_a", "inconsistent_rate", "position_bias_rate")]
                + [_num(s["first_position_rate"]), _num(s["longer_preferred_rate"])]
            )
    if not rows:
        section.blocks.append(
            Note("No pairwise judge verdicts on these models: `workbench judge --mode pairwise` adds them.")
        )
        return section
    section.blocks.append(
        Note(
            "Each item is judged twice, A first and B first; a verdict that changes with the order counts as a tie. "
            "Rates are shares of the judged items: the length-controlled win rate is the win rate the judge would "
            "give at equal lengths (AlpacaEval 2); 'same position twice' counts items where the judge chose "
            "whichever answer came first (or second) both times."
        )
    )
    headers = ["judge", "A", "B", "judged", "wins A / B / ties", "win rate A", "length-controlled win rate A"]
    headers += ["verdict changed on swap", "same position twice", "of those, the first", "longer answer won"]
    section.blocks.append(Table(headers, rows))
    return section


def difference_verdict(model_a: str, model_b: str, rater: str, difference: dict) -> str:
    """A paired difference (``stats.PairedDifference``) in words: who is better, by how much, how sure."""
    scale = "the human grades (1-5)" if rater == analysis.HUMAN else f"{rater}'s scale"
    mean, low, high = difference["mean_difference"], difference["low"], difference["high"]
    tail = f" (Wilcoxon p = {_num(difference['p_value'])}, {difference['n']} items)."
    if low > 0 or high < 0:
        better, worse, sign = (model_b, model_a, 1) if low > 0 else (model_a, model_b, -1)
        interval = stats.bounds_text(*sorted((sign * low, sign * high)))
        return f"{better} is better than {worse} by {_num(sign * mean)} points on {scale}, 95 % CI {interval}{tail}"
    return (
        f"No clear difference on {scale}: {model_b} minus {model_a} is {_num(mean)} points, "
        f"95 % CI {stats.bounds_text(low, high)} includes 0{tail}"
    )


def mcnemar_verdict(model_a: str, model_b: str, label: str, result: dict) -> str:
    """McNemar's test on the questions both models answered, in words."""
    only_a, only_b = result["only_a"], result["only_b"]
    figures = (
        f"n = {result['n']} questions, accuracy {model_a} {_num(result['accuracy_a'])}, {model_b} "
        f"{_num(result['accuracy_b'])}; only {model_a} right {only_a}, only {model_b} right {only_b}; "
        f"McNemar exact p = {_num(result['p_value'])}"
    )
    if result["p_value"] < SIGNIFICANCE and only_a != only_b:
        better, worse = (model_b, model_a) if only_b > only_a else (model_a, model_b)
        return f"{label}: {better} answers more questions right than {worse} ({figures})."
    return f"{label}: no clear difference ({figures})."


def _compare_section(scope: _Scope) -> Section:
    section = Section("compare", "Paired comparisons")
    nothing = []
    for result in scope.comparisons:
        a, b = result["model_a"], result["model_b"]
        if not (result["differences"] or result["benchmarks"] or result["pairwise"]):
            nothing.append(f"{a} and {b}")
            continue
        section.blocks.append(Note(f"{b} (B) against {a} (A), on the same items:"))
        section.blocks.extend(Note(difference_verdict(a, b, r, d)) for r, d in result["differences"].items())
        if result["differences"]:
            rows = [
                [rater, str(d["n"]), _num(d["mean_a"]), _num(d["mean_b"]), _num(d["mean_difference"])]
                + [stats.bounds_text(d["low"], d["high"]), _num(d["p_value"])]
                for rater, d in result["differences"].items()
            ]
            headers = ["rater", "n", "mean A", "mean B", "B - A", "95% CI (bootstrap)", "p (Wilcoxon)"]
            section.blocks.append(Table(headers, rows))
        if result["pairwise"]:
            votes = ", ".join(f"{key} {count}" for key, count in result["pairwise"].items())
            section.blocks.append(Note(f"Human pairwise preferences: {votes}."))
        section.blocks.extend(Note(mcnemar_verdict(a, b, label, m)) for label, m in result["benchmarks"].items())
    if not scope.comparisons:
        section.blocks.append(Note("Paired comparisons need two models."))
    if nothing:
        pairs = "; ".join(nothing)
        section.blocks.append(Note(f"Nothing in common to compare (no shared scored items or benchmark): {pairs}."))
    return section


def _benchmarks_section(scope: _Scope) -> Section:
    from workbench.bench import plot_subject_accuracy

    section = Section("benchmarks", "Benchmark accuracy per subject")
    runs = [row for row in store.newest_benchmark_runs(scope.db) if row["model"] in scope.models]
    if not runs:
        section.blocks.append(Note("No benchmark runs of these models: `workbench bench --db DB --run RUN` adds them."))
        return section
    by_label: dict[str, list[dict]] = {}
    for row in runs:
        by_label.setdefault(analysis.benchmark_label(row), []).append(row)
    with tempfile.TemporaryDirectory(prefix="workbench-report-") as folder:
        for label, label_runs in by_label.items():
            results = {
                row["model"]: [r for r in store.benchmark_results(scope.db, row["run_id"]) if r["task"] == row["task"]]
                for row in label_runs
            }
            subjects = list(dict.fromkeys(r["subject"] or r["metric"] for rs in results.values() for r in rs))
            values = {
                model: {r["subject"] or r["metric"]: r["value"] for r in rs if not r["subject"] or r["metric"] == "acc"}
                for model, rs in results.items()
            }
            section.blocks.append(Note(f"{label}:"))
            rows = [[subject, *(_num(values[model].get(subject)) for model in results)] for subject in subjects]
            section.blocks.append(Table(["subject", *results], rows))
            for index, (model, model_results) in enumerate(results.items()):
                title = f"{model}: {label}"
                try:
                    path = plot_subject_accuracy(model_results, Path(folder) / f"{index}.svg", title=title)
                except UserError:  # no per-subject accuracy in this task
                    continue
                section.blocks.append(_svg_file(path, title))
    return section


def _differences_section(scope: _Scope) -> Section:
    section = Section("differences", "Items where the models differ most")
    for result in scope.comparisons:
        a, b = result["model_a"], result["model_b"]
        if not result["differences"]:
            continue
        texts = {
            (row["item_id"], row["model"]): row
            for row in store.response_rows(scope.db, dataset=scope.dataset, models=[a, b])
        }
        responses = {model: store.response_ids_by_item(scope.db, model, scope.dataset) for model in (a, b)}
        for rater in result["differences"]:
            scores = {
                model: store.rater_scores(scope.db, _rater_key(rater), dataset=scope.dataset, models=[model])
                for model in (a, b)
            }
            shared = [
                (item, scores[a][responses[a][item]], scores[b][responses[b][item]])
                for item in responses[a]
                if item in responses[b] and responses[a][item] in scores[a] and responses[b][item] in scores[b]
            ]
            shared.sort(key=lambda entry: -abs(entry[2] - entry[1]))  # stable: data set order among equals
            rows = []
            for item, score_a, score_b in shared[: scope.top]:
                row_a, row_b = texts[(item, a)], texts[(item, b)]
                prompt = row_a["instruction"] + (f"\n\n{row_a['input']}" if row_a["input"] else "")
                rows.append(
                    [_clip(prompt), _clip(row_a["reference_output"]), _clip(row_a["text"]), _clip(row_b["text"])]
                    + [_num(score_a), _num(score_b), _num(score_b - score_a)]
                )
            section.blocks.append(Note(f"{b} (B) against {a} (A) by {rater}: the {len(rows)} largest differences."))
            section.blocks.append(Table(["item", "reference", f"A: {a}", f"B: {b}", "A", "B", "B - A"], rows))
    if not section.blocks:
        section.blocks.append(Note("No rater scored two of these models on the same items."))
    return section


SECTIONS = (
    _models_section,
    _training_section,
    _leaderboard_section,
    _scores_section,
    _agreement_section,
    _pairwise_section,
    _compare_section,
    _benchmarks_section,
    _differences_section,
)


def build_report(
    db: sqlite_utils.Database,
    *,
    dataset: str | None = None,
    models: Sequence[str] | None = None,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
    top: int = DEFAULT_TOP_ITEMS,
) -> Report:
    """Every section for ``models`` (default: all) on ``dataset`` (default: all), checked before any work."""
    known = store.dataset_names(db)
    if dataset is not None and dataset not in known:
        raise UserError(f"unknown data set {dataset!r}; known: {', '.join(map(repr, known)) or 'none'}")
    for model in models or ():
        store.model_id(db, model)
    if resamples < 1 or top < 1:
        raise UserError("--resamples and --top must be at least 1")
    chosen = list(dict.fromkeys(models)) if models else None
    scope = _Scope(db, dataset, chosen or store.model_names(db), chosen, resamples, seed, top)
    scope.summary = analysis.model_stats(db, dataset=dataset, resamples=resamples, seed=seed)
    scope.comparisons = [
        analysis.compare(db, a, b, dataset=dataset, resamples=resamples, seed=seed)
        for a, b in itertools.combinations(scope.models, 2)
    ]
    description = (
        f"Data set: {dataset or 'all'}. Models: {', '.join(scope.models) or 'none'}. "
        f"Intervals: 95 % bootstrap, {resamples} resamples, seed {seed}. Written {store.utc_now()}."
    )
    return Report("Workbench report", description, [build(scope) for build in SECTIONS])


# --- rendering ----------------------------------------------------------------------------------------------

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td { white-space: pre-wrap; max-width: 28em; overflow-wrap: break-word; }
figure { margin: 0.5em 0 1.5em; } figure svg { max-width: 100%; height: auto; }
summary { cursor: pointer; margin: 0.5em 0; }
figcaption, .scope { color: #555; font-size: 0.9em; }
nav ol { columns: 3; }
"""

# Autoescaping escapes every value; only the SVG of our own figures is marked safe.
TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ report.title }}</title>
<style>{{ css | safe }}</style>
</head>
<body>
<h1>{{ report.title }}</h1>
<p class="scope">{{ report.scope }}</p>
<nav><ol>{% for section in report.sections %}<li>{{ section.title }}</li>{% endfor %}</ol></nav>
{% for section in report.sections %}
<section id="{{ section.id }}">
<h2>{{ section.title }}</h2>
{% for block in section.blocks %}
{% if block.kind == "note" %}<p>{{ block.text }}</p>
{% elif block.kind == "table" %}{% if block.folded %}<details><summary>{{ block.folded }}</summary>{% endif %}<table>
<thead><tr>{% for header in block.headers %}<th>{{ header }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in block.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>{% if block.folded %}</details>{% endif %}
{% else %}<figure>{{ block.svg | safe }}<figcaption>{{ block.caption }}</figcaption></figure>
{% endif %}
{% endfor %}
</section>
{% endfor %}
</body>
</html>
"""


def render_html(report: Report) -> str:
    """The report as one HTML page: no script, nothing to fetch, every text escaped by Jinja's autoescaping."""
    import jinja2

    environment = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    return environment.from_string(TEMPLATE).render(report=report, css=CSS)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_|~])")


def _md(text: Any, *, paragraph: bool = False) -> str:
    """Data made inert for Markdown (GitHub's): HTML escaped, emphasis, code, tables and links neutralised,
    one line (line breaks become ``<br>``); a ``paragraph`` also may not start a heading, list or quote."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False)).replace("](", "]\\(")
    if paragraph:
        escaped = re.sub(r"^([#+\->=])", r"\\\1", escaped)
    return "<br>".join(escaped.splitlines())


def render_markdown(report: Report) -> str:
    """The report as GitHub Markdown for a pull request; figures are named, not drawn."""
    lines = [f"# {_md(report.title)}", "", _md(report.scope, paragraph=True), ""]
    for section in report.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Note):
                lines += [_md(block.text, paragraph=True), ""]
            elif isinstance(block, Table):
                lines += [_md(block.folded, paragraph=True) + ":", ""] if block.folded else []
                lines.append("| " + " | ".join(_md(header) for header in block.headers) + " |")
                lines.append("|" + "---|" * len(block.headers))
                lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in block.rows]
                lines.append("")
            else:
                lines += [f"_Figure: {_md(block.caption)} (drawn in the HTML report)._", ""]
    return "\n".join(lines)


def write_report(
    db_path: str | Path,
    out: str | Path,
    *,
    fmt: str = "html",
    dataset: str | None = None,
    models: Sequence[str] | None = None,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
    top: int = DEFAULT_TOP_ITEMS,
) -> Path:
    """Build and write the report; input is checked first, and the file appears whole or not at all."""
    db_path, out = Path(db_path), Path(out)
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not db_path.is_file():
        raise UserError(f"{db_path}: no such database")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: no such folder for --out")
    if out.is_dir():
        raise UserError(f"{out}: a folder; --out names the file to write")
    db = store.open_db(db_path)
    try:
        report = build_report(db, dataset=dataset, models=models, resamples=resamples, seed=seed, top=top)
    finally:
        db.close()
    text = render_html(report) if fmt == "html" else render_markdown(report)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(out)
    return out


# --- CLI ----------------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    out = write_report(
        args.db,
        args.out,
        fmt=args.format,
        dataset=args.dataset,
        models=args.models,
        resamples=args.resamples,
        seed=args.seed,
        top=args.top,
    )
    print(f"wrote {out} ({out.stat().st_size:,} bytes in {time.perf_counter() - start:.1f} s)")


def add_cli(subparsers: Any) -> None:
    """Register ``workbench report``."""
    parser = subparsers.add_parser(
        "report",
        help="one shareable HTML (or Markdown) report: models, losses, leaderboard, agreement, comparisons",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", required=True, type=Path, help="workbench SQLite file")
    parser.add_argument("--out", required=True, type=Path, help="the file to write (report.html, report.md)")
    parser.add_argument("--format", choices=FORMATS, default="html", help="html (default) or md for pull requests")
    parser.add_argument("--dataset", help="only this data set's items (default: all)")
    parser.add_argument("--models", nargs="+", metavar="MODEL", help="only these models (default: all)")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP_ITEMS, help="differing items shown per pair and rater")
    parser.add_argument(
        "--resamples",
        type=int,
        default=stats.DEFAULT_RESAMPLES,
        help="bootstrap resamples (default %(default)s, as stats, compare and agreement)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.set_defaults(func=_run)
