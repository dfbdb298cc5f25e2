"""Figures of the app's Agreement, Benchmarks and Training tabs and of ``workbench report``: outside the app
package, so that the report does not import Gradio.

Names come from data, so every text in a figure is drawn literally: matplotlib would otherwise read
``$...$`` in a model or rater name as math text and fail to draw it. Gradio draws a figure after the
handler returns, so the setting goes on each text object rather than into an ``rc_context``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402


def literal_text(figure: Figure) -> Figure:
    """Turn math text off for every title, label, tick label and legend entry of ``figure``."""
    for text in figure.findobj(Text):
        text.set_parse_math(False)
    return figure


def scatter_figure(x: Sequence[float], y: Sequence[float], x_label: str, y_label: str) -> Figure:
    """One marker per distinct (x, y), its area growing with how many responses share it (scores repeat)."""
    counts = Counter(zip(x, y, strict=True))
    figure, axes = plt.subplots(figsize=(6, 5))
    axes.scatter([p[0] for p in counts], [p[1] for p in counts], s=[20 * n for n in counts.values()], alpha=0.5)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(f"{len(x)} responses scored by both")
    figure.tight_layout()
    plt.close(figure)
    return literal_text(figure)


def loss_figure(curves: dict[str, list[dict]]) -> Figure:
    """Train and validation loss against tokens seen (or step), one colour per run; where a judge scored the
    run's checkpoints while it trained, its mean score on a second axis (dotted, same colour)."""
    figure, axes = plt.subplots(figsize=(8, 4))
    judged_axes = None
    for index, (name, rows) in enumerate(curves.items()):
        evaluations = [row for row in rows if row["train_loss"] is not None or row["val_loss"] is not None]
        judged = [row for row in rows if row.get("judge_score") is not None]
        x_key = "tokens_seen" if all(row["tokens_seen"] is not None for row in rows) else "step"
        colour = f"C{index % 10}"
        x = [row[x_key] for row in evaluations]
        axes.plot(x, [row["train_loss"] for row in evaluations], color=colour, label=f"{name} train")
        axes.plot(x, [row["val_loss"] for row in evaluations], color=colour, linestyle="--", label=f"{name} val")
        axes.set_xlabel(x_key.replace("_", " "))
        if judged:
            judged_axes = judged_axes or axes.twinx()
            judged_axes.plot(
                [row[x_key] for row in judged],
                [row["judge_score"] for row in judged],
                color=colour,
                linestyle=":",
                marker="o",
                label=f"{name} judge score",
            )
    axes.set_ylabel("loss")
    axes.legend(loc="upper left")
    if judged_axes is not None:
        judged_axes.set_ylabel("judge score (0-100)")
        judged_axes.set_ylim(0, 100)
        judged_axes.legend(loc="upper right")
    literal_text(figure)
    figure.tight_layout()
    plt.close(figure)
    return figure


def bench_chart(results: list[dict], model: str, out: Path) -> str:
    """The per-subject accuracy chart of ``workbench bench --plot``, as a PNG for the Image component."""
    from workbench.bench import plot_subject_accuracy

    return str(plot_subject_accuracy(results, out, title=f"{model}: MMLU accuracy per subject"))
