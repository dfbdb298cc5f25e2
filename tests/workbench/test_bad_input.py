"""Bad input to ``import``, ``import-scores``, ``export`` and ``finetune``'s data loading: one ``error:`` line,
exit code 2, no traceback, and the store left exactly as it was (issue #14)."""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli import main as trainer_main
from trainer.errors import UserError
from workbench import cli, importing, store

REPO = Path(__file__).parents[2]
DEEP = "[" * 100_000


def run_cli(capsys, *argv) -> tuple[int, str]:
    """``workbench ARGV`` in this process: its exit code and what it printed on stderr."""
    code = cli.main([str(arg) for arg in argv])
    return code, capsys.readouterr().err


def unprivileged() -> list[str]:
    """A command prefix under which file permissions hold: root ignores ``chmod``, but not inside a new user
    namespace, where it keeps its uid and loses the capability to override permissions."""
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--user", "true"]).returncode != 0:
        pytest.skip("running as root and cannot drop the capability to ignore file permissions")
    return ["unshare", "--user"]


def workbench_process(*argv, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    """The ``workbench`` command in its own process (exit code, stdout, stderr as text)."""
    command = [*prefix, sys.executable, "-c", "import sys; from workbench.cli import main; sys.exit(main())"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*command, *map(str, argv)], capture_output=True, text=True, env=env, timeout=60)


def dump(db_file: Path) -> list[str]:
    """Every schema entry and row of a database file as SQL, read without the workbench (which may refuse it)."""
    connection = sqlite3.connect(db_file)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def close_all(db_file: Path) -> None:
    """Close every connection this process still holds, so that SQLite folds its -wal file into the database
    and removes it: a read-only folder then really leaves SQLite nowhere to write."""
    gc.collect()
    store.open_db(db_file).close()
    assert not db_file.with_name(db_file.name + "-wal").exists()


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "Hi.", "m": "Hello."}]))
    return path


@pytest.fixture
def filled_db(db_path, data_file) -> Path:
    """A store holding data set ``data`` (one item) with model ``m``'s response."""
    importing.import_path(store.open_db(db_path), data_file)
    return db_path


# --- 1: deeply nested JSON --------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "where"), [(".json", ""), (".jsonl", "line 1: ")])
def test_deeply_nested_json_is_one_line_for_import_import_scores_and_finetune(
    tmp_path, filled_db, db_snapshot, capsys, suffix, where
):
    deep = tmp_path / f"deep{suffix}"
    deep.write_text(DEEP)
    expected = f"error: {deep}: {where}JSON nested too deeply to read\n"
    before = db_snapshot(filled_db)
    assert run_cli(capsys, "import", deep, "--db", filled_db) == (2, expected)
    assert run_cli(capsys, "import-scores", deep, "--db", filled_db, "--judge", "j", "--response-key", "m") == (
        2,
        expected,
    )
    assert db_snapshot(filled_db) == before
    assert trainer_main(["finetune", "--data", str(deep), "--model", "tiny", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == expected


@pytest.mark.parametrize("name", ["metrics.jsonl", "split.json", "config.json"])
def test_nested_json_in_run_folder_files_is_one_line(tmp_path, filled_db, capsys, name):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"name": "r"}))
    (run / name).write_text(DEEP)
    where = "line 1: " if name.endswith(".jsonl") else ""
    expected = f"error: {run / name}: {where}JSON nested too deeply to read\n"
    assert run_cli(capsys, "import", run, "--db", filled_db) == (2, expected)


# --- 2: a schema_version that is not a whole number -------------------------------------------------------


@pytest.mark.parametrize("value", ["three", "2.5", "-1", ""])
def test_a_schema_version_that_is_not_a_whole_number_is_refused(filled_db, data_file, capsys, value):
    db = store.open_db(filled_db)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [value])
    db.conn.commit()
    db.close()
    before = dump(filled_db)
    expected = (
        f"error: {filled_db}: schema_version {value!r} in table meta is not a version number; "
        "the file is damaged or not a workbench database\n"
    )
    assert run_cli(capsys, "import", data_file, "--db", filled_db) == (2, expected)
    assert run_cli(capsys, "export", "--db", filled_db, "--format", "json", "--out", filled_db.parent / "x.json") == (
        2,
        expected,
    )
    assert dump(filled_db) == before


# --- 3: a read-only database -------------------------------------------------------------------------------


def test_a_read_only_connection_is_a_user_error_and_writes_nothing(filled_db, tmp_path, db_snapshot):
    before = db_snapshot(filled_db)
    db = store.open_db(filled_db)
    db.execute("PRAGMA query_only = ON")  # SQLite answers every write as it does for a read-only file
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"instruction": "Say bye.", "m": "Bye."}]))
    message = re.escape(f"{filled_db}: cannot write (attempt to write a readonly database); check the permissions")
    with pytest.raises(UserError, match=f"^{message}"):
        importing.import_path(db, other)
    scores = tmp_path / "scores.json"
    scores.write_text("[50]")
    with pytest.raises(UserError, match=f"^{message}"):
        importing.import_scores(db, scores, judge="j", response_key="m")
    assert not db.conn.in_transaction
    assert db_snapshot(filled_db) == before


@pytest.mark.parametrize("read_only", ["file", "folder"])
def test_import_into_a_read_only_database_file_or_folder_is_one_line(filled_db, tmp_path, read_only):
    prefix = unprivileged()
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"instruction": "Say bye.", "m": "Bye."}]))
    scores = tmp_path / "scores.json"
    scores.write_text("[50]")
    close_all(filled_db)
    before = dump(filled_db)
    locked = filled_db if read_only == "file" else filled_db.parent
    mode = locked.stat().st_mode
    locked.chmod(0o444 if read_only == "file" else 0o555)
    try:
        for argv in (
            ["import", other, "--db", filled_db],
            ["import-scores", scores, "--db", filled_db, "--judge", "j", "--response-key", "m"],
        ):
            result = workbench_process(*argv, prefix=prefix)
            assert (result.returncode, result.stdout) == (2, "")
            assert result.stderr.startswith(f"error: {filled_db}: cannot ") and result.stderr.count("\n") == 1, (
                result.stderr
            )
    finally:
        locked.chmod(mode)
    assert dump(filled_db) == before


# --- 4: an export that cannot be written ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_to_an_unwritable_path_is_one_line_and_leaves_no_file(filled_db, tmp_path, capsys, fmt):
    folder = tmp_path / "a folder"
    folder.mkdir()
    cases = {
        folder: f"error: {folder}: is a folder; give a file name such as {folder / f'export.{fmt}'}\n",
        tmp_path / "data.json" / "x.json": f"error: {tmp_path / 'data.json' / 'x.json'}: {tmp_path / 'data.json'} "
        "is a file, not a folder\n",
        Path("/proc/x"): "error: /proc/x: cannot write (",
        Path("/dev/full"): "error: /dev/full: cannot write (No space left on device)\n",
    }
    for out, expected in cases.items():
        code, err = run_cli(capsys, "export", "--db", filled_db, "--format", fmt, "--out", out)
        assert code == 2 and err.startswith(expected) and err.count("\n") == 1, (out, err)
    assert list(folder.iterdir()) == []
    assert not Path("/proc/x").exists()


def test_export_into_a_read_only_folder_is_one_line_and_leaves_no_file(filled_db, tmp_path):
    prefix = unprivileged()
    folder = tmp_path / "locked"
    folder.mkdir()
    close_all(filled_db)
    folder.chmod(0o555)
    try:
        out = folder / "x.json"
        result = workbench_process("export", "--db", filled_db, "--format", "json", "--out", out, prefix=prefix)
    finally:
        folder.chmod(0o755)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"error: {out}: cannot write (") and result.stderr.count("\n") == 1
    assert list(folder.iterdir()) == []


def test_a_failed_export_keeps_the_earlier_file(filled_db, tmp_path):
    out = tmp_path / "out.json"
    out.write_text("earlier export\n")
    with pytest.raises(UserError, match="no data set named 'NOSUCH'"):
        importing.export(store.open_db(filled_db), "json", out, dataset="NOSUCH")
    assert out.read_text() == "earlier export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- 5: run folders and generation metadata with wrong content ---------------------------------------------


def _run_folder(tmp_path, metrics: str, split: str | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text(json.dumps({"name": "r", "data": str(tmp_path / "data.json")}))
    (run / "metrics.jsonl").write_text(metrics)
    if split is not None:
        (run / "split.json").write_text(split)
    return run


@pytest.mark.parametrize(
    ("metrics", "split", "message"),
    [
        ('{"step": 1}\n{"step": 2}\n{"step": 1}\n', None, "metrics.jsonl: record 3: step 1 repeats record 1"),
        (
            '{"step": 1, "val_loss": 2}\n{"step": 1, "judge_score": 5}\n{"step": 1, "judge_score": 6}\n',
            None,
            "metrics.jsonl: record 3: step 1 repeats record 2 ('judge_score')",
        ),
        ('{"step": 1, "judge_win_rate": NaN}\n', None, "metrics.jsonl: record 1: 'judge_win_rate' must be a finite"),
        ('{"step": 1e3}\n', None, "metrics.jsonl: record 1: 'step' must be a whole number, got float"),
        ('{"step": 99999999999999999999}\n', None, "metrics.jsonl: record 1: 'step' 99999999999999999999 is too large"),
        ('{"step": 1, "tokens_seen": 1e99999}\n', None, "metrics.jsonl: record 1: 'tokens_seen' must be a finite"),
        ('{"step": 1, "tokens_seen": 1.5}\n', None, "metrics.jsonl: record 1: 'tokens_seen' must be a whole number"),
        ('{"step": 1, "epoch": "one"}\n', None, "metrics.jsonl: record 1: 'epoch' must be a number, got str"),
        ("", '{"test": [99999999999999999999]}', "split.json: expected an object mapping split names to lists"),
        ("", '{"test": [-1]}', "split.json: expected an object mapping split names to lists"),
    ],
)
def test_bad_run_folders_are_one_line_and_write_nothing(
    tmp_path, filled_db, db_snapshot, capsys, metrics, split, message
):
    run = _run_folder(tmp_path, metrics, split)
    before = db_snapshot(filled_db)
    code, err = run_cli(capsys, "import", run, "--db", filled_db)
    assert (code, err.count("\n")) == (2, 1) and err.startswith(f"error: {run}/") and message in err, err
    assert db_snapshot(filled_db) == before


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"response_key": "m", "name": 5}, "'name' must be a string, got int"),
        ({"response_key": "m", "name": ["a"]}, "'name' must be a string, got list"),
        ({"response_key": 5}, "'response_key' must be a string, got int"),
        ({"response_key": "m", "responses": [1]}, "'responses' must be an object, got list"),
        ({"response_key": "m", "responses": {"m": 3}}, "'responses' → 'm' must be an object, got int"),
        ({"response_key": "m", "responses": {"m": {"run": 7}}}, "'responses' → 'm' → 'run' must be a string, got int"),
        ({"response_key": "m", "split": ["a"]}, "'split' must be a string, got list"),
        ({"response_key": "m", "split": 5}, "'split' must be a string, got int"),
        ({"response_key": "m", "data": 7}, "'data' must be a string, got int"),
        ({"response_key": "m", "decoding": "x"}, "'decoding' must be an object, got str"),
    ],
)
def test_wrong_typed_generation_metadata_is_one_line_and_writes_nothing(
    data_file, filled_db, db_snapshot, capsys, meta, message
):
    meta_file = data_file.with_name("data.meta.json")
    meta_file.write_text(json.dumps(meta))
    before = db_snapshot(filled_db)
    assert run_cli(capsys, "import", data_file, "--db", filled_db) == (2, f"error: {meta_file}: {message}\n")
    assert db_snapshot(filled_db) == before


# --- 6: exporting a data set that is not there ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "preferences"])
def test_export_of_an_unknown_data_set_is_refused(filled_db, tmp_path, capsys, fmt):
    importing.import_path(store.open_db(filled_db), tmp_path / "data.json", dataset="b")
    out = tmp_path / "out.json"
    code, err = run_cli(capsys, "export", "--db", filled_db, "--format", fmt, "--dataset", "NOSUCH", "--out", out)
    assert (code, err) == (2, "error: no data set named 'NOSUCH' (known: data, b)\n")
    assert not out.exists()


# --- 7: one entry validator for import and finetune -------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"input": "", "output": "b"}, "entry 0: 'instruction' is missing"),
        ({"instruction": None, "output": "b"}, "entry 0: 'instruction' must be a string, got null"),
        ({"instruction": "a", "input": 0, "output": "b"}, "entry 0: 'input' must be a string, got int"),
        ({"instruction": "a", "input": False, "output": "b"}, "entry 0: 'input' must be a string, got bool"),
        ("a", "entry 0: expected an object with 'instruction', got str"),
    ],
)
def test_import_and_finetune_refuse_the_same_entries_with_the_same_message(tmp_path, db_path, capsys, entry, message):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([entry]))
    assert run_cli(capsys, "import", path, "--db", db_path) == (2, f"error: {path}: {message}\n")
    assert trainer_main(["finetune", "--data", str(path), "--model", "tiny", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: {path}: {message}\n"


def test_import_and_finetune_both_read_a_null_input_as_empty(tmp_path, db_path):
    from trainer.data import load_entries

    path = tmp_path / "d.json"
    path.write_text(
        json.dumps([{"instruction": "a", "input": None, "output": "b"}, {"instruction": "c", "output": "d"}])
    )
    assert [e["input"] for e in load_entries(path)] == ["", ""]
    db = store.open_db(db_path)
    importing.import_path(db, path)
    assert [i["input"] for i in store.dataset_items(db, "d")] == ["", ""]


# --- 8: diverged runs with non-finite losses ---------------------------------------------------------------


def test_non_finite_losses_are_stored_as_empty_and_flagged(tmp_path, filled_db, capsys):
    run = _run_folder(
        tmp_path,
        '{"step": 0, "train_loss": 3.0, "val_loss": 3.1}\n'
        '{"step": 5, "train_loss": NaN, "val_loss": Infinity}\n'
        '{"step": 10, "train_loss": NaN, "val_loss": 2.0}\n'
        '{"step": 15, "train_loss": 1.5, "val_loss": null}\n',
    )
    code, out = cli.main(["import", str(run), "--db", str(filled_db)]), capsys.readouterr().out
    assert code == 0
    assert out == "imported run folder: 1 model(s) (r), 4 metrics, 3 non-finite losses stored as empty\n"
    db = store.open_db(filled_db)
    assert [(m["step"], m["train_loss"], m["val_loss"]) for m in store.training_metrics(db, "r")] == [
        (0, 3.0, 3.1),
        (5, None, None),
        (10, None, 2.0),
        (15, 1.5, None),
    ]
    flags = db.execute("SELECT step, non_finite_json FROM training_metrics ORDER BY step").fetchall()
    assert [(step, json.loads(flag) if flag else None) for step, flag in flags] == [
        (0, None),
        (5, {"train_loss": "nan", "val_loss": "inf"}),
        (10, {"train_loss": "nan"}),
        (15, None),
    ]
    assert cli.main(["import", str(run), "--db", str(filled_db)]) == 0  # a re-import changes nothing
    assert capsys.readouterr().out.startswith("nothing new: the store already holds this file's run folder")


# --- 9: a judge's score range -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "score_range", [("nan", "nan"), ("0", "nan"), ("inf", "5"), ("0", "inf"), ("5", "5"), ("9", "1")]
)
def test_a_score_range_that_is_not_two_finite_ascending_numbers_is_refused(
    tmp_path, filled_db, db_snapshot, capsys, score_range
):
    scores = tmp_path / "scores.json"
    scores.write_text("[50]")
    before = db_snapshot(filled_db)
    low, high = score_range
    argv = ["import-scores", scores, "--db", filled_db, "--judge", "j", "--response-key", "m"]
    assert run_cli(capsys, *argv, "--score-range", low, high) == (
        2,
        f"error: --score-range {float(low):g} {float(high):g}: the judge's scale needs two finite numbers, "
        "the lowest first\n",
    )
    assert db_snapshot(filled_db) == before


# --- 10: generation output imports under the response key the user chose ----------------------------------


def _generation(tmp_path, data_file, key: str) -> Path:
    entries = [{"instruction": e["instruction"], "input": e["input"]} for e in json.loads(data_file.read_text())]
    output = tmp_path / "responses.json"
    output.write_text(json.dumps([{**e, key: "generated"} for e in entries]))
    record = {"run": str(tmp_path / "runs" / "sft"), "name": "sft", "response_key": key, "data": str(data_file)}
    output.with_name("responses.meta.json").write_text(json.dumps({**record, "responses": {key: record}}))
    return output


def test_generation_output_imports_under_the_chosen_response_key(tmp_path, filled_db):
    db = store.open_db(filled_db)
    summary = importing.import_path(db, _generation(tmp_path, tmp_path / "data.json", "tiny-sft"))
    assert summary.models == ["tiny-sft"]
    assert [r["text"] for r in store.response_rows(db, models=["tiny-sft"])] == ["generated"]
    assert db["models"].get(store.model_id(db, "tiny-sft"))["run_dir"] == str(tmp_path / "runs" / "sft")


def test_generation_output_under_the_default_key_imports_under_the_run_name(tmp_path, filled_db):
    db = store.open_db(filled_db)
    summary = importing.import_path(db, _generation(tmp_path, tmp_path / "data.json", "model_response"))
    assert summary.models == ["sft"]


def test_a_real_generation_under_a_chosen_key_imports_as_that_model(tiny_run, tmp_path, db_path):
    from trainer.generate import generate_file

    output = generate_file(
        tmp_path / "out.json", run=tiny_run, response_key="tiny-sft", max_new_tokens=2, device="cpu", progress=False
    )
    db = store.open_db(db_path)
    summary = importing.import_path(db, output)
    assert (summary.kind, summary.models) == ("generation output", ["tiny-sft"])
    assert db["models"].get(store.model_id(db, "tiny-sft"))["run_dir"] == str(tiny_run.resolve())


@pytest.mark.parametrize("separator", ["\u2028", "\x85", "\x1c"])
def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path, db_path, separator):
    """JSON allows U+2028 and friends unescaped inside strings; only a newline ends a JSON Lines record."""
    from trainer.data import load_entries

    path = tmp_path / "odd.jsonl"
    entry = {"instruction": f"one{separator}two", "input": "", "output": "three"}
    path.write_text(json.dumps(entry, ensure_ascii=False) + "\r\n", encoding="utf-8")
    assert load_entries(path) == [entry]
    importing.import_path(store.open_db(db_path), path)
    assert store.dataset_items(store.open_db(db_path), "odd")[0]["instruction"] == f"one{separator}two"


def test_unpaired_surrogates_are_refused_in_one_line(tmp_path, db_path, capsys):
    path = tmp_path / "surrogate.json"
    path.write_text('[{"instruction": "a\\ud800", "output": "b"}]')
    assert run_cli(capsys, "import", path, "--db", db_path) == (
        2,
        f"error: {path}: a string holds an unpaired surrogate escape (\\ud800)\n",
    )
