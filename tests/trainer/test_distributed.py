"""Scale-out: two torchrun "nodes" on 127.0.0.1, resume with another number of processes, FSDP2 sharding.

Every run here has the same global batch (4 sequences a step) and is compared step by step with one process
doing the same work through gradient accumulation (3 evaluation batches: one process of two runs one more, so a
sharded model's collective forwards must still line up): the losses after each step (evaluated on fixed batches)
must agree to float tolerance, which holds only if every process trained on the right data with the right
gradient scale.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from tests.llama_server import free_port
from tests.trainer.test_train import files_of, read_metrics
from trainer.checkpoint import load_run_model
from trainer.errors import UserError
from trainer.generate import generate_tokens
from trainer.model import CONFIGS, GPT
from trainer.train import finetune

pytestmark = pytest.mark.slow

STEPS = 2  # the multi-process runs stop here; one process resumes them to REFERENCE_STEPS
REFERENCE_STEPS = 4
# One process: 2 sequences x 2 micro-batches. Two processes: 2 sequences each, one micro-batch.
ONE_PROCESS = {"model": "tiny", "batch_size": 2, "grad_accum": 2, "eval_batches": 3, "lr": 1e-3, "device": "cpu"}
QUIET = {**ONE_PROCESS, "progress": False}
CLI_ARGS = ["--model", "tiny", "--batch-size", "2", "--grad-accum", "1", "--eval-batches", "3", "--lr", "1e-3"]
CLI_ARGS += ["--device", "cpu", "--eval-every", "1", "--max-steps", str(STEPS)]
RUN_FILES = {"config.json", "split.json", "metrics.jsonl", "train.log", "loss.png"}
RUN_FILES |= {f"{folder}/{name}" for folder in ("best", "last") for name in ("model.safetensors", "config.json")}
RUN_FILES |= {"last/state.pt"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def finetune_args(sample_data, run_dir) -> list[str]:
    return ["-m", "trainer", "finetune", "--data", str(sample_data), "--out", str(run_dir), *CLI_ARGS]


def assert_same_curve(rows: list[dict], reference: list[dict], tolerance: float) -> None:
    assert [row["step"] for row in rows] == [row["step"] for row in reference]
    for row, expected in zip(rows, reference, strict=True):
        assert row["tokens_seen"] == expected["tokens_seen"], row["step"]
        assert row["train_loss"] == pytest.approx(expected["train_loss"], abs=tolerance), row["step"]
        assert row["val_loss"] == pytest.approx(expected["val_loss"], abs=tolerance), row["step"]


def resume_with_one_process(sample_data, run_dir) -> None:
    """Continue a run to REFERENCE_STEPS with one process and the same global batch."""
    finetune(data=sample_data, out=run_dir, resume=True, max_steps=REFERENCE_STEPS, eval_every=1, **QUIET)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample_data) -> list[dict]:
    """One process, REFERENCE_STEPS steps, evaluated after every step."""
    run_dir = tmp_path_factory.mktemp("one-process") / "run"
    finetune(data=sample_data, out=run_dir, max_steps=REFERENCE_STEPS, eval_every=1, **QUIET)
    return read_metrics(run_dir)


@pytest.fixture(scope="module")
def two_node_run(tmp_path_factory, sample_data):
    """Two torchrun launches, one process each, meeting at a c10d rendezvous on 127.0.0.1 as two nodes."""
    run_dir = tmp_path_factory.mktemp("two-nodes") / "run"
    port = free_port()
    launches = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node)]
            + ["--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
            + ["--rdzv-id", "scaleout-test", *finetune_args(sample_data, run_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for node in (0, 1)
    ]
    results = [launch.communicate(timeout=240) for launch in launches]
    for launch, (_, stderr) in zip(launches, results, strict=True):
        assert launch.returncode == 0, stderr[-3000:]
    return run_dir, [stdout for stdout, _ in results]


def test_two_nodes_match_one_process_and_write_checkpoints_once(two_node_run, reference):
    run_dir, stdouts = two_node_run
    assert_same_curve(read_metrics(run_dir), reference[: STEPS + 1], tolerance=1e-5)
    # Only global rank 0 writes and prints: one summary, one log start, every file once, no staging leftovers.
    # (The c10d rendezvous, not --node-rank, decides which launch holds global rank 0.)
    printed = sorted((stdout.strip() for stdout in stdouts), key=len)
    assert printed[0] == "" and json.loads(printed[1].splitlines()[-1])["steps"] == STEPS
    written = {str(path.relative_to(run_dir)) for path in run_dir.rglob("*") if path.is_file()}
    assert written == RUN_FILES
    assert (run_dir / "train.log").read_text().count("starting run") == 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["world_size"] == 2 and config["train"]["global_batch"] == 4
    load_run_model(run_dir, "last")


def test_resume_with_one_process_continues_the_same_curve(two_node_run, reference, tmp_path, sample_data):
    run_dir = tmp_path / "run"
    shutil.copytree(two_node_run[0], run_dir)
    before = files_of(run_dir)
    # Another global batch would be another run: refused before anything is touched, with the way out.
    settings = {**ONE_PROCESS, "grad_accum": 1}
    with pytest.raises(UserError) as refused:
        finetune(data=sample_data, out=run_dir, resume=True, max_steps=4, eval_every=1, progress=False, **settings)
    assert str(refused.value) == (
        f"{run_dir / 'config.json'}: cannot resume with a global batch of 2 sequences a step (batch size 2 x "
        "grad accum 1 x 1 process): the run was made with 4 (2 x 1 x 2 processes); keep the product at 4, "
        "e.g. --grad-accum 2"
    )
    assert files_of(run_dir) == before
    resume_with_one_process(sample_data, run_dir)
    assert_same_curve(read_metrics(run_dir), reference, tolerance=1e-5)
    assert "resuming run at step 2" in (run_dir / "train.log").read_text()


def test_fsdp_matches_the_unsharded_run_and_saves_the_same_layout(tmp_path, sample_data, reference, tokenizer):
    run_dir = tmp_path / "fsdp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run(
        [*command, *finetune_args(sample_data, run_dir), "--fsdp"], capture_output=True, text=True, timeout=240, env=ENV
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_curve(read_metrics(run_dir), reference[: STEPS + 1], tolerance=1e-5)
    assert json.loads((run_dir / "config.json").read_text())["train"]["fsdp"] is True

    # Gathered into the single-process layout: the normal loader reads it, and it generates.
    model, _ = load_run_model(run_dir, "last")
    with torch.device("meta"):
        shapes = GPT.stored_shapes(model.config)
    assert {name: tuple(t.shape) for name, t in model.state_dict().items() if name != "lm_head.weight"} == shapes
    new_tokens = generate_tokens(model, [tokenizer.encode("Hello")], max_new_tokens=5, eos_id=None)
    assert len(new_tokens[0]) == 5

    # The gathered AdamW state resumes without sharding, on one process, and the curve goes on unchanged.
    resume_with_one_process(sample_data, run_dir)
    assert_same_curve(read_metrics(run_dir), reference, tolerance=1e-5)


def test_fsdp_needs_several_processes(tmp_path, sample_data):
    with pytest.raises(UserError, match="--fsdp shards the model across processes: launch it with torchrun"):
        finetune(data=sample_data, out=tmp_path / "run", fsdp=True, progress=False, **ONE_PROCESS)
    assert not (tmp_path / "run").exists()


def test_a_run_saved_with_positional_optimizer_state_still_resumes(tmp_path, tiny_run, sample_data):
    """Runs made before states were keyed by parameter names (``optimizer.state_dict()``) resume the same."""
    settings = {"model": "tiny", "max_steps": 6, "batch_size": 4, "lr": 1e-3, "eval_every": 2, "eval_batches": 1}
    settings |= {"device": "cpu", "progress": False, "resume": True}
    by_name, by_position = tmp_path / "by-name", tmp_path / "by-position"
    shutil.copytree(tiny_run, by_name)
    shutil.copytree(tiny_run, by_position)
    state_file = by_position / "last" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    position = {name: index for index, (name, _) in enumerate(GPT(CONFIGS["tiny"]).named_parameters())}
    optimizer = state["optimizer"]
    state["optimizer"] = {
        "state": {position[name]: value for name, value in optimizer["state"].items()},
        "param_groups": [
            {**group, "params": [position[name] for name in group["params"]]} for group in optimizer["param_groups"]
        ],
    }
    torch.save(state, state_file)
    finetune(data=sample_data, out=by_name, **settings)
    finetune(data=sample_data, out=by_position, **settings)
    assert_same_curve(read_metrics(by_position), read_metrics(by_name), tolerance=0.0)


def test_the_ddp_wrapper_is_gone_before_the_process_group(tmp_path, sample_data):
    """Otherwise the wrapper's reducer destroys the group later, holding the GIL, and can deadlock with a gloo
    worker that needs the GIL to free a tensor (CI saw a torchrun finetune hang after printing its summary)."""
    probe = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    probe += [str(REPO / "tests" / "trainer" / "teardown_probe.py")]
    result = subprocess.run(
        [*probe, *finetune_args(sample_data, tmp_path / "run")[2:]],
        capture_output=True,
        text=True,
        timeout=240,
        env={**ENV, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stderr.splitlines() if "ddp_alive_at_destroy" in line]
    assert sorted(reports, key=lambda report: report["rank"]) == [
        {"rank": 0, "ddp_alive_at_destroy": 0},
        {"rank": 1, "ddp_alive_at_destroy": 0},
    ]
