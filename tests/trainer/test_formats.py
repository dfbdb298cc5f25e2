"""Data formats: JSON/JSONL, CSV, Parquet and hf: data sets give the same entries and the same training run;
column mappings, chat records, and one-line errors for every bad file."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from tests.data_files import CHAT_FORMATS, FORMATS, chat_ready, write_entries
from tests.trainer.cli_errors import one_line_error
from trainer.data import load_entries
from trainer.errors import UserError
from trainer.formats import data_sha256, parse_columns, read_records
from trainer.train import finetune

QUICK = {"model": "tiny", "batch_size": 2, "eval_batches": 1, "lr": 1e-3, "device": "cpu", "progress": False}
KEYS = ("instruction", "input", "output")


def _core(entries: list[dict]) -> list[dict]:
    return [{key: entry[key] for key in KEYS} for entry in entries]


def _expected(sample: list[dict], fmt: str) -> list[dict]:
    return chat_ready(sample) if fmt in CHAT_FORMATS else sample


@pytest.fixture(scope="module")
def sample(sample_data) -> list[dict]:
    return json.loads(sample_data.read_text())


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_the_entries_of_its_json_twin(fmt, sample, tmp_path):
    entries = load_entries(write_entries(_expected(sample, fmt), tmp_path, fmt))
    assert _core(entries) == _expected(sample, fmt)
    if fmt in CHAT_FORMATS:  # the conversation stays on the entry, in OpenAI's layout, for chat templates
        assert entries[0]["messages"] == [
            {"role": "user", "content": entries[0]["instruction"]},
            {"role": "assistant", "content": entries[0]["output"]},
        ]
    else:
        assert all(set(entry) == set(KEYS) for entry in entries)


@pytest.fixture(scope="module")
def json_runs(sample, tmp_path_factory) -> dict[str, dict]:
    """The reference: one training step on the JSON file, plain and chat-ready."""
    runs = {}
    for kind in ("plain", "chat"):
        folder = tmp_path_factory.mktemp(f"json-{kind}")
        data = write_entries(chat_ready(sample) if kind == "chat" else sample, folder, "json")
        finetune(data=data, out=folder / "run", max_steps=1, eval_every=1, **QUICK)
        runs[kind] = _run_facts(folder / "run")
    return runs


def _run_facts(run_dir: Path) -> dict:
    config = json.loads((run_dir / "config.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"config": config, "split": config["split"], "losses": [(m["train_loss"], m["val_loss"]) for m in metrics]}


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "json"])
def test_finetune_on_every_format_matches_the_json_run(fmt, sample, json_runs, tmp_path):
    data = write_entries(_expected(sample, fmt), tmp_path, fmt)
    finetune(data=data, out=tmp_path / "run", max_steps=1, eval_every=1, **QUICK)
    facts = _run_facts(tmp_path / "run")
    reference = json_runs["chat" if fmt in CHAT_FORMATS else "plain"]
    assert (facts["split"], facts["losses"]) == (reference["split"], reference["losses"])
    config = facts["config"]
    if fmt == "hf":  # the spec with its folder made absolute and the split named; the entries' hash
        assert config["data"] == f"{data}:train"
        assert config["data_sha256"] == data_sha256(config["data"], load_entries(data))
    else:
        assert config["data"] == str(Path(data).resolve())
        assert config["data_sha256"] == data_sha256(data, [])  # the file's bytes, as ever


# Text as people write it in spreadsheets: separators, quotes, line ends of every kind, non-ASCII. Surrogates
# cannot be written as UTF-8 at all; NUL is left to the JSON tests.
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)
NON_BLANK = TEXT.filter(lambda text: text.strip() != "")
ENTRY = st.fixed_dictionaries({"instruction": NON_BLANK, "input": TEXT, "output": NON_BLANK})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(ENTRY, min_size=1, max_size=5))
def test_any_text_round_trips_through_csv_parquet_and_jsonl(entries, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    for fmt in ("jsonl", "csv", "parquet"):
        assert load_entries(write_entries(entries, folder / fmt, fmt)) == entries, fmt


# --- column mappings -------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_columns_map_other_names_in_csv_parquet_and_json(tmp_path):
    rows = [
        ["prompt", "context", "completion", "id"],
        ["Add 2 and 3.", "", "5", "a"],
        ["Plural of mouse?", "x", "mice", "b"],
    ]
    expected = [
        {"instruction": "Add 2 and 3.", "input": "", "output": "5", "id": "a"},
        {"instruction": "Plural of mouse?", "input": "x", "output": "mice", "id": "b"},
    ]
    columns = parse_columns("instruction=prompt, output=completion,input=context")
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(records), tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(records))
    for path in (_write_csv(tmp_path / "d.csv", rows), tmp_path / "d.parquet", tmp_path / "d.json"):
        assert load_entries(path, columns) == expected, path


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            "instruction=prompt,answer=completion",
            "--columns {c}: unknown key 'answer'; map columns to instruction, input, output",
        ),
        ("instruction=prompt,output", "--columns {c}: expected KEY=COLUMN pairs separated by commas, got 'output'"),
        ("instruction=prompt,instruction=q", "--columns {c}: 'instruction' is mapped twice"),
        (
            "instruction=prompt,output=answer",
            "{csv}: no column 'answer' (for 'output'); its columns: prompt, completion, output",
        ),
        ("instruction=prompt,output=completion", "{csv}: column 'output' would be replaced by 'completion'; rename it"),
    ],
)
def test_bad_column_mappings_are_one_line(columns, message, tmp_path, capsys):
    data = _write_csv(tmp_path / "d.csv", [["prompt", "completion", "output"], ["a", "b", "c"]])
    argv = ["finetune", "--data", str(data), "--columns", columns, "--out", str(tmp_path / "run"), "--model", "tiny"]
    err = one_line_error(capsys, argv)
    assert err == f"error: {message.format(c=columns, csv=data)}\n"
    assert not (tmp_path / "run").exists()


def test_a_json_entry_without_the_mapped_column_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "answer": "d"}\n')
    with pytest.raises(UserError) as error:
        load_entries(path, {"instruction": "prompt", "output": "completion"})
    assert str(error.value) == f"{path}: entry 1: no column 'completion' (for 'output')"


def test_the_cli_reports_a_missing_column_in_one_line_exit_2(tmp_path):
    """The real command line, in a subprocess: one stderr line, exit 2, no run folder."""
    data = _write_csv(tmp_path / "d.csv", [["question", "answer"], ["a", "b"]])
    command = [sys.executable, "-m", "trainer", "finetune", "--data", str(data), "--columns", "instruction=prompt"]
    result = subprocess.run(
        [*command, "--out", str(tmp_path / "run"), "--model", "tiny"], capture_output=True, text=True, cwd=REPO
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"error: {data}: no column 'prompt' (for 'instruction'); its columns: question, answer\n"
    assert not (tmp_path / "run").exists()


# --- chat records ----------------------------------------------------------------------------------------


def _chat_file(tmp_path: Path, *records: dict) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_a_system_message_is_kept_not_dropped(tmp_path):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    sharegpt = {"id": "7", "conversations": [{"from": t["role"], "value": t["content"]} for t in messages]}
    sharegpt["conversations"][1]["from"], sharegpt["conversations"][2]["from"] = "human", "gpt"
    expected = {
        "instruction": "Capital of France?",
        "input": "",
        "output": "Paris.",
        "system": "Answer briefly.",
        "messages": messages,
    }
    assert load_entries(_chat_file(tmp_path, {"messages": messages}, sharegpt)) == [expected, {**expected, "id": "7"}]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 2},
            "entry 0: a conversation of 2 user turns needs a chat style (--style chatml, llama3, phi3-chat or "
            "jinja:FILE); style 'alpaca' holds one instruction",
        ),
        (
            {"messages": [{"role": "assistant", "content": "b"}, {"role": "user", "content": "a"}]},
            "entry 0: a conversation of roles assistant, user; expected an optional system message, then user and "
            "assistant turns in turn, starting with the user",
        ),
        (
            {"messages": [{"role": "tool", "content": "a"}]},
            "entry 0: 'messages' turn 0: unknown role 'tool'; expected one of system, user, human, assistant, gpt",
        ),
        (
            {"messages": [{"role": "user", "content": 5}]},
            "entry 0: 'messages' turn 0: 'content' must be a string, got int",
        ),
        ({"conversations": ["hi"]}, "entry 0: 'conversations' turn 0: expected an object with 'from' and 'value'"),
        ({"messages": []}, "entry 0: 'messages' must be a non-empty list of turns, got list"),
        ({"messages": [{"role": "user", "content": "a"}]}, "entry 0: 'output' is missing"),
    ],
)
def test_bad_chat_records_are_one_line(record, message, tmp_path, capsys):
    path = _chat_file(tmp_path, record)
    err = one_line_error(capsys, ["finetune", "--data", str(path), "--out", str(tmp_path / "run"), "--model", "tiny"])
    assert err == f"error: {path}: {message}\n"


# --- bad files -------------------------------------------------------------------------------------------


def test_bad_files_of_each_format_are_one_line(tmp_path, capsys):
    cases = {}
    cases[_write_csv(tmp_path / "ragged.csv", [["instruction", "output"], ["a", "b", "c"]])] = (
        "entry 0: 3 cells but the header has 2 columns"
    )
    cases[_write_csv(tmp_path / "blank.csv", [["instruction", "output"], ["", "b"]])] = (
        "entry 0: 'instruction' must be a string, got null"
    )
    cases[_write_csv(tmp_path / "twice.csv", [["instruction", "output", "output"], ["a", "b", "c"]])] = (
        "the header names 'output' more than once"
    )
    cases[_write_csv(tmp_path / "header-only.csv", [["instruction", "output"]])] = "the data set is empty"
    (tmp_path / "empty.csv").write_text("")
    cases[tmp_path / "empty.csv"] = "the CSV file is empty (no header row)"
    (tmp_path / "bad.parquet").write_text("not parquet")
    cases[tmp_path / "bad.parquet"] = "not a readable Parquet file (Parquet magic bytes not found in footer. Either"
    (tmp_path / "folder").mkdir()
    cases[tmp_path / "folder"] = f"is a folder; give a data file, or hf:{tmp_path / 'folder'} to read the folder's"
    for path, message in cases.items():
        err = one_line_error(
            capsys, ["finetune", "--data", str(path), "--out", str(tmp_path / "run"), "--model", "tiny"]
        )
        assert err.startswith(f"error: {path}: {message}"), err
    assert not (tmp_path / "run").exists()


def test_hf_sources_that_cannot_load_are_one_line(sample, tmp_path, capsys):
    folder = write_entries(sample, tmp_path, "hf")
    for spec, message in [
        ("hf:", "hf:: no data set name; write hf:NAME or hf:NAME:SPLIT"),
        (
            f"{folder}:test",
            f"{folder}:test: cannot load the data set (Unknown split \"test\". Should be one of ['train'].)",
        ),
        ("hf:no-such-org/no-such-set", "hf:no-such-org/no-such-set:train: cannot load the data set ("),
    ]:
        err = one_line_error(capsys, ["finetune", "--data", spec, "--out", str(tmp_path / "run"), "--model", "tiny"])
        assert err.startswith(f"error: {message}"), err


def test_an_hf_split_slice_and_records_read_as_is(sample, tmp_path):
    folder = write_entries(sample, tmp_path, "hf")
    assert read_records(f"{folder}:train[:3]") == sample[:3]


# --- generate with a run trained on another format -------------------------------------------------------


def test_generate_run_uses_the_runs_csv_columns_and_notices_a_changed_hf_set(sample, tmp_path, capsys):
    from trainer.cli import main

    renamed = [{"prompt": e["instruction"], "context": e["input"], "completion": e["output"]} for e in sample]
    data = write_entries(renamed, tmp_path / "csv", "csv")
    columns = "instruction=prompt,input=context,output=completion"
    finetune(data=data, columns=parse_columns(columns), out=tmp_path / "csv-run", max_steps=1, **QUICK)
    assert json.loads((tmp_path / "csv-run" / "config.json").read_text())["data_columns"] == parse_columns(columns)
    out = tmp_path / "csv-out.json"
    assert main(["generate", "--run", str(tmp_path / "csv-run"), "--out", str(out), "--max-new-tokens", "1"]) == 0
    test_indices = json.loads((tmp_path / "csv-run" / "split.json").read_text())["test"]
    assert _core(json.loads(out.read_text())) == [sample[i] for i in test_indices]

    spec = write_entries(sample, tmp_path / "hf", "hf")
    finetune(data=spec, out=tmp_path / "hf-run", max_steps=1, **QUICK)
    out = tmp_path / "hf-out.json"
    assert main(["generate", "--run", str(tmp_path / "hf-run"), "--out", str(out), "--max-new-tokens", "1"]) == 0
    assert _core(json.loads(out.read_text())) == [sample[i] for i in test_indices]
    assert json.loads((tmp_path / "hf-out.meta.json").read_text())["data"] == f"{spec}:train"
    capsys.readouterr()

    folder = Path(spec.removeprefix("hf:"))
    rotated = sample[70:] + sample[:70]
    shutil.rmtree(folder)
    write_entries(rotated, tmp_path / "hf", "hf")
    err = one_line_error(capsys, ["generate", "--run", str(tmp_path / "hf-run"), "--out", str(tmp_path / "o.json")])
    assert err.startswith(f"error: {spec}:train: changed since {tmp_path / 'hf-run'} was trained on it")


def test_resume_with_another_column_mapping_is_refused(sample, tmp_path):
    """The file's bytes are the same, but the entries are not: resuming would train on other data."""
    renamed = [{"prompt": e["instruction"], "context": e["input"], "completion": e["output"]} for e in sample]
    data = write_entries(renamed, tmp_path, "parquet")
    settings = {"data": data, "out": tmp_path / "run", "max_steps": 2, "eval_every": 1, **QUICK}
    finetune(
        columns=parse_columns("instruction=prompt,input=context,output=completion"), **{**settings, "max_steps": 1}
    )
    with pytest.raises(UserError) as error:
        finetune(columns=parse_columns("instruction=prompt,output=completion"), resume=True, **settings)
    assert str(error.value) == (
        f"{tmp_path / 'run' / 'config.json'}: cannot resume, the run was made with different data_columns"
    )


TURN = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "human", "gpt", "tool"]), "content": TEXT | st.integers()}
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(TURN, max_size=4))
def test_any_conversation_becomes_one_entry_or_one_line(turns, tmp_path_factory):
    """A conversation is read whole (every turn's text kept on the entry) or refused in one line by entry."""
    path = _chat_file(tmp_path_factory.mktemp("chat"), {"messages": turns})
    try:
        [entry] = read_records(path)
    except UserError as error:
        assert str(error).startswith(f"{path}: entry 0: ") and "\n" not in str(error)
        return
    assert [turn["content"] for turn in entry["messages"]] == [turn["content"] for turn in turns]
    assert entry["instruction"] == next(turn["content"] for turn in turns if turn["role"] in ("user", "human"))
    assert entry.get("system") == (turns[0]["content"] if turns[0]["role"] == "system" else None)
