"""Asking servers many questions: bounded retries per question, and a pool that shares the work among servers.

Each server gets at most ``concurrency`` requests in flight, and the next question goes to the least busy live
server (round-robin among equals). A server that stops answering (connection refused or lost through every
retry) is dropped and its questions go to the others; when none is left the batch stops with one line. The
calling thread saves every answer as it arrives (SQLite stays on one thread), so a kill -9 loses at most the
questions in flight.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from tqdm import tqdm

from trainer.errors import UserError
from workbench.backends import MAX_REPLY_BYTES, MAX_STORED_REPLY_CHARS, TRUNCATED, Backend, ReplyTooLarge, ServerError
from workbench.judge_prompts import MalformedAnswer

MAX_BACKOFF_S = 30.0

logger = logging.getLogger(__name__)


def print_batch_outcome(summary: dict, text: str, as_json: bool, failure_line: Callable[[dict], str]) -> int:
    """Print a batch's summary (``text``, or the JSON), then its failures as one ``error:`` line; the exit code:
    0 when every question was answered, 1 when some failed (the summary stands, the command did not succeed)."""
    print(json.dumps(summary, indent=2) if as_json else text)
    if summary["run"]["failed"]:
        print(f"error: {failure_line(summary['run'])}", file=sys.stderr)
        return 1
    return 0


def cap_text(text: str, limit: int = MAX_STORED_REPLY_CHARS) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and a marker giving the whole length."""
    return text if len(text) <= limit else f"{text[:limit]}{TRUNCATED}{len(text):,} characters in all]"


class HostDown(Exception):
    """A question could not be asked because its server stopped answering; it goes to another server."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass
class Answer:
    """The outcome of one question, after retries: a parsed value or an error."""

    value: tuple | None
    raw_output: str | None
    latency_s: float
    requests: int
    error: str | None = None


@dataclass(frozen=True)
class Asker:
    """Sends one question with bounded retries: exponential backoff after connection errors, timeouts, 429 and
    5xx; an answer that ``parse`` refuses (MalformedAnswer) is shown back with the reason by ``repair`` and
    asked again. Both kinds share one budget of ``retries`` extra requests. Setting ``stop`` (an interrupted
    batch) ends the retries, so Ctrl-C does not wait for every worker to exhaust them."""

    retries: int
    backoff_s: float
    stop: threading.Event = field(default_factory=threading.Event)

    def __call__(
        self,
        backend: Backend,
        request: Callable[[Backend, list[dict]], str],
        messages: list[dict],
        parse: Callable[[str], tuple],
        repair: Callable[[list[dict], str, str], list[dict]] | None = None,
    ) -> Answer:
        started = time.perf_counter()
        conversation, raw, error, failures, gone = list(messages), None, None, 0, False
        for attempt in range(self.retries + 1):
            if self.stop.is_set():
                return Answer(None, raw, time.perf_counter() - started, attempt, "interrupted")
            try:
                whole = request(backend, conversation)
            except ReplyTooLarge as exc:  # the same request gives the same runaway reply: not asked again
                raw = f"{exc.head.decode('utf-8', errors='replace')}{TRUNCATED}over {MAX_REPLY_BYTES:,} bytes]"
                return Answer(None, raw, time.perf_counter() - started, attempt + 1, f"ReplyTooLarge: {exc}")
            except ServerError as exc:
                error, gone = str(exc), exc.unreachable
                if not exc.retryable:
                    return Answer(None, raw, time.perf_counter() - started, attempt + 1, error)
                if attempt < self.retries:
                    self.stop.wait(min(self.backoff_s * 2**failures, MAX_BACKOFF_S))
                failures += 1
                continue
            except (UserError, HostDown):
                raise
            except Exception as exc:  # noqa: BLE001 - anything unexpected is recorded with the question, not raised
                return Answer(None, raw, time.perf_counter() - started, attempt + 1, f"{type(exc).__name__}: {exc}")
            gone = False
            raw = cap_text(whole)
            try:
                return Answer(parse(whole), raw, time.perf_counter() - started, attempt + 1)
            except MalformedAnswer as exc:
                error = f"malformed answer: {exc}"
                if repair is not None:
                    conversation = repair(messages, raw, str(exc))
        if gone:
            raise HostDown(backend.url, error)
        return Answer(None, raw, time.perf_counter() - started, self.retries + 1, error)


def run_pool(
    work: list[dict],
    backends: Sequence[Backend],
    task: Callable[[Backend, dict], dict],
    save: Callable[[list[dict]], None],
    *,
    concurrency: int,
    progress: bool,
    desc: str,
    stop: threading.Event,
    describe: Callable[[dict], str],
    done_label: str,
) -> dict:
    """Run ``task`` over ``work`` with at most ``concurrency`` in flight per server; this thread saves each
    result as it completes. Saving comes before refilling, so a kill -9 loses at most the questions in flight;
    results that completed together share one commit (one fsync). A result with an ``error`` counts as failed
    (``describe(unit)`` names it in ``first_error``); every result carries its ``requests``."""
    counts = {done_label: 0, "failed": 0, "requests": 0}
    first_failure: tuple[int, str] | None = None  # (work index, what failed): the first in data set order
    answered = {backend.url: 0 for backend in backends}
    down: dict[str, str] = {}
    live = list(range(len(backends)))
    load = [0] * len(backends)
    rotation = itertools.count()
    started = time.perf_counter()
    pending = deque(enumerate(work))
    in_flight: dict[Future, tuple[int, dict, int]] = {}
    executor = ThreadPoolExecutor(max_workers=concurrency * len(backends), thread_name_prefix="ask")
    bar = tqdm(total=len(work), unit="item", desc=desc, disable=not progress, dynamic_ncols=True)

    def refill() -> None:
        while pending:
            free = [server for server in live if load[server] < concurrency]
            if not free:
                return
            least = min(load[server] for server in free)
            tied = [server for server in free if load[server] == least]
            server = tied[next(rotation) % len(tied)]
            index, unit = pending.popleft()
            load[server] += 1
            in_flight[executor.submit(task, backends[server], unit)] = (index, unit, server)

    try:
        refill()
        while in_flight:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            finished, moved, raised = [], [], None
            for future in done:
                index, unit, server = in_flight.pop(future)
                load[server] -= 1
                exc = future.exception()
                if isinstance(exc, HostDown):
                    moved.append((index, unit))
                    if server in live:
                        live.remove(server)
                        down[backends[server].url] = exc.reason
                        logger.warning("%s stopped answering (%s); its questions go to the others", exc.url, exc.reason)
                elif exc is not None:
                    raised = raised or exc
                else:
                    finished.append((index, unit, server, future.result()))
            save([result for *_, result in finished])  # keep what finished even when a neighbour raised
            if raised is not None:
                raise raised
            pending.extendleft(sorted(moved, key=lambda entry: entry[0], reverse=True))
            if not live:
                stored = counts[done_label] + counts["failed"] + len(finished)
                servers = "; ".join(f"{url}: {reason}" for url, reason in down.items())
                raise UserError(
                    f"every server stopped answering ({servers}); {stored} of {len(work)} answers were stored, "
                    "a rerun asks the rest"
                )
            refill()
            for index, unit, server, result in finished:
                counts["requests"] += result["requests"]
                answered[backends[server].url] += 1
                if result["error"]:
                    counts["failed"] += 1
                    failure = f"{describe(unit)}: {result['error']}"
                    logger.info("failed: %s", failure)  # the store keeps every error; one line reports the first
                    if first_failure is None or index < first_failure[0]:
                        first_failure = (index, failure)
                else:
                    counts[done_label] += 1
            bar.set_postfix(errors=counts["failed"], refresh=False)
            bar.update(len(finished))
    finally:
        stop.set()  # workers still retrying give up; those mid-request finish their one request
        executor.shutdown(wait=False, cancel_futures=True)
        bar.close()
    elapsed = time.perf_counter() - started
    return {
        "pending": len(work),
        **counts,
        "first_error": first_failure[1] if first_failure else None,
        "elapsed_s": round(elapsed, 3),
        "items_per_s": round(len(work) / elapsed, 3) if work and elapsed > 0 else None,
        "servers": [{"url": url, "answered": count, "down": down.get(url)} for url, count in answered.items()],
    }
