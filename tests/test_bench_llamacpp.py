"""The llama.cpp speed benchmark runs end to end at its smallest settings and prints every contender's row."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, require


@pytest.mark.slow
def test_bench_llamacpp_prints_a_row_per_contender():
    require(
        importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("gguf") is not None,
        "llama-cpp-python[server] or gguf not installed (pip install -e '.[test]')",
    )
    command = [
        sys.executable,
        "benchmarks/bench_llamacpp.py",
        "--models=tiny",
        "--prompts=2",
        "--rounds=1",
        "--batch-sizes=2",
        "--max-new-tokens=4",
        "--threads=1",
        "--data=datasets/instruction-sample.json",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| tiny |")]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("llama.cpp", "f32", "1"),
        ("llama.cpp", "f16", "1"),
        ("llama.cpp", "q8_0", "1"),
        ("ours", "f32", "1"),
        ("ours", "f32", "2"),
        ("ours", "bf16", "1"),
        ("ours", "bf16", "2"),
    ]
    assert rows[0][6] == "1.00x"  # llama.cpp f32 at batch 1 is the reference
    assert all(float(r[4]) > 0 for r in rows)
    assert "tiny: greedy tokens ours f32 = llama.cpp f32 on " in result.stdout
