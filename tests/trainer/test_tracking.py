"""``--log-to tensorboard|mlflow`` on finetune, judge and bench: read back from TensorBoard's event files and
MLflow's local store, value for value; a missing package is one line and exit 2 before any work."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.workbench.test_judge import make_db
from trainer.cli import main as trainer_main
from trainer.tracking import flatten, tracking_run
from workbench import store
from workbench.cli import main as workbench_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workbench"))
from ollama_fake import FakeOllama, fake_score  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FINETUNE = ["finetune", "--model", "tiny", "--batch-size", "2", "--eval-batches", "1", "--lr", "1e-3"]
FINETUNE += ["--eval-every", "2", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _no_outside_tracking_settings(monkeypatch):
    """The trackers' own environment variables would send the runs elsewhere; whatever a test (or the MLflow
    tracker, which opts in to the file store) sets in them is undone after it."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.setenv(name, "")  # records the original state for the undo...
        monkeypatch.delenv(name)  # ...and starts without the variable


@pytest.fixture(scope="session")
def tracker_packages() -> None:
    """TensorBoard and MLflow, which the test extra installs (their absence fails under WORKBENCH_STRICT=1)."""
    for package in ("tensorboard", "mlflow"):
        require(importlib.util.find_spec(package) is not None, f"{package} not installed (pip install -e '.[test]')")


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard's own reader finds in ``folder``: tag -> [(step, value)], purges applied."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(folder.glob("events.out.tfevents.*")), f"no event file in {folder}"
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def mlflow_runs(store_dir: Path, experiment: str) -> tuple:
    """(a client of the local MLflow store in ``store_dir``, the runs of one experiment in it)."""
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the autouse fixture removes it again
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_dir.resolve().as_uri())
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {store_dir}"
    return client, client.search_runs([found.experiment_id])


def metrics_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def curves(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as tag -> [(step, value)], the way a tracker should hold it."""
    return {key: [(row["step"], row[key]) for row in rows] for key in rows[0] if key != "step"}


def assert_same_curve(points: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    """Same steps, same values (TensorBoard keeps float32)."""
    assert [step for step, _ in points] == [step for step, _ in expected]
    assert [value for _, value in points] == pytest.approx([value for _, value in expected], rel=1e-6)


# --- finetune ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("tracker_packages")
def test_finetune_mirrors_every_metrics_row_to_tensorboard_and_a_resume_leaves_no_duplicates(
    tmp_path, sample_data, capsys
):
    run_dir = tmp_path / "run"
    common = [*FINETUNE, "--data", str(sample_data), "--out", str(run_dir), "--log-to", "tensorboard"]
    assert trainer_main([*common, "--max-steps", "2"]) == 0
    assert trainer_main([*common, "--max-steps", "4", "--resume"]) == 0  # replays steps 0 and 2, adds 4
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    rows = metrics_rows(run_dir)
    assert [row["step"] for row in rows] == [0, 2, 4]
    scalars = tensorboard_scalars(run_dir / "tb" / "run")  # DIR/tb/NAME, DIR the run folder by default
    for tag, points in curves(rows).items():  # each step once: the second session purged the first one's
        assert_same_curve(scalars[tag], points)
    assert scalars["summary/tokens_seen"] == [(4, summary["tokens_seen"])]
    assert scalars["summary/best_val_loss"] == [(4, pytest.approx(summary["best_val_loss"], rel=1e-6))]


@pytest.mark.usefixtures("tracker_packages")
def test_finetune_logs_params_and_metrics_to_mlflow_in_the_working_folder(tmp_path, sample_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    command = [*FINETUNE, "--data", str(sample_data), "--out", str(run_dir), "--max-steps", "2", "--name", "first"]
    assert trainer_main([*command, "--log-to", "mlflow"]) == 0

    assert not (run_dir / "tb").exists()  # only what was asked for
    client, (run,) = mlflow_runs(tmp_path / "mlruns", "finetune")  # ./mlruns, as MLflow does
    assert run.info.run_name == "first" and run.info.status == "FINISHED"
    config = json.loads((run_dir / "config.json").read_text())
    assert run.data.params["train.lr"] == "0.001"
    assert run.data.params["model.n_layers"] == str(config["model"]["n_layers"])
    assert run.data.params["data"] == str(sample_data.resolve()) and run.data.params["train.patience"] == "null"
    for tag, points in curves(metrics_rows(run_dir)).items():
        history = client.get_metric_history(run.info.run_id, tag)
        assert_same_curve([(metric.step, metric.value) for metric in history], points)
    assert "summary/tokens_per_second" in run.data.metrics


@pytest.mark.usefixtures("tracker_packages")
def test_a_failed_finetune_marks_the_mlflow_run_failed(tmp_path, sample_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import trainer.train

    def broken_plot(*_):
        raise OSError("disk full")

    monkeypatch.setattr(trainer.train, "_write_plot", broken_plot)
    with pytest.raises(OSError, match="disk full"):
        trainer_main([*FINETUNE, "--data", str(sample_data), "--out", str(tmp_path / "run"), "--max-steps", "2",
                      "--log-to", "mlflow"])  # fmt: skip
    client, (run,) = mlflow_runs(tmp_path / "mlruns", "finetune")
    assert run.info.status == "FAILED"
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 2]


@pytest.mark.slow
@pytest.mark.usefixtures("tracker_packages")
def test_under_torchrun_only_rank_0_logs(tmp_path, sample_data):
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "trainer"]
    command += [*FINETUNE, "--data", str(sample_data), "--out", str(run_dir), "--max-steps", "2"]
    result = subprocess.run(
        [*command, "--log-to", "tensorboard"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    folder = run_dir / "tb" / "ddp"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # one writer: rank 0
    assert_same_curve(tensorboard_scalars(folder)["val_loss"], curves(metrics_rows(run_dir))["val_loss"])


def wandb_records(run_file: Path) -> Iterator:
    """The protobuf records of a W&B ``.wandb`` run file: a LevelDB-style log (a 7-byte header, then 32 KiB
    blocks of records, each with a 7-byte header, split across blocks when long). W&B's own Python reader is
    gone since its Go core took over, and an offline run keeps everything in this file."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, pending = run_file.read_bytes(), 32768, 7, b""
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    while position + 7 <= len(data):
        left_in_block = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left_in_block < 7 or (length, kind) == (0, 0):  # the padding at a block's end
            position += left_in_block
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last part of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_item(item) -> tuple[str, object]:
    """(key, value) of one logged item; the core writes the key as a one-part ``nested_key``."""
    return item.key or "/".join(item.nested_key), json.loads(item.value_json)


def test_finetune_logs_to_wandb_offline_without_a_login(tmp_path, sample_data, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is optional, not in the test extra: pip install -e '.[wandb]'")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # pytest captures the console itself
    run_dir = tmp_path / "run"
    command = [*FINETUNE, "--data", str(sample_data), "--out", str(run_dir), "--max-steps", "2"]
    assert trainer_main([*command, "--log-to", "wandb"]) == 0
    wandb.teardown()  # W&B's core writes the run file after finish(); at the latest when the process ends

    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")  # offline, in the run folder
    records = list(wandb_records(run_file))
    (run,) = [record.run for record in records if record.HasField("run")]
    assert (run.display_name, run.run_group, run.project) == ("run", "finetune", "gpt-instruct-workbench")
    history = [dict(map(wandb_item, record.history.item)) for record in records if record.HasField("history")]
    for row, logged in zip(metrics_rows(run_dir), history, strict=True):
        assert {key: logged[key] for key in row} == pytest.approx(row)  # "step" is the charts' x axis
    summary = {}
    for record in records:
        summary.update(map(wandb_item, record.summary.update))
    assert summary["summary/steps"] == 2


def test_wandb_keeps_a_row_that_arrives_after_a_later_step(tmp_path, monkeypatch):
    """A judge during training reports step 2 after step 4 was logged; W&B drops a step lower than its last
    one, so the rows carry their step as the charts' x axis instead."""
    pytest.importorskip("wandb", reason="wandb is optional, not in the test extra: pip install -e '.[wandb]'")
    import wandb

    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    with tracking_run(
        ["wandb"], experiment="finetune", run_name="late", params={}, log_dir=None, default_dir=tmp_path
    ) as tracker:
        tracker.log_metrics({"val_loss": 2.5}, 4)
        tracker.log_metrics({"judge_score": 40.0}, 2)
    wandb.teardown()
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    history = [dict(map(wandb_item, r.history.item)) for r in wandb_records(run_file) if r.HasField("history")]
    assert [(row["step"], row.get("val_loss"), row.get("judge_score")) for row in history] == [
        (4, 2.5, None),
        (2, None, 40.0),
    ]


# --- judge -------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("tracker_packages")
def test_judge_logs_its_summary_to_tensorboard_and_mlflow(tmp_path, capsys):
    texts = {"model a": ["alpha one", "alpha two", "alpha three"], "model b": ["beta one", "beta two", "beta 3"]}
    db_path = make_db(tmp_path / "judge.db", texts)
    logs = tmp_path / "logs"
    with FakeOllama() as fake:
        command = ["judge", "--db", str(db_path), "--judge-model", "judge", "--host", fake.url, "--json"]
        assert workbench_main([*command, "--log-to", "tensorboard,mlflow", "--log-dir", str(logs)]) == 0
    summary = json.loads(capsys.readouterr().out)
    for model, responses in texts.items():  # the summary is the fake judge's: known scores
        assert summary["models"][model]["mean_score"] == round(sum(map(fake_score, responses)) / 3, 3)

    expected = flatten({**summary, "flagged": 0})
    assert {"models/model a/mean_score", "models/model b/scored", "run/judged", "run/failed"} <= set(expected)
    scalars = tensorboard_scalars(logs / "tb" / "judge" / summary["judge"])
    assert {tag: points[0][1] for tag, points in scalars.items()} == pytest.approx(expected)

    client, (run,) = mlflow_runs(logs / "mlruns", "judge")
    assert run.data.metrics == pytest.approx(expected)
    assert run.data.params["judge_model"] == "judge:latest" and run.data.params["judge"] == summary["judge"]
    assert run.data.params["repeats"] == "1" and run.info.status == "FINISHED"


# --- bench -------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("tracker_packages")
def test_bench_logs_accuracies_per_subject_beside_the_run(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.chdir(tmp_path)
    run_dir = shutil.copytree(tiny_run, tmp_path / "tiny-run")  # the shared fixture stays as it is
    db_path = tmp_path / "bench.db"
    command = ["bench", "--db", str(db_path), "--run", str(run_dir), "--limit", "2"]
    assert workbench_main([*command, "--log-to", "tensorboard", "--log-to", "mlflow"]) == 0

    db = store.open_db(db_path)
    (stored,) = store.benchmark_runs(db)
    results = store.benchmark_results(db, stored["id"])
    accuracies = {f"mmlu/{row['subject']}/acc": row["value"] for row in results if row["subject"]}
    assert len(accuracies) == 4
    scalars = tensorboard_scalars(run_dir / "tb" / "bench" / "tiny-run")  # the run folder by default
    for tag, value in accuracies.items():
        assert scalars[tag] == [(0, pytest.approx(value))]
    micro = next(row for row in results if row["metric"] == "acc_micro")
    assert scalars["mmlu/acc_micro"] == [(0, pytest.approx(micro["value"]))]
    assert scalars["mmlu/acc_micro_stderr"] == [(0, pytest.approx(micro["stderr"]))]

    _, (run,) = mlflow_runs(tmp_path / "mlruns", "bench")
    assert {key: run.data.metrics[key] for key in accuracies} == pytest.approx(accuracies)
    assert run.data.params["benchmark_run_id"] == str(stored["id"]) and run.data.params["cached"] == "false"


# --- refusals ----------------------------------------------------------------------------------------------

# Python as if the package were not installed: an import of it fails as a missing one does.
WITHOUT = "import sys; sys.modules[{package!r}] = None; from {cli} import main; raise SystemExit(main(sys.argv[1:]))"


@pytest.mark.parametrize(("backend", "command"), [("mlflow", "finetune"), ("tensorboard", "judge"), ("wandb", "bench")])
def test_a_missing_package_is_one_line_and_exit_2_before_any_work(backend, command, tmp_path, sample_data):
    db_path = make_db(tmp_path / "judge.db", {"model a": ["alpha"]})
    before = db_path.read_bytes()
    cli, argv = {
        "finetune": ("trainer.cli", [*FINETUNE, "--data", str(sample_data), "--out", str(tmp_path / "run")]),
        "judge": (
            "workbench.cli",
            ["judge", "--db", str(db_path), "--judge-model", "j", "--host", "http://127.0.0.1:9"],
        ),
        "bench": ("workbench.cli", ["bench", "--db", str(tmp_path / "new.db"), "--run", str(tmp_path / "run")]),
    }[command]
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT.format(package=backend, cli=cli), *argv, "--log-to", backend],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    extra = f"gpt-instruct-workbench[{backend}]"
    assert result.stderr == f"error: --log-to {backend} needs the {backend} package: pip install '{extra}'\n"
    assert not (tmp_path / "run").exists() and not (tmp_path / "new.db").exists()
    assert db_path.read_bytes() == before


@pytest.mark.usefixtures("tracker_packages")
@pytest.mark.parametrize("backend", ["tensorboard", "mlflow"])
def test_an_unwritable_log_dir_is_one_line_and_leaves_the_run_folder_empty(backend, tmp_path, sample_data, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    run_dir = tmp_path / "run"
    command = [*FINETUNE, "--data", str(sample_data), "--out", str(run_dir), "--max-steps", "2"]
    assert trainer_main([*command, "--log-to", backend, "--log-dir", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --log-to {backend}: cannot write its logs ([Errno 20] Not a directory: ")
    assert err.count("\n") == 1 and str(tmp_path / "taken") in err
    assert list(run_dir.iterdir()) == []  # nothing trained, nothing written


def test_an_unknown_backend_is_a_usage_error(tmp_path, sample_data, capsys):
    with pytest.raises(SystemExit) as exit_info:
        trainer_main([*FINETUNE, "--data", str(sample_data), "--out", str(tmp_path / "run"), "--log-to", "csv"])
    assert exit_info.value.code == 2
    assert "argument --log-to: unknown tracking backend 'csv'; choose from tensorboard, mlflow, wandb" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()
