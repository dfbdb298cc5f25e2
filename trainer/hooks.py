"""Work on a run's weights every few steps, beside training: how ``workbench finetune --judge-every`` plugs an
LLM judge into the loop. The trainer never imports the workbench, so the judge comes in through this interface.

The loop hands rank 0 the gathered weights at step 0 (before any update), every ``every`` steps and at the last
step. A hook may take the time it needs then (generation), and finish the rest in the background (asking a
server); the loop collects finished rows after every step and waits for the rest at the end. Each row
(``{"step": S, name: number, ...}``) is appended to ``metrics.jsonl`` beside the losses, mirrored to the
trackers, and drawn on the loss plot's second axis by the hook itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch


def is_evaluation(row: dict) -> bool:
    """A ``metrics.jsonl`` row of the loop's own evaluation (losses), not one a hook wrote."""
    return "val_loss" in row


@dataclass(frozen=True)
class RunContext:
    """What a hook may need from the run: its folder and config, the step it starts from (a resumed run's
    checkpoint, else 0), the validation entries (in split order), the tokenizer and the training device."""

    run_dir: Path
    run_config: dict
    start_step: int
    val_entries: list[dict]
    tokenizer: Any
    device: torch.device


class StepHook(Protocol):
    every: int

    def start(self, context: RunContext, kept_rows: list[dict]) -> None:
        """Before the first step. ``kept_rows``: this hook's rows a resumed run kept (up to its checkpoint)."""

    def submit(self, step: int, weights: dict[str, torch.Tensor]) -> None:
        """The whole model's weights at ``step`` (CPU tensors, valid during the call only)."""

    def collect(self, wait: bool) -> list[dict]:
        """Rows finished since the last call; with ``wait``, after everything submitted has finished."""

    def plot(self, axes, epochs: list[float], rows: list[dict]) -> None:
        """Draw ``rows`` on the loss plot's second y axis, at ``epochs`` (one per row)."""

    def close(self) -> None:
        """Stop background work (also after a failure); rows not collected are not written."""
