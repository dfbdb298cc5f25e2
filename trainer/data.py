"""Instruction data: load and validate files, format prompts, split, and batch for training.

Entries are Alpaca-style dicts (``instruction``, optional ``input``, ``output``). Every problem with a file is
a ``UserError`` that names the file and the entry index, because a data set of a thousand entries with one
bad line is the common case, and a bare ``KeyError`` would not say which one.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from trainer.entries import type_name, validate_entry
from trainer.errors import UserError
from trainer.formats import is_hf_spec, read_records
from trainer.tokenizer import END_OF_TEXT_ID

STYLES = ("alpaca", "phi3", "phi3-book")
IGNORE_INDEX = -100  # cross_entropy's default ignore_index: targets with it add nothing to the loss

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
# phi3-book is the book's Phi-3 exercise (ch07 exercise 7.2), which writes the marker with a colon.
RESPONSE_MARKERS = {"alpaca": "### Response:", "phi3": "<|assistant|>", "phi3-book": "<|assistant|>:"}


# --- loading and validation -------------------------------------------------------------------------------


def load_entries(path: str | Path, columns: Mapping[str, str] | None = None) -> list[dict]:
    """Read a data source (JSON list, JSONL, CSV, Parquet or ``hf:NAME[:SPLIT]``; ``trainer.formats``) and
    validate every entry.

    The rules are ``trainer.entries.validate_entry``'s (the workbench import uses the same): ``input`` absent
    or null becomes ""; extra keys (``model_response`` ...) are kept. ``columns`` maps entry keys to the
    source's column names.
    """
    if not is_hf_spec(path):
        path = Path(path)
        if not path.exists():
            raise UserError(f"data file not found: {path}")
    records = read_records(path, columns)
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a JSON list of entries (or JSONL), got {type_name(records)}")
    if not records:
        raise UserError(f"{path}: the data set is empty")
    return [validate_entry(f"{path}: entry {index}", record, need_output=True) for index, record in enumerate(records)]


# --- prompt styles ----------------------------------------------------------------------------------------


def check_style(style: str) -> None:
    if style not in STYLES:
        raise UserError(f"unknown prompt style {style!r}; choose one of {', '.join(STYLES)}")


def format_instruction(entry: dict, style: str) -> str:
    """The prompt before its response marker: instruction and input (the book's ``format_input``)."""
    check_style(style)
    instruction, given = entry["instruction"], entry.get("input", "")
    if style == "alpaca":
        input_section = f"\n\n### Input:\n{given}" if given else ""
        return f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}{input_section}"
    input_section = f"\n{given}" if given else ""
    return f"<|user|>\n{instruction}{input_section}"


def format_prompt(entry: dict, style: str) -> str:
    """The prompt up to and including the response marker (what generation continues from)."""
    separator = "\n\n" if style == "alpaca" else "\n"
    return f"{format_instruction(entry, style)}{separator}{RESPONSE_MARKERS[style]}"


def format_example(entry: dict, style: str) -> str:
    """The full training text: the prompt, a newline, then the reference output."""
    return f"{format_prompt(entry, style)}\n{entry['output']}"


def extract_response(generated_text: str, style: str) -> str:
    """The text after the (first) response marker, stripped; the whole text when the marker is absent."""
    check_style(style)
    _, marker, response = generated_text.partition(RESPONSE_MARKERS[style])
    return (response if marker else generated_text).strip()


# --- split ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """The three parts of a data set (the entry objects themselves) and their indices in the file."""

    train: list[dict]
    test: list[dict]
    val: list[dict]
    indices: dict[str, list[int]]


def split_entries(entries: Sequence[dict], *, seed: int | None = None) -> Split:
    """85 % train, 10 % test, the rest val: in file order as the book does, or shuffled by ``seed``."""
    order = list(range(len(entries)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    n_train, n_test = int(len(order) * 0.85), int(len(order) * 0.1)
    indices = {
        "train": order[:n_train],
        "test": order[n_train : n_train + n_test],
        "val": order[n_train + n_test :],
    }
    for part, chosen in indices.items():
        if not chosen:
            raise UserError(
                f"the {part} split is empty ({len(entries)} entries); the 85/10/5 split needs at least 20 entries"
            )
    return Split(**{part: [entries[i] for i in chosen] for part, chosen in indices.items()}, indices=indices)


# --- tokenized data set and collate -----------------------------------------------------------------------


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text``; "<|endoftext|>" written in the data is plain text, never the special token."""
    return tokenizer.encode(text, disallowed_special=())


class InstructionDataset(Dataset):
    """Entries tokenized once up front, each as (full example ids, length in tokens of what ``mask_prompt``
    masks).

    That is the whole prompt, or with ``loss_on_marker`` the prompt before its response marker, so that the
    marker's tokens stay in the loss: the book's masking exercise (ch07 exercise 7.2) counts them that way."""

    def __init__(self, entries: Sequence[dict], tokenizer, style: str, *, loss_on_marker: bool = False):
        masked = format_instruction if loss_on_marker else format_prompt
        self.examples = [
            (encode(tokenizer, format_example(entry, style)), len(encode(tokenizer, masked(entry, style))))
            for entry in entries
        ]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.examples[index]


def collate(
    batch: Sequence[tuple[list[int], int]],
    *,
    pad_id: int = END_OF_TEXT_ID,
    ignore_index: int = IGNORE_INDEX,
    max_length: int | None = None,
    mask_prompt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets ``[batch, longest]`` for next-token training (the book's ``custom_collate_fn``).

    Each sequence gets one end-of-text token (so the model learns to stop) and is padded with ``pad_id``;
    targets are the inputs shifted by one, with every padding target after that first end-of-text set to
    ``ignore_index``. With ``mask_prompt`` the targets that predict prompt tokens are ignored too, so the loss
    is on the response alone. Both tensors are then truncated to ``max_length``.
    """
    longest = max(len(ids) + 1 for ids, _ in batch)
    inputs, targets = [], []
    for ids, prompt_length in batch:
        padded = torch.tensor(ids + [pad_id] * (longest - len(ids)))
        target = padded[1:].clone()
        target[len(ids) :] = ignore_index  # position len(ids) - 1 predicts the end-of-text and is kept
        if mask_prompt:
            target[: prompt_length - 1] = ignore_index
        inputs.append(padded[:-1])
        targets.append(target)
    inputs_tensor, targets_tensor = torch.stack(inputs), torch.stack(targets)
    if max_length is not None:
        inputs_tensor, targets_tensor = inputs_tensor[:, :max_length], targets_tensor[:, :max_length]
    return inputs_tensor, targets_tensor
