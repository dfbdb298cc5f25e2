"""Experiment tracking: ``--log-to tensorboard|mlflow|wandb`` mirrors what a command writes to its own files.

Each backend is an optional extra, imported only when asked for, so a missing one fails at once with one line
naming the extra to install. ``finetune`` mirrors every ``metrics.jsonl`` row at its step; ``workbench judge``
and ``workbench bench`` log their final summaries. The run folder and the SQLite store stay the record: a
tracker is a view of them, and every session writes its run again from the start (a resumed fine-tuning run
replays the rows it kept), so TensorBoard's purge and a new MLflow or W&B run leave no duplicated points.

Where things go, in a folder DIR (``--log-dir``; by default the run folder for ``finetune`` and ``bench --run``,
else the working folder): TensorBoard event files in ``DIR/tb/RUN_NAME`` (``torch.utils.tensorboard``, no server
needed: ``tensorboard --logdir DIR/tb``); W&B in ``DIR/wandb``, offline unless ``WANDB_MODE`` or
``WANDB_API_KEY`` says otherwise (``wandb sync`` uploads an offline run); MLflow in the local file store
``./mlruns`` as MLflow always did (``DIR/mlruns`` with ``--log-dir``; ``$MLFLOW_TRACKING_URI`` when set and no
``--log-dir`` is given), one experiment per command.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from trainer.errors import UserError

PACKAGE = "gpt-instruct-workbench"
# backend -> (module to import, the package it lives in, which is also the name of the pip extra that brings it)
BACKENDS = {
    "tensorboard": ("torch.utils.tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
}
W_AND_B_PROJECT = "gpt-instruct-workbench"
# MLflow refuses other characters in metric and parameter names.
_MLFLOW_UNSAFE = re.compile(r"[^\w\-. /:]")


def parse_backends(text: str) -> list[str]:
    """argparse type of ``--log-to``: one or more comma-separated backend names."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown tracking backend {', '.join(map(repr, unknown)) or repr(text)}; choose from {', '.join(BACKENDS)}"
        )
    return names


def add_cli_options(parser: argparse.ArgumentParser, log_dir_default: str) -> None:
    """``--log-to`` (repeatable, comma-separated) and ``--log-dir`` on a command that mirrors its results."""
    parser.add_argument(
        "--log-to",
        type=parse_backends,
        action="extend",
        default=[],
        metavar="BACKEND",
        help=f"mirror the results to {', '.join(BACKENDS)} (repeat or comma-separate; each is an optional extra: "
        f"pip install '{PACKAGE}[BACKEND]')",
    )
    parser.add_argument(
        "--log-dir",
        metavar="DIR",
        help=f"folder for the trackers' files: DIR/tb/NAME, DIR/wandb, DIR/mlruns (default: {log_dir_default}; "
        "mlflow: ./mlruns or $MLFLOW_TRACKING_URI)",
    )


def require_backends(names: Sequence[str]) -> list[str]:
    """The distinct backends asked for, each imported now: a missing package is one UserError before any work."""
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in BACKENDS:
            raise UserError(f"unknown tracking backend {name!r}; choose from {', '.join(BACKENDS)}")
        module, package = BACKENDS[name]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            # Not installed, or installed and broken (a dependency missing): say which.
            broken = "" if exc.name == package else f" (importing it failed: {str(exc).splitlines()[0]})"
            raise UserError(
                f"--log-to {name} needs the {package} package{broken}: pip install '{PACKAGE}[{package}]'"
            ) from None
    return names


def flatten(values: Mapping, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested summary as ``{"a/b/c": value}``; booleans count as 0/1, text and lists are left
    out (they belong in the parameters), and so are None, NaN and infinities (nothing to plot)."""
    numbers: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            numbers.update(flatten(value, f"{name}/"))
        elif isinstance(value, bool | int | float) and math.isfinite(value):
            numbers[name] = float(value)
    return numbers


def flatten_params(values: Mapping, prefix: str = "") -> dict[str, str]:
    """Settings as ``{"a.b": text}``: nested dicts flattened, every value written as JSON would."""
    params: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            params.update(flatten_params(value, f"{name}."))
        else:
            params[name] = value if isinstance(value, str) else json.dumps(value)
    return params


class TensorBoardTracker:
    """Event files in ``log_dir/tb/run_name``, written with ``torch.utils.tensorboard``.

    The writer starts with a purge at step 0: whatever an earlier session wrote to this folder is hidden by
    TensorBoard's reader, since this session writes the whole run again."""

    def __init__(self, *, log_dir: Path, run_name: str, params: Mapping, **_) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A run name's slashes make subfolders; a part such as ".." cannot lead out of log_dir/tb.
        parts = ["_" if part in ("", ".", "..") else part for part in run_name.split("/")]
        self.writer = SummaryWriter(log_dir=str(log_dir.joinpath("tb", *parts)), purge_step=0)
        table = "\n".join(f"| {key} | {value} |" for key, value in flatten_params(params).items())
        self.writer.add_text("params", "| setting | value |\n| --- | --- |\n" + table, global_step=0)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        self.log_metrics(metrics, step)

    def finish(self, status: str) -> None:
        self.writer.close()


class MLflowTracker:
    """One MLflow run in the experiment named after the command, through ``MlflowClient`` (no global state)."""

    def __init__(self, *, log_dir: Path | None, experiment: str, run_name: str, params: Mapping, **_) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        if log_dir is None and os.environ.get("MLFLOW_TRACKING_URI"):
            uri = os.environ["MLFLOW_TRACKING_URI"]
        else:
            # MLflow 3.13+ asks for this opt-in before it uses the local file store: the store asked for here.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (log_dir / "mlruns" if log_dir else Path("mlruns")).resolve().as_uri()
        try:
            self.client = MlflowClient(tracking_uri=uri)
        except ImportError as exc:  # mlflow-skinny has no database stores
            raise UserError(
                f"--log-to mlflow: the tracking URI {uri} needs the {exc.name} package, which the full mlflow "
                "package brings: pip install mlflow"
            ) from None
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self.client.log_batch(
            self.run_id, params=[Param(_mlflow_name(key), value) for key, value in flatten_params(params).items()]
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(_mlflow_name(key), value, now, step) for key, value in metrics.items()]
        )

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        self.log_metrics(metrics, step)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


def _mlflow_name(key: str) -> str:
    return _MLFLOW_UNSAFE.sub("_", key)


class WandbTracker:
    """A W&B run in project ``gpt-instruct-workbench`` (or ``$WANDB_PROJECT``), grouped by command.

    Without ``WANDB_MODE`` or ``WANDB_API_KEY`` it runs offline: nothing needs a login, and ``wandb sync DIR``
    uploads the run later."""

    def __init__(self, *, log_dir: Path, experiment: str, run_name: str, params: Mapping, **_) -> None:
        import wandb

        offline = not (os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", W_AND_B_PROJECT),
            group=experiment,
            name=run_name,
            config=dict(params),
            dir=str(log_dir),
            mode="offline" if offline else None,
            reinit="create_new",
        )
        # W&B drops a row whose step is lower than the last one, and a judge during training reports a step
        # after later steps' losses: every row carries its own step, which the charts use as their x axis.
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({"step": step, **metrics})

    def log_summary(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.summary.update(dict(metrics))

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}


class Tracking:
    """The trackers of one command's run: every call goes to each of them (none: nothing happens)."""

    def __init__(self, trackers: Sequence) -> None:
        self.trackers = list(trackers)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Numbers measured at ``step`` (a ``metrics.jsonl`` row without its step)."""
        for tracker in self.trackers:
            tracker.log_metrics(metrics, step)

    def log_summary(self, summary: Mapping, step: int = 0) -> None:
        """The numbers of a final, possibly nested, summary (see ``flatten``)."""
        numbers = flatten(summary)
        for tracker in self.trackers:
            tracker.log_summary(numbers, step)


@contextlib.contextmanager
def tracking_run(
    backends: Sequence[str],
    *,
    experiment: str,
    run_name: str,
    params: Mapping,
    log_dir: str | os.PathLike | None,
    default_dir: str | os.PathLike,
) -> Iterator[Tracking]:
    """Start a run named ``run_name`` on each backend with its settings ``params``; finish it when the block
    ends, as FAILED when it raised (KILLED when interrupted). ``log_dir`` is ``--log-dir``; without it
    TensorBoard and W&B write under ``default_dir`` and MLflow where MLflow would."""
    started = []
    chosen = Path(log_dir) if log_dir else None
    try:
        for name in require_backends(backends):
            where = chosen if name == "mlflow" else chosen or Path(default_dir)
            try:
                started.append(TRACKERS[name](log_dir=where, experiment=experiment, run_name=run_name, params=params))
            except OSError as exc:
                raise UserError(f"--log-to {name}: cannot write its logs ({exc})") from exc
        yield Tracking(started)
    except KeyboardInterrupt:
        _finish(started, "KILLED")
        raise
    except BaseException:
        _finish(started, "FAILED")
        raise
    else:
        _finish(started, "FINISHED")


def _finish(trackers: Sequence, status: str) -> None:
    for tracker in trackers:
        tracker.finish(status)


def log_summary_run(
    backends: Sequence[str],
    summary: Mapping,
    *,
    experiment: str,
    run_name: str,
    params: Mapping,
    log_dir: str | os.PathLike | None,
    default_dir: str | os.PathLike,
) -> None:
    """A whole run holding one summary: what ``judge`` and ``bench`` log when they are done."""
    if not backends:
        return
    with tracking_run(
        backends, experiment=experiment, run_name=run_name, params=params, log_dir=log_dir, default_dir=default_dir
    ) as tracking:
        tracking.log_summary(summary)
