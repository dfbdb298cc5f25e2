"""Benchmark tables: one row per lm-eval run, its scores and its per-question answers.

A run is keyed by a cache key (model, weights, tasks, shots, limit, data) so that a rerun with the same
settings is answered from here; a forced rerun replaces the old run in the transaction that writes the new
one. Figures that compare models (the leaderboard, ``workbench stats`` and ``compare``) are kept apart per
benchmark configuration: task, data folder, shots and number of questions, so that a 32-question sample and
the full MMLU never share a column.
"""

from __future__ import annotations

import json

import sqlite_utils

from workbench.store.core import get_or_create_model, transaction


def find_benchmark_run(db: sqlite_utils.Database, cache_key: str) -> dict | None:
    """The stored run with this cache key, with its model's name, or None."""
    rows = list(
        db.query(
            "SELECT benchmark_runs.*, models.name AS model_name FROM benchmark_runs "
            "JOIN models ON models.id = benchmark_runs.model_id WHERE cache_key = ?",
            [cache_key],
        )
    )
    return rows[0] if rows else None


def _delete_run(db: sqlite_utils.Database, run_id: int) -> None:
    for table in ("benchmark_samples", "benchmark_results"):
        db.execute(f"DELETE FROM {table} WHERE benchmark_run_id = ?", [run_id])
    db.execute("DELETE FROM benchmark_runs WHERE id = ?", [run_id])


def save_benchmark_run(
    db: sqlite_utils.Database,
    *,
    model: dict,
    cache_key: str,
    tasks: list[str],
    num_fewshot: int,
    limit_n: int | None,
    settings: dict,
    lm_eval_version: str,
    started_at: str,
    finished_at: str,
    results: list[dict],
    samples: list[dict],
) -> int:
    """Write a run, its results and its samples in one transaction (replacing a run with the same key).

    ``model`` holds ``get_or_create_model``'s arguments (name, kind, run_dir, config); the model row is
    created in the same transaction. ``samples`` rows carry ``choices`` and ``loglikelihoods`` as lists,
    stored as JSON.
    """
    with transaction(db):
        model_id = get_or_create_model(db, **model)
        old = find_benchmark_run(db, cache_key)
        if old is not None:
            _delete_run(db, old["id"])
        run_id = (
            db["benchmark_runs"]
            .insert(
                {
                    "model_id": model_id,
                    "cache_key": cache_key,
                    "tasks": ",".join(tasks),
                    "num_fewshot": num_fewshot,
                    "limit_n": limit_n,
                    "settings_json": json.dumps(settings, sort_keys=True),
                    "lm_eval_version": lm_eval_version,
                    "started_at": started_at,
                    "finished_at": finished_at,
                }
            )
            .last_pk
        )
        db["benchmark_results"].insert_all({**row, "benchmark_run_id": run_id} for row in results)
        db["benchmark_samples"].insert_all(
            {
                "benchmark_run_id": run_id,
                "task": row["task"],
                "subject": row["subject"],
                "doc_id": row["doc_id"],
                "prompt": row["prompt"],
                "choices_json": json.dumps(row["choices"]),
                "model_choice": row["model_choice"],
                "correct_choice": row["correct_choice"],
                "correct": row["correct"],
                "loglikelihoods_json": json.dumps(row["loglikelihoods"]),
            }
            for row in samples
        )
    return run_id


def benchmark_runs(db: sqlite_utils.Database, *, model: str | None = None) -> list[dict]:
    """Stored runs, newest first, with their model's name; only ``model``'s when given."""
    where, params = ("WHERE models.name = ?", [model]) if model else ("", [])
    return list(
        db.query(
            "SELECT benchmark_runs.*, models.name AS model_name FROM benchmark_runs "
            f"JOIN models ON models.id = benchmark_runs.model_id {where} ORDER BY benchmark_runs.id DESC",
            params,
        )
    )


def benchmark_results(db: sqlite_utils.Database, run_id: int) -> list[dict]:
    """Scores of one run: averages (subject NULL) first, then subjects by name."""
    return list(
        db.query(
            "SELECT task, subject, metric, value, stderr, n, shots, limit_n FROM benchmark_results "
            "WHERE benchmark_run_id = ? ORDER BY task, subject IS NOT NULL, subject, metric",
            [run_id],
        )
    )


def benchmark_samples(
    db: sqlite_utils.Database,
    run_id: int,
    *,
    task: str | None = None,
    subject: str | None = None,
    wrong_only: bool = False,
) -> list[dict]:
    """Per-question answers of one run, with choices and log-likelihoods decoded from JSON."""
    clauses, params = ["benchmark_run_id = ?"], [run_id]
    if task is not None:
        clauses.append("task = ?")
        params.append(task)
    if subject is not None:
        clauses.append("subject = ?")
        params.append(subject)
    if wrong_only:
        clauses.append("correct = 0")
    rows = db.query(
        "SELECT task, subject, doc_id, prompt, choices_json, model_choice, correct_choice, correct, "
        f"loglikelihoods_json FROM benchmark_samples WHERE {' AND '.join(clauses)} "
        "ORDER BY task, subject, doc_id",
        params,
    )
    return [
        {
            **row,
            "choices": json.loads(row.pop("choices_json")),
            "loglikelihoods": json.loads(row.pop("loglikelihoods_json")),
        }
        for row in rows
    ]


# One row per (run, task): its configuration. A task's data folder is the ``dir`` its run's settings name under
# the task (``settings["mmlu"]["dir"]``; tasks of lm-eval's own have none); its questions are the per-question
# answers stored, or else the ``n`` of its overall results.
_CONFIGURATIONS_SQL = """
SELECT run.id AS run_id, m.id AS model_id, m.name AS model, t.task, run.num_fewshot AS shots,
       json_extract(COALESCE(run.settings_json, '{}'), '$."' || t.task || '".dir') AS data_dir,
       COALESCE(NULLIF((SELECT COUNT(*) FROM benchmark_samples s
                        WHERE s.benchmark_run_id = run.id AND s.task = t.task), 0),
                (SELECT MAX(br.n) FROM benchmark_results br
                 WHERE br.benchmark_run_id = run.id AND br.task = t.task AND br.subject IS NULL)) AS questions
FROM (SELECT benchmark_run_id AS run_id, task FROM benchmark_results
      UNION SELECT benchmark_run_id, task FROM benchmark_samples) t
JOIN benchmark_runs run ON run.id = t.run_id JOIN models m ON m.id = run.model_id
"""
CONFIGURATION = ("task", "data_dir", "shots", "questions")


def _newest_configurations(db: sqlite_utils.Database, model: str | None = None) -> list[dict]:
    """Per model and benchmark configuration, the newest run's row (``_CONFIGURATIONS_SQL``), in the order
    task, data folder, shots, questions, model."""
    where, params = ("WHERE m.name = ?", [model]) if model else ("", [])
    newest: dict[tuple, dict] = {}
    for row in db.query(f"{_CONFIGURATIONS_SQL} {where} ORDER BY run.id DESC", params):
        newest.setdefault((row["model_id"], *(row[key] for key in CONFIGURATION)), row)
    return sorted(
        newest.values(),
        key=lambda r: (r["task"], r["data_dir"] or "", r["shots"] or 0, r["questions"] or 0, r["model_id"]),
    )


def newest_benchmark_runs(db: sqlite_utils.Database) -> list[dict]:
    """Per model and benchmark configuration (``CONFIGURATION`` keys), its newest run: ``run_id``, ``model`` and
    the configuration, the runs whose accuracies ``benchmark_accuracy`` reports."""
    return [{key: row[key] for key in ("run_id", "model", *CONFIGURATION)} for row in _newest_configurations(db)]


def benchmark_accuracy(db: sqlite_utils.Database) -> list[dict]:
    """Each model's overall accuracies (``acc``, MMLU's ``acc_macro``/``acc_micro``, ...) per benchmark
    configuration (``CONFIGURATION`` keys), from its newest run of that configuration; two configurations are
    never merged, whichever is newer."""
    results: dict[tuple, list[dict]] = {}
    for row in db.query(
        "SELECT benchmark_run_id AS run_id, task, metric, value, stderr FROM benchmark_results "
        "WHERE subject IS NULL AND metric LIKE 'acc%' ORDER BY metric"
    ):
        results.setdefault((row["run_id"], row["task"]), []).append(row)
    return [
        {
            "model": configuration["model"],
            **{key: configuration[key] for key in CONFIGURATION},
            "metric": result["metric"],
            "accuracy": result["value"],
            "stderr": result["stderr"],
        }
        for configuration in _newest_configurations(db)
        for result in results.get((configuration["run_id"], configuration["task"]), [])
    ]


def benchmark_correctness(db: sqlite_utils.Database, model: str) -> dict[tuple, dict[tuple, int]]:
    """Per benchmark configuration (a tuple of the ``CONFIGURATION`` values) the model's per-question
    correctness, (subject, doc id) -> 0/1, from its newest run of that configuration."""
    found: dict[tuple, dict[tuple, int]] = {}
    for configuration in _newest_configurations(db, model):
        rows = db.query(
            "SELECT subject, doc_id, correct FROM benchmark_samples "
            "WHERE benchmark_run_id = ? AND task = ? AND correct IS NOT NULL",
            [configuration["run_id"], configuration["task"]],
        )
        answers = {(row["subject"], row["doc_id"]): row["correct"] for row in rows}
        if answers:
            found[tuple(configuration[key] for key in CONFIGURATION)] = answers
    return found
