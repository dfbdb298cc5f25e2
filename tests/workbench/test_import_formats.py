"""``workbench import`` of every data format: the items and responses equal those of the JSON import of the same
entries; a column mapping on the command line; a refused file leaves the store byte-identical."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.data_files import CHAT_FORMATS, FORMATS, chat_ready, write_entries
from trainer.errors import UserError
from workbench import cli, importing, store

ENTRIES = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5", "gpt2": "6"},
    {"instruction": "Plural of mouse?", "input": "mouse, please", "output": "mice", "gpt2": 'mouses, "maybe"'},
    {"instruction": "Say hi\r\nin two lines.", "input": "", "output": "hi\nthere", "gpt2": "=1+1"},
]


def _stored(db_file: Path) -> tuple[list, list]:
    """The data set's items and the responses, without the file path each import records as its source."""
    db = store.open_db(db_file)
    items = [tuple(row) for row in db.execute("SELECT * FROM items ORDER BY position").fetchall()]
    responses = [(row["item_id"], row["model"], row["text"]) for row in store.response_rows(db, dataset="data")]
    return items, responses


def _import(source: str, db_file: Path, **options) -> importing.ImportSummary:
    return importing.import_path(store.open_db(db_file), source, dataset="data", **options)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "json"])
def test_every_format_imports_what_its_json_twin_does(fmt, tmp_path):
    entries = [{k: e[k] for k in ("instruction", "input", "output")} for e in chat_ready(ENTRIES)]
    if fmt not in CHAT_FORMATS:
        entries = ENTRIES  # with a model's responses
    reference = _import(write_entries(entries, tmp_path / "json", "json"), tmp_path / "json.db")
    summary = _import(write_entries(entries, tmp_path / fmt, fmt), tmp_path / f"{fmt}.db")
    assert (summary.kind, summary.items, summary.models, summary.responses) == (
        reference.kind,
        reference.items,
        reference.models,
        reference.responses,
    )
    assert _stored(tmp_path / f"{fmt}.db") == _stored(tmp_path / "json.db")
    assert summary.items == 3 and summary.responses == (0 if fmt in CHAT_FORMATS else 3)


def test_default_data_set_names_come_from_the_file_or_folder(tmp_path):
    db_file = tmp_path / "s.db"
    assert importing.import_path(store.open_db(db_file), write_entries(ENTRIES, tmp_path, "csv")).dataset == "data"
    spec = write_entries(ENTRIES, tmp_path / "hf", "hf")
    assert importing.import_path(store.open_db(db_file), f"{spec}:train").dataset == "hf-data"


def test_the_cli_imports_a_csv_with_a_column_mapping(tmp_path):
    data = tmp_path / "renamed.csv"
    with data.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "completion", "gpt2"])
        writer.writerows([e["instruction"], e["output"], e["gpt2"]] for e in ENTRIES if not e["input"])
    db_file = tmp_path / "s.db"
    command = [sys.executable, "-m", "workbench", "import", str(data), "--db", str(db_file)]
    result = subprocess.run(
        [*command, "--columns", "instruction=prompt,output=completion", "--dataset", "data"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "imported responses into data set 'data': 2 items, 1 model(s) (gpt2), 2 responses\n"
    plain = [e for e in ENTRIES if not e["input"]]
    _import(write_entries(plain, tmp_path / "json", "json"), tmp_path / "json.db")
    assert _stored(db_file) == _stored(tmp_path / "json.db")


def _chat_jsonl(path: Path, *conversations: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"messages": turns}) + "\n" for turns in conversations))
    return path


USER, ASSISTANT = {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (
            lambda p: _chat_jsonl(p / "d.jsonl", [USER, ASSISTANT], [{"role": "system", "content": "s"}, USER]),
            "{path}: entry 1: a system message has no place in the store's items (instruction, input, output)",
        ),
        (
            lambda p: _chat_jsonl(p / "d.jsonl", [USER, ASSISTANT, USER]),
            "{path}: entry 0: a conversation of 3 turns; the store's items hold one instruction and one reply "
            "(train on it with a chat --style instead)",
        ),
        (
            lambda p: Path(write_entries(ENTRIES, p, "csv")),
            "--columns instruction=prompt: ",  # checked below with the CLI's own parsing
        ),
        (
            lambda p: (p / "d.csv").write_text('instruction,output\n"a",b\n"",c\n') and p / "d.csv",
            "{path}: entry 1: 'instruction' must be a string, got null",
        ),
    ],
)
def test_refused_files_leave_the_store_byte_identical(write, message, tmp_path):
    db_file = tmp_path / "s.db"
    _import(write_entries(ENTRIES, tmp_path / "first", "json"), db_file)
    before = db_file.read_bytes()
    path = write(tmp_path)
    columns = {"instruction": "prompt"} if message.startswith("--columns") else None
    with pytest.raises(UserError) as error:
        importing.import_path(store.open_db(db_file), path, columns=columns)
    if columns:
        assert str(error.value) == f"{path}: no column 'prompt' (for 'instruction'); its columns: " + ", ".join(
            ENTRIES[0]
        )
    else:
        assert str(error.value) == message.format(path=path)
    assert db_file.read_bytes() == before


def test_an_unknown_column_key_on_the_cli_is_one_line(tmp_path, capsys):
    data = write_entries(ENTRIES, tmp_path, "csv")
    code = cli.main(["import", data, "--db", str(tmp_path / "s.db"), "--columns", "answer=output"])
    err = capsys.readouterr().err
    assert (code, err) == (
        2,
        "error: --columns answer=output: unknown key 'answer'; map columns to instruction, input, output\n",
    )
    assert not (tmp_path / "s.db").exists()
