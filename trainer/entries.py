"""Reading JSON files and instruction entries without surprises, for the trainer and the workbench alike.

Both ``finetune``/``generate`` and ``workbench import`` read the same files, so they share these functions and
accept or refuse the same entries. Any problem is a one-line ``UserError`` naming the file (and the line or
entry); nothing here lets a ``RecursionError`` (deeply nested JSON), a ``ValueError`` (a 5,000-digit number) or
text SQLite cannot store (an unpaired surrogate such as ``"\\ud800"``) escape as a traceback. This module does
not import torch, so the workbench can use it without loading the model code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from trainer.errors import UserError

# The key ``generate`` writes responses under unless the user picks one.
DEFAULT_RESPONSE_KEY = "model_response"

TOO_DEEP = "JSON nested too deeply to read"
# ``\ud800``-``\udfff`` escapes: only these can make json.loads return a string that is not valid Unicode.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def type_name(value: Any) -> str:
    """A value's JSON-ish type for messages: ``null`` rather than ``NoneType``."""
    return "null" if value is None else type(value).__name__


def read_text(path: Path, *, newline: str | None = None) -> str:
    """A UTF-8 file's text, or a UserError that says why it cannot be read. ``newline=""`` keeps line ends as
    they are (what the csv module needs: a quoted cell may hold a ``\\r\\n`` of its own)."""
    try:
        with path.open(encoding="utf-8", newline=newline) as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise UserError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def parse_json(path: Path, text: str, *, line: int | None = None) -> Any:
    """One JSON document (``line`` is its line number in a JSON Lines file, for messages)."""
    where = f"{path}: " if line is None else f"{path}: line {line}: "
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        at_line = exc.lineno if line is None else line
        raise UserError(f"{path}: malformed JSON at line {at_line}, column {exc.colno}: {exc.msg}") from exc
    except RecursionError as exc:
        raise UserError(f"{where}{TOO_DEEP}") from exc
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise UserError(f"{where}unreadable JSON value ({str(exc).split(';')[0]})") from exc
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UserError(
                f"{where}a string holds an unpaired surrogate escape (\\u{ord(exc.object[exc.start]):x})"
            ) from exc
        except RecursionError as exc:  # nested almost as deeply as json.loads allows
            raise UserError(f"{where}{TOO_DEEP}") from exc
    return value


def parse_jsonl(path: Path, text: str) -> list:
    """Every non-blank line of a JSON Lines file, parsed. Lines end at ``\\n`` only (``str.splitlines`` would
    also split inside strings holding U+2028 or U+0085, which JSON allows unescaped)."""
    return [parse_json(path, line, line=number) for number, line in enumerate(text.split("\n"), 1) if line.strip()]


def parse_json_or_jsonl(path: Path, text: str) -> Any:
    """``.jsonl`` as JSON Lines; any other file as one JSON document, or as JSON Lines when it holds one object
    per line (a common mislabelling of ``.jsonl`` files)."""
    if path.suffix == ".jsonl":
        return parse_jsonl(path, text)
    try:
        return parse_json(path, text)
    except UserError as error:
        cause = error.__cause__
        if isinstance(cause, json.JSONDecodeError) and cause.msg == "Extra data" and text.lstrip().startswith("{"):
            return parse_jsonl(path, text)
        raise


def read_json(path: Path) -> Any:
    """Read and parse a JSON or JSON Lines file (see ``parse_json_or_jsonl``)."""
    return parse_json_or_jsonl(path, read_text(path))


def validate_entry(where: str, record: Any, *, need_output: bool) -> dict:
    """One instruction entry, checked the same way by ``finetune`` and by ``workbench import``; returns it with
    ``input`` filled in.

    ``instruction`` is a required string. ``input`` may be left out or null: both mean "no input" and become
    "" (as in the Alpaca data, where most entries have none; Hugging Face loaders treat it the same way).
    ``output`` is a string; training needs it and needs it non-blank (``need_output``), while the workbench
    also takes entries without a reference output (prompts to answer) and keeps null for them. Other keys are
    returned untouched for the caller to judge. ``where`` names the entry in messages (``FILE: entry N``).
    """
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected an object with 'instruction', got {type_name(record)}")
    required = ("instruction", "output") if need_output else ("instruction",)
    for key in required:
        if key not in record:
            raise UserError(f"{where}: {key!r} is missing")
    entry = {**record, "input": "" if record.get("input") is None else record["input"]}
    for key in ("instruction", "input", "output"):
        value = entry.get(key)
        if not isinstance(value, str) and not (key == "output" and value is None and not need_output):
            raise UserError(f"{where}: {key!r} must be a string, got {type_name(value)}")
    if need_output and not entry["output"].strip():
        raise UserError(f"{where}: empty 'output'")
    return entry
