"""``workbench bench --nproc 2`` against ``--nproc 1``: MMLU on CPU processes (gloo), same answers, less time.

Random GPT-2 124M weights are written once as a run folder; each contender is a fresh ``python -m workbench
bench`` (its start-up, lm-eval's import and the model load included, as a user sees it) into its own database.
Rounds alternate the two (this machine is shared and noisy); prints every time, the medians and their ratio,
whether the two stored the same rows (scores, standard errors, per-question answers) and how far apart their
log-likelihoods are (each process batches other questions together: float32 rounding differs).

From the checkout (the full run: all 57 subjects x 5 questions, 0-shot, 2 CPU processes against 1):

    WORKBENCH_TOKENIZER_FILE=../shared/tokenizers/gpt2.tiktoken HF_HOME=.hf_home PYTHONPATH=. \
        python benchmarks/bench_mmlu_parallel.py --mmlu-dir ../shared/datasets/mmlu --limit 5 --nproc 2 --rounds 1

A quick check of the script: add ``--subjects anatomy,astronomy,virology --limit 2``.

By default one process uses every core through PyTorch's threads and N processes share the cores, so on a
CPU the ratio is what a user gains by adding processes to the same cores (little: the matrix products already
use every core). ``--threads-per-process 1`` gives each process one core: the ratio is then the scaling of
the data-parallel path itself, as N GPUs would see it (one device per process).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write_run(folder: Path) -> Path:
    """A run folder (``config.json`` + ``best/``) holding random GPT-2 124M weights."""
    import torch

    from trainer.checkpoint import save_checkpoint
    from trainer.model import CONFIGS, GPT

    torch.manual_seed(0)
    model = GPT(CONFIGS["gpt2"])
    save_checkpoint(model.config, model.state_dict(), folder / "best")
    (folder / "config.json").write_text(json.dumps({"name": "random-gpt2", "model": model.config.to_dict()}))
    return folder


def mmlu_subset(mmlu_dir: Path, subjects: list[str], folder: Path) -> Path:
    """A folder with only ``subjects`` (``workbench bench`` runs every subject of the folder it is given)."""
    for split in ("test", "dev"):
        (folder / split).mkdir(parents=True)
        for subject in subjects:
            shutil.copy(mmlu_dir / split / f"{subject}_{split}.csv", folder / split)
    return folder


def stored_rows(db_path: Path) -> tuple[dict[str, list[dict]], list[float]]:
    """Result and sample rows in insertion order, without ids; and the samples' log-likelihoods, apart."""
    from workbench import store

    db = store.open_db(db_path)
    tables = {}
    for table in ("benchmark_results", "benchmark_samples"):
        rows = [dict(row) for row in db.query(f"SELECT * FROM {table} ORDER BY rowid")]
        tables[table] = [{k: v for k, v in row.items() if k not in ("id", "benchmark_run_id")} for row in rows]
    db.close()
    loglikelihoods = [ll for row in tables["benchmark_samples"] for ll in json.loads(row.pop("loglikelihoods_json"))]
    return tables, loglikelihoods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mmlu-dir", default=str(REPO.parent / "shared" / "datasets" / "mmlu"))
    parser.add_argument("--limit", type=int, default=5, help="questions per subject")
    parser.add_argument("--subjects", help="comma-separated subset (default: all in the folder)")
    parser.add_argument("--num-fewshot", type=int, default=0)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians are reported")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--threads-per-process",
        type=int,
        help="OMP_NUM_THREADS for every process (default: one process takes every core, N processes share them)",
    )
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.threads_per_process:
        env["OMP_NUM_THREADS"] = str(args.threads_per_process)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mmlu_dir = Path(args.mmlu_dir)
        if args.subjects:
            mmlu_dir = mmlu_subset(mmlu_dir, args.subjects.split(","), tmp / "mmlu")
        run = write_run(tmp / "run")
        seconds: dict[int, list[float]] = {1: [], args.nproc: []}
        for round_number in range(args.rounds):
            for nproc in seconds:
                db_path = tmp / f"nproc{nproc}-{round_number}.db"
                command = [sys.executable, "-m", "workbench", "bench", "--db", str(db_path), "--run", str(run)]
                command += ["--mmlu-dir", str(mmlu_dir), "--limit", str(args.limit), "--nproc", str(nproc)]
                command += ["--num-fewshot", str(args.num_fewshot), "--batch-size", str(args.batch_size)]
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp)
                seconds[nproc].append(time.perf_counter() - start)
                if done.returncode != 0:
                    raise SystemExit(f"--nproc {nproc} failed:\n{done.stderr[-3000:]}")
                print(f"round {round_number + 1}: --nproc {nproc}: {seconds[nproc][-1]:.1f} s", flush=True)
        one, many = (statistics.median(seconds[n]) for n in seconds)
        (rows, lls), (other_rows, other_lls) = (stored_rows(tmp / f"nproc{n}-0.db") for n in seconds)
        drift = max(abs(a - b) for a, b in zip(lls, other_lls, strict=True))
        print(
            f"{len(rows['benchmark_samples'])} questions, {args.num_fewshot}-shot: 1 process {one:.1f} s, "
            f"{args.nproc} processes {many:.1f} s, speed-up {one / many:.2f}x; identical answers and scores: "
            f"{rows == other_rows}; log-likelihoods differ by {drift:.1e} at most"
        )


if __name__ == "__main__":
    main()
