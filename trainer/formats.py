"""Reading instruction data in the formats people have it in: JSON/JSONL, CSV, Parquet and Hugging Face data sets.

Every reader returns records in the book's Alpaca layout (``instruction``, ``input``, ``output``, other keys kept)
for ``trainer.entries.validate_entry`` to check, so ``finetune``, ``generate`` and ``workbench import`` accept
the same files whatever their format. A source is a file path (the format comes from its extension) or
``hf:NAME[:SPLIT]``, read by ``datasets.load_dataset`` (a Hub name, or a local folder of data files). Two more
layouts are recognised in any format: a column mapping (``--columns instruction=prompt,output=completion``) for
files whose columns are named otherwise, and chat records (OpenAI ``messages`` or ShareGPT ``conversations``).
Every problem is a one-line ``UserError`` naming the source (and the entry or column). No torch here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.entries import read_json, read_text, type_name
from trainer.errors import UserError

HF_PREFIX = "hf:"
DEFAULT_HF_SPLIT = "train"
# What ``--columns`` may map to: the entry keys every reader produces.
COLUMN_TARGETS = ("instruction", "input", "output")
TABULAR_SUFFIXES = (".csv", ".parquet")
FORMATS_HELP = "a JSON list, JSONL, CSV or Parquet file, or hf:NAME[:SPLIT] (a Hugging Face data set or local folder)"
COLUMNS_HELP = (
    "source columns for the entry keys, e.g. instruction=prompt,output=completion[,input=context] "
    "(every named column must be present)"
)

# Chat layouts: the key holding the conversation, and how each names a turn's speaker and text.
CHAT_LAYOUTS = {"messages": ("role", "content"), "conversations": ("from", "value")}
CHAT_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}


# --- sources ---------------------------------------------------------------------------------------------


def is_hf_spec(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(HF_PREFIX)


def _split_hf_spec(spec: str) -> tuple[str, str]:
    """``hf:NAME[:SPLIT]`` → (NAME, SPLIT). The first colon after the name starts the split, so a split may be
    sliced as datasets allows (``train[:100]``); a local folder's path cannot hold a colon."""
    name, _, split = spec.removeprefix(HF_PREFIX).partition(":")
    if not name:
        raise UserError(f"{spec}: no data set name; write hf:NAME or hf:NAME:SPLIT")
    return name, split or DEFAULT_HF_SPLIT


def resolve_source(source: str | Path) -> str:
    """The source as runs record it: a file's absolute path, or the ``hf:`` spec with a local folder made
    absolute (so that ``generate --run`` finds the data from any working directory)."""
    if not is_hf_spec(source):
        return str(Path(source).resolve())
    name, split = _split_hf_spec(str(source))
    if Path(name).is_dir():
        name = str(Path(name).resolve())
    return f"{HF_PREFIX}{name}:{split}"


def source_stem(source: str | Path) -> str:
    """A short name for a source (a data set's default name in the store): a file's stem, a Hub data set's or
    a folder's last path part."""
    if is_hf_spec(source):
        return Path(_split_hf_spec(str(source))[0]).name
    return Path(source).stem


def data_sha256(source: str | Path, entries: list[dict]) -> str:
    """What runs record to notice a changed data set: a file's bytes hashed as ever; for an ``hf:`` data set,
    which has no one file, the entries as canonical JSON."""
    if not is_hf_spec(source):
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()
    text = json.dumps(entries, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- column mapping --------------------------------------------------------------------------------------


def parse_columns(text: str | None) -> dict[str, str] | None:
    """``instruction=prompt,output=completion`` → {entry key: source column}; None stays None."""
    if text is None:
        return None
    columns: dict[str, str] = {}
    for pair in text.split(","):
        target, equals, column = (part.strip() for part in pair.partition("="))
        if not equals or not target or not column:
            raise UserError(f"--columns {text}: expected KEY=COLUMN pairs separated by commas, got {pair!r}")
        if target not in COLUMN_TARGETS:
            raise UserError(f"--columns {text}: unknown key {target!r}; map columns to {', '.join(COLUMN_TARGETS)}")
        if target in columns:
            raise UserError(f"--columns {text}: {target!r} is mapped twice")
        columns[target] = column
    return columns


def _map_columns(source: str, records: list, columns: Mapping[str, str], *, header: list[str] | None) -> list:
    """Rename source columns to entry keys. A tabular file's header must hold every named column; in JSON each
    record must. An unmapped column that already bears a target's name would be shadowed, so it is refused."""
    shadowed = [t for t, column in columns.items() if t != column and t not in columns.values()]
    if header is not None:
        for target, column in columns.items():
            if column not in header:
                raise UserError(f"{source}: no column {column!r} (for {target!r}); its columns: {', '.join(header)}")
        for target in shadowed:
            if target in header:
                raise UserError(f"{source}: column {target!r} would be replaced by {columns[target]!r}; rename it")
    mapped = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            mapped.append(record)  # validate_entry says what is wrong with it
            continue
        for target, column in columns.items():
            if column not in record:
                raise UserError(f"{source}: entry {index}: no column {column!r} (for {target!r})")
        for target in shadowed:
            if target in record:
                raise UserError(f"{source}: entry {index}: {target!r} would be replaced by {columns[target]!r}")
        renamed = {key: value for key, value in record.items() if key not in columns.values()}
        mapped.append({**renamed, **{target: record[column] for target, column in columns.items()}})
    return mapped


# --- chat records ----------------------------------------------------------------------------------------


def chat_layout(record: Any) -> str | None:
    """The key of a chat record's conversation (``messages`` or ``conversations``), or None for other records.
    A record with an ``instruction`` is an instruction entry whatever else it holds."""
    if not isinstance(record, dict) or "instruction" in record:
        return None
    return next((key for key in CHAT_LAYOUTS if key in record), None)


def chat_to_entry(where: str, record: dict, key: str, *, keep_system: bool = True) -> dict:
    """A conversation as an entry: the last user message is the instruction, the assistant's reply to it the
    output (absent when there is none: a prompt to answer), input empty. The whole conversation is kept under
    ``messages`` ({role, content} items, ShareGPT's turned into OpenAI's) for chat templates, which train on
    every assistant turn; a system message also under ``system``; other keys stay. Completion styles (alpaca,
    phi3) refuse multi-turn entries (``trainer.data.check_turns``): training on the last pair alone would drop
    the context. ``keep_system=False`` (the workbench, whose items hold one instruction and one output) refuses
    a system message and earlier turns instead."""
    role_key, text_key = CHAT_LAYOUTS[key]
    turns = record[key]
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{where}: {key!r} must be a non-empty list of turns, got {type_name(turns)}")
    messages = []
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get(role_key), str):
            raise UserError(f"{where}: {key!r} turn {number}: expected an object with {role_key!r} and {text_key!r}")
        role = CHAT_ROLES.get(turn[role_key])
        if role is None:
            raise UserError(
                f"{where}: {key!r} turn {number}: unknown {role_key} {turn[role_key]!r}; "
                f"expected one of {', '.join(CHAT_ROLES)}"
            )
        text = turn.get(text_key)
        if not isinstance(text, str):
            raise UserError(f"{where}: {key!r} turn {number}: {text_key!r} must be a string, got {type_name(text)}")
        messages.append({"role": role, "content": turn[text_key]})
    roles = [message["role"] for message in messages]
    system = messages[0]["content"] if roles[0] == "system" else None
    dialogue = roles[1:] if system is not None else roles
    alternating = [("user", "assistant")[index % 2] for index in range(len(dialogue))]
    if not dialogue or dialogue != alternating:
        raise UserError(
            f"{where}: a conversation of roles {', '.join(roles)}; expected an optional system message, then user "
            "and assistant turns in turn, starting with the user"
        )
    if len(dialogue) > 2 and not keep_system:
        raise UserError(
            f"{where}: a conversation of {len(dialogue)} turns; the store's items hold one instruction and one "
            "reply (train on it with a chat --style instead)"
        )
    if system is not None and not keep_system:
        raise UserError(f"{where}: a system message has no place in the store's items (instruction, input, output)")
    entry = {name: value for name, value in record.items() if name != key}
    last_user = len(roles) - 1 - roles[::-1].index("user")
    entry.update(instruction=messages[last_user]["content"], input="")
    if dialogue[-1] == "assistant":
        entry["output"] = messages[-1]["content"]
    if keep_system:
        entry["messages"] = messages
        if system is not None:
            entry["system"] = system
    return entry


# --- readers ---------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> tuple[list[dict], list[str]]:
    """Rows as dicts of strings; an empty cell is a missing value (None), as it is in a spreadsheet."""
    text = read_text(path, newline="").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV at line {reader.line_num}: {exc}") from exc
    if not rows:
        raise UserError(f"{path}: the CSV file is empty (no header row)")
    header, body = rows[0], rows[1:]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise UserError(f"{path}: the header names {', '.join(map(repr, duplicated))} more than once")
    records = []
    for index, row in enumerate(body):
        if len(row) > len(header):
            raise UserError(f"{path}: entry {index}: {len(row)} cells but the header has {len(header)} columns")
        cells = row + [""] * (len(header) - len(row))
        records.append({name: cell if cell != "" else None for name, cell in zip(header, cells, strict=True)})
    return records, header


def _read_parquet(path: Path) -> tuple[list[dict], list[str]]:
    import pyarrow
    import pyarrow.parquet

    try:
        table = pyarrow.parquet.read_table(path)
    except FileNotFoundError as exc:
        raise UserError(f"{path}: no such file") from exc
    except (pyarrow.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0]
        if reason.startswith("Could not open Parquet input source"):  # the path again, then the reason
            reason = reason.partition("': ")[2] or reason
        raise UserError(f"{path}: not a readable Parquet file ({reason})") from exc
    return table.to_pylist(), table.column_names


def _read_hf(spec: str) -> tuple[list[dict], list[str]]:
    """``datasets.load_dataset(NAME, split=SPLIT)``: a Hub data set (cached, or fetched when online) or a local
    folder of data files. Its errors (offline, unknown name or split, unreadable files) are one line."""
    import datasets

    name, split = _split_hf_spec(spec)
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar before a failure would break the one-line error
    try:
        table = datasets.load_dataset(name, split=split)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:  # ConnectionError is an OSError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{spec}: cannot load the data set ({reason})") from exc
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    if not isinstance(table, datasets.Dataset):
        raise UserError(f"{spec}: expected one split of a data set, got {type(table).__name__}")
    return table.to_list(), list(table.column_names)


def read_records(source: str | Path, columns: Mapping[str, str] | None = None, *, keep_system: bool = True) -> Any:
    """A source's records in the entry layout (see the module docstring), not yet validated.

    JSON may hold anything (the caller refuses what is not a list); the other formats give a list of objects.
    ``columns`` maps entry keys to source columns. Chat records become entries (``chat_to_entry``)."""
    if is_hf_spec(source):
        name, (records, header) = str(source), _read_hf(str(source))
    else:
        path = Path(source)
        name = str(path)
        if path.is_dir():
            raise UserError(f"{path}: is a folder; give a data file, or hf:{path} to read the folder's data files")
        if path.suffix.lower() == ".csv":
            records, header = _read_csv(path)
        elif path.suffix.lower() == ".parquet":
            records, header = _read_parquet(path)
        else:
            records, header = read_json(path), None
            if not isinstance(records, list):
                return records
    if columns:
        records = _map_columns(name, records, columns, header=header)
    return [
        chat_to_entry(f"{name}: entry {index}", record, layout, keep_system=keep_system)
        if (layout := chat_layout(record))
        else record
        for index, record in enumerate(records)
    ]
