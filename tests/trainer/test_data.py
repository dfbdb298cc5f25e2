"""Instruction data: exact prompt formats, the book's split sizes, collate tensors, bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from trainer.cli import main as trainer_main
from trainer.data import (
    STYLES,
    InstructionDataset,
    collate,
    extract_response,
    format_example,
    format_prompt,
    load_entries,
    split_entries,
)
from trainer.errors import UserError

E = 50256  # end of text, also the padding token
WITH_INPUT = {"instruction": "Convert to plural.", "input": "mouse", "output": "mice"}
WITHOUT_INPUT = {"instruction": "Name a prime number.", "input": "", "output": "Seven."}
PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


def test_alpaca_format_exact_strings():
    assert format_prompt(WITH_INPUT, "alpaca") == (
        f"{PREAMBLE}\n\n### Instruction:\nConvert to plural.\n\n### Input:\nmouse\n\n### Response:"
    )
    assert format_example(WITHOUT_INPUT, "alpaca") == (
        f"{PREAMBLE}\n\n### Instruction:\nName a prime number.\n\n### Response:\nSeven."
    )


def test_phi3_format_exact_strings():
    assert format_prompt(WITH_INPUT, "phi3") == "<|user|>\nConvert to plural.\nmouse\n<|assistant|>"
    assert format_example(WITHOUT_INPUT, "phi3") == "<|user|>\nName a prime number.\n<|assistant|>\nSeven."


@pytest.mark.parametrize("style", STYLES)
def test_extract_response_round_trip(style):
    generated = format_example(WITH_INPUT, style)
    assert extract_response(generated, style) == "mice"
    assert extract_response("no marker here ", style) == "no marker here"


def test_unknown_style_is_a_user_error():
    with pytest.raises(UserError, match="unknown prompt style 'chatgpt'"):
        format_prompt(WITH_INPUT, "chatgpt")


def test_book_split_sizes_in_file_order(shared_dir):
    entries = load_entries(shared_dir / "datasets" / "instruction-data.json")
    split = split_entries(entries)
    assert (len(split.train), len(split.test), len(split.val)) == (935, 110, 55)
    assert split.train[0] is entries[0] and split.test[0] is entries[935] and split.val[-1] is entries[-1]
    assert split.indices["test"] == list(range(935, 1045))


def test_seeded_shuffle_is_reproducible_and_a_partition(sample_data):
    entries = load_entries(sample_data)
    first, again = split_entries(entries, seed=7), split_entries(entries, seed=7)
    assert first.indices == again.indices
    assert first.indices["train"] != list(range(len(first.train)))
    every = first.indices["train"] + first.indices["test"] + first.indices["val"]
    assert sorted(every) == list(range(len(entries)))


def test_bundled_sample_is_valid_and_varied(sample_data):
    entries = load_entries(sample_data)
    assert len(entries) >= 60
    assert 0 < sum(bool(e["input"]) for e in entries) < len(entries)
    split = split_entries(entries)
    assert (len(split.train), len(split.test), len(split.val)) == (66, 7, 5)


def test_split_with_an_empty_part_is_refused():
    entries = [dict(WITHOUT_INPUT) for _ in range(5)]
    with pytest.raises(UserError, match="the test split is empty"):
        split_entries(entries)


# (token ids, which are response): prompts of 3, 1 and 2 tokens
BATCH = [([1, 2, 3, 4, 5], [False] * 3 + [True] * 2), ([6, 7], [False, True]), ([8, 9, 10], [False] * 2 + [True])]


def test_collate_pads_adds_end_of_text_and_ignores_extra_padding():
    inputs, targets = collate(BATCH)
    assert inputs.tolist() == [[1, 2, 3, 4, 5], [6, 7, E, E, E], [8, 9, 10, E, E]]
    assert targets.tolist() == [[2, 3, 4, 5, E], [7, E, -100, -100, -100], [9, 10, E, -100, -100]]
    assert inputs.dtype == targets.dtype == torch.int64


def test_collate_masks_the_prompt_and_truncates():
    inputs, targets = collate(BATCH, mask_prompt=True, max_length=4)
    assert inputs.tolist() == [[1, 2, 3, 4], [6, 7, E, E], [8, 9, 10, E]]
    assert targets.tolist() == [[-100, -100, 4, 5], [7, E, -100, -100], [-100, 10, E, -100]]


@pytest.mark.parametrize("style", ["alpaca", "phi3"])
def test_prompt_tokens_are_a_prefix_of_the_example_tokens(sample_data, tokenizer, style):
    """Prompt masking counts prompt tokens separately; that is only right if they tokenize the same."""
    entries = load_entries(sample_data)
    dataset = InstructionDataset(entries, tokenizer, style)
    for entry, (ids, trained) in zip(entries, dataset.examples, strict=True):
        prompt_length = trained.index(True)
        assert all(trained[prompt_length:])
        assert tokenizer.decode(ids[:prompt_length]) == format_prompt(entry, style)
        assert tokenizer.decode(ids[prompt_length:]) == "\n" + entry["output"]


def test_end_of_text_written_in_data_is_plain_text(tokenizer):
    entry = {"instruction": "Echo <|endoftext|>", "input": "", "output": "ok"}
    ((ids, _),) = InstructionDataset([entry], tokenizer, "alpaca").examples
    assert E not in ids


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_jsonl_loads_and_defaults_input(tmp_path):
    path = _write(
        tmp_path,
        "d.jsonl",
        '{"instruction": "a", "output": "b", "id": 3}\n\n{"instruction": "c", "input": "x", "output": "d"}\n',
    )
    assert load_entries(path) == [
        {"instruction": "a", "input": "", "output": "b", "id": 3},
        {"instruction": "c", "input": "x", "output": "d"},
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.json",
            '[{"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}]',
            "bad.json: malformed JSON at line 2, column 22",
        ),
        (
            "bad.jsonl",
            '{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": "d"\n',
            "bad.jsonl: malformed JSON at line 3, column 35",
        ),
        (
            "keys.json",
            '[{"instruction": "a", "output": "b"}, {"instruction": "c"}]',
            "keys.json: entry 1: 'output' is missing",
        ),
        (
            "types.json",
            '[{"instruction": "a", "input": 5, "output": "b"}]',
            "types.json: entry 0: 'input' must be a string, got int",
        ),
        (
            "notdict.json",
            '[{"instruction": "a", "output": "b"}, ["x"]]',
            "notdict.json: entry 1: expected an object with 'instruction', got list",
        ),
        (
            "empty_output.json",
            '[{"instruction": "a", "output": "b"}, {"instruction": "a", "output": "  "}]',
            "empty_output.json: entry 1: empty 'output'",
        ),
        ("empty.json", "[]", "empty.json: the data set is empty"),
        ("empty.jsonl", "\n", "empty.jsonl: the data set is empty"),
        (
            "object.json",
            '{"instruction": "a",\n "output": "b"}',
            "object.json: expected a JSON list of entries (or JSONL), got dict",
        ),
        (
            "lines.json",
            '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": 1}\n',
            "lines.json: entry 1: 'output' must be a string, got int",
        ),
    ],
)
def test_bad_files_name_the_file_and_entry(tmp_path, name, text, message):
    with pytest.raises(UserError) as caught:
        load_entries(_write(tmp_path, name, text))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        load_entries(tmp_path / "nope.json")


def test_cli_reports_bad_data_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, "keys.json", json.dumps([{"instruction": "a"}]))
    code = trainer_main(["finetune", "--data", str(path), "--model", "tiny", "--out", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err == f"error: {path}: entry 0: 'output' is missing\n"
    assert not (tmp_path / "run").exists()


def test_cli_process_exits_2_without_traceback(tmp_path):
    path = _write(tmp_path, "bad.json", '[{"instruction": "a",\n "output": }]')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "finetune",
            "--data",
            str(path),
            "--model",
            "tiny",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    expected = f"error: {path}: malformed JSON at line 2, column 12: Expecting value"
    assert result.stderr.splitlines() == [expected]
