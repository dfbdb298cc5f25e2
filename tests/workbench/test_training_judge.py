"""``workbench finetune --judge-every``: a judge scores checkpoints while the model trains.

The fake Ollama judge's scores are a known function of each answer's text (``fake_score``) and its pairwise
verdict prefers the longer answer, so every number written beside the losses can be recomputed from the answers
the run saved. The real llama.cpp server test checks the same through the OpenAI protocol.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.trainer.test_tracking import tensorboard_scalars
from trainer.data import encode
from trainer.tokenizer import get_tokenizer
from workbench import importing, plots, store
from workbench.cli import main as workbench_main

sys.path.insert(0, str(Path(__file__).parent))
from ollama_fake import DEFAULT_MODEL, FakeOllama, Status, fake_score  # noqa: E402

TRAIN = ["finetune", "--model", "tiny", "--batch-size", "2", "--eval-batches", "1", "--lr", "1e-3", "--device", "cpu"]
TRAIN += ["--eval-every", "2", "--max-steps", "5"]
JUDGE = ["--judge-every", "2", "--judge-items", "3", "--judge-max-new-tokens", "6", "--retries", "0"]


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def judge_rows(run_dir: Path) -> dict[int, dict]:
    return {row["step"]: row for row in rows_of(run_dir) if "judge_score" in row}


def answers(run_dir: Path, step: int) -> list[str]:
    entries = json.loads((run_dir / "judge" / f"step-{step:07d}.json").read_text())
    return [entry[f"{run_dir.name}@step-{step}"] for entry in entries]


def expected_row(run_dir: Path, step: int) -> dict:
    """The row the fake judge must give: mean fake score; pairwise, the longer answer wins (a tie: half)."""
    texts, tokenizer = answers(run_dir, step), get_tokenizer()
    row = {
        "step": step,
        "judge_score": round(sum(map(fake_score, texts)) / len(texts), 3),
        "response_tokens": round(sum(len(encode(tokenizer, text)) for text in texts) / len(texts), 2),
    }
    if step:
        base = answers(run_dir, 0)
        wins = sum(
            1.0 if len(a) > len(b) else 0.5 if len(a) == len(b) else 0.0 for a, b in zip(texts, base, strict=True)
        )
        row["judge_win_rate"] = round(wins / len(texts), 4)
    return row


def test_the_judge_scores_every_checkpoint_beside_the_losses(tmp_path, sample_data, capsys):
    run_dir = tmp_path / "run"
    with FakeOllama() as fake:
        command = [*TRAIN, "--data", str(sample_data), "--out", str(run_dir), *JUDGE, "--host", fake.url]
        assert workbench_main([*command, "--judge-model", DEFAULT_MODEL, "--log-to", "tensorboard"]) == 0
    assert not fake.violations
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 5

    judged = judge_rows(run_dir)
    assert sorted(judged) == [0, 2, 4, 5]  # step 0, every 2 steps, and the last step
    for step, row in judged.items():
        assert row == pytest.approx(expected_row(run_dir, step))
    losses = [row["step"] for row in rows_of(run_dir) if "val_loss" in row]
    assert losses == [0, 2, 4, 5]

    # Every checkpoint is a model in the run's store, with its answers and the judge's verdicts.
    db = store.open_db(run_dir / "judge.db")
    assert {f"run@step-{step}" for step in judged} <= set(store.model_names(db))
    assert db.execute("SELECT COUNT(*) FROM judge_scores").fetchone()[0] == 4 * 3
    assert db.execute("SELECT COUNT(*) FROM judge_pairwise").fetchone()[0] == 3 * 3
    db.close()

    scalars = tensorboard_scalars(run_dir / "tb" / "run")
    assert [step for step, _ in scalars["judge_score"]] == sorted(judged)
    assert [value for _, value in scalars["judge_score"]] == pytest.approx(
        [judged[s]["judge_score"] for s in sorted(judged)]
    )
    assert "judge at step 2" in (run_dir / "train.log").read_text()

    # Imported with the run folder, the judge's rows join the losses of their steps, and the app's (and the
    # report's) loss plot draws the score on a second axis.
    db = store.open_db(tmp_path / "main.db")
    importing.import_path(db, run_dir)
    stored = {row["step"]: row for row in store.training_metrics(db, "run")}
    db.close()
    assert sorted(stored) == [0, 2, 4, 5] and all(stored[step]["val_loss"] is not None for step in stored)
    for step, row in judged.items():
        assert {key: stored[step][key] for key in row if key != "step"} == pytest.approx(
            {key: value for key, value in row.items() if key != "step"}
        )
    figure = plots.loss_figure({"run": list(stored.values())})
    (score_line,) = [line for axes in figure.axes for line in axes.lines if line.get_label() == "run judge score"]
    assert list(score_line.get_ydata()) == pytest.approx([judged[step]["judge_score"] for step in sorted(judged)])


def test_a_failed_judgement_is_exit_1_and_resume_judges_it_again(tmp_path, sample_data, capsys):
    run_dir = tmp_path / "run"
    command = [*TRAIN, "--data", str(sample_data), "--out", str(run_dir), *JUDGE, "--judge-model", DEFAULT_MODEL]
    with FakeOllama() as broken:
        broken.script("", *[Status(500)] * 100)  # every question fails once training has started
        assert workbench_main([*command, "--host", broken.url]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: judging failed at 4 checkpoint(s); first: step 0: ")
    assert judge_rows(run_dir) == {} and json.loads((run_dir / "config.json").read_text())
    saved = {path.name: path.read_bytes() for path in (run_dir / "judge").glob("*.json")}
    assert len(saved) == 8  # four checkpoints' answers and their meta files

    with FakeOllama() as working:
        assert workbench_main([*command, "--host", working.url, "--resume"]) == 0
    assert sorted(judge_rows(run_dir)) == [0, 2, 4, 5]
    for step, row in judge_rows(run_dir).items():
        assert row == pytest.approx(expected_row(run_dir, step))
    # Judged from the saved answers, not generated again.
    assert {path.name: path.read_bytes() for path in (run_dir / "judge").glob("*.json")} == saved


def test_no_judge_server_stops_before_training(tmp_path, sample_data, capsys):
    run_dir = tmp_path / "run"
    command = [*TRAIN, "--data", str(sample_data), "--out", str(run_dir), *JUDGE, "--host", "http://127.0.0.1:9"]
    assert workbench_main([*command, "--judge-model", DEFAULT_MODEL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not run_dir.exists()


def test_the_judge_works_through_a_real_llama_cpp_server(tmp_path, sample_data, llama_server, capsys):
    run_dir = tmp_path / "run"
    command = [*TRAIN, "--data", str(sample_data), "--out", str(run_dir), *JUDGE, "--max-steps", "2"]
    command += ["--backend", "openai", "--base-url", llama_server.base_url, "--judge-model", llama_server.model]
    assert workbench_main(command) == 0, capsys.readouterr().err
    judged = judge_rows(run_dir)
    assert sorted(judged) == [0, 2]
    db = store.open_db(run_dir / "judge.db")
    for step, row in judged.items():
        scores = [
            score
            for (score,) in db.execute(
                "SELECT js.score FROM judge_scores js JOIN responses r ON r.id = js.response_id "
                "JOIN models m ON m.id = r.model_id WHERE m.name = ?",
                [f"run@step-{step}"],
            )
        ]
        assert len(scores) == 3 and all(0 <= score <= 100 for score in scores)
        assert row["judge_score"] == pytest.approx(round(sum(scores) / 3, 3))
    assert 0 <= judged[2]["judge_win_rate"] <= 1
    db.close()


@pytest.mark.slow
def test_under_torchrun_rank_0_judges_and_the_others_train(tmp_path, sample_data):
    run_dir = tmp_path / "run"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "workbench"]
    with FakeOllama() as fake:
        command = [*launch, *TRAIN, "--data", str(sample_data), "--out", str(run_dir), *JUDGE, "--host", fake.url]
        result = subprocess.run(
            [*command, "--judge-model", DEFAULT_MODEL],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.strip().splitlines()) == 1  # one summary: rank 0's
    judged = judge_rows(run_dir)
    assert sorted(judged) == [0, 2, 4, 5]
    for step, row in judged.items():
        assert row == pytest.approx(expected_row(run_dir, step))
    assert len(fake.chats) == 4 * 3 + 3 * 3 * 2  # each question asked once: scores, and pairs in both orders


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--judge-every", "0"], "error: --judge-every must be at least 1, got 0"),
        (["--judge-items", "0"], "error: --judge-items must be at least 1, got 0"),
        (["--backend", "openai"], "error: --backend openai needs the server's address: --base-url URL"),
    ],
)
def test_bad_judge_options_are_one_line(tmp_path, sample_data, capsys, option, message):
    run_dir = tmp_path / "run"
    command = [*TRAIN, "--data", str(sample_data), "--out", str(run_dir), *JUDGE, "--judge-model", DEFAULT_MODEL]
    assert workbench_main([*command, *option]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message), err
    assert not run_dir.exists()
