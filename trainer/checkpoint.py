"""Run folders: model checkpoints as safetensors + JSON config, and the state needed to resume training.

A checkpoint folder (``RUN/best``, ``RUN/last``) holds ``model.safetensors`` and ``config.json`` (the
``GPTConfig``); ``last`` also holds ``state.pt`` (optimizer state, step, RNG), saved with ``torch.save`` and
read back with ``weights_only=True`` so that loading a run never unpickles arbitrary objects. A folder is
written beside its final place and swapped in, so a kill -9 mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from trainer.errors import UserError
from trainer.model import GPT, TIED_HEAD, GPTConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"
CHECKPOINTS = ("best", "last")
RESUME_KEYS = {"optimizer", "progress", "torch_rng"}  # what the trainer saves in state.pt


def save_checkpoint(
    config: GPTConfig, weights: dict[str, torch.Tensor], folder: str | os.PathLike, state: dict | None = None
) -> Path:
    """Write a model's full ``weights`` (and the resume ``state``, if given) to ``folder``, replacing it atomically.

    ``weights`` are named as ``GPT.state_dict()`` names them (gathered first when the model is sharded)."""
    tensors = {
        name: t.detach().to("cpu").contiguous()
        for name, t in weights.items()
        if name != TIED_HEAD or not config.tied_head  # a tied head is wte itself: stored once
    }

    def write(staging: Path) -> None:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})

    return write_checkpoint_folder(folder, config, write, state)


def write_checkpoint_folder(
    folder: str | os.PathLike, config: GPTConfig, write: Callable[[Path], None], state: dict | None = None
) -> Path:
    """Fill ``folder`` with ``write(staging)``'s files, ``config.json`` and ``state``, replacing it atomically.

    Full checkpoints and LoRA adapters share this, so a kill -9 mid-save leaves the previous one of either."""
    folder = Path(folder)
    staging, previous = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write(staging)
    (staging / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if state is not None:
        torch.save(state, staging / STATE_FILE)
    if folder.exists():
        shutil.rmtree(previous, ignore_errors=True)
        folder.rename(previous)
    staging.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)
    return folder


def recover(folder: Path) -> Path:
    """Finish a swap that a crash interrupted: the ``.old`` copy is the last complete checkpoint."""
    previous = folder.with_name(folder.name + ".old")
    if not folder.exists() and previous.is_dir():
        previous.rename(folder)
    shutil.rmtree(folder.with_name(folder.name + ".tmp"), ignore_errors=True)
    return folder


def read_model_config(folder: str | os.PathLike) -> GPTConfig:
    """The ``GPTConfig`` stored beside a checkpoint's weights."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: not a checkpoint folder")
    try:
        return GPTConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a model config ({exc})") from exc


def load_checkpoint(
    folder: str | os.PathLike, *, device: str | torch.device = "cpu", expected: GPTConfig | None = None
) -> GPT:
    """The model saved in ``folder``; ``expected`` refuses a checkpoint made with another model config."""
    folder = recover(Path(folder))
    config = read_model_config(folder)
    if expected is not None and config != expected:
        raise UserError(
            f"{folder}: checkpoint is for model config {config.to_dict()}, but this run uses {expected.to_dict()}"
        )
    path = folder / WEIGHTS_FILE
    try:
        tensors = load_file(str(path), device=str(device))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise UserError(f"{path}: cannot read the weights ({exc})") from exc
    expected_shapes = GPT.stored_shapes(config)
    found_shapes = {n: tuple(t.shape) for n, t in tensors.items()}
    if found_shapes != expected_shapes:
        wrong = sorted(set(found_shapes.items()) ^ set(expected_shapes.items()))[:3]
        raise UserError(f"{path}: the tensors do not match {folder / CONFIG_FILE} (e.g. {wrong})")
    return GPT.from_tensors(config, tensors)


def has_training_state(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` (a ``last`` checkpoint, after any interrupted save is undone) can be resumed."""
    return (recover(Path(folder)) / STATE_FILE).is_file()


def load_training_state(folder: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The resume state (optimizer, step, RNG) saved with a ``last`` checkpoint."""
    path = recover(Path(folder)) / STATE_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: nothing to resume from")
    advice = "remove it to start again from step 0, or start without --resume in a new --out"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses any object that is not plain tensors and containers
        raise UserError(f"{path}: refused: it holds pickled Python objects, not just tensors; {advice}") from exc
    except (RuntimeError, EOFError, OSError) as exc:  # a torn or foreign zip archive
        raise UserError(f"{path}: corrupt or cut short, not readable as a training state; {advice}") from exc
    if not isinstance(state, dict) or not RESUME_KEYS <= state.keys():
        raise UserError(f"{path}: not a training state (no {', '.join(sorted(RESUME_KEYS))}); {advice}")
    return state


def read_run_config(run_dir: str | os.PathLike) -> dict:
    """A run folder's ``config.json`` (what was trained, on what data, with which split)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: {run_dir} is not a run folder (made by `python -m trainer finetune`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}") from exc


def load_run_model(
    run_dir: str | os.PathLike, checkpoint: str = "best", device: str | torch.device = "cpu"
) -> tuple[GPT, dict]:
    """A run's ``best`` or ``last`` model in eval mode, and the run's config.

    A LoRA run's adapter comes merged into its base weights: every consumer gets a plain ``GPT``."""
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"unknown checkpoint {checkpoint!r}; choose one of {', '.join(CHECKPOINTS)}")
    run_config = read_run_config(run_dir)
    if run_config.get("lora"):
        from trainer.lora import load_lora_run  # imports peft: only adapter runs pay for it

        return load_lora_run(run_dir, run_config, checkpoint, device=device).eval(), run_config
    expected = GPTConfig.from_dict(run_config["model"])
    model = load_checkpoint(Path(run_dir) / checkpoint, device=device, expected=expected)
    return model.eval(), run_config
