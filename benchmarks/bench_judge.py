"""Judge throughput: ``workbench judge --concurrency 8`` against ``--concurrency 1``.

A local fake Ollama server (tests/workbench/ollama_fake.py, threaded) answers every chat after a fixed
delay, like a judge model whose generation dominates the time. Both settings judge the same 200 responses from
a fresh copy of the same database, interleaved round by round in this process; the ratio of items/s is printed
per round and as the median. Target: at least 0.8 x 8 = 6.4x.

    python benchmarks/bench_judge.py [--items 200] [--delay 0.05] [--rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "workbench"))

from ollama_fake import FakeOllama  # noqa: E402

from workbench import store  # noqa: E402
from workbench.judge import run_judge  # noqa: E402


def build_database(path: Path, items: int) -> Path:
    """``items`` responses of one model, each on its own item."""
    db = store.open_db(path)
    dataset_id = store.get_or_create_dataset(db, "bench")
    rows = [
        {
            "id": store.item_id("bench", f"Instruction {i}", ""),
            "position": i,
            "instruction": f"Instruction {i}",
            "input": "",
            "reference_output": f"Reference answer {i}",
            "split": None,
        }
        for i in range(items)
    ]
    store.add_items(db, dataset_id, rows, keep_position=False)
    model_id = store.get_or_create_model(db, "bench model")
    store.upsert_responses(
        db,
        model_id,
        [
            {"item_id": row["id"], "text": f"Response {i}", "decoding_json": None, "source": "bench"}
            for i, row in enumerate(rows)
        ],
    )
    db.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the fake judge takes per answer")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, FakeOllama(delay_s=args.delay) as fake:
        template = build_database(Path(tmp) / "template.db", args.items)
        ratios = []
        print(f"{args.items} items, fake judge answers after {args.delay * 1000:.0f} ms")
        for round_index in range(args.rounds):
            rates = {}
            for concurrency in (1, 8):
                copy = Path(tmp) / f"round{round_index}-c{concurrency}.db"
                shutil.copyfile(template, copy)
                summary = run_judge(copy, "judge", host=fake.url, concurrency=concurrency, progress=False)
                assert summary["run"]["judged"] == args.items, summary["run"]
                rates[concurrency] = summary["run"]["items_per_s"]
            ratios.append(rates[8] / rates[1])
            print(
                f"round {round_index + 1}: concurrency 1 {rates[1]:.1f} items/s, "
                f"concurrency 8 {rates[8]:.1f} "
                f"items/s, ratio {ratios[-1]:.2f}x"
            )
        assert fake.violations == [], fake.violations
    median = statistics.median(ratios)
    print(f"median ratio {median:.2f}x (target >= 6.4x): {'met' if median >= 6.4 else 'NOT met'}")


if __name__ == "__main__":
    main()
