"""``workbench finetune``: ``python -m trainer finetune`` with an LLM judge watching the model learn.

At step 0 (before any update), every ``--judge-every`` steps and at the last step, the run's weights answer the
first ``--judge-items`` validation items (greedy, in the run's prompt style). The answers are saved as a
generation file (``RUN/judge/step-S.json``, the layout ``python -m trainer generate`` writes) and imported into
a workbench store (``RUN/judge.db`` unless ``--judge-db``) as the model ``NAME@step-S``. A background thread
then asks the judge, with ``workbench judge``'s prompts, cache, retries and injection fencing:

- ``judge_score``: the mean 0-100 score of the answers against the reference answers;
- ``judge_win_rate``: how often the answers beat step 0's in a pairwise verdict asked in both orders (a tie, or
  a verdict that flips with the order, counts half);
- ``response_tokens``: the answers' mean length in tokens (judges like long answers).

The row goes into ``metrics.jsonl`` beside the losses, to the trackers (``--log-to``) and onto ``loss.png``'s
second axis. Training waits only for the generation; the judging overlaps the next steps, and the command
waits for the last of it at the end. A failed judgement is a warning while training goes on, and at the end
one ``error:`` line with exit 1; ``--resume`` judges again whatever a kill or a failure left unjudged, from
the saved answers. The store can be opened in the review app or the report: every checkpoint is a model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import threading
import time
from contextlib import ExitStack, closing
from pathlib import Path

import torch
from tqdm import tqdm

from trainer.data import encode
from trainer.errors import UserError
from trainer.finetune_cli import add_finetune_arguments, finetune_arguments
from trainer.generate import ResponseFile, generate_responses
from trainer.hooks import RunContext
from trainer.model import GPT, TIED_HEAD, GPTConfig
from trainer.train import finetune
from workbench import store
from workbench.backends import add_server_arguments, check_request_options, connect, resolve_hosts, served_everywhere
from workbench.importing import import_path
from workbench.judge import run_judge
from workbench.judge_prompts import SCORE_MAX, SCORE_MIN

logger = logging.getLogger("trainer.train.judge")  # a child of the trainer's logger: its lines go to train.log
DEFAULT_ITEMS = 20
DEFAULT_MAX_NEW_TOKENS = 128


class JudgeDuringTraining:
    """The step hook (``trainer.hooks.StepHook``) that generates on rank 0 and judges in a background thread."""

    def __init__(
        self,
        judge_model: str,
        *,
        every: int,
        items: int = DEFAULT_ITEMS,
        backend: str = "ollama",
        host: str | list[str] | None = None,
        api_key_env: str | None = None,
        db_path: str | Path | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        batch_size: int = 8,
        concurrency: int = 4,
        timeout: float = 120.0,
        retries: int = 3,
    ) -> None:
        for name, value in (("judge-every", every), ("judge-items", items), ("judge-max-new-tokens", max_new_tokens)):
            if value < 1:
                raise UserError(f"--{name} must be at least 1, got {value}")
        check_request_options(concurrency, retries, timeout)
        self.every, self.items, self.judge_model = every, items, judge_model
        self.server = {"backend": backend, "host": resolve_hosts(backend, host), "api_key_env": api_key_env}
        self.requests = {"concurrency": concurrency, "timeout": timeout, "retries": retries}
        self.decoding = {"max_new_tokens": max_new_tokens, "batch_size": batch_size}
        self.db_path = None if db_path is None else Path(db_path)
        self.failures: list[str] = []
        self.generation_seconds = 0.0  # the time training waited for the judge: its answers, nothing else
        self._finished: list[dict] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._model: GPT | None = None
        self._judged: set[int] = set()

    def check_servers(self) -> None:
        """Fail before training when no server answers or one lacks the judge model (one line, exit 2)."""
        with ExitStack() as cleanup:
            servers = [
                cleanup.enter_context(
                    closing(
                        connect(
                            self.server["backend"],
                            url,
                            timeout=self.requests["timeout"],
                            api_key_env=self.server["api_key_env"],
                        )
                    )
                )
                for url in self.server["host"]
            ]
            served_everywhere(servers, self.judge_model)

    # --- the StepHook interface ---------------------------------------------------------------------------

    def start(self, context: RunContext, kept_rows: list[dict]) -> None:
        self.context = context
        # The entry alone: other keys of the data (a chat record's ``messages``) would import as responses.
        self.entries = [
            {key: entry[key] for key in ("instruction", "input", "output")}
            for entry in context.val_entries[: self.items]
        ]
        if not self.entries:
            raise UserError(f"{context.run_config['data']}: the validation split is empty; nothing to judge")
        self.name = context.run_config["name"]
        self.folder = context.run_dir / "judge"
        self.db_path = self.db_path or context.run_dir / "judge.db"
        self.dataset = Path(context.run_config["data"]).stem
        for path in self.folder.glob("step-*.json"):  # answers (and meta) of steps the resumed run trains again
            if _step_of(path) > context.start_step:
                path.unlink()
        self._judged = {row["step"] for row in kept_rows}
        self._worker = threading.Thread(target=self._judge_queued, name="judge-during-training", daemon=True)
        self._worker.start()
        for step in sorted({_step_of(path) for path in self.folder.glob("step-*.json")}):
            if step not in self._judged and self._complete(step):
                self._queue.put(step)  # answered before a kill or a failed judgement: judge it now

    def submit(self, step: int, weights: dict[str, torch.Tensor]) -> None:
        if step in self._judged or self._complete(step):
            if step not in self._judged:
                self._queue.put(step)
            return
        started = time.perf_counter()
        model = self._generation_model()
        missing = model.load_state_dict(weights, strict=False).missing_keys
        if set(missing) - {TIED_HEAD}:  # a tied head is stored once, as wte.weight
            raise RuntimeError(f"the weights handed to the judge lack {missing}")
        output = ResponseFile(self._path(step), self.entries, self._record(step))
        generate_responses(
            model,
            self.context.tokenizer,
            self.entries,
            self.context.run_config["style"],
            on_responses=lambda indices, texts, _: output.add(dict(zip(indices, texts, strict=True))),
            max_new_tokens=self.decoding["max_new_tokens"],
            batch_size=self.decoding["batch_size"],
            recipe=self.context.run_config.get("recipe", "default"),
        )
        output.finish()
        self.generation_seconds += time.perf_counter() - started
        logger.info("step %d: %d answers generated in %.2f s", step, len(self.entries), time.perf_counter() - started)
        self._queue.put(step)

    def collect(self, wait: bool) -> list[dict]:
        if wait:
            self._queue.join()
        with self._lock:
            rows, self._finished = self._finished, []
        return rows

    def plot(self, axes, epochs: list[float], rows: list[dict]) -> None:
        scored = [(epoch, row) for epoch, row in zip(epochs, rows, strict=True) if "judge_score" in row]
        score_label, win_label = f"judge score ({SCORE_MIN}-{SCORE_MAX})", "win rate vs step 0 (%)"
        axes.plot(
            [e for e, _ in scored], [row["judge_score"] for _, row in scored], "o-", c="tab:green", label=score_label
        )
        won = [(epoch, row) for epoch, row in scored if "judge_win_rate" in row]
        axes.plot(
            [e for e, _ in won], [100 * row["judge_win_rate"] for _, row in won], "s--", c="tab:red", label=win_label
        )
        axes.set_ylim(SCORE_MIN, SCORE_MAX)
        axes.set_ylabel("judge")
        axes.legend(loc="center right")

    def close(self) -> None:
        """After a normal end the queue is empty; after a failure or Ctrl-C, steps not yet judged are dropped
        (their answers are saved: ``--resume`` judges them) and only the judgement in progress finishes."""
        if self._worker is not None:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
                self._queue.task_done()
            self._queue.put(None)
            self._worker.join()
            self._worker = None

    # --- generation -------------------------------------------------------------------------------------------

    def _generation_model(self) -> GPT:
        """A second model on the training device for generating, so training's weights are never touched."""
        if self._model is None:
            config = GPTConfig.from_dict(self.context.run_config["model"])
            self._model = GPT(config).to(self.context.device).eval()
        return self._model

    def _key(self, step: int) -> str:
        return f"{self.name}@step-{step}"

    def _path(self, step: int) -> Path:
        return self.folder / f"step-{step:07d}.json"

    def _complete(self, step: int) -> bool:
        meta = self._path(step).with_name(f"step-{step:07d}.meta.json")
        return meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("complete") is True

    def _record(self, step: int) -> dict:
        config = self.context.run_config
        return {
            "run": str(self.context.run_dir),
            "name": config["name"],
            "model_name": config["model_name"],
            "checkpoint": f"step {step}",
            "weights": None,
            "style": config["style"],
            "response_key": self._key(step),
            "split": "val",
            "data": config["data"],
            "data_sha256": config["data_sha256"],
            "shard": None,
            "decoding": {
                "max_new_tokens": self.decoding["max_new_tokens"],
                "temperature": 0.0,
                "top_k": None,
                "top_p": None,
                "seed": None,
            },  # fmt: skip
        }

    # --- judging (the background thread) ----------------------------------------------------------------------

    def _judge_queued(self) -> None:
        while (step := self._queue.get()) is not None:
            try:
                row = self._judge(step)
            except Exception as exc:  # noqa: BLE001 - a judge failure must not stop training; it is reported
                message = f"step {step}: {exc}"
                logger.warning("judging %s; training goes on, and --resume judges it again", message)
                tqdm.write(f"warning: judging {message}", file=sys.stderr)
                with self._lock:
                    self.failures.append(message)
            else:
                logger.info("judge at step %d: %s", step, json.dumps(row))
                tqdm.write(f"judge at step {step}: {json.dumps(row)}", file=sys.stderr)
                with self._lock:
                    self._finished.append(row)
                    self._judged.add(step)
            finally:
                self._queue.task_done()

    def _judge(self, step: int) -> dict:
        db = store.open_db(self.db_path)
        try:
            import_path(db, self._path(step))
        finally:
            db.close()
        options = {**self.server, **self.requests, "dataset": self.dataset, "progress": False}
        key = self._key(step)
        scores = run_judge(self.db_path, self.judge_model, mode="score", response_keys=[key], **options)
        texts = json.loads(self._path(step).read_text(encoding="utf-8"))
        lengths = [len(encode(self.context.tokenizer, entry[key])) for entry in texts]
        row = {
            "step": step,
            "judge_score": scores["models"][key]["mean_score"],
            "response_tokens": round(sum(lengths) / len(lengths), 2),
        }
        summaries = [scores]
        if step != 0 and self._complete(0):
            pair = run_judge(
                self.db_path, self.judge_model, mode="pairwise", response_keys=[key, self._key(0)], **options
            )
            row["judge_win_rate"] = pair["pairwise"]["win_rate_a"]
            summaries.append(pair)
        failed = [summary["run"] for summary in summaries if summary["run"]["failed"]]
        if failed:
            count = sum(run["failed"] for run in failed)
            raise UserError(f"{count} judgements failed (the rest are stored); first: {failed[0]['first_error']}")
        return {name: value for name, value in row.items() if value is not None}


def _step_of(path: Path) -> int:
    """The step of ``step-0000010.json`` or ``step-0000010.meta.json`` (-1 for a name not written here)."""
    number = path.name.split(".")[0].removeprefix("step-")
    return int(number) if number.isdigit() else -1


# --- the command --------------------------------------------------------------------------------------------


def _handle(args: argparse.Namespace) -> int:
    hook = JudgeDuringTraining(
        args.judge_model,
        every=args.judge_every,
        items=args.judge_items,
        backend=args.backend,
        host=args.host,
        api_key_env=args.api_key_env,
        db_path=args.judge_db,
        max_new_tokens=args.judge_max_new_tokens,
        concurrency=args.concurrency,
        timeout=args.timeout,
        retries=args.retries,
    )
    hook.check_servers()
    summary = finetune(**finetune_arguments(args), hook=hook)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    if hook.failures:
        print(
            f"error: judging failed at {len(hook.failures)} checkpoint(s); first: {hook.failures[0]}. "
            "Training finished; --resume judges them again",
            file=sys.stderr,
        )
        return 1
    return 0


def add_cli(subparsers) -> None:
    """Register ``workbench finetune``."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune like `python -m trainer finetune`, with an LLM judge scoring checkpoints as it trains",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_finetune_arguments(parser)
    judging = parser.add_argument_group("judge during training")
    judging.add_argument("--judge-every", type=int, required=True, metavar="N", help="judge every N steps")
    judging.add_argument("--judge-model", required=True, help="the judge's model name as the server lists it")
    judging.add_argument(
        "--judge-items", type=int, default=DEFAULT_ITEMS, help=f"validation items answered (default: {DEFAULT_ITEMS})"
    )
    judging.add_argument(
        "--judge-max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"answer length cap in tokens (default: {DEFAULT_MAX_NEW_TOKENS})",
    )
    judging.add_argument("--judge-db", help="workbench store for the answers and verdicts (default: RUN/judge.db)")
    add_server_arguments(judging)
    parser.set_defaults(func=_handle)
