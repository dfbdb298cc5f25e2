"""``agreement``, ``stats`` and ``compare`` on the book's data, with grades and benchmark answers added."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from trainer.errors import UserError
from workbench import analysis, cli, stats, store

M1, M2 = "model 1 response", "model 2 response"


def _scores(shared_dir, file_name: str) -> list[int]:
    return json.loads((shared_dir / "datasets" / "judge-scores" / file_name).read_text())


def _grade_two_reviewers(db, count: int = 30) -> list[tuple[int, int, int]]:
    """alice and bob grade the first ``count`` responses of model 1 (bob is alice +/- 1 on some)."""
    rows = store.response_rows(db, models=[M1])[:count]
    grades = []
    for i, row in enumerate(rows):
        alice = i % 5 + 1
        bob = min(5, alice + 1) if i % 3 == 0 else alice
        store.add_grade(db, row["response_id"], "alice", alice)
        store.add_grade(db, row["response_id"], "bob", bob)
        grades.append((row["response_id"], alice, bob))
    return grades


def test_agreement_between_the_book_judges(book_db, shared_dir, capsys):
    db = store.open_db(book_db)
    report = analysis.agreement(db, ["gpt4", "llama3"], models=[M1], resamples=300)
    gpt4, llama3 = (
        _scores(shared_dir, "gpt4-model-1-response.json"),
        _scores(shared_dir, "llama3-8b-model-1-response.json"),
    )
    correlations = {c["method"]: c for c in report["correlations"]}
    assert report["n"] == 100
    assert correlations["pearson"]["value"] == pytest.approx(scipy_stats.pearsonr(gpt4, llama3).statistic)
    assert correlations["kendall"]["value"] == pytest.approx(scipy_stats.kendalltau(gpt4, llama3).statistic)
    assert report["means"] == {"gpt4": 74.09, "llama3": pytest.approx(np.mean(llama3))}
    assert set(report["kappa"]) == {"quadratic"}  # judges on a 0-100 scale: only kappa weighted by distance
    argv = ["agreement", "--db", str(book_db), "--judges", "gpt4", "llama3", "--resamples", "200"]
    assert cli.main([*argv, "--response-key", M1]) == 0
    text = capsys.readouterr().out
    assert text.startswith("gpt4 vs llama3 on model 1 response: n = 100 responses (means on own scales: gpt4 74.1")
    assert "pearson      0.805" in text
    assert cli.main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 100  # llama3 scored only model 1


def test_agreement_of_reviewers_adds_kappa_and_alpha(book_db):
    db = store.open_db(book_db)
    grades = _grade_two_reviewers(db)
    alice, bob = [g[1] for g in grades], [g[2] for g in grades]
    report = analysis.agreement(db, ["alice", "bob"], resamples=200)
    assert report["n"] == 30
    assert report["kappa"]["quadratic"] == pytest.approx(
        stats.cohen_kappa(alice, bob, weights="quadratic", categories=range(1, 6))
    )
    assert report["kappa"]["unweighted"] == pytest.approx(stats.cohen_kappa(alice, bob))
    assert report["alpha"] == pytest.approx(stats.krippendorff_alpha([alice, bob], level="ordinal"))
    assert report["human_alpha"]["reviewers"] == ["alice", "bob"]
    versus_human = analysis.agreement(db, ["gpt4", "human"], models=[M1], resamples=200)
    gpt4 = {r["response_id"]: r["score"] for r in store.judge_score_rows(db) if r["judge"] == "gpt4"}
    expected = scipy_stats.pearsonr([gpt4[g[0]] for g in grades], [(g[1] + g[2]) / 2 for g in grades])
    assert versus_human["n"] == 30
    assert versus_human["correlations"][0]["value"] == pytest.approx(expected.statistic)


def test_agreement_errors(book_db, capsys):
    db = store.open_db(book_db)
    with pytest.raises(UserError, match="unknown judge or reviewer 'gpt5'; known: gpt4, llama3, human"):
        analysis.agreement(db, ["gpt4", "gpt5"])
    with pytest.raises(UserError, match="both rated only 0 responses of model 2 response; need 3"):
        analysis.agreement(db, ["gpt4", "llama3"], models=[M2])
    assert cli.main(["agreement", "--db", str(book_db), "--judges", "gpt4", "gpt4"]) == 2
    assert "error: --judges takes two different names" in capsys.readouterr().err


def test_stats_per_model_and_pairwise_ratings(book_db, capsys):
    db = store.open_db(book_db)
    _grade_two_reviewers(db, count=10)
    items = store.dataset_items(db, "eval-example-data")
    for i, item in enumerate(items[:20]):
        first = store.add_pairwise_grade(db, item["id"], M1, M2, "alice", "left" if i < 15 else "right", True)
    # a swapped-side repeat measures alice's consistency, not the models: it is not a 21st comparison
    store.add_pairwise_grade(db, items[19]["id"], M2, M1, "alice", "right", True, repeat_of=first)
    report = analysis.model_stats(db, resamples=200)
    assert report["models"][M1]["judges"] == {
        "gpt4": {"mean": 74.09, "n": 100},
        "llama3": {"mean": pytest.approx(77.05), "n": 100},
    }
    assert report["models"][M2]["judges"]["gpt4"]["mean"] == pytest.approx(56.57)
    assert report["models"][M1]["human"] == {"mean": pytest.approx(3.15), "n": 10, "grades": 20}
    assert report["models"][M2]["human"] is None
    human = report["pairwise"][analysis.HUMAN_BLIND]["models"]
    assert (human[M1]["wins"], human[M1]["win_rate"], human[M2]["losses"]) == (15, 0.75, 15)
    gap = human[M1]["bradley_terry"]["value"] - human[M2]["bradley_terry"]["value"]
    assert gap == pytest.approx(400 * np.log10(3), abs=1)
    assert analysis.compare(db, M1, M2, resamples=50)["pairwise"] == {M1: 15, M2: 5, "tie": 0}
    assert cli.main(["stats", "--db", str(book_db), "--resamples", "100"]) == 0
    text = capsys.readouterr().out
    assert "model 1 response  100        74.1       77.0         3.15" in text
    assert "pairwise (human blind votes, 20 comparisons):" in text


def test_compare_two_models(book_db, shared_dir, capsys):
    db = store.open_db(book_db)
    gpt4_1, gpt4_2 = (_scores(shared_dir, f"gpt4-model-{n}-response.json") for n in (1, 2))
    run = {"tasks": "mmlu", "num_fewshot": 0, "settings_json": "{}", "lm_eval_version": "0.4.13"}
    correct = {M1: [1] * 10 + [0] * 2 + [1] * 30 + [0] * 8, M2: [0] * 10 + [1] * 2 + [1] * 30 + [0] * 8}
    for model, answers in correct.items():
        run_id = db["benchmark_runs"].insert({**run, "model_id": store.model_id(db, model), "cache_key": model}).last_pk
        db["benchmark_samples"].insert_all(
            {"benchmark_run_id": run_id, "task": "mmlu", "subject": "anatomy", "doc_id": i, "correct": c}
            for i, c in enumerate(answers)
        )
    report = analysis.compare(db, M1, M2, resamples=300)
    assert set(report["differences"]) == {"gpt4"}  # llama3 scored only model 1
    gpt4 = report["differences"]["gpt4"]
    assert (gpt4["n"], gpt4["mean_difference"]) == (100, pytest.approx(np.mean(gpt4_2) - np.mean(gpt4_1)))
    assert gpt4["high"] < 0  # model 2 is really worse by GPT-4's scores
    assert report["benchmarks"]["mmlu · 0-shot · 50 q"] == {
        "n": 50,
        "accuracy_a": 0.8,
        "accuracy_b": 0.64,
        "only_a": 10,
        "only_b": 2,
        "p_value": pytest.approx(158 / 4096),
    }
    assert report["pairwise"] is None
    assert cli.main(["compare", "--db", str(book_db), "--models", M1, M2, "--resamples", "100"]) == 0
    text = capsys.readouterr().out
    assert "gpt4   100  74.1    56.6    -17.5" in text
    assert "only A right 10, only B right 2; McNemar exact p = 0.0386" in text
    assert cli.main(["compare", "--db", str(book_db), "--models", M1, "gpt2"]) == 2
    assert "unknown model (response key) 'gpt2'" in capsys.readouterr().err
