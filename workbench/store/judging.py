"""SQL of the LLM judge: judges keyed by what decides their answers, the work still to do, and results.

A judge row is the cache key (server kind, model, digest or declared revision, prompt template hash, options,
mode): a pulled model with a new digest or an edited prompt is a new judge and re-judges everything, while
rerunning the same judge only asks for what has no answer yet. Each result is committed on its own so that a
killed batch keeps what it finished.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

import sqlite_utils

from trainer.errors import UserError
from workbench.store.core import in_clause, transaction, utc_now

LLM_JUDGE_KINDS = ("ollama", "openai")  # the server protocol the judge was asked through


def _cache_key_params(kind: str, model: str, digest: str, template_hash: str, options: dict, mode: str) -> list:
    if kind not in LLM_JUDGE_KINDS:
        raise ValueError(f"unknown judge kind {kind!r}")
    return [kind, model, digest, template_hash, json.dumps(options, sort_keys=True), mode]


def find_llm_judge(
    db: sqlite_utils.Database, *, kind: str, model: str, digest: str, template_hash: str, options: dict, mode: str
) -> dict | None:
    """The judge row with exactly this cache key, or None."""
    rows = list(
        db.query(
            "SELECT * FROM judges WHERE kind = ? AND model = ? AND digest = ? AND template_hash = ? "
            "AND options_json = ? AND mode = ?",
            _cache_key_params(kind, model, digest, template_hash, options, mode),
        )
    )
    return rows[0] if rows else None


def get_or_create_llm_judge(
    db: sqlite_utils.Database,
    *,
    kind: str,
    name: str,
    model: str,
    digest: str,
    template_hash: str,
    options: dict,
    mode: str,
    score_min: float = 0.0,
    score_max: float = 100.0,
) -> dict:
    """The judge with this cache key, created under ``name`` if new; ``name`` must not label another key."""
    key = {
        "kind": kind,
        "model": model,
        "digest": digest,
        "template_hash": template_hash,
        "options": options,
        "mode": mode,
    }
    with transaction(db):
        found = find_llm_judge(db, **key)
        if found is not None:
            return found
        clash = list(db.query("SELECT kind, model, digest, template_hash FROM judges WHERE name = ?", [name]))
        if clash:
            raise UserError(
                f"judge name {name!r} already belongs to another judge ({clash[0]['kind']} "
                f"{clash[0]['model'] or ''}, other model digest or prompt); choose another --judge-name"
            )
        db.execute(
            "INSERT INTO judges (name, kind, model, digest, template_hash, options_json, mode, score_min, "
            "score_max, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                name,
                *_cache_key_params(kind, model, digest, template_hash, options, mode),
                score_min,
                score_max,
                utc_now(),
            ],
        )
        return find_llm_judge(db, **key)


def _scope_sql(models: Sequence[str], dataset: str | None, limit: int | None, params: dict) -> str:
    """Ids of the first ``limit`` items (data set order) that hold a response of every one of ``models``."""
    models_in = in_clause("m.name", models, params, "model")
    params.update(dataset=dataset, limit=-1 if limit is None else limit, model_count=len(models))
    return f"""SELECT i.id FROM items i JOIN datasets d ON d.id = i.dataset_id
               WHERE (:dataset IS NULL OR d.name = :dataset)
                 AND (SELECT COUNT(DISTINCT r.model_id) FROM responses r JOIN models m ON m.id = r.model_id
                      WHERE r.item_id = i.id AND {models_in}) = :model_count
               ORDER BY d.id, i.position, i.id LIMIT :limit"""


_REPEATS_SQL = "WITH RECURSIVE repeats(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM repeats WHERE n + 1 < :repeats)"


def pending_scores(
    db: sqlite_utils.Database,
    judge_id: int,
    *,
    models: Sequence[str],
    repeats: int = 1,
    dataset: str | None = None,
    limit: int | None = None,
) -> list[dict]:
    """(response, repeat) pairs this judge has no score for yet (failed attempts count as not scored),
    with the item's fields, in data set order. ``limit`` keeps the first N items of the data set."""
    rows: list[dict] = []
    for model in models:  # each model's own items: a model missing on some items still gets the rest judged
        params: dict = {"judge_id": judge_id, "repeats": repeats}
        scope = _scope_sql([model], dataset, limit, params)
        rows.extend(
            db.query(
                f"""{_REPEATS_SQL}
                SELECT r.id AS response_id, repeats.n AS repeat, m.name AS model, i.id AS item_id,
                       i.instruction, i.input, i.reference_output, r.text
                FROM responses r JOIN items i ON i.id = r.item_id JOIN datasets d ON d.id = i.dataset_id
                JOIN models m ON m.id = r.model_id CROSS JOIN repeats
                WHERE m.name = :model0 AND i.id IN ({scope})
                  AND NOT EXISTS (SELECT 1 FROM judge_scores js WHERE js.response_id = r.id
                                  AND js.judge_id = :judge_id AND js.repeat = repeats.n
                                  AND js.score IS NOT NULL)
                ORDER BY d.id, i.position, i.id, repeats.n""",
                params,
            )
        )
    return rows


def save_judge_scores(db: sqlite_utils.Database, judge_id: int, rows: Iterable[Mapping]) -> None:
    """Store answers (keys response_id, repeat, score, rationale, raw_output, latency_s, error; a failure has
    score None) in one commit; a later answer replaces a failure."""
    with transaction(db):
        db.conn.executemany(
            "INSERT INTO judge_scores (response_id, judge_id, repeat, score, rationale, raw_output, "
            "latency_s, error, created_at) VALUES (:response_id, :judge_id, :repeat, :score, :rationale, "
            ":raw_output, :latency_s, :error, :created_at) "
            "ON CONFLICT(response_id, judge_id, repeat) DO UPDATE SET score = excluded.score, "
            "rationale = excluded.rationale, raw_output = excluded.raw_output, "
            "latency_s = excluded.latency_s, error = excluded.error, created_at = excluded.created_at",
            ({**row, "judge_id": judge_id, "created_at": utc_now()} for row in rows),
        )


def judge_score_results(db: sqlite_utils.Database, judge_id: int) -> list[dict]:
    """Every stored answer of a judge with its model and item (the summary's input)."""
    return list(
        db.query(
            """SELECT m.name AS model, r.item_id, js.response_id, js.repeat, js.score, js.error
           FROM judge_scores js JOIN responses r ON r.id = js.response_id JOIN models m ON m.id = r.model_id
           WHERE js.judge_id = ? ORDER BY m.id, r.item_id, js.repeat""",
            [judge_id],
        )
    )


def pending_pairwise(
    db: sqlite_utils.Database,
    judge_id: int,
    *,
    model_a: str,
    model_b: str,
    repeats: int = 1,
    dataset: str | None = None,
    limit: int | None = None,
) -> list[dict]:
    """(item, repeat) pairs with responses of both models and no verdict of this judge yet."""
    params: dict = {"judge_id": judge_id, "repeats": repeats}
    scope = _scope_sql([model_a, model_b], dataset, limit, params)
    return list(
        db.query(
            f"""{_REPEATS_SQL}
            SELECT i.id AS item_id, repeats.n AS repeat, i.instruction, i.input, i.reference_output,
                   ma.id AS model_a_id, mb.id AS model_b_id, ra.text AS text_a, rb.text AS text_b
            FROM items i JOIN datasets d ON d.id = i.dataset_id
            JOIN models ma ON ma.name = :model0 JOIN models mb ON mb.name = :model1
            JOIN responses ra ON ra.item_id = i.id AND ra.model_id = ma.id
            JOIN responses rb ON rb.item_id = i.id AND rb.model_id = mb.id CROSS JOIN repeats
            WHERE i.id IN ({scope})
              AND NOT EXISTS (SELECT 1 FROM judge_pairwise jp
                              WHERE jp.item_id = i.id AND jp.judge_id = :judge_id
                              AND jp.model_a_id = ma.id AND jp.model_b_id = mb.id AND jp.repeat = repeats.n
                              AND jp.winner IS NOT NULL)
            ORDER BY d.id, i.position, i.id, repeats.n""",
            params,
        )
    )


def save_judge_pairwise(db: sqlite_utils.Database, judge_id: int, rows: Iterable[Mapping]) -> None:
    """Store pairwise verdicts (keys item_id, model_a_id, model_b_id, repeat, verdict_ab, verdict_ba, winner,
    consistent, raw_output, latency_s, error) in one commit; a later verdict replaces a failure."""
    with transaction(db):
        db.conn.executemany(
            "INSERT INTO judge_pairwise (item_id, model_a_id, model_b_id, judge_id, repeat, verdict_ab, "
            "verdict_ba, winner, consistent, raw_output, latency_s, error, created_at) VALUES (:item_id, "
            ":model_a_id, :model_b_id, :judge_id, :repeat, :verdict_ab, :verdict_ba, :winner, :consistent, "
            ":raw_output, :latency_s, :error, :created_at) "
            "ON CONFLICT(item_id, model_a_id, model_b_id, judge_id, repeat) DO UPDATE SET "
            "verdict_ab = excluded.verdict_ab, verdict_ba = excluded.verdict_ba, winner = excluded.winner, "
            "consistent = excluded.consistent, raw_output = excluded.raw_output, "
            "latency_s = excluded.latency_s, "
            "error = excluded.error, created_at = excluded.created_at",
            ({**row, "judge_id": judge_id, "created_at": utc_now()} for row in rows),
        )


def judge_pairwise_results(db: sqlite_utils.Database, judge_id: int) -> list[dict]:
    """Every stored pairwise verdict of a judge with both models' names and response lengths (characters)."""
    return list(
        db.query(
            """SELECT ma.name AS model_a, mb.name AS model_b, jp.item_id, jp.repeat, jp.verdict_ab,
                  jp.verdict_ba,
                  jp.winner, jp.consistent, jp.error, LENGTH(ra.text) AS length_a, LENGTH(rb.text) AS length_b
           FROM judge_pairwise jp JOIN models ma ON ma.id = jp.model_a_id
           JOIN models mb ON mb.id = jp.model_b_id
           JOIN responses ra ON ra.item_id = jp.item_id AND ra.model_id = jp.model_a_id
           JOIN responses rb ON rb.item_id = jp.item_id AND rb.model_id = jp.model_b_id
           WHERE jp.judge_id = ? ORDER BY jp.item_id, jp.repeat""",
            [judge_id],
        )
    )


def pairwise_verdicts_by_judge(db: sqlite_utils.Database) -> dict[str, list[dict]]:
    """Pairwise judge name -> every stored verdict of that judge (``judge_pairwise_results``), judges in the order
    added."""
    judges = db.execute("SELECT id, name FROM judges WHERE mode = 'pairwise' ORDER BY id").fetchall()
    return {name: judge_pairwise_results(db, judge_id) for judge_id, name in judges}


def set_injection_flags(db: sqlite_utils.Database, flags: Mapping[int, str | None]) -> int:
    """Record the injection detector's finding (None: clean) per response id; returns how many changed."""
    with transaction(db):
        before = db.conn.total_changes
        db.conn.executemany(
            "UPDATE response_versions SET injection_flag = ? WHERE id = ? AND injection_flag IS NOT ?",
            ((flag, response_id, flag) for response_id, flag in flags.items()),
        )
        return db.conn.total_changes - before


def flagged_responses(db: sqlite_utils.Database) -> list[dict]:
    """Responses the injection detector flagged, with their model and item."""
    return list(
        db.query(
            "SELECT r.id AS response_id, m.name AS model, r.item_id, r.injection_flag FROM responses r "
            "JOIN models m ON m.id = r.model_id WHERE r.injection_flag IS NOT NULL ORDER BY r.id"
        )
    )
