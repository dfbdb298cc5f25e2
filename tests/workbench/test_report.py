"""``workbench report``: one self-contained HTML file (or Markdown) of everything the store knows, built from the
functions behind ``workbench stats``, ``compare`` and ``agreement``, so it prints the figures they print.

The shared data: the book's evaluation set with both judges, a few human grades, a pairwise judge, a tiny
fine-tuning run benchmarked on the bundled MMLU sample twice (as two models, for McNemar), and one item whose
response is a ``<script>``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest

from tests.conftest import REPO
from tests.workbench.test_app import TIMEOUT_MS, _start, open_page
from workbench import analysis, importing, stats, store
from workbench.bench import run_benchmark
from workbench.cli import main

MC_SAMPLE = REPO / "datasets" / "mc-sample"
BOOK = "eval-example-data"
MODEL_1, MODEL_2 = "model 1 response", "model 2 response"
RUN_A, RUN_B = "tiny-run", "tiny-run-b"
XSS = "<script>window.__xss=1</script>"
SECTIONS = {
    "models": "Models and where they came from",
    "training": "Loss curves",
    "leaderboard": "Leaderboard",
    "scores": "Judge score distributions",
    "agreement": "Agreement between judges and humans",
    "pairwise": "Pairwise judges",
    "compare": "Paired comparisons",
    "benchmarks": "Benchmark accuracy per subject",
    "differences": "Items where the models differ most",
}
_num = stats.significant_text


def _add_xss_item(db, folder: Path) -> None:
    """One more item of the book's two models: model 1 answers with a script and gpt4 scores it 0, model 2
    scores 100, so the item is where the two differ most."""
    path = folder / "xss-check.json"
    entry = {"instruction": "Say <b>hello</b>", "input": "", "output": "hello", MODEL_1: XSS, MODEL_2: "hello"}
    path.write_text(json.dumps([entry]), encoding="utf-8")
    importing.import_path(db, path)
    (item,) = store.dataset_items(db, "xss-check")
    for model, score in ((MODEL_1, 0), (MODEL_2, 100)):
        scores = folder / f"xss-{score}.json"
        scores.write_text(json.dumps([{"item_id": item["id"], "score": score}]), encoding="utf-8")
        importing.import_scores(db, scores, judge="gpt4", response_key=model, dataset="xss-check")


def _add_grades(db) -> None:
    """Reviewer alice grades model 1's first 20 book responses (a grade near gpt4's score, mapped onto 1-5), and
    both models on the first book item and the script item: where humans and the models differ most."""
    gpt4 = store.rater_scores(db, "judge:gpt4", models=[MODEL_1, MODEL_2])
    first = [row["id"] for row in store.dataset_items(db, BOOK)][:20]
    graded = [(MODEL_1, item) for item in first] + [(MODEL_2, first[0])]
    graded += [(model, store.dataset_items(db, "xss-check")[0]["id"]) for model in (MODEL_1, MODEL_2)]
    for model, item in graded:
        response = store.response_ids_by_item(db, model)[item]
        store.add_grade(db, response, "alice", int(min(5, max(1, round(1 + gpt4[response] / 25)))))


def _add_pairwise_judge(db) -> None:
    """A pairwise judge over the book's 100 items: mostly model 2, some verdicts that follow the position."""
    judge = store.get_or_create_llm_judge(
        db,
        kind="ollama",
        name="pairjudge",
        model="llama3.1:8b",
        digest="sha256:0123",
        template_hash="abc",
        options={"temperature": 0},
        mode="pairwise",
    )
    a, b = store.model_id(db, MODEL_1), store.model_id(db, MODEL_2)
    patterns = [("B", "B"), ("B", "B"), ("A", "A"), ("A", "B"), ("tie", "tie")]
    rows = []
    for index, item in enumerate(store.dataset_items(db, BOOK)):
        ab, ba = patterns[index % len(patterns)]
        rows.append(
            {
                "item_id": item["id"],
                "model_a_id": a,
                "model_b_id": b,
                "repeat": 0,
                "verdict_ab": ab,
                "verdict_ba": ba,
                "winner": ab if ab == ba else "tie",
                "consistent": int(ab == ba),
                "raw_output": "{}",
                "latency_s": 0.1,
                "error": None,
            }
        )
    store.save_judge_pairwise(db, judge["id"], rows)


@pytest.fixture(scope="module")
def report_db(_book_db_template, tiny_run, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    path = folder / "report.db"
    shutil.copyfile(_book_db_template, path)
    db = store.open_db(path)
    _add_xss_item(db, folder)
    _add_grades(db)
    _add_pairwise_judge(db)
    importing.import_run_folder(db, tiny_run)
    db.close()
    second = folder / RUN_B
    shutil.copytree(tiny_run, second)
    config = json.loads((second / "config.json").read_text())
    (second / "config.json").write_text(json.dumps({**config, "name": RUN_B}))
    for run in (tiny_run, second):
        run_benchmark(path, run=str(run), mmlu_dir=MC_SAMPLE, log_file=folder / "bench.log")
    return path


@pytest.fixture(scope="module")
def report_html(report_db, tmp_path_factory) -> tuple[Path, float]:
    """The HTML report of ``report_db`` written by the command line, and how long it took."""
    out = tmp_path_factory.mktemp("out") / "report.html"
    start = time.perf_counter()
    assert main(["report", "--db", str(report_db), "--out", str(out)]) == 0
    return out, time.perf_counter() - start


def _cli_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_every_section_is_there_and_data_is_escaped(report_html):
    out, seconds = report_html
    page = out.read_text(encoding="utf-8")
    for section, title in SECTIONS.items():
        assert f'<section id="{section}">' in page
        assert f"<h2>{title}</h2>" in page
    assert "<script" not in page.lower()  # the report runs no code, and no data turns into a tag
    assert html.escape(XSS) in page
    assert "Say &lt;b&gt;hello&lt;/b&gt;" in page
    # nothing to fetch: figures are inline SVG whose only references are to their own parts
    references = re.findall(r"""(?:href|src)\s*=\s*["']([^"']*)|url\(([^)]*)\)|@import""", page)
    assert references and all((link or url).startswith("#") for link, url in references)
    assert page.count("<svg") >= 5  # loss curves, two score histograms, a scatter plot, subject accuracy
    assert out.stat().st_size < 3_000_000 and seconds < 60


@pytest.mark.slow
def test_numbers_equal_stats_compare_and_agreement(report_db, report_html, capsys):
    page = report_html[0].read_text(encoding="utf-8")
    db = str(report_db)

    summary = _cli_json(capsys, "stats", "--db", db)
    for source, result in summary["pairwise"].items():
        for model, record in result["models"].items():
            rating = record["bradley_terry"]
            assert html.escape(f"{_num(rating['value'])} {stats.interval_text(stats.Estimate(**rating))}") in page, (
                source,
                model,
            )
    for model, record in summary["models"].items():
        assert f"<td>{_num(record['judges']['gpt4']['mean'])}</td>" in page, model
    for column, values in summary["benchmarks"].items():
        assert html.escape(column) in page
        for accuracy in values.values():
            assert f"<td>{_num(accuracy)}</td>" in page

    compared = _cli_json(capsys, "compare", "--db", db, "--models", MODEL_1, MODEL_2)
    for rater, difference in compared["differences"].items():
        assert f"<td>{_num(difference['mean_difference'])}</td>" in page, rater
        assert stats.bounds_text(difference["low"], difference["high"]) in page
    gpt4 = compared["differences"]["gpt4"]
    if gpt4["low"] > 0:
        better, worse, by, interval = MODEL_2, MODEL_1, gpt4["mean_difference"], (gpt4["low"], gpt4["high"])
    else:
        assert gpt4["high"] < 0  # the judges' books tell the two models apart
        better, worse, by, interval = MODEL_1, MODEL_2, -gpt4["mean_difference"], (-gpt4["high"], -gpt4["low"])
    verdict = f"{better} is better than {worse} by {_num(by)} points on gpt4's scale, 95 % CI "
    verdict += stats.bounds_text(*interval)
    assert verdict in html.unescape(page)
    runs = _cli_json(capsys, "compare", "--db", db, "--models", RUN_A, RUN_B)
    (mcnemar,) = runs["benchmarks"].values()
    assert f"McNemar exact p = {_num(mcnemar['p_value'])}" in page
    assert f"n = {mcnemar['n']} questions" in page

    for judges in (("gpt4", "llama3"), ("gpt4", "human")):
        agreement = _cli_json(capsys, "agreement", "--db", db, "--judges", *judges)
        for correlation in agreement["correlations"]:
            assert f"{_num(correlation['value'])} {stats.bounds_text(correlation['low'], correlation['high'])}" in page
        assert f"<td>{_num(agreement['kappa']['quadratic'])}</td>" in page
        assert f"<td>{_num(agreement['alpha'])}</td>" in page


@pytest.mark.slow
@pytest.mark.browser
def test_opens_in_chromium_without_errors_or_requests(browser, report_html, tmp_path):
    out = report_html[0]
    requests, problems = [], []
    page = open_page(browser, requests=requests)
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(out.as_uri())
    for title in SECTIONS.values():
        assert page.get_by_role("heading", name=title, exact=True).is_visible()
    assert page.get_by_text(XSS).first.is_visible()  # shown as text
    assert page.evaluate("window.__xss") is None  # ... and never run
    assert requests == [out.as_uri()] and problems == []
    # the README's picture: the top of the report (models, loss curves, leaderboard), not all 8,000 pixels
    folder = REPO / "docs" if os.environ.get("WORKBENCH_UPDATE_SCREENSHOTS") == "1" else tmp_path
    assert page.screenshot(path=str(folder / "report.png")).startswith(b"\x89PNG")
    page.context.close()


@pytest.mark.slow
def test_markdown_variant_holds_the_same_sections_and_figures(report_db, report_html, tmp_path, capsys):
    out = tmp_path / "report.md"
    assert main(["report", "--db", str(report_db), "--out", str(out), "--format", "md"]) == 0
    text = out.read_text(encoding="utf-8")
    assert [line for line in text.splitlines() if line.startswith("## ")] == [f"## {t}" for t in SECTIONS.values()]
    assert "<script" not in text and "&lt;script&gt;" in text
    assert "<svg" not in text
    compared = _cli_json(capsys, "compare", "--db", str(report_db), "--models", MODEL_1, MODEL_2)
    gpt4 = compared["differences"]["gpt4"]
    interval = sorted(abs(bound) for bound in (gpt4["low"], gpt4["high"]))  # as the verdict orients it
    assert f"95 % CI {stats.bounds_text(*interval)}" in text


@pytest.mark.slow
@pytest.mark.browser
def test_the_data_tab_offers_the_report_for_download(browser, book_db):
    blocks, url = _start(book_db)
    try:
        page = open_page(browser, url)
        page.get_by_role("tab", name="Data").click()
        page.locator("#data-report").click()
        link = page.locator("#report-file a").first
        link.wait_for(timeout=3 * TIMEOUT_MS)
        text = page.request.get(urljoin(page.url, link.get_attribute("href"))).text()
        assert [f"<h2>{title}</h2>" in text for title in SECTIONS.values()] == [True] * len(SECTIONS)
        assert "Data set: eval-example-data." in text
        page.context.close()
    finally:
        blocks.close()


@pytest.mark.slow
def test_dataset_and_models_narrow_every_section(report_db, tmp_path):
    out = tmp_path / "book.md"
    narrow = ["--dataset", BOOK, "--models", MODEL_1, MODEL_2]
    assert main(["report", "--db", str(report_db), "--out", str(out), "--format", "md", *narrow]) == 0
    text = out.read_text(encoding="utf-8")
    db = store.open_db(report_db)
    gpt4 = analysis.compare(db, MODEL_1, MODEL_2, dataset=BOOK)["differences"]["gpt4"]
    db.close()
    assert gpt4["n"] == 100  # the script item belongs to another data set
    row = [_num(gpt4[key]) for key in ("mean_a", "mean_b", "mean_difference")]
    assert f"| gpt4 | 100 | {' | '.join(row)} | {stats.bounds_text(gpt4['low'], gpt4['high'])} |" in text
    assert "Models: model 1 response, model 2 response." in text and RUN_A not in text
    assert "No training runs of these models: " in text and "No benchmark runs of these models: " in text
    assert "script" not in text


def test_a_store_without_runs_benchmarks_or_pairwise_judges_says_so(book_db, tmp_path):
    out = tmp_path / "report.md"
    assert main(["report", "--db", str(book_db), "--out", str(out), "--format", "md", "--resamples", "50"]) == 0
    text = out.read_text(encoding="utf-8")
    assert [line for line in text.splitlines() if line.startswith("## ")] == [f"## {t}" for t in SECTIONS.values()]
    assert "No training runs of these models: " in text
    assert "No benchmark runs of these models: " in text
    assert "No pairwise judge verdicts on these models: " in text
    assert "No human grades" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "nope"], "error: unknown data set 'nope'; known: 'eval-example-data'"),
        (["--models", MODEL_1, "nope"], "error: unknown model (response key) 'nope'; known: "),
        (["--top", "0"], "error: --resamples and --top must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(book_db, tmp_path, capsys, db_snapshot, argv, message):
    out = tmp_path / "report.html"
    before = db_snapshot(book_db)
    assert main(["report", "--db", str(book_db), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not any(path.name.startswith("report") for path in tmp_path.iterdir())
    assert db_snapshot(book_db) == before


def test_a_missing_database_or_output_folder_is_refused(book_db, tmp_path, capsys):
    missing = tmp_path / "missing.db"
    assert main(["report", "--db", str(missing), "--out", str(tmp_path / "r.html")]) == 2
    assert capsys.readouterr().err == f"error: {missing}: no such database\n"
    assert not missing.exists() and not (tmp_path / "r.html").exists()
    folder = tmp_path / "no" / "such"
    assert main(["report", "--db", str(book_db), "--out", str(folder / "r.html")]) == 2
    assert capsys.readouterr().err == f"error: {folder}: no such folder for --out\n"
    assert main(["report", "--db", str(book_db), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: a folder; --out names the file to write\n"
