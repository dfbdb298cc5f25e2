"""``workbench bench --nproc N``: lm-eval's data-parallel evaluation over N processes (gloo on the CPU).

The processes split the questions; rank 0 gathers every answer, and the store receives exactly the rows a
single process writes. A rank that dies makes the command fail with one error line and a store untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench import store
from workbench.cli import main

REPO = Path(__file__).resolve().parents[2]
MC_SAMPLE = REPO / "datasets" / "mc-sample"


@pytest.fixture(autouse=True)
def _hf_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


def _stored_rows(db_path: Path) -> dict[str, list[dict]]:
    """Every result and sample row in insertion order, without the ids that differ between two files."""
    db = store.open_db(db_path)
    try:
        tables = {}
        for table in ("benchmark_runs", "benchmark_results", "benchmark_samples"):
            rows = [dict(row) for row in db.query(f"SELECT * FROM {table} ORDER BY rowid")]
            for row in rows:
                for key in ("id", "benchmark_run_id", "started_at", "finished_at"):
                    row.pop(key, None)
            tables[table] = rows
        return tables
    finally:
        db.close()


def _bench(db_path: Path, run: Path, *extra: str) -> list[str]:
    command = ["bench", "--db", str(db_path), "--run", str(run), "--mmlu-dir", str(MC_SAMPLE)]
    return [*command, "--num-fewshot", "1", "--limit", "5", *extra]


def test_two_processes_store_the_answers_and_scores_of_one(tiny_run, tmp_path, capfd):
    """5 questions per subject: rank 0 takes 3, rank 1 takes 2 (lm-eval pads rank 1's requests)."""
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    assert main(_bench(one, tiny_run)) == 0
    single_out = capfd.readouterr().out
    assert main(_bench(two, tiny_run, "--nproc", "2")) == 0
    out, err = capfd.readouterr()
    # The same table and summary; the one progress bar is rank 0's (its share: 3 of 5 questions x 4 choices).
    assert out.replace(str(two.with_suffix(".bench.log")), "LOG") == single_out.replace(
        str(one.with_suffix(".bench.log")), "LOG"
    )
    bars = [line for line in err.split("\n") if line.strip()]
    assert len(bars) == 1 and "48/48" in bars[0], err

    single, parallel = _stored_rows(one), _stored_rows(two)
    assert len(parallel["benchmark_runs"]) == 1  # written once, by one process
    assert len(parallel["benchmark_samples"]) == 4 * 5
    # Each process batches other rows together, so float32 log-likelihoods may move in the last digit; the
    # answers, every score and every standard error are exactly those of one process.
    loglikelihoods = [
        [json.loads(row.pop("loglikelihoods_json")) for row in rows["benchmark_samples"]] for rows in (parallel, single)
    ]
    assert parallel == single
    for mine, reference in zip(*loglikelihoods, strict=True):
        assert mine == pytest.approx(reference, abs=1e-5)
    assert main(_bench(two, tiny_run, "--nproc", "2")) == 0  # the same settings: served from the store
    assert "served from the store" in capfd.readouterr().out


def _worker_pids(parent: int) -> list[int]:
    """The rank processes of ``parent``: on the CPU they are forked, so they share its command line."""
    command_line = Path(f"/proc/{parent}/cmdline").read_bytes()
    pids = []
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes() == command_line:
                pids.append(int(child))
        except FileNotFoundError:
            continue
    return pids


@pytest.mark.slow
def test_a_rank_killed_is_one_error_line_and_leaves_the_store_unchanged(tiny_run, tmp_path):
    db_path = tmp_path / "workbench.db"
    store.open_db(db_path).close()
    before = db_path.read_bytes()
    command = [sys.executable, "-m", "workbench", *_bench(db_path, tiny_run, "--nproc", "2")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while len(workers := _worker_pids(process.pid)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) == 2, process.communicate()
    time.sleep(1.0)
    os.kill(workers[1], signal.SIGKILL)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "Traceback" not in err and out == ""
    # rank 0 may have finished its share, and drawn its progress bar, before rank 1 was killed
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("scoring:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: 1 of 2 processes failed: rank ") and "SIGKILL" in line, err
    assert db_path.read_bytes() == before


def test_nproc_below_one_or_with_the_hf_backend_is_refused(tiny_run, tiny_hf_dir, db_path, capsys):
    assert main(_bench(db_path, tiny_run, "--nproc", "0")) == 2
    assert capsys.readouterr().err == "error: --nproc must be >= 1\n"
    command = ["bench", "--db", str(db_path), "--hf-model", str(tiny_hf_dir), "--nproc", "2"]
    assert main(command) == 2
    assert capsys.readouterr().err == "error: --nproc above 1 needs --run (our backend)\n"
    assert main([*_bench(db_path, tiny_run), "--limit", "1", "--nproc", "2"]) == 2  # the last --limit counts
    assert capsys.readouterr().err == "error: --limit 1 leaves some of the 2 processes (--nproc) without a question\n"
    assert not db_path.exists()


def test_an_error_in_every_rank_is_the_line_one_process_gives(tiny_run, tmp_path, capfd):
    """Unreadable weights: each rank meets our error while loading; the command says it once, as one process."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "best" / "model.safetensors").write_bytes(b"not safetensors")
    errors = []
    for nproc in ("1", "2"):
        db_path = tmp_path / f"nproc{nproc}.db"
        store.open_db(db_path).close()
        before = db_path.read_bytes()
        assert main(_bench(db_path, run, "--nproc", nproc)) == 2
        out, err = capfd.readouterr()
        assert out == "" and "Traceback" not in err
        errors.append(err)
        assert db_path.read_bytes() == before
    assert errors[1] == errors[0]
    assert errors[0].startswith(f"error: {run / 'best' / 'model.safetensors'}: cannot read the weights")
    assert errors[0].count("\n") == 1
