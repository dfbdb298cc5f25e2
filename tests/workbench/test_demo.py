"""``workbench demo``: the README's main command, end to end on the bundled sample, then its app in Chromium.

Offline, so the demo starts from a random tiny GPT; the judge is the scripted Ollama server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.errors import UserError
from workbench import app, demo
from workbench.cli import main as workbench_main

sys.path.insert(0, str(Path(__file__).parent))
from ollama_fake import DEFAULT_MODEL, FakeOllama  # noqa: E402
from test_app import _free_port, _open_tab, _wait_for_item, _wait_for_text  # noqa: E402

FINE_TUNED, BASE = "random-tiny-sft", "random-tiny"
TEST_ITEMS = 7  # 10 % of the 78 bundled entries, rounded down as the recipe does


def _counts(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(db_path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: db.execute(f"SELECT count(*) FROM [{table}]").fetchone()[0] for table in tables}


def _responses_per_model(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(db_path) as db:
        query = "SELECT m.name, count(*) FROM responses r JOIN models m ON m.id = r.model_id GROUP BY m.name"
        return dict(db.execute(query).fetchall())


def _benchmarked_models(db_path: Path) -> set[str]:
    with sqlite3.connect(db_path) as db:
        query = "SELECT m.name FROM benchmark_runs b JOIN models m ON m.id = b.model_id"
        return {name for (name,) in db.execute(query)}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    """The demo's database and what it printed, built once through the command line with a judge answering."""
    db_path = tmp_path_factory.mktemp("demo") / "workbench-demo.db"  # the default: what a checkout gets
    printed = io.StringIO()
    with FakeOllama() as fake, contextlib.redirect_stdout(printed):
        code = workbench_main(
            ["demo", "--db", str(db_path), "--no-serve", "--host", fake.url, "--judge-model", DEFAULT_MODEL]
        )
        assert fake.violations == []
    assert code == 0
    return db_path, printed.getvalue()


@pytest.fixture(scope="module")
def demo_db(demo_run) -> Path:
    return demo_run[0]


def _summary(printed: str) -> list[str]:
    """The lines after the demo's closing heading."""
    assert "\n== summary\n" in printed, printed[-2000:]
    return printed.split("\n== summary\n", 1)[1].splitlines()


@pytest.mark.slow
def test_demo_ends_with_a_summary_a_person_can_read(demo_run):
    db_path, printed = demo_run
    assert "{'" not in printed  # no raw dictionaries
    lines = _summary(printed)
    assert lines[0] == f"database   {db_path} (run folder and responses in {db_path.stem}-files/)"
    assert lines[1] == f"imported   data set 'instruction-sample', 78 entries ({TEST_ITEMS} in the test split)"
    assert lines[2].startswith(f"           run {FINE_TUNED}: fine-tuned from {BASE} for ")
    assert "best validation loss " in lines[2]
    assert lines[3] == f"           {2 * TEST_ITEMS} responses to the test split: {FINE_TUNED}, {BASE}"
    assert lines[4].startswith(f"judged     {2 * TEST_ITEMS} responses by {DEFAULT_MODEL}: mean score {FINE_TUNED} ")
    assert lines[5].startswith("benchmark  0-shot accuracy on the 32 bundled questions (chance 0.25): ")
    assert f"{FINE_TUNED} 0." in lines[5] and f"{BASE} 0." in lines[5]
    assert lines[6] == f"app        `workbench serve --db {db_path}` opens it on http://127.0.0.1:7860"
    assert lines[7:] == []


@pytest.mark.slow
def test_demo_fills_every_part_of_the_store(demo_db):
    counts = _counts(demo_db)
    assert counts["items"] == 78 and counts["datasets"] == 1
    assert _responses_per_model(demo_db) == {FINE_TUNED: TEST_ITEMS, BASE: TEST_ITEMS}
    assert counts["judge_scores"] == 2 * TEST_ITEMS  # every response scored once by the judge
    assert _benchmarked_models(demo_db) == {FINE_TUNED, BASE}  # one name per model across the store
    assert counts["training_metrics"] > 0 and counts["benchmark_samples"] == 2 * 32
    run_dir = demo_db.with_name("workbench-demo-files") / FINE_TUNED
    assert (run_dir / "loss.png").is_file() and (run_dir / "best" / "model.safetensors").is_file()


@pytest.mark.slow
def test_git_ignores_everything_the_demo_writes_into_a_checkout(demo_db):
    repo = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    written = sorted(str(path.relative_to(demo_db.parent)) for path in demo_db.parent.rglob("*") if path.is_file())
    assert "workbench-demo.db" in written and "workbench-demo-files/test-responses.json" in written
    check = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", "--stdin"],
        cwd=repo,
        input="\n".join(written),
        capture_output=True,
        text=True,
    )
    not_ignored = [line.split("\t")[1] for line in check.stdout.splitlines() if line.startswith("::")]
    assert not_ignored == [], "the demo leaves these untracked in a checkout"


@pytest.mark.slow
def test_demo_again_reuses_every_step_and_adds_nothing(demo_db, capsys):
    before = _counts(demo_db)
    started = time.perf_counter()
    notice = demo.run_demo(demo_db, judge_host="http://127.0.0.1:9")  # no judge now: skipped with a hint
    elapsed = time.perf_counter() - started
    assert notice == demo.RANDOM_NOTICE
    assert _counts(demo_db) == before
    out = capsys.readouterr().out
    assert "ollama serve" in out and "ollama pull" in out and "(from the store)" in out
    summary = _summary(out)
    assert summary[1] == f"imported   data set 'instruction-sample', 78 entries ({TEST_ITEMS} in the test split)"
    assert summary[4] == (
        f"judged     skipped (see above); later: `workbench judge --db {demo_db} --judge-model {demo.DEFAULT_JUDGE}`"
    )
    assert elapsed < 60, f"a rerun should reuse the run, responses and benchmarks, took {elapsed:.0f} s"


@pytest.mark.browser
@pytest.mark.slow
def test_app_on_the_demo_database_shows_every_tab(demo_db, browser):
    blocks = app.build_app(demo_db)  # as `workbench serve --db` opens it: the notice comes from the database
    port = _free_port()
    app.launch(blocks, port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(20_000)
        page.goto(url)
        _wait_for_item(page)
        assert "small random GPT" in page.locator("body").inner_text()  # the app says the model is random
        _open_tab(page, "Leaderboard")
        _wait_for_text(page, "#leaderboard-table", FINE_TUNED)
        assert BASE in page.locator("#leaderboard-table").inner_text()
        _open_tab(page, "Benchmarks")
        _wait_for_text(page, "#bench-results", "astronomy")
        _open_tab(page, "Training")
        _wait_for_text(page, "#training-table", FINE_TUNED)
        page.close()
    finally:
        blocks.close()


def test_demo_starts_from_random_weights_without_gpt2(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_pretrained_available", lambda: False)  # offline with an empty cache
    base = demo.choose_base(tmp_path)
    assert (base.model, base.label, base.notice) == ("tiny", BASE, demo.RANDOM_NOTICE)
    assert (Path(base.weights) / "model.safetensors").is_file()
    given = demo.choose_base(tmp_path / "elsewhere", weights=base.weights)  # a folder of the user's
    assert (given.model, given.weights, given.notice) == ("tiny", base.weights, None)
    with pytest.raises(UserError, match="config.json: missing"):
        demo.choose_base(tmp_path, weights=str(tmp_path))
