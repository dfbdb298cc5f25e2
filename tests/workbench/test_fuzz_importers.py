"""Fuzzing the importers: valid files, mutated (keys dropped or added, types changed, text truncated, nested
deeply, NaN, huge numbers, odd Unicode), fed to ``import``, ``import-scores`` and the run-folder import.

Whatever the input, an importer either imports it or raises a one-line ``UserError`` (which the CLI prints as
one ``error:`` line, exit 2); a refused input leaves the database exactly as it was (issue #14). The
functions are called in this process, so a few hundred inputs take seconds; one test runs a sample of refused
inputs through the real CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trainer.data import load_entries
from trainer.errors import UserError
from workbench import importing, store

REPO = Path(__file__).parents[2]
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

ENTRIES = [
    {"instruction": "Say hi.", "input": "", "output": "Hi.", "m": "Hello."},
    {"instruction": "Add 2 and 3.", "input": "2, 3", "output": "5", "m": "5"},
]
SCORES = [50, 75.5]
SCORE_OBJECTS = [{"item_id": "ITEM", "score": 3, "rationale": "fine", "latency_s": 0.5}]
CONFIG = {"name": "fuzz-run", "model_name": "gpt2", "style": "alpaca", "data": "data.json", "train": {"lr": 5e-5}}
METRICS = [
    {"step": 0, "epoch": 0.0, "tokens_seen": 0, "train_loss": 3.2, "val_loss": 3.3},
    {"step": 5, "epoch": 0.5, "tokens_seen": 640, "train_loss": 2.1, "val_loss": 2.4},
]
SPLIT = {"train": [0], "test": [1], "val": []}
META = {
    "run": "/runs/fuzz",
    "name": "fuzz-run",
    "response_key": "gen",
    "split": "test",
    "data": "data.json",
    "decoding": {"max_new_tokens": 8, "temperature": 0.0},
}

ODD_TEXT = st.sampled_from(
    ["", "\x00", "\ud800", "\udfff x", "\u202e", "\ufeff", "𝔘𝔫𝔦", "é" * 300, "=1+1", "\r\n", "\u2028", "\x85"]
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([10**300, float("nan"), float("inf"), float("-inf"), -0.0, 1e308, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    ODD_TEXT,
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
KEYS = st.sampled_from(["instruction", "input", "output", "m", "step", "score", "item_id", "name", "data", "split"])


@st.composite
def mutated(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with one change somewhere inside: a key dropped or added, an element dropped, duplicated or
    added, a value replaced by one of another type; or unchanged."""
    action = draw(st.sampled_from(["keep", "replace", "drop", "add", "duplicate", "inside", "inside"]))
    if action == "replace" or (action == "inside" and depth > 4):
        return draw(VALUES)
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        if action == "drop":
            return {k: v for k, v in value.items() if k != key}
        if action == "add":
            return {**value, draw(KEYS | st.text(max_size=8)): draw(VALUES)}
        if action == "inside":
            return {**value, key: draw(mutated(value[key], depth + 1))}
    if isinstance(value, list) and value:
        index = draw(st.integers(0, len(value) - 1))
        if action == "drop":
            return value[:index] + value[index + 1 :]
        if action == "add":
            return [*value, draw(VALUES)]
        if action == "duplicate":
            return [*value, value[index]]
        if action == "inside":
            return [*value[:index], draw(mutated(value[index], depth + 1)), *value[index + 1 :]]
    return value


@st.composite
def file_text(draw: st.DrawFn, valid: Any, *, jsonl: bool = False) -> bytes:
    """A file's bytes: ``valid`` mutated up to three times, written as JSON (or JSON Lines), then perhaps
    truncated, nested deeply, given a stray byte or a huge number."""
    value = valid
    for _ in range(draw(st.integers(0, 3))):
        value = draw(mutated(value))
    ascii_only = draw(st.booleans())
    if jsonl and isinstance(value, list):
        text = "".join(json.dumps(row, ensure_ascii=ascii_only) + "\n" for row in value)
    else:
        text = json.dumps(value, ensure_ascii=ascii_only)
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "nest", "byte", "digits"]))
    if damage == "truncate":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif damage == "nest":
        cut = draw(st.integers(0, len(text)))
        depth = draw(st.sampled_from([50, 5000, 100_000]))
        text = text[:cut] + "[" * depth + "]" * depth * draw(st.integers(0, 1)) + text[cut:]
    elif damage == "digits":  # a number of 5,001 digits, more than Python converts by default
        text = text.replace("5", "5" + "0" * 5000, 1)
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate written raw is invalid UTF-8
    if damage == "byte":
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xef\xbb\xbf"])) + data[cut:]
    return data


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    """A folder with ``data.json`` and a store holding it (data set ``data``, model ``m``)."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "data.json").write_text(json.dumps(ENTRIES))
    importing.import_path(store.open_db(folder / "fuzz.db"), folder / "data.json")
    return folder


@pytest.fixture(scope="module")
def db(fuzz_dir):
    return store.open_db(fuzz_dir / "fuzz.db")


REFUSED: list[tuple[str, bytes]] = []  # (kind, file bytes) of refused inputs, for the CLI check


def imports_or_refuses_cleanly(db, kind: str, data: bytes, run_import: Callable[[], object]) -> None:
    """Run one import: success, or a one-line UserError with the store unchanged; anything else fails."""
    before = list(db.conn.iterdump())
    try:
        run_import()
        event("imported")
    except UserError as exc:
        event("refused")
        assert "\n" not in str(exc), str(exc)
        assert not db.conn.in_transaction
        assert list(db.conn.iterdump()) == before, f"refused input changed the store: {exc}"
        if len(REFUSED) < 40:
            REFUSED.append((kind, data))


@FUZZ
@given(data=file_text(ENTRIES), jsonl=st.booleans())
def test_fuzzed_data_sets(db, fuzz_dir, data, jsonl):
    path = fuzz_dir / ("fuzzed.jsonl" if jsonl else "fuzzed.json")
    path.write_bytes(data)
    imports_or_refuses_cleanly(db, path.suffix, data, lambda: importing.import_path(db, path))
    try:  # finetune reads data files with the same reader and entry validator
        load_entries(path)
    except UserError as exc:
        assert "\n" not in str(exc), str(exc)


# CSV text: a header that may or may not name the entry keys, then rows of cells with quotes, separators and
# line ends in odd places.
CSV_TEXT = st.builds(
    "".join,
    st.lists(
        st.sampled_from(["instruction", "input", "output", "m", ",", '"', "\n", "\r\n", "x", " ", "é", ""]), max_size=30
    ),
)


@FUZZ
@given(data=file_text(ENTRIES, jsonl=True), csv=CSV_TEXT)
def test_fuzzed_jsonl_and_csv_files(db, fuzz_dir, data, csv):
    path = fuzz_dir / "fuzzed.jsonl"
    path.write_bytes(data)
    imports_or_refuses_cleanly(db, ".jsonl", data, lambda: importing.import_path(db, path))
    path = fuzz_dir / "fuzzed.csv"  # the workbench and finetune read CSV too: imported or refused in one line
    path.write_text(csv, encoding="utf-8", newline="")
    imports_or_refuses_cleanly(db, ".csv", csv.encode(), lambda: importing.import_path(db, path))
    try:
        load_entries(path)
    except UserError as exc:
        assert "\n" not in str(exc), str(exc)


@FUZZ
@given(data=file_text(SCORES) | file_text(SCORE_OBJECTS), judge=st.sampled_from(["fuzz", "fuzz-1-5"]))
def test_fuzzed_score_files(db, fuzz_dir, data, judge):
    item = store.dataset_items(db, "data")[0]["id"]
    path = fuzz_dir / "scores.json"
    path.write_bytes(data.replace(b"ITEM", item.encode()))
    score_range = (0.0, 100.0) if judge == "fuzz" else (1.0, 5.0)

    def run() -> None:
        importing.import_scores(db, path, judge=judge, response_key="m", dataset="data", score_range=score_range)

    imports_or_refuses_cleanly(db, "scores", data, run)


@FUZZ
@given(
    config=file_text(CONFIG),
    metrics=file_text(METRICS, jsonl=True),
    split=file_text(SPLIT),
    missing=st.sets(st.sampled_from(["metrics.jsonl", "split.json"])),
)
def test_fuzzed_run_folders(db, fuzz_dir, config, metrics, split, missing):
    run = fuzz_dir / "run"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_bytes(config.replace(b"data.json", str(fuzz_dir / "data.json").encode()))
    for name, data in (("metrics.jsonl", metrics), ("split.json", split)):
        (run / name).unlink(missing_ok=True)
        if name not in missing:
            (run / name).write_bytes(data)
    imports_or_refuses_cleanly(db, "run", metrics, lambda: importing.import_path(db, run))


@FUZZ
@given(output=file_text([{**e, "gen": f"generated {i}"} for i, e in enumerate(ENTRIES)]), meta=file_text(META))
def test_fuzzed_generation_output_and_meta(db, fuzz_dir, output, meta):
    path = fuzz_dir / "generated.json"
    path.write_bytes(output)
    path.with_name("generated.meta.json").write_bytes(meta.replace(b"data.json", str(fuzz_dir / "data.json").encode()))
    imports_or_refuses_cleanly(db, "generation", output, lambda: importing.import_path(db, path))


def test_the_cli_prints_one_line_for_refused_fuzz_inputs(fuzz_dir, tmp_path):
    """A sample of the inputs the fuzz tests above saw refused, through the real ``workbench import``."""
    samples = [(kind, data) for kind, data in REFUSED if kind in (".json", ".jsonl")][:8]
    if len(samples) < 3:
        pytest.skip("run with the fuzz tests above (they collect the refused inputs)")
    db_file = tmp_path / "cli.db"
    importing.import_path(store.open_db(db_file), fuzz_dir / "data.json")
    paths = []
    for index, (suffix, data) in enumerate(samples):
        paths.append(tmp_path / f"refused-{index}{suffix}")
        paths[-1].write_bytes(data)
    code = (
        "import sys\nfrom workbench.cli import main\n"
        "for path in sys.argv[2:]:\n"
        "    code = main(['import', path, '--db', sys.argv[1]])\n"
        "    print(f'exit {code}', file=sys.stderr, flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(db_file), *map(str, paths)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and result.stdout == "", result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 2 * len(paths), result.stderr[-2000:]
    for path, error, exit_line in zip(paths, lines[::2], lines[1::2], strict=True):
        assert error.startswith(f"error: {path}") and exit_line == "exit 2", (error, exit_line)
