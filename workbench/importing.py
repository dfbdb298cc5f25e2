"""``workbench import``, ``import-scores`` and ``export``: files in and out of the one SQLite store.

The trainer writes files (run folders, response JSON); the workbench imports them. Every import is one
transaction, so a bad entry or a ``kill -9`` halfway leaves the database exactly as it was, and re-importing
the same file changes nothing because items are identified by a hash of their content.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils
from tqdm import tqdm

from trainer.entries import DEFAULT_RESPONSE_KEY, read_json, type_name, validate_entry
from trainer.errors import UserError
from trainer.files import write_atomically
from trainer.formats import (
    COLUMNS_HELP,
    FORMATS_HELP,
    is_hf_spec,
    parse_columns,
    read_records,
    resolve_source,
    source_stem,
)
from workbench import store

ENTRY_KEYS = ("instruction", "input", "output")
PREFERENCE_KEYS = ("chosen", "rejected")
CHUNK = 1000  # entries per progress step; the transaction still spans the whole file
EXPORT_FORMATS = ("json", "csv", "preferences", "campaign")


@dataclass
class ImportSummary:
    """What an import wrote, for the one-line report and for tests."""

    kind: str
    dataset: str | None = None
    items: int = 0
    models: list[str] = field(default_factory=list)
    responses: int = 0
    pairwise_grades: int = 0
    scores: int = 0
    metrics: int = 0
    split_labels: int = 0
    non_finite_losses: int = 0  # NaN or infinite losses of a diverged run, stored as NULL
    # rows the import inserted or changed in the store; 0 means the file was already there, unchanged
    written: int = 0

    def describe(self) -> str:
        parts = [f"{self.items} items"] if self.items else []
        if self.models:
            parts.append(f"{len(self.models)} model(s) ({', '.join(self.models)})")
        for label in ("responses", "pairwise_grades", "scores", "metrics", "split_labels"):
            if getattr(self, label):
                parts.append(f"{getattr(self, label)} {label.replace('_', ' ')}")
        if self.non_finite_losses:
            parts.append(f"{self.non_finite_losses} non-finite losses stored as empty")
        if not self.written:
            holder = f"data set {self.dataset!r}" if self.dataset else "the store"
            found = f" ({', '.join(parts)})" if parts else ""
            return f"nothing new: {holder} already holds this file's {self.kind}{found}, unchanged"
        target = f" into data set {self.dataset!r}" if self.dataset else ""
        return f"imported {self.kind}{target}: {', '.join(parts)}"


# --- reading and validating files ------------------------------------------------------------------------


def validate_entries(path: Path, data: Any) -> tuple[list[dict], list[str]]:
    """Check the book's entry layout; return normalised entries and the extra (model response) keys.

    Instruction, input and output follow ``trainer.entries.validate_entry`` (what ``finetune`` accepts, except
    that an entry may lack a reference output). Every other key holds one model's responses, so each must be
    a string (null or absent means that model has no response for the entry).
    """
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of entries, got a {type_name(data)}")
    if not data:
        raise UserError(f"{path}: the list of entries is empty")
    extra_keys: dict[str, None] = {}
    entries = []
    for index, record in enumerate(data):
        where = f"{path}: entry {index}"
        entry = validate_entry(where, record, need_output=False)
        for key, value in entry.items():
            if key in ENTRY_KEYS:
                continue
            if not (isinstance(value, str) or value is None):
                raise UserError(f"{where}: {key!r} (a model's response) must be a string, got {type_name(value)}")
            extra_keys[key] = None
        entries.append(entry)
    return entries, list(extra_keys)


def meta_path_for(path: Path) -> Path | None:
    """The trainer's ``FILE.meta.json`` beside a generation output, if there is one."""
    for candidate in (
        path.with_name(path.name.removesuffix(".json") + ".meta.json"),
        Path(f"{path}.meta.json"),
    ):
        if candidate.is_file() and candidate != path:
            return candidate
    return None


def _item_rows(dataset: str, entries: list[dict], *, first_position: int, split: str | None) -> list[dict]:
    """Items with stable ids; repeated (instruction, input) pairs get an occurrence number."""
    seen: Counter = Counter()
    rows = []
    for offset, entry in enumerate(entries):
        key = (entry["instruction"], entry["input"])
        rows.append(
            {
                "id": store.item_id(dataset, *key, occurrence=seen[key]),
                "position": first_position + offset,
                "instruction": entry["instruction"],
                "input": entry["input"],
                "reference_output": entry.get("output"),
                "split": split,
            }
        )
        seen[key] += 1
    return rows


def _chunks(rows: list, bar: tqdm) -> Iterator[list]:
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        yield chunk
        bar.update(len(chunk))


# --- import ----------------------------------------------------------------------------------------------


@dataclass
class _ModelSource:
    """Where one model's responses come from in a file: its key, its name and (for generations) its run."""

    key: str
    name: str
    kind: str = "responses"
    run_dir: str | None = None
    config: dict | None = None
    decoding: dict | None = None


def import_path(
    db: sqlite_utils.Database,
    path: str | Path,
    *,
    dataset: str | None = None,
    model: str | None = None,
    columns: Mapping[str, str] | None = None,
    progress: bool = False,
) -> ImportSummary:
    """Detect what ``path`` is and import it in one transaction.

    A folder with ``config.json`` is a trainer run; a data file (JSON, JSONL, CSV, Parquet, or ``hf:NAME[:SPLIT]``
    as the trainer reads them, ``columns`` mapping entry keys to its columns) is instruction data, preference
    data (``chosen``/``rejected``), responses (extra keys) or, with ``FILE.meta.json`` beside it, trainer output.
    """
    hf_spec = is_hf_spec(str(path))
    path = Path(path)
    if path.is_dir() and not hf_spec:
        if model is not None:
            raise UserError("--model renames a response key; a run folder imports under its own name")
        return import_run_folder(db, path)
    source = str(path) if hf_spec else path
    entries, extra_keys = validate_entries(path, read_records(source, columns, keep_system=False))
    meta_path = None if hf_spec else meta_path_for(path)
    meta = read_generation_meta(meta_path) if meta_path else None
    sources = _model_sources(meta, extra_keys)
    if model is not None:
        if len(sources) != 1:
            raise UserError(f"{path}: --model needs exactly one response key, found {len(sources)}: {extra_keys}")
        sources[0].name = model
    if meta is not None:
        kind, dataset = "generation output", dataset or _generation_dataset(meta, path)
    elif all(key in extra_keys for key in PREFERENCE_KEYS):
        kind = "preference data"
    else:
        kind = "responses" if sources else "instruction data"
    dataset = dataset or source_stem(source)
    split = meta.get("split") if meta is not None and meta.get("split") != "all" else None
    before = db.conn.total_changes
    with store.transaction(db):
        summary = _import_entries(db, path, entries, sources, dataset, kind, split=split, progress=progress)
        if kind == "preference data":
            summary.pairwise_grades = _record_preferences(db, dataset, entries)
    summary.written = db.conn.total_changes - before
    return summary


# Fields of a generation record (``FILE.meta.json``, and each of its ``responses``) that the import reads.
META_STRINGS = ("name", "response_key", "run", "split", "data")
META_OBJECTS = ("decoding", "responses")


def read_generation_meta(path: Path) -> dict:
    """The trainer's ``FILE.meta.json``, with every field the import reads checked for its type (null or
    absent is fine), so a damaged file is refused by name instead of half-imported."""
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object (the trainer's generation metadata), got {type_name(meta)}")
    _check_generation_record(path, meta, "")
    for key, record in (meta.get("responses") or {}).items():
        if not isinstance(record, dict):
            raise UserError(f"{path}: 'responses' → {key!r} must be an object, got {type_name(record)}")
        _check_generation_record(path, record, f"'responses' → {key!r} → ")
    return meta


def _check_generation_record(path: Path, record: dict, where: str) -> None:
    for key in META_STRINGS + META_OBJECTS:
        value = record.get(key)
        wanted, kind = (str, "a string") if key in META_STRINGS else (dict, "an object")
        if value is not None and not isinstance(value, wanted):
            raise UserError(f"{path}: {where}{key!r} must be {kind}, got {type_name(value)}")


def _generation_dataset(meta: dict, path: Path) -> str:
    """Generated responses line up with the data file they answer, so they join that data set's items."""
    data = meta.get("data")
    return source_stem(data) if isinstance(data, str) and data else path.stem


# Fields of a generation record about one output file rather than the model: which shard it is and how far it
# got. Left out of the model's config, so the shards of one generation describe their model alike and
# importing them again changes nothing.
PER_FILE_FIELDS = ("responses", "shard", "entries", "responses_done", "complete", "created_at", "finished_at")


def _model_sources(meta: dict | None, extra_keys: list[str]) -> list[_ModelSource]:
    """One model per response key. A key described in the trainer's meta file is the model's name when the
    user chose it (``generate --response-key tiny-sft``); under the generator's default key the model is named
    after its run, so two runs' default outputs do not merge into one model."""
    records = (meta or {}).get("responses") or {}
    if meta is not None and meta.get("response_key") and meta["response_key"] not in records:
        records = {**records, meta["response_key"]: meta}
    sources = []
    for key in extra_keys:
        record = records.get(key)
        if not isinstance(record, dict):
            sources.append(_ModelSource(key, key))
            continue
        name = (record.get("name") or key) if key == DEFAULT_RESPONSE_KEY else key
        sources.append(
            _ModelSource(
                key,
                name,
                kind="run" if record.get("run") else "hf",
                run_dir=record.get("run"),
                config={k: v for k, v in record.items() if k not in PER_FILE_FIELDS},
                decoding=record.get("decoding"),
            )
        )
    names = Counter(source.name for source in sources)
    for source in sources:
        if names[source.name] > 1:  # two generations of one run in one file stay two models
            source.name = f"{source.name}:{source.key}"
    return sources


def _import_entries(
    db: sqlite_utils.Database,
    path: Path,
    entries: list[dict],
    sources: list[_ModelSource],
    dataset: str,
    kind: str,
    *,
    split: str | None,
    progress: bool,
) -> ImportSummary:
    partial = kind == "generation output"
    source_path = resolve_source(str(path))
    dataset_id = store.get_or_create_dataset(db, dataset, source=source_path)
    first_position = store.next_position(db, dataset_id) if partial else 0
    items = _item_rows(dataset, entries, first_position=first_position, split=split)
    summary = ImportSummary(kind, dataset, items=len(items), models=[s.name for s in sources])
    total = len(items) * (1 + len(sources))
    with tqdm(total=total, desc=f"import {path.name}", unit="row", disable=not progress) as bar:
        for chunk in _chunks(items, bar):
            store.add_items(db, dataset_id, chunk, keep_position=partial)
        for source in sources:
            model_id = store.get_or_create_model(db, source.name, source.kind, source.run_dir, source.config)
            decoding_json = json.dumps(source.decoding, sort_keys=True) if source.decoding is not None else None
            responses = [
                {
                    "item_id": item["id"],
                    "text": entry[source.key],
                    "decoding_json": decoding_json,
                    "source": source_path,
                }
                for item, entry in zip(items, entries, strict=True)
                if entry.get(source.key) is not None
            ]
            for chunk in _chunks(responses, bar):
                store.upsert_responses(db, model_id, chunk)
            bar.update(len(items) - len(responses))
            summary.responses += len(responses)
    return summary


def _record_preferences(db: sqlite_utils.Database, dataset: str, entries: list[dict]) -> int:
    """Preference verdicts become pairwise grades (chosen preferred), so the DPO export rebuilds the file."""
    reviewer_id = store.get_or_create_reviewer(db, f"import:{dataset}")
    chosen_id, rejected_id = (store.model_id(db, key) for key in PREFERENCE_KEYS)
    added = 0
    for item, entry in zip(_item_rows(dataset, entries, first_position=0, split=None), entries, strict=True):
        if entry.get("chosen") is None or entry.get("rejected") is None:
            continue
        if not store.pairwise_grade_exists(db, item["id"], chosen_id, rejected_id, reviewer_id, "left"):
            store.add_pairwise_grade(db, item["id"], chosen_id, rejected_id, f"import:{dataset}", "left", False)
            added += 1
    return added


UPLOAD_KINDS = ("data", "scores")


def import_files(
    db: sqlite_utils.Database,
    paths: Sequence[str | Path],
    *,
    kind: str,
    dataset: str | None = None,
    model: str | None = None,
    judge: str | None = None,
    response_key: str | None = None,
) -> list[ImportSummary]:
    """Import several files (the app's uploads) in one transaction: all of them, or nothing.

    ``kind`` is ``data`` (instruction, response or preference files and run folders, as ``import_path``) or
    ``scores`` (one judge's score files for ``response_key``, as ``import_scores``). A ``config.json`` makes
    its folder a run folder (its ``metrics.jsonl`` and ``split.json`` are read from there, after the data
    files so that split labels find their items); ``FILE.meta.json`` sidecars are read with ``FILE``. An
    error names the file it is about; nothing of the earlier files is kept then.
    """
    if kind not in UPLOAD_KINDS:
        raise UserError(f"unknown upload kind {kind!r}; choose one of {', '.join(UPLOAD_KINDS)}")
    paths = [Path(path) for path in paths]
    if not paths:
        raise UserError("no files to import")
    if kind == "scores":
        if not judge or not response_key:
            raise UserError("judge scores need the judge's name and the model (response key) they are for")
        jobs = [
            (path, lambda path=path: import_scores(db, path, judge=judge, response_key=response_key, dataset=dataset))
            for path in paths
        ]
    else:
        run_dirs = list(dict.fromkeys(path.parent for path in paths if path.name == "config.json"))
        data_files = [path for path in paths if path.parent not in run_dirs and not path.name.endswith(".meta.json")]
        jobs = [
            (path, lambda path=path: import_path(db, path, dataset=dataset, model=model)) for path in data_files
        ] + [(run_dir, lambda run_dir=run_dir: import_run_folder(db, run_dir)) for run_dir in run_dirs]
        if not jobs:
            raise UserError("only .meta.json files: upload them together with the responses file they describe")
    summaries = []
    with store.transaction(db):
        for path, job in jobs:
            try:
                summaries.append(job())
            except UserError as exc:
                if str(path) in str(exc) or path.name in str(exc):
                    raise
                raise UserError(f"{path}: {exc}") from exc
    return summaries


def import_run_folder(db: sqlite_utils.Database, run_dir: Path) -> ImportSummary:
    """A trainer run folder: the model (named after the run), its config and its metrics history."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{run_dir}: not a trainer run folder (no config.json)")
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise UserError(f"{config_path}: expected a JSON object, got a {type_name(config)}")
    metrics = read_metrics(run_dir / "metrics.jsonl")
    name = config.get("name") or run_dir.name
    if not isinstance(name, str):
        raise UserError(f"{config_path}: 'name' must be a string, got {type_name(name)}")
    splits = _read_splits(run_dir / "split.json")
    dataset = source_stem(config["data"]) if isinstance(config.get("data"), str) else None
    before = db.conn.total_changes
    with store.transaction(db):
        model_id = store.get_or_create_model(db, name, "run", str(run_dir.resolve()), config)
        non_finite_losses = store.replace_training_metrics(db, model_id, metrics)
        labelled = store.set_item_splits(db, dataset, splits) if dataset in store.dataset_names(db) else 0
    return ImportSummary(
        "run folder",
        dataset if labelled else None,
        models=[name],
        metrics=len(metrics),
        split_labels=labelled,
        non_finite_losses=non_finite_losses,
        written=db.conn.total_changes - before,
    )


def _read_splits(path: Path) -> dict[str, list[int]]:
    """The run's train/test/val file indices, used to label the training data's items when it is imported."""
    if not path.is_file():
        return {}
    splits = read_json(path)
    if not isinstance(splits, dict) or not all(
        isinstance(v, list) and all(_is_whole(i) and 0 <= i <= SQLITE_MAX_INTEGER for i in v) for v in splits.values()
    ):
        raise UserError(f"{path}: expected an object mapping split names to lists of entry indices")
    return splits


SQLITE_MAX_INTEGER = 2**63 - 1


def read_metrics(path: Path) -> list[dict]:
    """A run's ``metrics.jsonl``: objects with a whole ``step``; ``epoch`` a number, ``tokens_seen`` a whole
    number, losses numbers where NaN and infinity are allowed (a diverged run logs them; the store keeps them as
    empty values with a flag), judge columns finite numbers. A step has one evaluation row and may have one row
    of a judge during training, written later: the two are merged; a step's value given twice is refused."""
    if not path.is_file():
        return []
    rows = read_json(path)
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected one JSON object per line, got a {type_name(rows)}")
    merged: dict[int, dict] = {}
    first_record_of: dict[tuple[int, str], int] = {}
    for number, row in enumerate(rows, 1):
        where = f"{path}: record {number}"
        if not isinstance(row, dict) or "step" not in row:
            raise UserError(f"{where}: expected an object with an integer 'step'")
        _check_metric(where, "step", row["step"], whole=True)
        for key in sorted(row.keys() - {"step"}) or ["step"]:
            if (row["step"], key) in first_record_of:
                earlier = first_record_of[row["step"], key]
                raise UserError(f"{where}: step {row['step']} repeats record {earlier} ({key!r})")
            first_record_of[row["step"], key] = number
        for key in ("epoch", "tokens_seen", *store.LOSS_COLUMNS, *store.JUDGE_COLUMNS):
            if row.get(key) is not None:
                _check_metric(where, key, row[key], whole=key == "tokens_seen", finite=key not in store.LOSS_COLUMNS)
        merged.setdefault(row["step"], {}).update(row)
    return sorted(merged.values(), key=lambda row: row["step"])


def _check_metric(where: str, key: str, value: Any, *, whole: bool = False, finite: bool = True) -> None:
    if not _is_number(value, finite=False):
        raise UserError(f"{where}: {key!r} must be a {'whole ' if whole else ''}number, got {type_name(value)}")
    if finite and not math.isfinite(value):
        raise UserError(f"{where}: {key!r} must be a finite{' whole' if whole else ''} number, got {value}")
    if whole and not _is_whole(value):
        raise UserError(f"{where}: {key!r} must be a whole number, got {type_name(value)}")
    if isinstance(value, int) and abs(value) > SQLITE_MAX_INTEGER:
        raise UserError(f"{where}: {key!r} {value} is too large")


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any, *, finite: bool = True) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (not finite or math.isfinite(value))


# --- import-scores ---------------------------------------------------------------------------------------


def import_scores(
    db: sqlite_utils.Database,
    path: str | Path,
    *,
    judge: str,
    response_key: str,
    dataset: str | None = None,
    score_range: tuple[float, float] = (0.0, 100.0),
) -> ImportSummary:
    """An external judge's scores: a list aligned with the data set's entries, or objects with ``item_id``."""
    path = Path(path)
    low, high = score_range
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise UserError(f"--score-range {low:g} {high:g}: the judge's scale needs two finite numbers, the lowest first")
    data = read_json(path)
    if not isinstance(data, list) or not data:
        raise UserError(f"{path}: expected a non-empty JSON list of scores, got {type_name(data)}")
    store.model_id(db, response_key)
    dataset = dataset or _only_dataset_of(db, response_key)
    responses = store.response_ids_by_item(db, response_key, dataset)
    if all(isinstance(entry, dict) for entry in data):
        rows = [_score_object(path, index, entry) for index, entry in enumerate(data)]
    else:
        rows = _aligned_scores(db, path, data, dataset)
    before = db.conn.total_changes
    with store.transaction(db):
        judge_row = store.get_or_create_external_judge(db, judge, *score_range)
        low, high = judge_row["score_min"], judge_row["score_max"]
        for index, row in enumerate(rows):
            where = f"{path}: entry {index} (item {row['item_id']})"
            if row["item_id"] not in responses:
                raise UserError(f"{where}: model {response_key!r} has no response to this item in {dataset!r}")
            if row["score"] is not None and not low <= row["score"] <= high:
                raise UserError(f"{where}: score {row['score']:g} is outside judge {judge!r}'s range {low:g}-{high:g}")
            row["response_id"] = responses.pop(row["item_id"])
        store.upsert_external_scores(db, judge_row["id"], rows)
    written = db.conn.total_changes - before
    return ImportSummary("judge scores", dataset, models=[response_key], scores=len(rows), written=written)


def _only_dataset_of(db: sqlite_utils.Database, model: str) -> str:
    names = store.datasets_with_model(db, model)
    if len(names) != 1:
        raise UserError(f"model {model!r} has responses in {len(names)} data sets ({', '.join(names)}); pass --dataset")
    return names[0]


def _check_score(path: Path, index: int, value: Any) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        got = value if _is_number(value, finite=False) else type_name(value)
        raise UserError(f"{path}: entry {index}: a score must be a finite number or null, got {got}")
    try:
        return float(value)  # an integer too large for SQLite's INTEGER is stored as REAL like every score
    except OverflowError as exc:
        raise UserError(f"{path}: entry {index}: the score {value} is too large") from exc


def _aligned_scores(db: sqlite_utils.Database, path: Path, data: list, dataset: str) -> list[dict]:
    items = store.dataset_items(db, dataset)
    if len(data) != len(items):
        raise UserError(
            f"{path}: {len(data)} scores but data set {dataset!r} has {len(items)} entries; nothing was imported"
        )
    return [
        _score_row(item["id"], _check_score(path, index, value))
        for index, (item, value) in enumerate(zip(items, data, strict=True))
    ]


def _score_object(path: Path, index: int, entry: dict) -> dict:
    if not isinstance(entry.get("item_id"), str) or "score" not in entry:
        raise UserError(f"{path}: entry {index}: expected an object with 'item_id' (string) and 'score'")
    row = _score_row(entry["item_id"], _check_score(path, index, entry["score"]))
    for key in ("rationale", "raw_output", "error"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise UserError(f"{path}: entry {index}: {key!r} must be a string, got {type_name(entry[key])}")
        row[key] = entry.get(key)
    row["latency_s"] = _check_score(path, index, entry.get("latency_s"))
    return row


def _score_row(item_id: str, score: float | None) -> dict:
    return {
        "item_id": item_id,
        "score": score,
        "rationale": None,
        "raw_output": None,
        "latency_s": None,
        "error": None if score is not None else "no score in the imported file",
    }


# --- export ----------------------------------------------------------------------------------------------


def export_json(db: sqlite_utils.Database, dataset: str | None = None) -> list[dict]:
    """The book's layout: each entry's instruction, input and output, then one key per model's response."""
    dataset = _known_dataset(db, dataset) if dataset else _only_dataset(db)
    entries: dict[str, dict] = {}
    for item in store.dataset_items(db, dataset):
        entry = {"instruction": item["instruction"], "input": item["input"]}
        if item["reference_output"] is not None:
            entry["output"] = item["reference_output"]
        entries[item["id"]] = entry
    for row in store.response_rows(db, dataset=dataset):
        entries[row["item_id"]][row["model"]] = row["text"]
    return list(entries.values())


def export_preferences(db: sqlite_utils.Database, dataset: str | None = None) -> list[dict]:
    """Chosen/rejected pairs for DPO from human pairwise grades: per item and model pair, the majority wins;
    pairs the reviewers tied on (or split evenly) are left out."""
    if dataset:
        _known_dataset(db, dataset)
    wins: dict[tuple, Counter] = defaultdict(Counter)
    pairs: dict[tuple, dict] = {}
    for row in store.pairwise_grade_rows(db, dataset):
        key = (row["item_id"], *sorted((row["left_model"], row["right_model"])))
        pairs.setdefault(key, row)
        if row["preference"] != "tie":
            winner = row["left_model"] if row["preference"] == "left" else row["right_model"]
            wins[key][winner] += 1
    preferences = []
    for key, row in pairs.items():
        ranked = wins[key].most_common()
        if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
            continue
        texts = {row["left_model"]: row["left_text"], row["right_model"]: row["right_text"]}
        chosen = ranked[0][0]
        rejected = key[2] if chosen == key[1] else key[1]
        entry = {"instruction": row["instruction"], "input": row["input"]}
        if row["reference_output"] is not None:
            entry["output"] = row["reference_output"]
        preferences.append({**entry, "chosen": texts[chosen], "rejected": texts[rejected]})
    return preferences


def export_campaign(db: sqlite_utils.Database, campaign: str) -> list[dict]:
    """A campaign's results in the book's layout: per item, each model's response, its raw grades (reviewer,
    grade, comment), the adjudicated grade (null where nobody adjudicated) and the final grade (adjudicated,
    else the mean raw grade)."""
    entries: dict[str, dict] = {}
    for row in store.campaign_results(db, campaign):
        entry = entries.setdefault(row["item_id"], {"instruction": row["instruction"], "input": row["input"]})
        if row["reference_output"] is not None:
            entry.setdefault("output", row["reference_output"])
        model = row["model"]
        entry[model] = row["text"]
        entry[f"{model} grades"] = row["grades"]
        entry[f"{model} adjudicated grade"] = row["adjudicated"]
        entry[f"{model} final grade"] = _plain_number(row["final"])
    return list(entries.values())


def _plain_number(value: Any) -> Any:
    """Scores are stored as REAL; a whole number is written as 3, not 3.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell that no spreadsheet runs as a formula: text starting with ``=``, ``+``, ``-``,
    ``@``, tab or carriage return gets a leading ``'`` (OWASP's CSV injection advice); numbers stay numbers."""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    return _plain_number(value)


def _known_dataset(db: sqlite_utils.Database, dataset: str) -> str:
    names = store.dataset_names(db)
    if dataset not in names:
        raise UserError(f"no data set named {dataset!r} (known: {', '.join(names) or 'none'})")
    return dataset


def _only_dataset(db: sqlite_utils.Database) -> str:
    names = store.dataset_names(db)
    if len(names) != 1:
        raise UserError(f"the database holds {len(names)} data sets ({', '.join(names) or 'none'}); pass --dataset")
    return names[0]


def export(
    db: sqlite_utils.Database,
    fmt: str,
    out: str | Path,
    *,
    dataset: str | None = None,
    campaign: str | None = None,
) -> int:
    """Write an export file; returns the number of entries (json, preferences, campaign) or rows (csv) written.

    The file appears complete or not at all (an earlier export at ``out`` stays until the new one is whole).
    """
    out = Path(out)
    if out.is_dir():
        raise UserError(
            f"{out}: is a folder; give a file name such as {out / ('export.' + ('csv' if fmt == 'csv' else 'json'))}"
        )
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"{out}: {out.parent} is a file, not a folder")
    if not out.parent.is_dir():
        raise UserError(f"{out}: folder {out.parent} does not exist")
    if (fmt == "campaign") != (campaign is not None):
        raise UserError("--campaign NAME goes with --format campaign, and --format campaign needs it")
    if fmt == "csv":
        rows = store.grades_and_scores_rows(db)
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=store.CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in rows)
        write_atomically(out, text.getvalue())
        return len(rows)
    if fmt == "json":
        entries = export_json(db, dataset)
    elif fmt == "preferences":
        entries = export_preferences(db, dataset)
    elif fmt == "campaign":
        entries = export_campaign(db, campaign)
    else:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    write_atomically(out, json.dumps(entries, indent=2, ensure_ascii=False) + "\n")
    return len(entries)


# --- CLI -------------------------------------------------------------------------------------------------


def _run_import(args: argparse.Namespace) -> None:
    columns = parse_columns(args.columns)  # before the store is opened: a mistyped mapping creates no file
    db = store.open_db(args.db)
    print(import_path(db, args.file, dataset=args.dataset, model=args.model, columns=columns, progress=True).describe())


def _run_import_scores(args: argparse.Namespace) -> None:
    db = store.open_db(args.db)
    summary = import_scores(
        db,
        args.file,
        judge=args.judge,
        response_key=args.response_key,
        dataset=args.dataset,
        score_range=tuple(args.score_range),
    )
    print(f"judge {args.judge!r}: {summary.describe()}")


def _run_export(args: argparse.Namespace) -> None:
    db = store.open_db(args.db)
    count = export(db, args.format, args.out, dataset=args.dataset, campaign=args.campaign)
    print(f"wrote {count} {'rows' if args.format == 'csv' else 'entries'} to {args.out}")


def add_cli(subparsers: Any) -> None:
    """Register ``import``, ``import-scores`` and ``export``."""
    parser = subparsers.add_parser(
        "import",
        help="import instruction/response/preference data, a run folder or generation output",
        description=import_path.__doc__,
    )
    parser.add_argument("file", type=Path, help=f"trainer run folder, or data: {FORMATS_HELP}")
    parser.add_argument("--db", required=True, type=Path, help="workbench SQLite file (created if missing)")
    parser.add_argument("--dataset", help="data set name (default: the file's stem)")
    parser.add_argument("--model", help="model name for a file with a single response key (default: the key)")
    parser.add_argument("--columns", help=COLUMNS_HELP)
    parser.set_defaults(func=_run_import)

    parser = subparsers.add_parser(
        "import-scores", help="import an external judge's scores", description=import_scores.__doc__
    )
    parser.add_argument("file", type=Path, help="JSON list of scores aligned with the entries, or of objects")
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--judge", required=True, help="judge name, e.g. gpt4")
    parser.add_argument("--response-key", required=True, help="the model (response key) the scores are for")
    parser.add_argument("--dataset", help="data set (default: the only one with this model's responses)")
    parser.add_argument(
        "--score-range",
        nargs=2,
        type=float,
        default=[0.0, 100.0],
        metavar=("MIN", "MAX"),
        help="the judge's scale for a new judge (default 0 100)",
    )
    parser.set_defaults(func=_run_import_scores)

    parser = subparsers.add_parser(
        "export", help="export entries (book layout), grades as CSV, DPO pairs, or a campaign's grades"
    )
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--dataset", help="data set to export (json, preferences; default: the only one)")
    parser.add_argument(
        "--campaign", help="review campaign to export (format campaign): raw, adjudicated and final grades per model"
    )
    parser.set_defaults(func=_run_export)
