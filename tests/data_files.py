"""Writing the same instruction entries in every format the trainer and the workbench read, for round-trip tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow
import pyarrow.parquet

# name → file (or folder) name; "hf" is a folder read through datasets.load_dataset, given as hf:FOLDER
FORMATS = ("json", "jsonl", "csv", "parquet", "hf", "openai", "sharegpt")
CHAT_FORMATS = ("openai", "sharegpt")


def chat_ready(entries: list[dict]) -> list[dict]:
    """The entries as a chat record can hold them: a conversation has no separate input, so it joins the
    instruction (what a user would type)."""
    return [
        {"instruction": "\n\n".join(filter(None, (e["instruction"], e["input"]))), "input": "", "output": e["output"]}
        for e in entries
    ]


def write_entries(entries: list[dict], folder: Path, fmt: str) -> str:
    """Write ``entries`` in ``fmt`` under ``folder``; return the source to pass as ``--data``."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        path = folder / "data.json"
        path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    elif fmt in ("jsonl", "openai", "sharegpt"):
        path = folder / "data.jsonl"
        records = [_chat_record(e, fmt) for e in entries] if fmt in CHAT_FORMATS else entries
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    elif fmt == "csv":
        path = folder / "data.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for e in entries for k in e)))
            writer.writeheader()
            writer.writerows(entries)
    elif fmt == "parquet":
        path = folder / "data.parquet"
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(entries), path)
    elif fmt == "hf":
        path = folder / "hf-data"
        path.mkdir()
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(entries), path / "train.parquet")
        return f"hf:{path}"
    else:
        raise ValueError(fmt)
    return str(path)


def _chat_record(entry: dict, fmt: str) -> dict:
    assert not entry["input"], "chat records hold no input: use chat_ready()"
    if fmt == "openai":
        return {
            "messages": [
                {"role": "user", "content": entry["instruction"]},
                {"role": "assistant", "content": entry["output"]},
            ]
        }
    return {
        "conversations": [{"from": "human", "value": entry["instruction"]}, {"from": "gpt", "value": entry["output"]}]
    }
