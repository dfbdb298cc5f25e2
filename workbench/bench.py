"""``workbench bench``: standard benchmarks through lm-evaluation-harness, stored next to everything else.

MMLU runs offline from a local folder of CSV files. Its lm-eval task definitions are ours
(``datasets/tasks/wb_mmlu_<subject>.yaml``) and name no file: the folder reaches the loader (``load_mmlu``
below, called through lm-eval's ``custom_dataset`` hook) as task metadata (``mmlu_dir``). So the YAML stays
fixed and checked in instead of being generated per run, both CSV layouts go through one reader whose errors
name the file and row, and lm-eval's own command line uses the same tasks
(``--include_path datasets/tasks --metadata '{"mmlu_dir": DIR}'``).
Any other task name lm-eval knows passes through; those read their data from the Hugging Face Hub.

Results and per-question answers land in the store in one transaction; a rerun with the same settings (same
model weights, tasks, shots, limit and data) is served from the store unless forced. ``--nproc N`` shares the
questions among N processes through lm-eval's own data-parallel evaluation (``evaluate_in_parallel``); the
answers are those of one process, so N is no part of the settings.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

from trainer.errors import UserError
from trainer.tracking import add_cli_options, log_summary_run, require_backends

REPO = Path(__file__).resolve().parent.parent
TASKS_DIR = REPO / "datasets" / "tasks"
SAMPLE_MMLU_DIR = REPO / "datasets" / "mc-sample"
TASK_PREFIX = "wb_mmlu_"
MMLU = "mmlu"
HEADER = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
LETTERS = "ABCD"
CHANCE = 0.25
# The 57 subjects and lm-eval's category of each.
MMLU_SUBJECTS = {
    "abstract_algebra": "stem",
    "anatomy": "stem",
    "astronomy": "stem",
    "business_ethics": "other",
    "clinical_knowledge": "other",
    "college_biology": "stem",
    "college_chemistry": "stem",
    "college_computer_science": "stem",
    "college_mathematics": "stem",
    "college_medicine": "other",
    "college_physics": "stem",
    "computer_security": "stem",
    "conceptual_physics": "stem",
    "econometrics": "social_sciences",
    "electrical_engineering": "stem",
    "elementary_mathematics": "stem",
    "formal_logic": "humanities",
    "global_facts": "other",
    "high_school_biology": "stem",
    "high_school_chemistry": "stem",
    "high_school_computer_science": "stem",
    "high_school_european_history": "humanities",
    "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences",
    "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem",
    "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem",
    "high_school_psychology": "social_sciences",
    "high_school_statistics": "stem",
    "high_school_us_history": "humanities",
    "high_school_world_history": "humanities",
    "human_aging": "other",
    "human_sexuality": "social_sciences",
    "international_law": "humanities",
    "jurisprudence": "humanities",
    "logical_fallacies": "humanities",
    "machine_learning": "stem",
    "management": "other",
    "marketing": "other",
    "medical_genetics": "other",
    "miscellaneous": "other",
    "moral_disputes": "humanities",
    "moral_scenarios": "humanities",
    "nutrition": "other",
    "philosophy": "humanities",
    "prehistory": "humanities",
    "professional_accounting": "other",
    "professional_law": "humanities",
    "professional_medicine": "other",
    "professional_psychology": "social_sciences",
    "public_relations": "social_sciences",
    "security_studies": "social_sciences",
    "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences",
    "virology": "other",
    "world_religions": "humanities",
}


# --- MMLU CSV files ----------------------------------------------------------------------------------------


def read_mmlu_csv(path: str | os.PathLike) -> list[dict]:
    """Questions of one MMLU file as ``{question, choices, answer}`` (answer an index 0-3).

    Two layouts: the original (no header; question, four choices, answer letter) and a headered one
    (``question,choice0..choice3,answer`` with the answer as an index). Errors name the file and row.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"MMLU file not found: {path}")
    questions = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            headered = False
            for row_number, row in enumerate(reader, start=1):
                if row_number == 1 and [cell.strip().lower() for cell in row] == HEADER:
                    headered = True
                    continue
                questions.append(_mmlu_question(row, headered, f"{path}, row {row_number}"))
        except csv.Error as exc:
            raise UserError(f"{path}, row {reader.line_num}: not valid CSV ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    if not questions:
        raise UserError(f"{path}: no questions")
    return questions


def _mmlu_question(row: list[str], headered: bool, where: str) -> dict:
    if len(row) != len(HEADER):
        raise UserError(f"{where}: expected 6 columns (question, 4 choices, answer), found {len(row)}")
    question, *choices, answer = row
    if not question.strip():
        raise UserError(f"{where}: empty question")
    answer = answer.strip()
    if headered:
        if answer not in ("0", "1", "2", "3"):
            raise UserError(f"{where}: answer {answer!r} is not an index 0-3")
        return {"question": question, "choices": choices, "answer": int(answer)}
    if len(answer) != 1 or answer.upper() not in LETTERS:
        raise UserError(f"{where}: answer {answer!r} is not one of A, B, C, D")
    return {"question": question, "choices": choices, "answer": LETTERS.index(answer.upper())}


def mmlu_files(mmlu_dir: str | os.PathLike, subject: str) -> tuple[Path, Path]:
    """The test and dev files of a subject in the distributed layout (``test/``, ``dev/``)."""
    folder = Path(mmlu_dir)
    return folder / "test" / f"{subject}_test.csv", folder / "dev" / f"{subject}_dev.csv"


def mmlu_subjects(mmlu_dir: str | os.PathLike, *, shots: int = 0) -> list[str]:
    """Subjects present in an MMLU folder, every file checked now so that a bad row fails before any work.

    With ``shots`` > 0 each subject needs that many examples in ``dev/``.
    """
    folder = Path(mmlu_dir)
    if not (folder / "test").is_dir():
        raise UserError(f"{folder}: not an MMLU folder (expected {folder / 'test'}/<subject>_test.csv files)")
    subjects = []
    for path in sorted((folder / "test").glob("*_test.csv")):
        subject = path.name.removesuffix("_test.csv")
        if subject not in MMLU_SUBJECTS:
            raise UserError(f"{path}: {subject!r} is not one of the 57 MMLU subjects")
        test_file, dev_file = mmlu_files(folder, subject)
        read_mmlu_csv(test_file)
        if shots:
            if not dev_file.is_file():
                raise UserError(f"{dev_file} not found: few-shot prompts take their examples from dev/")
            if len(read_mmlu_csv(dev_file)) < shots:
                raise UserError(f"{dev_file}: fewer than {shots} examples for {shots}-shot prompts")
        subjects.append(subject)
    if not subjects:
        raise UserError(f"{folder / 'test'}: no <subject>_test.csv files")
    return subjects


def load_mmlu(mmlu_dir: str | None = None, subject: str | None = None, **_metadata):
    """lm-eval ``custom_dataset`` hook: one subject's ``test`` and ``dev`` splits from ``mmlu_dir``.

    lm-eval passes the task metadata (version and the like) along; only ``mmlu_dir`` and ``subject`` matter.
    """
    import datasets

    if not mmlu_dir:
        raise UserError('the MMLU tasks need a folder: pass --metadata \'{"mmlu_dir": "DIR"}\' to lm-eval')
    test_file, dev_file = mmlu_files(mmlu_dir, subject)
    test = datasets.Dataset.from_list(read_mmlu_csv(test_file))
    dev = datasets.Dataset.from_list(read_mmlu_csv(dev_file)) if dev_file.is_file() else test.select([])
    return datasets.DatasetDict({"test": test, "dev": dev})


# --- running lm-eval ---------------------------------------------------------------------------------------


def hf_tokenizer_dir() -> Path:
    """A Hugging Face GPT-2 tokenizer folder built from our tiktoken ranks (offline), made once and kept.

    lm-eval's ``hf`` backend needs a tokenizer beside the weights; folders written by ``save_hf_checkpoint``
    have none; the files are ``trainer.tokenizer.save_hf_tokenizer``'s. It lives under ``$HF_HOME``, read at
    call time so tests can move it.
    """
    hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    folder = hf_home / "workbench" / "gpt2-tokenizer"
    if (folder / "tokenizer.json").is_file():
        return folder
    from trainer.tokenizer import save_hf_tokenizer

    partial = save_hf_tokenizer(folder.with_name(folder.name + f".partial-{os.getpid()}"))
    if folder.exists():  # another process finished first
        shutil.rmtree(partial)
    else:
        partial.replace(folder)
    return folder


def _file_stamp(path: Path) -> dict:
    """Enough to notice new weights in the same place without reading hundreds of megabytes."""
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _weights_file(folder: Path, names: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_file()), None)


# A run's checkpoint: full weights, or a LoRA run's adapter (its base is fixed by the run's config).
RUN_WEIGHTS = ("model.safetensors", "adapter_model.safetensors")


def _describe_model(run: str | None, checkpoint: str, hf_model: str | None) -> tuple[dict, dict]:
    """(``get_or_create_model`` arguments, identity for the cache key); checks that the weights exist."""
    if (run is None) == (hf_model is None):
        raise UserError("give exactly one of --run RUN_DIR or --hf-model NAME_OR_DIR")
    if run is not None:
        from trainer.checkpoint import read_run_config

        run_dir = Path(run).resolve()
        if not run_dir.is_dir():
            raise UserError(f"run folder not found: {run_dir}")
        weights = _weights_file(run_dir / checkpoint, RUN_WEIGHTS)
        if weights is None:
            raise UserError(
                f"{run_dir}: no weights in {run_dir / checkpoint} (train the run first"
                + (", or use --checkpoint last)" if checkpoint == "best" else ")")
            )
        config = read_run_config(run_dir)
        model = {
            "name": config.get("name") or run_dir.name,
            "kind": "run",
            "run_dir": str(run_dir),
            "config": config,
        }
        return model, {"backend": "workbench", "checkpoint": checkpoint, "weights": _file_stamp(weights)}
    folder = Path(hf_model)
    if folder.is_dir():
        weights = _weights_file(folder)
        if weights is None or not (folder / "config.json").is_file():
            raise UserError(f"{folder}: not a Hugging Face model folder (config.json and model.safetensors)")
        return (
            {"name": folder.resolve().name, "kind": "hf"},  # as the trainer names its responses
            {"backend": "hf", "weights": _file_stamp(weights.resolve())},
        )
    if os.sep in hf_model.removeprefix("./") or hf_model.startswith("."):
        raise UserError(f"model folder not found: {hf_model}")
    return {"name": hf_model, "kind": "hf"}, {"backend": "hf", "hub": hf_model}


def _mmlu_fingerprint(mmlu_dir: Path, subjects: list[str]) -> list:
    return [_file_stamp(path) for subject in subjects for path in mmlu_files(mmlu_dir, subject) if path.is_file()]


@functools.lru_cache(maxsize=4)
def _task_index(include_defaults: bool, mmlu_dir: Path):
    """lm-eval's task index; kept because indexing lm-eval's own tasks takes seconds."""
    from lm_eval.tasks import TaskManager

    return TaskManager(
        include_path=str(TASKS_DIR), include_defaults=include_defaults, metadata={"mmlu_dir": str(mmlu_dir)}
    )


def _task_manager(tasks: list[str], mmlu_dir: Path):
    """Our MMLU tasks, plus lm-eval's own only when other tasks are asked for; their data is fetched now."""
    hub_tasks = [task for task in tasks if task != MMLU]
    manager = _task_index(bool(hub_tasks), mmlu_dir)
    unknown = [task for task in hub_tasks if task not in manager.all_tasks]
    if unknown:
        raise UserError(
            f"unknown lm-eval task(s): {', '.join(unknown)} (`lm_eval ls tasks` lists them; {MMLU!r} is the local MMLU)"
        )
    if hub_tasks:
        try:
            manager.load(hub_tasks)  # fetches their data now, so a network failure stops us before any work
        except Exception as exc:  # datasets/huggingface_hub raise many types for "cannot download"
            offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
            raise UserError(
                f"cannot load the data of {', '.join(hub_tasks)}: these tasks download it from the "
                f"Hugging Face Hub{' and HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set' if offline else ''} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Without a network "
                f"only {MMLU!r} (local CSV files) runs."
            ) from exc
    return manager


def _silent_tqdm(*args, **kwargs):
    from tqdm import tqdm

    return tqdm(*args, **{**kwargs, "disable": True})


def _git_hash_quietly() -> str | None:
    """lm-eval's note of the working folder's git commit, without git's "fatal: not a git repository" on the
    console when the folder is not a checkout."""
    try:
        found = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, check=True)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    return found.stdout.strip()


@contextlib.contextmanager
def lm_eval_output_to(log_file: Path) -> Iterator[None]:
    """Send lm-eval's chatter to ``log_file`` (appended) instead of the console, for the ``with`` block.

    lm-eval logs three warning lines per task (171 for MMLU's 57 subjects) and draws a progress bar per task
    while it builds requests, and one while it tokenizes. Here its ``lm_eval`` loggers and Python warnings
    write to the file, and the bars of ``lm_eval.api.task`` and ``lm_eval.api.model`` (their module-level
    ``tqdm`` names: lm-eval has no switch for them) are off, and its git call keeps git's complaint outside
    a checkout to itself. What stays on the console is the model's own bar (requests scored, with the rate)
    and our results.
    """
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.evaluator

    handler = _log_handler(log_file)
    bar_modules = (lm_eval.api.task, lm_eval.api.model)
    saved_bars = [module.tqdm for module in bar_modules]
    saved_git_hash = lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.get_git_commit_hash = _git_hash_quietly
    for module in bar_modules:
        module.tqdm = _silent_tqdm

    def log_warning(message, category, filename, lineno, file=None, line=None) -> None:
        text = f"{category.__name__}: {message}"
        handler.handle(logging.LogRecord("py.warnings", logging.WARNING, filename, lineno, text, (), None))

    try:
        with warnings.catch_warnings(), _loggers_to(handler, ["lm_eval"]):  # both restore what they change
            warnings.showwarning = log_warning
            yield
    finally:
        for module, bar in zip(bar_modules, saved_bars, strict=True):
            module.tqdm = bar
        lm_eval.evaluator.get_git_commit_hash = saved_git_hash
        handler.close()


def _log_handler(log_file: Path) -> logging.Handler:
    """Appends to ``log_file``, created only when there is a first message."""
    handler = logging.FileHandler(log_file, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


@contextlib.contextmanager
def _loggers_to(handler: logging.Handler, names: list[str], level: int | None = logging.INFO) -> Iterator[None]:
    """The named loggers write to ``handler`` only, for the ``with`` block; from ``level`` up (None: as set)."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger.handlers[:], logger.propagate, logger.level) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [handler], False
        if level is not None:
            logger.setLevel(level)
    try:
        yield
    finally:
        for logger, (handlers, propagate, level) in zip(loggers, saved, strict=True):
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


def _make_lm(run: str | None, checkpoint: str, hf_model: str | None, batch_size: int, device: str):
    if run is not None:
        from workbench.lm_backend import WorkbenchLM

        return WorkbenchLM(run=run, checkpoint=checkpoint, batch_size=batch_size, device=device)
    from lm_eval.models.huggingface import HFLM

    folder = Path(hf_model)
    has_tokenizer = folder.is_dir() and any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json"))
    tokenizer = None if has_tokenizer or not folder.is_dir() else str(hf_tokenizer_dir())
    try:
        return HFLM(pretrained=hf_model, tokenizer=tokenizer, batch_size=batch_size, device=device, dtype="float32")
    except OSError as exc:  # transformers' "not found / cannot reach the Hub" family
        raise UserError(f"cannot load Hugging Face model {hf_model!r}: {str(exc).splitlines()[0]}") from exc


def _metric_rows(task: str, subject: str | None, values: dict, n: int, shots: int, limit: int | None):
    """Benchmark result rows from one entry of lm-eval's ``results`` (``metric,filter`` keys)."""
    rows = []
    for key, value in values.items():
        if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
            continue
        metric, filter_name = key.split(",", 1)
        stderr = values.get(f"{metric}_stderr,{filter_name}")
        rows.append(
            {
                "task": task,
                "subject": subject,
                "metric": metric if filter_name == "none" else f"{metric},{filter_name}",
                "value": float(value),
                "stderr": stderr if isinstance(stderr, (int, float)) else None,
                "n": n,
                "shots": shots,
                "limit_n": limit,
            }
        )
    return rows


def _sample_rows(task: str, subject: str | None, samples: list[dict]) -> list[dict]:
    """Per-question rows of a multiple-choice task: the model's choice is the most likely continuation."""
    rows = []
    for sample in samples:
        loglikelihoods = [float(ll) for ll, _ in sample["filtered_resps"]]
        model_choice = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__)
        target = sample["target"]
        rows.append(
            {
                "task": task,
                "subject": subject,
                "doc_id": sample["doc_id"],
                "prompt": sample["arguments"][0][0],
                "choices": [cont for _, cont in sample["arguments"]],
                "model_choice": model_choice,
                "correct_choice": target if isinstance(target, int) else None,
                "correct": int(model_choice == target) if isinstance(target, int) else None,
                "loglikelihoods": loglikelihoods,
            }
        )
    return rows


def mmlu_averages(subject_rows: list[dict], samples: list[dict], shots: int, limit: int | None) -> list[dict]:
    """Macro (mean of subject accuracies) and micro (mean over all questions) accuracy with standard errors.

    Micro: the standard error of a mean of 0/1 outcomes. Macro: subjects are independent, so the variance of
    their mean is the sum of their variances over the number of subjects squared.
    """
    from scipy import stats

    accuracies = [row["value"] for row in subject_rows]
    stderrs = [row["stderr"] or 0.0 for row in subject_rows]
    outcomes = [sample["correct"] for sample in samples]
    n = len(outcomes)
    macro = sum(accuracies) / len(accuracies)
    macro_stderr = math.sqrt(sum(se * se for se in stderrs)) / len(stderrs)
    micro_stderr = float(stats.sem(outcomes)) if n > 1 else None
    common = {"task": MMLU, "subject": None, "n": n, "shots": shots, "limit_n": limit}
    return [
        {**common, "metric": "acc_macro", "value": macro, "stderr": macro_stderr},
        {**common, "metric": "acc_micro", "value": sum(outcomes) / n, "stderr": micro_stderr},
    ]


def _collect(output: dict, shots: int, limit: int | None) -> tuple[list[dict], list[dict]]:
    """Result and sample rows from ``simple_evaluate``'s output; MMLU subjects are rows of task ``mmlu``."""
    results, samples, subject_rows, mmlu_samples = [], [], [], []
    for name, values in output["results"].items():
        subject = name.removeprefix(TASK_PREFIX) if name.startswith(TASK_PREFIX) else None
        task = MMLU if subject else name
        n = output.get("n-samples", {}).get(name, {}).get("effective", values.get("sample_len"))
        rows = _metric_rows(task, subject, values, n, output.get("n-shot", {}).get(name, shots), limit)
        task_samples = []
        if output["configs"].get(name, {}).get("output_type") == "multiple_choice":
            task_samples = _sample_rows(task, subject, output.get("samples", {}).get(name, []))
        results += rows
        samples += task_samples
        if subject:
            subject_rows += [row for row in rows if row["metric"] == "acc"]
            mmlu_samples += task_samples
    if subject_rows:
        results += mmlu_averages(subject_rows, mmlu_samples, shots, limit)
    return results, samples


def evaluate(
    *,
    run: str | None,
    checkpoint: str,
    hf_model: str | None,
    tasks: list[str],
    subjects: list[str],
    mmlu_dir: str,
    num_fewshot: int,
    limit: int | None,
    batch_size: int,
    device: str,
    log_file: str,
) -> tuple[list[dict], list[dict], str] | None:
    """lm-eval on this process's share of the questions: (result rows, sample rows, start time) on rank 0.

    One process evaluates everything. Under a launcher (``evaluate_in_parallel``) every rank runs this; the
    model joins the process group and lm-eval gathers all answers on rank 0; the other ranks get None.
    """
    from lm_eval import simple_evaluate

    from workbench import store

    with lm_eval_output_to(Path(log_file)):
        manager = _task_manager(tasks, Path(mmlu_dir))
        names = [TASK_PREFIX + subject for subject in subjects] + [task for task in tasks if task != MMLU]
        lm = _make_lm(run, checkpoint, hf_model, batch_size, device)
        started_at = store.utc_now()
        output = simple_evaluate(
            model=lm,
            tasks=names,
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=True,
            bootstrap_iters=1000,
        )
    if output is None:
        return None
    return (*_collect(output, num_fewshot, limit), started_at)


def _evaluate_on_this_rank(job: dict) -> tuple[list[dict], list[dict], str] | None:
    """What each launched process runs; it leaves the process group before it ends."""
    import torch.distributed as dist

    try:
        return evaluate(**job)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _failure_line(failed, nproc: int, log_file: str) -> str:
    """One line for the ranks that failed: our own error as it is (every rank meets it), otherwise each rank's
    reason, earliest first (a rank whose peer died fails too, in the same second); tracebacks go to the log."""
    reasons, user_errors = [], []
    for rank, failure in sorted(failed.failures.items(), key=lambda item: (item[1].timestamp, item[0])):
        message = failure.message
        if isinstance(message, dict):  # an exception, recorded with its traceback
            logging.getLogger(__name__).error("rank %s failed:\n%s", rank, message["extraInfo"]["py_callstack"])
            message = message["message"]
            if message.startswith("UserError: "):
                user_errors.append(message.removeprefix("UserError: ").splitlines()[0])
        reasons.append(f"rank {rank}: {message.splitlines()[0] if message else f'exit code {failure.exitcode}'}")
    if user_errors:
        return user_errors[0]
    return f"{len(reasons)} of {nproc} processes failed: {'; '.join(reasons)} (more in {log_file})"


def evaluate_in_parallel(job: dict, nproc: int) -> tuple[list[dict], list[dict], str]:
    """``evaluate`` in ``nproc`` processes started by torch's elastic launcher (torchrun's engine) on a free
    local port; rank 0's rows come back. A rank that fails ends the others and raises one ``UserError``.

    On the CPU the ranks are forked from this process with lm-eval and our backend already imported: each
    starts at once instead of importing them anew (a spawned rank takes several seconds to start and to end).
    CUDA ranks are spawned, as CUDA cannot be used in a forked process. The launcher's own messages (and a
    failed rank's traceback) go to the log file, not the console.
    """
    import uuid

    import lm_eval.evaluator  # noqa: F401 (see above)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    import workbench.lm_backend  # noqa: F401 (see above)

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"workbench-bench-{uuid.uuid4().hex}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn" if job["device"].startswith("cuda") else "fork",
    )
    handler = _log_handler(Path(job["log_file"]))
    try:
        # Their levels stay: at INFO, torch's process-group logger would print to the console from every rank.
        with _loggers_to(handler, ["torch.distributed", "torch.multiprocessing", __name__], level=None):
            try:
                returned = elastic_launch(config, _evaluate_on_this_rank)(job)
            except ChildFailedError as exc:
                raise UserError(_failure_line(exc, nproc, job["log_file"])) from None
    finally:
        handler.close()
    return returned[0]


def run_benchmark(
    db_path: str | os.PathLike,
    *,
    run: str | None = None,
    checkpoint: str = "best",
    hf_model: str | None = None,
    tasks: list[str] = (MMLU,),
    mmlu_dir: str | os.PathLike | None = None,
    num_fewshot: int = 0,
    limit: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    force: bool = False,
    log_file: str | os.PathLike | None = None,
    nproc: int = 1,
) -> dict:
    """Evaluate a trainer run (our backend) or a Hugging Face model (lm-eval's ``hf``) and store the outcome.

    ``nproc`` above 1 (our backend only) splits the questions over that many processes (one GPU each on
    CUDA, gloo on the CPU); the stored rows are those of one process, written here, once.

    lm-eval's log messages and warnings are appended to ``log_file`` (default: the database's name with
    ``.bench.log``), not printed. Returns ``{"benchmark_run_id", "model", "cached", "results", "samples",
    "log_file"}``; ``cached`` is true when an earlier run with the same settings answered without evaluating
    anything. ``log_file`` is None when nothing ran or lm-eval had nothing to say.
    """
    from workbench import store

    # Read without importing lm-eval, so that a rerun served from the store is quick.
    lm_eval_version = importlib.metadata.version("lm_eval")

    tasks = list(dict.fromkeys(task.strip() for task in tasks if task.strip()))
    if not tasks:
        raise UserError("no task given (--tasks mmlu[,TASK...])")
    if num_fewshot < 0 or (limit is not None and limit < 1) or batch_size < 1:
        raise UserError("--num-fewshot must be >= 0, --limit and --batch-size >= 1")
    if nproc < 1:
        raise UserError("--nproc must be >= 1")
    if nproc > 1 and run is None:
        raise UserError("--nproc above 1 needs --run (our backend)")
    if limit is not None and limit < nproc:
        # lm-eval deals each task's questions out; a process left without one fails inside lm-eval.
        raise UserError(f"--limit {limit} leaves some of the {nproc} processes (--nproc) without a question")
    if nproc > 1 and device.startswith("cuda"):
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() < nproc:
            raise UserError(f"--nproc {nproc} on {device} needs one GPU per process; found {torch.cuda.device_count()}")
    model, identity = _describe_model(run, checkpoint, hf_model)
    mmlu_dir = Path(mmlu_dir or SAMPLE_MMLU_DIR).resolve()
    subjects = mmlu_subjects(mmlu_dir, shots=num_fewshot) if MMLU in tasks else []
    settings = {
        "model": identity,
        "tasks": tasks,
        "num_fewshot": num_fewshot,
        "limit": limit,
        "mmlu": {"dir": str(mmlu_dir), "files": _mmlu_fingerprint(mmlu_dir, subjects)} if subjects else None,
        "lm_eval": lm_eval_version,
    }
    cache_key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    db = store.open_db(db_path)
    stored = store.find_benchmark_run(db, cache_key)
    log_file = Path(log_file) if log_file else Path(db_path).with_suffix(".bench.log")
    if stored is None or force:
        job = {
            "run": run,
            "checkpoint": checkpoint,
            "hf_model": hf_model,
            "tasks": tasks,
            "subjects": subjects,
            "mmlu_dir": str(mmlu_dir),
            "num_fewshot": num_fewshot,
            "limit": limit,
            "batch_size": batch_size,
            "device": device,
            "log_file": str(log_file),
        }
        results, samples, started_at = evaluate(**job) if nproc == 1 else evaluate_in_parallel(job, nproc)
        run_id = store.save_benchmark_run(
            db,
            model=model,
            cache_key=cache_key,
            tasks=tasks,
            num_fewshot=num_fewshot,
            limit_n=limit,
            settings={**settings, "batch_size": batch_size, "device": device},
            lm_eval_version=lm_eval_version,
            started_at=started_at,
            finished_at=store.utc_now(),
            results=results,
            samples=samples,
        )
    else:
        run_id = stored["id"]
    cached = stored is not None and not force
    return {
        "benchmark_run_id": run_id,
        "model": model["name"],
        "cached": cached,
        "log_file": str(log_file) if not cached and log_file.exists() else None,
        "results": store.benchmark_results(db, run_id),
        "samples": store.benchmark_samples(db, run_id),
    }


# --- reporting ---------------------------------------------------------------------------------------------


def plot_subject_accuracy(results: list[dict], path: str | os.PathLike, *, title: str = "MMLU accuracy") -> Path:
    """Horizontal bars of per-subject MMLU accuracy with standard errors, chance and macro average marked.

    Text is drawn literally (``text.parse_math`` off): a model or subject name with ``$`` in it is a name, not
    mathtext that could fail to parse.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import FigureCanvasBase

    subjects = sorted(
        (row for row in results if row["task"] == MMLU and row["subject"] and row["metric"] == "acc"),
        key=lambda row: row["value"],
    )
    if not subjects:
        raise UserError("no per-subject MMLU accuracy to plot")
    macro = next((row["value"] for row in results if row["metric"] == "acc_macro"), None)
    path = Path(path)
    if path.suffix.lstrip(".").lower() not in FigureCanvasBase.get_supported_filetypes():
        path = path.with_name(path.name + ".png")  # what savefig would write anyway: return the real name
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"text.parse_math": False}):  # labels and ticks are parsed when drawn: savefig too
        figure, axes = plt.subplots(figsize=(8, 1.0 + 0.22 * len(subjects)))
        try:
            axes.barh(
                [row["subject"].replace("_", " ") for row in subjects],
                [row["value"] for row in subjects],
                xerr=[row["stderr"] or 0.0 for row in subjects],
                color="#4c72b0",
                ecolor="#555555",
                capsize=2,
            )
            axes.axvline(CHANCE, color="#c44e52", linestyle="--", label=f"chance ({CHANCE:.0%})")
            if macro is not None:
                axes.axvline(macro, color="#55a868", label=f"macro average ({macro:.1%})")
            axes.set_xlim(0, 1)
            axes.set_xlabel("accuracy")
            axes.set_title(title)
            axes.legend(loc="lower right")
            figure.tight_layout()
            figure.savefig(path, dpi=120)
        finally:
            plt.close(figure)
    return path


def results_as_metrics(results: list[dict]) -> dict[str, float]:
    """``{"TASK/SUBJECT/METRIC": value}`` (no subject for a task's own score), with ``..._stderr`` beside each
    value that has one: the numbers a tracker logs."""
    metrics = {}
    for row in results:
        key = "/".join(part for part in (row["task"], row["subject"], row["metric"]) if part)
        metrics[key] = row["value"]
        if row["stderr"] is not None:
            metrics[f"{key}_stderr"] = row["stderr"]
    return metrics


def format_results(results: list[dict]) -> str:
    """A plain table: one line per task / subject / metric."""
    lines = [f"{'task':<10} {'subject':<38} {'metric':<10} {'value':>7} {'stderr':>7} {'n':>6} shots"]
    for row in results:
        stderr = f"{row['stderr']:.4f}" if row["stderr"] is not None else "-"
        lines.append(
            f"{row['task']:<10} {row['subject'] or '(all)':<38} {row['metric']:<10} {row['value']:>7.4f} "
            f"{stderr:>7} {row['n'] or '':>6} {row['shots']}"
        )
    return "\n".join(lines)


def add_cli(subparsers) -> None:
    """Register ``workbench bench``."""
    parser = subparsers.add_parser(
        "bench",
        help="run lm-eval benchmarks (MMLU offline) and store the results",
        description="Run lm-evaluation-harness tasks on a trainer run or a Hugging Face model and store "
        "scores and per-question answers. MMLU reads local CSV files; other lm-eval tasks need the network.",
    )
    parser.add_argument("--db", required=True, help="SQLite file of the workbench")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="trainer run folder (our backend)")
    source.add_argument("--hf-model", help="Hugging Face model name or folder (lm-eval's hf backend)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="with --run")
    parser.add_argument("--tasks", default=MMLU, help="comma-separated: mmlu and/or any lm-eval task name")
    parser.add_argument(
        "--mmlu-dir",
        help=f"MMLU CSV folder with test/ and dev/ (default: the bundled sample, {SAMPLE_MMLU_DIR.relative_to(REPO)})",
    )
    parser.add_argument("--num-fewshot", type=int, default=0, help="examples in the prompt (MMLU: from dev/)")
    parser.add_argument("--limit", type=int, help="questions per task (subject) at most")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--nproc", type=int, default=1, help="processes that share the questions (--run only; one GPU each on cuda)"
    )
    parser.add_argument("--force", action="store_true", help="evaluate again even if stored with these settings")
    parser.add_argument("--plot", help="write a per-subject MMLU accuracy chart (PNG) here")
    parser.add_argument("--log-file", help="append lm-eval's messages here (default: DB file name + .bench.log)")
    add_cli_options(parser, log_dir_default="the run folder with --run, else the working folder")
    parser.set_defaults(func=_cli)


def _cli(args) -> int:
    log_to = require_backends(args.log_to)  # a missing package stops us before lm-eval starts
    summary = run_benchmark(
        args.db,
        run=args.run,
        checkpoint=args.checkpoint,
        hf_model=args.hf_model,
        tasks=args.tasks.split(","),
        mmlu_dir=args.mmlu_dir,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        force=args.force,
        log_file=args.log_file,
        nproc=args.nproc,
    )
    log_summary_run(
        log_to,
        results_as_metrics(summary["results"]),
        experiment="bench",
        run_name=f"bench/{summary['model']}",
        params={
            "model": summary["model"],
            "benchmark_run_id": summary["benchmark_run_id"],
            "cached": summary["cached"],
            "checkpoint": args.checkpoint if args.run else None,
            "tasks": args.tasks,
            "num_fewshot": args.num_fewshot,
            "limit": args.limit,
            "mmlu_dir": args.mmlu_dir or str(SAMPLE_MMLU_DIR),
        },
        log_dir=args.log_dir,
        default_dir=args.run or ".",
    )
    print(format_results(summary["results"]))
    wrong = sum(1 for sample in summary["samples"] if sample["correct"] == 0)
    how = "served from the store (--force to rerun)" if summary["cached"] else "stored"
    print(
        f"{summary['model']}: benchmark run {summary['benchmark_run_id']} {how}; "
        f"{len(summary['samples'])} answers, {wrong} wrong"
    )
    if args.plot:
        title = f"MMLU: {summary['model']}"
        print(f"plot: {plot_subject_accuracy(summary['results'], args.plot, title=title)}")
    if summary["log_file"]:
        print(f"lm-eval messages: {summary['log_file']}")
    return 0
