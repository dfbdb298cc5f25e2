"""``workbench bench``: results and per-question answers in the store, reruns from the store, bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from trainer.errors import UserError
from workbench import store
from workbench.bench import plot_subject_accuracy, read_mmlu_csv, run_benchmark
from workbench.cli import main

MC_SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "mc-sample"
SUBJECTS = ["astronomy", "college_computer_science", "high_school_geography", "nutrition"]


@pytest.fixture(autouse=True)
def _hf_home(tmp_path_factory, monkeypatch):
    """Hugging Face caches (and our converted tokenizer) in one folder per test session, not in ``~``."""
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


def _stored_runs(db_path: Path) -> list[dict]:
    return store.benchmark_runs(store.open_db(db_path))


def test_bench_stores_results_and_answers_and_serves_a_rerun(tiny_run, db_path, capsys):
    command = [
        "bench",
        "--db",
        str(db_path),
        "--run",
        str(tiny_run),
        "--tasks",
        "mmlu",
        "--mmlu-dir",
        str(MC_SAMPLE),
    ]
    assert main(command) == 0
    assert "stored" in capsys.readouterr().out
    (run,) = _stored_runs(db_path)
    assert (run["tasks"], run["num_fewshot"], run["limit_n"]) == ("mmlu", 0, None)
    db = store.open_db(db_path)
    results = store.benchmark_results(db, run["id"])
    samples = store.benchmark_samples(db, run["id"])
    assert len(samples) == 32

    by_subject = {row["subject"]: row for row in results if row["metric"] == "acc"}
    assert sorted(by_subject) == SUBJECTS
    for subject, row in by_subject.items():
        answers = [s for s in samples if s["subject"] == subject]
        expected = [q["answer"] for q in read_mmlu_csv(MC_SAMPLE / "test" / f"{subject}_test.csv")]
        assert [s["correct_choice"] for s in answers] == expected
        assert (row["n"], row["shots"]) == (8, 0)
        assert row["value"] == pytest.approx(sum(s["correct"] for s in answers) / 8)
    for sample in samples:
        assert sample["choices"] == [" A", " B", " C", " D"]
        assert sample["model_choice"] == sample["loglikelihoods"].index(max(sample["loglikelihoods"]))
        assert sample["correct"] == int(sample["model_choice"] == sample["correct_choice"])
        assert sample["prompt"].startswith("The following are multiple choice questions (with answers) about ")
        assert sample["prompt"].endswith("\nAnswer:")
    averages = {row["metric"]: row for row in results if row["subject"] is None}
    assert averages["acc_micro"]["value"] == pytest.approx(sum(s["correct"] for s in samples) / 32)
    assert averages["acc_macro"]["value"] == pytest.approx(sum(r["value"] for r in by_subject.values()) / 4)
    assert averages["acc_micro"]["n"] == 32 and averages["acc_micro"]["stderr"] > 0

    assert main(command) == 0
    assert "served from the store" in capsys.readouterr().out
    assert [r["id"] for r in _stored_runs(db_path)] == [run["id"]]

    assert main([*command, "--force"]) == 0
    assert "stored" in capsys.readouterr().out
    (rerun,) = _stored_runs(db_path)
    assert rerun["started_at"] > run["finished_at"]  # evaluated again, and the old run replaced
    assert store.benchmark_samples(store.open_db(db_path), rerun["id"]) == samples


def test_console_shows_one_bar_and_the_results_while_lm_eval_talks_to_the_log_file(
    tiny_run, db_path, capfd, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)  # outside a git checkout, where lm-eval's git call would print "fatal: ..."
    command = ["bench", "--db", str(db_path), "--run", str(tiny_run), "--mmlu-dir", str(MC_SAMPLE)]
    assert main(command) == 0
    out, err = capfd.readouterr()
    log_file = db_path.with_suffix(".bench.log")
    assert out.splitlines()[-1] == f"lm-eval messages: {log_file}"
    assert len(out.splitlines()) == 1 + 6 + 2  # table header, 4 subjects and 2 averages, stored, log file
    bars = [line for line in err.split("\n") if line.strip()]  # tqdm redraws one line with \r
    assert len(bars) == 1 and "request/s" in bars[0] and "128/128" in bars[0], err
    assert "wb_mmlu" not in out + err and "num_fewshot" not in out + err
    log = log_file.read_text(encoding="utf-8")
    for subject in SUBJECTS:
        assert f"wb_mmlu_{subject}: Custom kwargs can be passed" in log
        assert f"Overwriting default num_fewshot of wb_mmlu_{subject} from None to 0" in log

    assert main([*command, "--force", "--log-file", str(db_path.parent / "second.log")]) == 0
    assert "Custom kwargs" in (db_path.parent / "second.log").read_text(encoding="utf-8")
    assert log_file.read_text(encoding="utf-8") == log  # each run writes only where it is told


def test_five_shot_with_limit_and_plot(tiny_run, db_path, tmp_path):
    summary = run_benchmark(db_path, run=str(tiny_run), mmlu_dir=MC_SAMPLE, num_fewshot=5, limit=2)
    assert not summary["cached"]
    subjects = [row for row in summary["results"] if row["metric"] == "acc"]
    assert [(row["n"], row["shots"], row["limit_n"]) for row in subjects] == [(2, 5, 2)] * 4
    astronomy = [s for s in summary["samples"] if s["subject"] == "astronomy"]
    assert len(astronomy) == 2
    assert (
        "Which planet is closest to the Sun?\nA. Venus\nB. Mercury\nC. Mars\nD. Earth\nAnswer: B\n\n"
        in (astronomy[0]["prompt"])
    )
    png = plot_subject_accuracy(summary["results"], tmp_path / "mmlu.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_draws_names_with_dollar_signs_literally(tmp_path):
    """Matplotlib would parse ``$...$`` as math text and raise on a name such as ``$\\frac{$``."""
    results = [
        {"task": "mmlu", "subject": "a_$x$", "metric": "acc", "value": 0.5, "stderr": 0.1},
        {"task": "mmlu", "subject": "b_$\\frac{$", "metric": "acc", "value": 0.25, "stderr": None},
        {"task": "mmlu", "subject": None, "metric": "acc_macro", "value": 0.375, "stderr": None},
    ]
    png = plot_subject_accuracy(results, tmp_path / "plots" / "mmlu.png", title="MMLU: $\\frac{$")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib

    assert matplotlib.rcParams["text.parse_math"] is True  # the setting is the plot's own, not changed globally


@pytest.mark.slow
def test_hf_backend_runs_through_bench(tiny_hf_dir, db_path):
    summary = run_benchmark(db_path, hf_model=str(tiny_hf_dir), mmlu_dir=MC_SAMPLE, limit=3)
    assert summary["model"] == tiny_hf_dir.resolve().name
    assert len(summary["samples"]) == 12
    db = store.open_db(db_path)
    assert db.execute("SELECT kind FROM models WHERE name = ?", [summary["model"]]).fetchone()[0] == "hf"


def _copy_sample(tmp_path: Path) -> Path:
    folder = tmp_path / "mmlu"
    shutil.copytree(MC_SAMPLE, folder)
    return folder


def _rewrite_row(path: Path, row_number: int, row: list[str]) -> None:
    rows = list(csv.reader(path.open(newline="")))
    rows[row_number - 1] = row
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _headered(folder: Path) -> Path:
    path = folder / "test" / "nutrition_test.csv"
    rows = list(csv.reader(path.open(newline="")))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "choice0", "choice1", "choice2", "choice3", "answer"])
        writer.writerows(row[:5] + ["7" if i == 2 else str("ABCD".index(row[5]))] for i, row in enumerate(rows))
    return path


BAD_FOLDERS = {
    "missing folder": (lambda d: d / "nowhere", r"not an MMLU folder"),
    "five columns": (
        lambda d: _rewrite_row(d / "test" / "astronomy_test.csv", 3, ["q", "a", "b", "c", "A"]) or d,
        r"astronomy_test\.csv, row 3: expected 6 columns",
    ),
    "answer letter": (
        lambda d: _rewrite_row(d / "dev" / "nutrition_dev.csv", 2, ["q", "a", "b", "c", "d", "E"]) or d,
        r"nutrition_dev\.csv, row 2: answer 'E' is not one of A, B, C, D",
    ),
    "answer index": (
        lambda d: _headered(d) and d,
        r"nutrition_test\.csv, row 4: answer '7' is not an index 0-3",
    ),
    "unknown subject": (
        lambda d: shutil.copy(d / "test" / "nutrition_test.csv", d / "test" / "cooking_test.csv") and d,
        r"cooking_test\.csv: 'cooking' is not one of the 57 MMLU subjects",
    ),
    "no dev file": (
        lambda d: (d / "dev" / "astronomy_dev.csv").unlink() or d,
        r"astronomy_dev\.csv not found",
    ),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_bad_mmlu_folder_names_file_and_row_and_writes_nothing(case, tiny_run, db_path, tmp_path):
    make, message = BAD_FOLDERS[case]
    folder = make(_copy_sample(tmp_path))
    with pytest.raises(UserError, match=message):
        run_benchmark(db_path, run=str(tiny_run), mmlu_dir=folder, num_fewshot=5)
    assert _stored_runs(db_path) == []


def test_run_without_weights_is_a_clear_cli_error(tmp_path, db_path, capsys):
    run_dir = tmp_path / "untrained"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"name": "untrained"}')
    assert main(["bench", "--db", str(db_path), "--run", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "no weights" in error and "untrained" in error
    assert _stored_runs(db_path) == []


@pytest.mark.slow
def test_unknown_task_and_offline_hub_task(tiny_run, db_path, monkeypatch):
    with pytest.raises(UserError, match=r"unknown lm-eval task\(s\): no_such_task"):
        run_benchmark(db_path, run=str(tiny_run), tasks=["mmlu", "no_such_task"])
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"arc_easy.*Hugging Face Hub"):
        run_benchmark(db_path, run=str(tiny_run), tasks=["arc_easy"])
    assert _stored_runs(db_path) == []


@pytest.mark.parametrize("name, written", [("chart", "chart.png"), ("chart.v2", "chart.v2.png"), ("c.svg", "c.svg")])
def test_plot_returns_the_path_it_wrote(name, written, tmp_path):
    """``--plot chart`` prints this path: matplotlib adds ``.png`` to a name without a known image suffix."""
    results = [{"task": "mmlu", "subject": "anatomy", "metric": "acc", "value": 0.5, "stderr": 0.1}]
    path = plot_subject_accuracy(results, tmp_path / name)
    assert path == tmp_path / written
    assert [p.name for p in tmp_path.iterdir()] == [written]
