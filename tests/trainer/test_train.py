"""Fine-tuning for real on the bundled sample: falling loss, run folder, early stopping, resume, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from tests.conftest import require
from tests.trainer.cli_errors import one_line_error
from trainer.checkpoint import load_run_model
from trainer.cli import main as trainer_main
from trainer.data import InstructionDataset, collate, load_entries, split_entries
from trainer.errors import UserError
from trainer.train import finetune, loss_on_batch

QUICK = {"model": "tiny", "batch_size": 2, "eval_batches": 1, "lr": 1e-3, "device": "cpu", "progress": False}


def kill_once_past(process: subprocess.Popen, run_dir: Path, step: int) -> None:
    """SIGKILL a running fine-tune as soon as its metrics reach ``step``; it must not end by itself first."""
    deadline = time.monotonic() + 120
    while not read_metrics(run_dir) or read_metrics(run_dir)[-1]["step"] < step:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def read_metrics(run_dir) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def first_val_batch_loss(model, data, tokenizer, batch_size: int) -> float:
    """The validation loss as the trainer evaluates it with ``eval_batches=1``."""
    val = split_entries(load_entries(data)).val[:batch_size]
    inputs, targets = collate(InstructionDataset(val, tokenizer, "alpaca").examples)
    with torch.no_grad():
        return loss_on_batch(model.eval(), inputs, targets).item()


def test_tiny_run_folder_and_falling_validation_loss(tiny_run, sample_data, tokenizer):
    rows = read_metrics(tiny_run)
    assert [row["step"] for row in rows] == [0, 2, 4]
    assert set(rows[0]) == {"step", "epoch", "tokens_seen", "train_loss", "val_loss"}
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.2
    assert rows[0]["tokens_seen"] == 0 < rows[1]["tokens_seen"] < rows[2]["tokens_seen"]
    assert rows[2]["epoch"] == pytest.approx(4 / 16)  # 66 train entries in batches of 4: 16 steps an epoch

    config = json.loads((tiny_run / "config.json").read_text())
    assert config["model_name"] == "tiny" and config["weights"] == "random" and config["style"] == "alpaca"
    assert config["split"] == {"train": 66, "test": 7, "val": 5, "shuffle_seed": None}
    assert json.loads((tiny_run / "split.json").read_text())["test"] == list(range(66, 73))
    assert (tiny_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "val loss" in (tiny_run / "train.log").read_text()

    best, run_config = load_run_model(tiny_run, "best")
    assert not best.training and run_config == config
    assert best.lm_head.weight is best.wte.weight
    best_loss = first_val_batch_loss(best, sample_data, tokenizer, 4)
    assert best_loss == pytest.approx(rows[-1]["val_loss"], abs=1e-4)


def test_fine_tune_from_hf_weights_starts_from_them(tmp_path, tiny_hf_dir, sample_data, tokenizer):
    from trainer.weights import load_pretrained

    run_dir = tmp_path / "from-hf"
    finetune(data=sample_data, out=run_dir, weights=str(tiny_hf_dir), max_steps=1, eval_every=1, **QUICK)
    expected = first_val_batch_loss(load_pretrained(tiny_hf_dir), sample_data, tokenizer, 2)
    assert read_metrics(run_dir)[0]["val_loss"] == pytest.approx(expected, abs=1e-4)
    assert json.loads((run_dir / "config.json").read_text())["weights"] == str(tiny_hf_dir.resolve())


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint(tmp_path, sample_data, tokenizer):
    run_dir = tmp_path / "diverge"
    settings = {**QUICK, "lr": 5.0}  # every Adam step moves each weight by ~5: the loss can only get worse
    summary = finetune(data=sample_data, out=run_dir, max_steps=20, eval_every=1, patience=2, bf16=True, **settings)
    rows = read_metrics(run_dir)
    assert summary["stopped_early"] and summary["steps"] == 2
    assert [row["step"] for row in rows] == [0, 1, 2]
    assert rows[1]["val_loss"] > rows[0]["val_loss"] and rows[2]["val_loss"] > rows[0]["val_loss"]
    assert summary["best_step"] == 0
    best, _ = load_run_model(run_dir, "best")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        best_loss = first_val_batch_loss(best, sample_data, tokenizer, 2)
    assert best_loss == pytest.approx(rows[0]["val_loss"], abs=1e-4)
    assert "early stop at step 2" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_resume_after_kill_9_continues_the_same_curve(tmp_path, sample_data):
    settings = {"max_steps": 12, "eval_every": 2, "seed": 5, **QUICK}
    killed = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "trainer",
        "finetune",
        "--data",
        str(sample_data),
        "--model",
        "tiny",
        "--out",
        str(killed),
        "--max-steps",
        "12",
        "--eval-every",
        "2",
        "--seed",
        "5",
        "--batch-size",
        "2",
        "--eval-batches",
        "1",
        "--lr",
        "1e-3",
        "--device",
        "cpu",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_once_past(process, killed, step=4)
    assert read_metrics(killed)[-1]["step"] < 12  # really interrupted mid-run

    summary = finetune(data=sample_data, out=killed, resume=True, **settings)
    reference = finetune(data=sample_data, out=tmp_path / "reference", **settings)
    resumed_rows, reference_rows = read_metrics(killed), read_metrics(tmp_path / "reference")
    assert [row["step"] for row in resumed_rows] == list(range(0, 13, 2))  # no step lost or repeated
    for resumed, expected in zip(resumed_rows, reference_rows, strict=True):
        assert resumed["tokens_seen"] == expected["tokens_seen"]
        assert resumed["train_loss"] == pytest.approx(expected["train_loss"], abs=1e-4)
        assert resumed["val_loss"] == pytest.approx(expected["val_loss"], abs=1e-4)
    assert summary["tokens_seen"] == reference["tokens_seen"]


def test_run_folder_misuse_is_refused(tmp_path, tiny_run, sample_data):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run, run_dir)
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        finetune(data=sample_data, out=run_dir, max_steps=4, **QUICK)
    with pytest.raises(UserError, match=r"cannot resume with a global batch of 2 sequences a step .* made with 4 "):
        finetune(data=sample_data, out=run_dir, resume=True, max_steps=4, **QUICK)
    config = json.loads((run_dir / "last" / "config.json").read_text())
    (run_dir / "last" / "config.json").write_text(json.dumps({**config, "n_layers": 3}))
    with pytest.raises(UserError, match="checkpoint is for model config"):
        load_run_model(run_dir, "last")
    with pytest.raises(UserError, match="unknown checkpoint 'final'"):
        load_run_model(run_dir, "final")


def test_bad_model_and_weights_are_user_errors(tmp_path, sample_data):
    with pytest.raises(UserError, match="unknown model 'gpt5'"):
        finetune(data=sample_data, out=tmp_path / "a", **{**QUICK, "model": "gpt5"})
    with pytest.raises(UserError):
        finetune(data=sample_data, out=tmp_path / "b", weights=str(tmp_path / "no-such-folder"), **QUICK)
    with pytest.raises(UserError, match="fewer than one step needs"):
        finetune(data=sample_data, out=tmp_path / "c", **{**QUICK, "batch_size": 100})


@pytest.mark.slow
def test_torchrun_two_processes_on_gloo(tmp_path, sample_data):
    """Two CPU processes train together, and report the same losses one process reports on the same weights."""
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "trainer",
        "finetune",
        "--data",
        str(sample_data),
        "--model",
        "tiny",
        "--out",
        str(run_dir),
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--batch-size",
        "2",
        "--grad-accum",
        "2",
        "--eval-batches",
        "2",
        "--lr",
        "1e-3",
        "--device",
        "cpu",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])  # printed by rank 0 only
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows] == [0, 2, 4]  # one line per evaluation: only rank 0 writes
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["world_size"] == 2
    # 4 steps x 2 processes x 2 micro-batches x 2 sequences: 16 per step summed over ranks
    assert summary["steps"] == 4 and summary["epochs"] == pytest.approx(4 / 8)
    assert summary["tokens_seen"] == rows[-1]["tokens_seen"] > 0
    load_run_model(run_dir, "last")

    # Step 0 is the untrained model (same seed, same data): the mean over the same evaluation batches.
    alone = tmp_path / "alone"
    finetune(data=sample_data, out=alone, max_steps=1, eval_every=1, grad_accum=2, **{**QUICK, "eval_batches": 2})
    step_0 = read_metrics(alone)[0]
    assert rows[0]["train_loss"] == pytest.approx(step_0["train_loss"], abs=1e-4)
    assert rows[0]["val_loss"] == pytest.approx(step_0["val_loss"], abs=1e-4)


# --- bad run folders: one line on stderr, exit 2, nothing trained and nothing changed -------------------------

TINY_RUN_ARGS = ["--model", "tiny", "--max-steps", "4", "--batch-size", "4", "--lr", "1e-3", "--eval-every", "2"]
TINY_RUN_ARGS += ["--eval-batches", "1", "--device", "cpu"]  # the tiny_run fixture's settings, for --resume


def files_of(folder) -> dict:
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _unwritable_out(kind: str, tmp_path):
    if kind == "a file":
        (tmp_path / "taken").write_text("x")
        return tmp_path / "taken", "not a folder"
    if kind == "under a file":
        (tmp_path / "taken").write_text("x")
        return tmp_path / "taken" / "run", "Not a directory"
    if kind == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes to read-only folders")
        (tmp_path / "locked").mkdir(mode=0o555)
        return tmp_path / "locked" / "run", "Permission denied"
    require(Path(kind).parent.is_dir(), f"{kind} needs a Linux /proc and /dev")
    return Path(kind), "not a folder" if kind == "/dev/full" else "No such file or directory"


@pytest.mark.parametrize("kind", ["a file", "under a file", "read-only folder", "/proc/no-such-run", "/dev/full"])
def test_unwritable_out_is_refused_before_training(kind, tmp_path, sample_data, capsys):
    out, reason = _unwritable_out(kind, tmp_path)
    err = one_line_error(capsys, ["finetune", "--data", str(sample_data), "--out", str(out), *TINY_RUN_ARGS])
    assert f"{out}" in err and reason in err


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda path: path.write_bytes(path.read_bytes()[:100]), "corrupt or cut short"),
        (lambda path: torch.save({"optimizer": Fraction(1, 3)}, path), "refused: it holds pickled Python objects"),
        (lambda path: torch.save([1, 2], path), "not a training state"),
    ],
    ids=["truncated", "pickle payload", "wrong content"],
)
def test_resume_from_a_bad_state_file_names_it(corrupt, message, tmp_path, tiny_run, sample_data, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    corrupt(run_dir / "last" / "state.pt")
    before = files_of(run_dir)
    argv = ["finetune", "--data", str(sample_data), "--out", str(run_dir), "--resume", *TINY_RUN_ARGS]
    err = one_line_error(capsys, argv)
    assert f"{run_dir / 'last' / 'state.pt'}: " in err and message in err
    assert "remove it to start again from step 0" in err
    assert files_of(run_dir) == before


def _cut_mid_line(text: str) -> str:
    return text[: text.index("\n") + 10]  # the step-0 row and a piece of the next: the checkpoint's row is gone


@pytest.mark.parametrize(
    "edit, message",
    [
        (_cut_mid_line, "cut short, no row for step 4"),
        (lambda text: text[: text.rindex("{")], ": no row for step 4"),
        (lambda text: text.replace("\n", "\nnot json\n", 1), "line 2 is not a metrics row"),
        (lambda text: "[1, 2]\n" + text, "line 1 is not a metrics row"),
    ],
    ids=["cut mid-line", "last row gone", "garbage line", "a list"],
)
def test_resume_with_bad_metrics_names_the_file(edit, message, tmp_path, tiny_run, sample_data, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text(edit(metrics.read_text()))
    before = files_of(run_dir)
    argv = ["finetune", "--data", str(sample_data), "--out", str(run_dir), "--resume", *TINY_RUN_ARGS]
    err = one_line_error(capsys, argv)
    assert f"{metrics}: " in err and message in err and "without --resume" in err
    assert files_of(run_dir) == before


def test_resume_drops_a_row_cut_short_by_a_kill_after_the_checkpoint(tmp_path, tiny_run, sample_data, capsys):
    """kill -9 while appending the next row leaves half a line past the checkpoint's row: it is redone, not an error."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    metrics = run_dir / "metrics.jsonl"
    complete = metrics.read_text()
    metrics.write_text(complete + '{"step": 6, "epo')
    argv = ["finetune", "--data", str(sample_data), "--out", str(run_dir), "--resume", *TINY_RUN_ARGS]
    assert trainer_main(argv) == 0, capsys.readouterr().err
    assert metrics.read_text() == complete
