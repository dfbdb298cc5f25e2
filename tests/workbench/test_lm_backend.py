"""Our lm-eval backend against lm-eval's own ``hf`` backend on the same weights, and the MMLU task files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TASK_SUBJECTS = ["anatomy", "high_school_geography"]
MC_SAMPLE = REPO / "datasets" / "mc-sample"


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """Keep the Hugging Face caches (and our converted tokenizer) out of the home folder."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("hf_home")
        patch.setenv("HF_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def backends(tiny_hf_dir, hf_home):
    """(ours, lm-eval's hf) on the same random tiny weights."""
    from lm_eval.models.huggingface import HFLM

    from workbench.bench import hf_tokenizer_dir
    from workbench.lm_backend import WorkbenchLM

    ours = WorkbenchLM(weights=str(tiny_hf_dir), batch_size=4)
    theirs = HFLM(
        pretrained=str(tiny_hf_dir),
        tokenizer=str(hf_tokenizer_dir()),
        batch_size=4,
        device="cpu",
        dtype="float32",
    )
    return ours, theirs


def _evaluate(lm, mmlu_dir: Path, subjects: list[str], shots: int, limit: int) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from workbench.bench import TASKS_DIR

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"mmlu_dir": str(mmlu_dir)})
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=[f"wb_mmlu_{s}" for s in subjects],
        num_fewshot=shots,
        limit=limit,
        task_manager=manager,
        log_samples=True,
    )


def _loglikelihoods(output: dict) -> dict[str, list[list[float]]]:
    return {
        task: [[ll for ll, _ in sample["filtered_resps"]] for sample in samples]
        for task, samples in output["samples"].items()
    }


@pytest.mark.slow
@pytest.mark.parametrize("shots", [0, 5])
def test_loglikelihoods_and_choices_match_hf_backend(backends, shared_dir, shots):
    ours, theirs = backends
    mmlu = shared_dir / "datasets" / "mmlu"
    mine, reference = (_evaluate(lm, mmlu, TASK_SUBJECTS, shots, limit=4) for lm in (ours, theirs))
    mine_ll, reference_ll = _loglikelihoods(mine), _loglikelihoods(reference)
    assert mine_ll.keys() == reference_ll.keys() == {f"wb_mmlu_{s}" for s in TASK_SUBJECTS}
    for task in mine_ll:
        assert len(mine_ll[task]) == 4
        for a, b in zip(mine_ll[task], reference_ll[task], strict=True):
            assert a == pytest.approx(b, abs=1e-4)
            assert a.index(max(a)) == b.index(max(b))
        assert mine["results"][task]["acc,none"] == reference["results"][task]["acc,none"]
    # 5-shot prompts are longer than the tiny model's 256 positions: both backends cut them the same way.
    if shots == 5:
        prompt = mine["samples"][f"wb_mmlu_{TASK_SUBJECTS[0]}"][0]["arguments"][0][0]
        assert len(ours.tok_encode(prompt)) > ours.max_length


def _requests(kind: str, args_list: list[tuple]):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(args_list)]


def test_loglikelihood_shares_prefixes_and_matches_hf(backends):
    """Several-token continuations, contexts sharing a long prefix, an empty context, rolling scores."""
    ours, theirs = backends
    shared = "The following are multiple choice questions (with answers) about astronomy. " * 4
    pairs = [
        (shared + "Which planet is largest?", " Jupiter, by far"),
        (shared + "Which planet is largest?", " B"),
        (shared + "Name a moon.", " Titan"),
        ("", "Hello world"),
        ("Short", " and sweet, really"),
    ]
    mine, reference = (lm.loglikelihood(_requests("loglikelihood", pairs)) for lm in (ours, theirs))
    for (ll, greedy), (ref_ll, ref_greedy) in zip(mine, reference, strict=True):
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy
    texts = [("A whole paragraph of text to score. " * 40,), ("Tiny.",)]  # the first spans several windows
    rolling, reference = (lm.loglikelihood_rolling(_requests("loglikelihood_rolling", texts)) for lm in (ours, theirs))
    assert len(ours.tok_encode(texts[0][0])) > ours.max_length
    assert rolling == pytest.approx(reference, abs=1e-3)


def test_generate_until_stops_at_stop_sequences(backends):
    ours, theirs = backends
    prompt = "Question: what is the capital of France?\nAnswer:"
    free = ours.generate_until(_requests("generate_until", [(prompt, {"until": [], "max_gen_toks": 24})]))[0]
    assert free
    stop = free[len(free) // 2 : len(free) // 2 + 2]
    assert stop and stop in free
    settings = {"until": [stop], "max_gen_toks": 24, "do_sample": False}
    stopped, reference = (
        lm.generate_until(_requests("generate_until", [(prompt, settings)]))[0] for lm in (ours, theirs)
    )
    assert stopped == free[: free.index(stop)]
    assert stopped == reference


def _write_headered(original: Path, headered: Path) -> None:
    """The same questions in the headered layout (answer as an index)."""
    for split in ("test", "dev"):
        (headered / split).mkdir(parents=True)
        for path in (original / split).glob("*.csv"):
            rows = list(csv.reader(path.open(newline="")))
            with (headered / split / path.name).open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["question", "choice0", "choice1", "choice2", "choice3", "answer"])
                writer.writerows(row[:5] + ["ABCD".index(row[5])] for row in rows)


def test_both_mmlu_layouts_load_the_same_questions(tmp_path):
    from workbench.bench import load_mmlu, mmlu_subjects, read_mmlu_csv

    _write_headered(MC_SAMPLE, tmp_path)
    subjects = mmlu_subjects(MC_SAMPLE, shots=5)
    assert subjects == mmlu_subjects(tmp_path, shots=5)
    assert subjects == ["astronomy", "college_computer_science", "high_school_geography", "nutrition"]
    first = read_mmlu_csv(MC_SAMPLE / "test" / "astronomy_test.csv")[0]
    assert first == {
        "question": "Which planet has the most prominent ring system?",
        "choices": ["Jupiter", "Saturn", "Mars", "Mercury"],
        "answer": 1,
    }
    for subject in subjects:
        original, headered = load_mmlu(str(MC_SAMPLE), subject), load_mmlu(str(tmp_path), subject)
        assert (len(original["test"]), len(original["dev"])) == (8, 5)
        assert original["test"].to_list() == headered["test"].to_list()
        assert original["dev"].to_list() == headered["dev"].to_list()


def test_shared_mmlu_folder_has_all_subjects_and_task_files(shared_dir):
    from workbench.bench import MMLU_SUBJECTS, TASKS_DIR, mmlu_subjects, read_mmlu_csv

    assert len(MMLU_SUBJECTS) == 57
    assert mmlu_subjects(shared_dir / "datasets" / "mmlu", shots=5) == sorted(MMLU_SUBJECTS)
    task_files = {path.stem.removeprefix("wb_mmlu_") for path in TASKS_DIR.glob("wb_mmlu_*.yaml")}
    assert task_files == set(MMLU_SUBJECTS)
    questions = read_mmlu_csv(shared_dir / "datasets" / "mmlu" / "dev" / "anatomy_dev.csv")
    assert len(questions) == 5 and all(q["answer"] in range(4) and len(q["choices"]) == 4 for q in questions)


def test_prompt_is_the_usual_mmlu_prompt():
    from lm_eval.tasks import TaskManager

    from workbench.bench import TASKS_DIR

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"mmlu_dir": str(MC_SAMPLE)})
    task = manager.load(["wb_mmlu_high_school_geography"])["tasks"]["wb_mmlu_high_school_geography"]
    task.set_config(key="num_fewshot", value=1)
    doc = task.test_docs()[0]
    context = task.fewshot_context(doc, num_fewshot=1)
    assert context == (
        "The following are multiple choice questions (with answers) about high school geography.\n\n"
        "What is the longest river in South America?\nA. Orinoco\nB. Amazon\nC. Parana\nD. Magdalena\n"
        "Answer: B\n\n"
        "Which ocean lies between Africa and Australia?\nA. Atlantic Ocean\nB. Indian Ocean\n"
        "C. Arctic Ocean\nD. Southern Ocean\nAnswer:"
    )
    assert task.doc_to_target(doc) == 1


@pytest.mark.slow
def test_lm_eval_command_line_runs_the_workbench_model(tiny_hf_dir, hf_home, tmp_path):
    output = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "workbench.lm_backend",
        "--model",
        "workbench",
        "--model_args",
        f"weights={tiny_hf_dir}",
        "--tasks",
        "wb_mmlu_nutrition",
        "--include_path",
        str(REPO / "datasets" / "tasks"),
        "--metadata",
        json.dumps({"mmlu_dir": str(MC_SAMPLE)}),
        "--limit",
        "3",
        "--output_path",
        str(output),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "HF_HOME": str(hf_home)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "|nutrition|" in done.stdout and "|acc   |" in done.stdout
    (result_file,) = output.rglob("results_*.json")
    assert json.loads(result_file.read_text())["n-samples"]["wb_mmlu_nutrition"]["effective"] == 3


def test_lm_eval_command_line_on_a_folder_that_is_no_run_is_one_error_line(tmp_path):
    """A mistake in ``--model_args`` (our UserError) ends lm-eval's command line with our error line, exit 2."""
    command = [sys.executable, "-m", "workbench.lm_backend", "--model", "workbench", "--model_args"]
    command += [f"run={tmp_path / 'nosuch'}", "--tasks", "wb_mmlu_nutrition"]
    command += [
        "--include_path",
        str(REPO / "datasets" / "tasks"),
        "--metadata",
        json.dumps({"mmlu_dir": str(MC_SAMPLE)}),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == f"error: {tmp_path / 'nosuch' / 'config.json'} not found: " + (
        f"{tmp_path / 'nosuch'} is not a run folder (made by `python -m trainer finetune`)"
    )


def _torchrun_command_line(tiny_hf_dir, output: Path, tasks: list[str]) -> list[str]:
    return [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        "-m",
        "workbench.lm_backend",
        *("--model", "workbench", "--model_args", f"weights={tiny_hf_dir}", "--tasks", ",".join(tasks)),
        *("--include_path", str(REPO / "datasets" / "tasks"), "--metadata", json.dumps({"mmlu_dir": str(MC_SAMPLE)})),
        *("--limit", "5", "--log_samples", "--output_path", str(output)),
    ]


def _answers(samples: dict[str, list[dict]]) -> dict[str, list[tuple[int, int]]]:
    """Per task: (question, letter chosen) in the order of the samples."""
    return {
        task: [(row["doc_id"], max(range(4), key=lambda i, r=row: float(r["filtered_resps"][i][0]))) for row in rows]
        for task, rows in samples.items()
    }


@pytest.mark.slow
def test_torchrun_splits_the_questions_and_rank_0_writes_what_one_process_finds(backends, tiny_hf_dir, tmp_path):
    """``torchrun --nproc_per_node 2 -m workbench.lm_backend ...``: two gloo processes, one set of output files."""
    tasks = ["wb_mmlu_astronomy", "wb_mmlu_nutrition"]
    command = _torchrun_command_line(tiny_hf_dir, tmp_path / "out", tasks)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("|nutrition|") == 1  # rank 1 prints no table
    # One bar, rank 0's, over its share: 2 tasks x 3 of the 5 questions x 4 letters (one process scores 40).
    assert "24/24" in done.stderr and "40/40" not in done.stderr, done.stderr[-3000:]
    (result_file,) = (tmp_path / "out").rglob("results_*.json")  # rank 1 writes no file
    two = json.loads(result_file.read_text())
    samples = {task: [] for task in tasks}
    for task in tasks:
        (path,) = (tmp_path / "out").rglob(f"samples_{task}_*.jsonl")
        samples[task] = [json.loads(line) for line in path.read_text().splitlines()]

    one = _evaluate(backends[0], MC_SAMPLE, ["astronomy", "nutrition"], shots=0, limit=5)
    assert _answers(samples) == _answers(one["samples"])  # every question, in order, the same letter
    for task in tasks:
        assert two["n-samples"][task]["effective"] == 5
        assert two["results"][task]["acc,none"] == one["results"][task]["acc,none"]
        assert two["results"][task]["acc_stderr,none"] == one["results"][task]["acc_stderr,none"]
        for mine, reference in zip(samples[task], one["samples"][task], strict=True):
            mine_ll = [float(ll) for ll, _ in mine["filtered_resps"]]
            assert mine_ll == pytest.approx([ll for ll, _ in reference["filtered_resps"]], abs=1e-5)
