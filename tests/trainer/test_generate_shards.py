"""``generate --shard I/N``: N workers split a split by a stable hash of each entry, and their outputs, imported
into the workbench store, give exactly what one unsharded run gives."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.cli_errors import one_line_error
from trainer.cli import main
from trainer.shards import Shard, parse_shard
from workbench import importing, store

SHARD_ERROR = "--shard must be I/N with 1 <= I <= N, e.g. 1/3 for the first of three workers;"
REPO = Path(__file__).resolve().parents[2]
# Seeded sampling: each prompt draws from its own generator, so a response depends on neither batch nor shard
# (greedy decoding of the 4-step tiny run only yields whitespace, which would prove little).
DECODING = ["--split", "all", "--max-new-tokens", "3", "--batch-size", "8", "--temperature", "1.0", "--seed", "5"]
# Runs the trainer CLI, and SIGKILLs itself right after the first batch of responses is saved: a worker
# killed mid-run, at a known point.
KILLED_AFTER_FIRST_BATCH = """
import os, signal, sys
from trainer import generate
save = generate.ResponseFile.add
def save_then_die(self, responses):
    save(self, responses)
    os.kill(os.getpid(), signal.SIGKILL)
generate.ResponseFile.add = save_then_die
from trainer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _entry_shard(entry: dict, count: int) -> int:
    """The documented rule: SHA-256 of instruction and input (joined by U+001F), modulo N, plus one."""
    identity = f"{entry['instruction']}\x1f{entry.get('input', '')}"
    return int(hashlib.sha256(identity.encode()).hexdigest(), 16) % count + 1


def _generate_command(tiny_run: Path, out: Path, shard: str) -> list[str]:
    return ["generate", "--run", str(tiny_run), "--out", str(out), *DECODING, "--shard", shard]


def _rows(db_file: Path) -> tuple[set, list]:
    """(items without their positions, every stored response version with its model and item)."""
    db = store.open_db(db_file)
    items = set(db.execute("SELECT id, instruction, input, reference_output FROM items").fetchall())
    responses = sorted(
        db.execute(
            "SELECT m.name, rv.item_id, rv.text, rv.version, rv.is_current FROM response_versions rv "
            "JOIN models m ON m.id = rv.model_id"
        ).fetchall()
    )
    db.close()
    return items, responses


def test_shards_partition_every_identity():
    identities = [f"entry {i}\x1f" for i in range(300)]
    for count in (1, 2, 3, 7):
        owners = [[index for index in range(1, count + 1) if Shard(index, count).holds(i)] for i in identities]
        assert all(len(found) == 1 for found in owners)
        if count > 1:
            assert len({found[0] for found in owners}) == count  # no shard left empty by a skewed hash
    assert parse_shard("2/3") == Shard(2, 3) and str(Shard(2, 3)) == "2/3" and parse_shard(None) is None


@pytest.mark.slow
def test_three_shards_one_killed_and_rerun_import_as_the_unsharded_run(tiny_run, tmp_path, capsys):
    whole = tmp_path / "whole.json"
    assert main(["generate", "--run", str(tiny_run), "--out", str(whole), *DECODING]) == 0
    capsys.readouterr()
    expected = json.loads(whole.read_text())
    assert sum(bool(entry["model_response"]) for entry in expected) > len(expected) / 2
    outs = [tmp_path / f"shard-{index}.json" for index in (1, 2, 3)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # three workers on two cores
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", KILLED_AFTER_FIRST_BATCH, *_generate_command(tiny_run, out, f"{index}/3")]
            if index == 2
            else [sys.executable, "-m", "trainer", *_generate_command(tiny_run, out, f"{index}/3")],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index, out in zip((1, 2, 3), outs, strict=True)
    ]
    results = [(worker.wait(timeout=300), worker.stderr.read()) for worker in workers]
    assert results[0][0] == 0 and results[2][0] == 0, results
    assert results[1][0] == -signal.SIGKILL, results[1]

    share = [[entry for entry in expected if _entry_shard(entry, 3) == index] for index in (1, 2, 3)]
    assert all(len(entries) > 8 for entries in share)  # every shard has more than one batch
    killed = json.loads(outs[1].read_text())
    killed_meta = json.loads((tmp_path / "shard-2.meta.json").read_text())
    assert sum("model_response" in entry for entry in killed) == 8  # the first batch survived the kill
    assert (killed_meta["complete"], killed_meta["shard"], killed_meta["entries"]) == (False, "2/3", len(share[1]))

    code = main(_generate_command(tiny_run, outs[1], "2/3"))
    assert code == 0 and f"({len(share[1]) - 8} new)" in capsys.readouterr().err
    for index, out in zip((1, 2, 3), outs, strict=True):
        assert json.loads(out.read_text()) == share[index - 1]  # same entries, same greedy responses, in order
        meta = json.loads(out.with_name(f"shard-{index}.meta.json").read_text())
        assert (meta["shard"], meta["complete"], meta["responses"]["model_response"]["shard"]) == (
            f"{index}/3",
            True,
            f"{index}/3",
        )

    sharded_db, whole_db = tmp_path / "sharded.db", tmp_path / "whole.db"
    for out in outs:
        assert main_workbench(["import", str(out), "--db", str(sharded_db)]) == 0
    assert main_workbench(["import", str(whole), "--db", str(whole_db)]) == 0
    items, responses = _rows(sharded_db)
    assert (items, responses) == _rows(whole_db)
    assert len(items) == len(responses) == len(expected)  # every entry once, one response each: nothing doubled
    db = store.open_db(sharded_db)
    assert [importing.import_path(db, out).written for out in outs] == [0, 0, 0]  # importing again adds nothing
    db.close()
    assert _rows(sharded_db) == (items, responses)

    # One JSON file, as --help says: the data file first (its order), the shards, then an export.
    ordered_db, merged = tmp_path / "ordered.db", tmp_path / "merged.json"
    for path in (json.loads((tmp_path / "whole.meta.json").read_text())["data"], *outs):
        assert main_workbench(["import", str(path), "--db", str(ordered_db)]) == 0
    assert main_workbench(["export", "--db", str(ordered_db), "--format", "json", "--out", str(merged)]) == 0
    model = json.loads((tmp_path / "whole.meta.json").read_text())["name"]
    exported = [{**entry, "model_response": entry[model]} for entry in json.loads(merged.read_text())]
    assert [{key: entry[key] for key in expected[0]} for entry in exported] == expected


def main_workbench(argv: list[str]) -> int:
    from workbench.cli import main as workbench_main

    return workbench_main(argv)


@pytest.mark.parametrize("value", ["0/3", "4/3", "1/0", "3", "a/b", "1/3/1", "0/0", " 1/3", "1/" + "9" * 5000])
def test_bad_shard_values_are_one_line_and_write_nothing(value, tiny_run, tmp_path, capsys):
    out = tmp_path / "out.json"
    err = one_line_error(capsys, _generate_command(tiny_run, out, value))
    assert err == f"error: {SHARD_ERROR} got {value!r}\n"
    assert list(tmp_path.iterdir()) == []


def test_a_shard_with_no_entries_is_refused(tiny_run, tiny_hf_dir, tmp_path, capsys):
    data = tmp_path / "one.json"
    entry = {"instruction": "Name a color.", "input": "", "output": "Blue."}
    data.write_text(json.dumps([entry]))
    empty = 1 if _entry_shard(entry, 2) == 2 else 2
    out = tmp_path / "out.json"
    argv = ["generate", "--weights", str(tiny_hf_dir), "--data", str(data), "--split", "all", "--out", str(out)]
    err = one_line_error(capsys, [*argv, "--shard", f"{empty}/2"])
    assert err == f"error: shard {empty}/2 holds none of the 1 entries of the all split; use fewer shards\n"
    assert not out.exists()
