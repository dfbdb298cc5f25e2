"""Instruction data: load and validate files, format prompts, split, and batch for training.

Entries are Alpaca-style dicts (``instruction``, optional ``input``, ``output``). Every problem with a file is
a ``UserError`` that names the file and the entry index, because a data set of a thousand entries with one
bad line is the common case, and a bare ``KeyError`` would not say which one.
"""

from __future__ import annotations

import functools
import hashlib
import os
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

# Completion styles put the instruction in a fixed prompt; chat styles render the conversation with a chat
# template (Hugging Face's convention), as does ``jinja:FILE`` with a template of one's own.
COMPLETION_STYLES = ("alpaca", "phi3", "phi3-book")
CHAT_TEMPLATES = {
    # OpenAI's ChatML (Qwen, ...).
    "chatml": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    # Meta's Llama 3, without its leading <|begin_of_text|> (GPT-2 has no such token).
    "llama3": "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
    # Microsoft's Phi-3 chat, each turn closed by <|end|> (the `phi3` style is the book's, without it).
    "phi3-chat": "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
}
STYLES = (*COMPLETION_STYLES, *CHAT_TEMPLATES)
JINJA_PREFIX = "jinja:"
IGNORE_INDEX = -100  # cross_entropy's default ignore_index: targets with it add nothing to the loss

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
# phi3-book is the book's Phi-3 exercise (ch07 exercise 7.1), which writes the marker with a colon.
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
    """Refuse an unknown style, or a ``jinja:FILE`` whose template cannot be read or compiled."""
    if style.startswith(JINJA_PREFIX):
        _chat_template(style)
    elif style not in STYLES:
        raise UserError(
            f"unknown prompt style {style!r}; choose one of {', '.join(STYLES)}, or {JINJA_PREFIX}FILE for a "
            "Jinja chat template"
        )


def is_chat_style(style: str) -> bool:
    return style in CHAT_TEMPLATES or style.startswith(JINJA_PREFIX)


def resolve_style(style: str) -> str:
    """``style`` checked, with a template file's path made absolute (a run records where its template is)."""
    if style.startswith(JINJA_PREFIX):
        style = JINJA_PREFIX + str(Path(style.removeprefix(JINJA_PREFIX)).expanduser().resolve())
    check_style(style)
    return style


def style_sha256(style: str) -> str | None:
    """A ``jinja:FILE`` template's hash, recorded with a run so that a changed template is noticed."""
    if not style.startswith(JINJA_PREFIX):
        return None
    return hashlib.sha256(Path(style.removeprefix(JINJA_PREFIX)).read_bytes()).hexdigest()


def check_style_unchanged(style: str, recorded_sha256: str | None, where: str) -> None:
    """Refuse to generate with a template file that changed since the run was trained with it."""
    if recorded_sha256 is not None and style_sha256(style) != recorded_sha256:
        raise UserError(f"{where}: the chat template {style.removeprefix(JINJA_PREFIX)} changed since the run used it")


def format_instruction(entry: dict, style: str) -> str:
    """The prompt before its response marker: instruction and input (the book's ``format_input``)."""
    check_style(style)
    instruction, given = entry["instruction"], entry.get("input", "")
    if style == "alpaca":
        input_section = f"\n\n### Input:\n{given}" if given else ""
        return f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}{input_section}"
    input_section = f"\n{given}" if given else ""
    return f"<|user|>\n{instruction}{input_section}"


def check_turns(entries: Sequence[dict], style: str, where: str) -> None:
    """Refuse multi-turn conversations (chat files) in a completion style: its prompt holds one instruction,
    and training or answering on the last exchange alone would drop the conversation before it."""
    if is_chat_style(style):
        return
    for index, entry in enumerate(entries):
        turns = sum(message.get("role") == "user" for message in entry.get("messages", ()))
        if turns > 1:
            raise UserError(
                f"{where}: entry {index}: a conversation of {turns} user turns needs a chat style "
                f"(--style chatml, llama3, phi3-chat or jinja:FILE); style {style!r} holds one instruction"
            )


def format_prompt(entry: dict, style: str) -> str:
    """The prompt up to and including the response marker (what generation continues from); in a chat
    style, the conversation before its last assistant turn and the template's generation prompt."""
    if is_chat_style(style):
        messages = entry_messages(entry)
        return render_chat(messages[: _last_assistant(messages)], style, add_generation_prompt=True)
    separator = "\n\n" if style == "alpaca" else "\n"
    return f"{format_instruction(entry, style)}{separator}{RESPONSE_MARKERS[style]}"


def format_example(entry: dict, style: str) -> str:
    """The full training text: the prompt, a newline, then the reference output (chat: the conversation)."""
    if is_chat_style(style):
        return render_chat(entry_messages(entry), style, add_generation_prompt=False)
    return f"{format_prompt(entry, style)}\n{entry['output']}"


def response_marker(style: str) -> str:
    """What precedes the response: a completion style's marker; a chat template's text after the user's turn."""
    if not is_chat_style(style):
        check_style(style)
        return RESPONSE_MARKERS[style]
    rendered = render_chat([{"role": "user", "content": _SENTINEL}], style, add_generation_prompt=True)
    return rendered.split(_SENTINEL)[-1]


def stop_string(style: str) -> str | None:
    """What closes an assistant turn in a chat template (``<|im_end|>``, ``<|eot_id|>``, ``<|end|>``): the
    response ends before it. None for completion styles, which end at end-of-text alone."""
    if not is_chat_style(style):
        return None
    turn = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _SENTINEL}]
    closing = render_chat(turn, style, add_generation_prompt=False).split(_SENTINEL)[-1].strip()
    return closing or None


def extract_response(generated_text: str, style: str) -> str:
    """The text after the (first) response marker, up to the style's stop string, stripped; the whole text
    when the marker is absent."""
    _, marker, response = generated_text.partition(response_marker(style))
    response = response if marker else generated_text
    stop = stop_string(style)
    return (response.partition(stop)[0] if stop else response).strip()


# --- chat templates ---------------------------------------------------------------------------------------
# GPT-2's vocabulary has none of these templates' special tokens: <|im_start|>, <|eot_id|>, <|end|> ... are
# encoded as plain text, several tokens each (as "<|endoftext|>" written in data is). The only special token
# is end-of-text, which collate appends after every example; ``bos_token`` and ``eos_token`` render empty.

_SENTINEL = "\x00CONTENT\x00"
ROLES = ("system", "user", "assistant")


def user_message(entry: dict) -> str:
    """An instruction entry as one user turn: the instruction, then the input after a blank line."""
    return entry["instruction"] + (f"\n\n{entry['input']}" if entry.get("input") else "")


def entry_messages(entry: dict) -> list[dict]:
    """The entry's conversation: its ``messages`` (chat files), or its instruction, input and output as one
    user turn and one assistant turn."""
    if "messages" in entry:
        return entry["messages"]
    messages = [{"role": "user", "content": user_message(entry)}]
    if "output" in entry:
        messages.append({"role": "assistant", "content": entry["output"]})
    return messages


def _last_assistant(messages: list[dict]) -> int:
    """Index of the last assistant turn (the reference answer); the length when there is none."""
    roles = [message.get("role") for message in messages]
    return len(roles) - 1 - roles[::-1].index("assistant") if "assistant" in roles else len(roles)


@functools.lru_cache(maxsize=32)
def _compile(source: str, name: str):
    """A template in a sandbox that cannot touch Python objects' internals or mutate the data, configured as
    ``transformers`` renders chat templates (trim_blocks, lstrip_blocks, loop controls, raise_exception)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    environment.globals["raise_exception"] = raise_exception
    try:
        return environment.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"{name}: line {exc.lineno}: not a Jinja template ({exc.message})") from exc


def chat_template_source(style: str) -> str:
    """The Jinja text of a chat style's template: built in, or the ``jinja:FILE``'s."""
    if style in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[style]
    path = Path(style.removeprefix(JINJA_PREFIX))
    if not path.is_file():
        raise UserError(f"chat template not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the chat template ({exc})") from exc


def _chat_template(style: str):
    name = style if style in CHAT_TEMPLATES else style.removeprefix(JINJA_PREFIX)
    return _compile(chat_template_source(style), name), name


def render_chat(messages: Sequence[dict], style: str, *, add_generation_prompt: bool) -> str:
    """``messages`` rendered by the style's template, with ``add_generation_prompt`` as Hugging Face passes it."""
    import jinja2

    template, name = _chat_template(style)
    try:
        return template.render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, bos_token="", eos_token=""
        )
    except jinja2.TemplateError as exc:  # undefined names, raise_exception, sandbox refusals
        raise UserError(f"{name}: the chat template failed ({exc})") from exc


def chat_segments(messages: Sequence[dict], style: str) -> list[tuple[str, bool]]:
    """The rendered conversation cut into pieces, each with whether it is an assistant turn (trained on).

    An assistant turn runs from the end of the generation prompt that precedes it (the conversation before it
    rendered with ``add_generation_prompt``) to where the conversation up to and including it stops agreeing
    with the whole: its content and the template's closing text (``<|im_end|>\n`` ...), so the model learns to
    end its turn. A template whose earlier turns are not a prefix of the whole is refused."""
    full = render_chat(messages, style, add_generation_prompt=False)
    segments, done = [], 0
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = render_chat(messages[:index], style, add_generation_prompt=True)
        through = render_chat(messages[: index + 1], style, add_generation_prompt=False)
        if not full.startswith(before) or len(before) < done:
            raise UserError(
                f"{style}: the template does not render a conversation's first turns as the start of the whole; "
                "its assistant turns cannot be found for loss masking"
            )
        end = len(before) + len(os.path.commonprefix([through[len(before) :], full[len(before) :]]))
        segments += [(full[done : len(before)], False), (full[len(before) : end], True)]
        done = end
    segments.append((full[done:], False))
    return [(text, trained) for text, trained in segments if text]


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


def tokenize_example(
    entry: dict, tokenizer, style: str, *, loss_on_marker: bool = False
) -> tuple[list[int], list[bool]]:
    """The example's token ids, and for each whether it is response (kept in the loss by ``mask_prompt``).

    A completion style's prompt is counted in tokens of its own, a prefix of the example's (``loss_on_marker``:
    the prompt before its response marker, so the marker's tokens stay in the loss, as the book's masking
    exercise 7.2 counts them). A chat style's pieces are encoded one by one, so that every assistant turn
    starts and ends on a token boundary; everything but the assistant turns is masked."""
    if is_chat_style(style):
        ids, trained = [], []
        for text, is_response in chat_segments(entry_messages(entry), style):
            piece = encode(tokenizer, text)
            ids += piece
            trained += [is_response] * len(piece)
        return ids, trained
    ids = encode(tokenizer, format_example(entry, style))
    masked = len(encode(tokenizer, (format_instruction if loss_on_marker else format_prompt)(entry, style)))
    return ids, [index >= masked for index in range(len(ids))]


class InstructionDataset(Dataset):
    """Entries tokenized once up front, each as :func:`tokenize_example` gives it."""

    def __init__(self, entries: Sequence[dict], tokenizer, style: str, *, loss_on_marker: bool = False):
        self.examples = [tokenize_example(entry, tokenizer, style, loss_on_marker=loss_on_marker) for entry in entries]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[list[int], list[bool]]:
        return self.examples[index]


def collate(
    batch: Sequence[tuple[list[int], list[bool]]],
    *,
    pad_id: int = END_OF_TEXT_ID,
    ignore_index: int = IGNORE_INDEX,
    max_length: int | None = None,
    mask_prompt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets ``[batch, longest]`` for next-token training (the book's ``custom_collate_fn``).

    Each sequence gets one end-of-text token (so the model learns to stop) and is padded with ``pad_id``;
    targets are the inputs shifted by one, with every padding target after that first end-of-text set to
    ``ignore_index``. With ``mask_prompt`` the targets that predict tokens not marked as response are ignored
    too, so the loss is on the response(s) alone. Both tensors are then truncated to ``max_length``.
    """
    longest = max(len(ids) + 1 for ids, _ in batch)
    inputs, targets = [], []
    for ids, trained in batch:
        padded = torch.tensor(ids + [pad_id] * (longest - len(ids)))
        target = padded[1:].clone()
        target[len(ids) :] = ignore_index  # position len(ids) - 1 predicts the end-of-text and is kept
        if mask_prompt:
            predicts_prompt = ~torch.tensor(trained[1:], dtype=torch.bool)  # target j predicts token j + 1
            target[: len(ids) - 1][predicts_prompt] = ignore_index
        inputs.append(padded[:-1])
        targets.append(target)
    inputs_tensor, targets_tensor = torch.stack(inputs), torch.stack(targets)
    if max_length is not None:
        inputs_tensor, targets_tensor = inputs_tensor[:, :max_length], targets_tensor[:, :max_length]
    return inputs_tensor, targets_tensor
