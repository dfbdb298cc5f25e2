"""``workbench judge``: score stored responses with a local Ollama model, in batch, resumably.

The book sends one free-text request at a time and parses an integer. Here requests run in a bounded thread
pool, ask for a JSON schema at temperature 0 with a fixed seed, and every answer is committed as it arrives;
the judge's identity (model digest, prompt template hash, options) is the cache key, so a rerun only asks for
what is missing and a changed model or prompt re-judges. Pairwise mode asks twice with the answers swapped.

Exit status: 0 when every question was answered; 1 when some failed (the summary is printed, then one
`error:` line with the count and the first failure); 2 when all failed or the input is wrong (one `error:`
line only). Failed questions are stored with their error and asked again by the next run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import ollama
from scipy.optimize import minimize
from scipy.special import expit
from tqdm import tqdm

from trainer.errors import UserError
from workbench import store
from workbench.judge_prompts import (
    SCORE_MAX,
    SCORE_MIN,
    JudgePrompt,
    MalformedAnswer,
    detect_item_injection,
    load_prompt,
    parse_score,
    parse_verdict,
    repair_message,
)
from workbench.stats import WINNER_RESULT

DEFAULT_HOST = "http://localhost:11434"
DEFAULT_SEED = 42
MAX_BACKOFF_S = 30.0
# Sampling options of every request; with the base seed they are part of the judge's cache key.
SAMPLING_OPTIONS = {"temperature": 0}
SWAP = {"A": "B", "B": "A", "tie": "tie"}
# A verdict is a short JSON object; a reply past this many bytes is a runaway generation, and reading stops there.
MAX_REPLY_BYTES = 1 << 20
# What the store keeps of a reply or rationale; the rest is replaced by TRUNCATED (the app and SQL can look for it).
MAX_STORED_REPLY_CHARS = 64 * 1024
TRUNCATED = "\n[truncated: "

logger = logging.getLogger(__name__)


def resolve_host(host: str | None) -> str:
    return host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST


def _tagged(name: str) -> str:
    """Ollama's full model name: ``llama3`` is listed as ``llama3:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def pulled_model(client: ollama.Client, host: str, model: str) -> tuple[str, str]:
    """(full name, digest) of a pulled model from ``/api/tags``; a UserError says how to start the server or
    pull the model. The full name (``llama3:latest`` for ``llama3``) keeps one cache key per model."""
    try:
        listing = client.list()
    except (ConnectionError, httpx.TransportError) as exc:
        raise UserError(
            f"cannot reach the Ollama server at {host} ({type(exc).__name__}); start it with `ollama serve`, "
            "or pass --host / set OLLAMA_HOST"
        ) from None
    except ollama.ResponseError as exc:
        raise UserError(f"the Ollama server at {host} failed to list its models: {exc}") from None
    for entry in listing.models:
        if entry.model and _tagged(entry.model) == _tagged(model):
            return entry.model, entry.digest or ""
    pulled = ", ".join(entry.model or "?" for entry in listing.models) or "none"
    raise UserError(f"model {model!r} is not pulled on {host}; run `ollama pull {model}` (pulled: {pulled})")


# --- asking the judge -------------------------------------------------------------------------------------


def cap_text(text: str, limit: int = MAX_STORED_REPLY_CHARS) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and a marker giving the whole length."""
    return text if len(text) <= limit else f"{text[:limit]}{TRUNCATED}{len(text):,} characters in all]"


class ReplyTooLarge(Exception):
    """The judge's HTTP reply passed MAX_REPLY_BYTES; ``head`` keeps its first bytes for the store."""

    def __init__(self, head: bytes, limit: int) -> None:
        super().__init__(f"the judge's reply is larger than {limit / 2**20:g} MiB; reading stopped there")
        self.head = head


class BoundedStream(httpx.SyncByteStream):
    """A response body that raises ReplyTooLarge once more than ``limit`` bytes arrived, so a runaway reply
    costs at most ``limit`` plus one network chunk of memory instead of its whole size."""

    def __init__(self, chunks: Iterable[bytes], limit: int) -> None:
        self._chunks = chunks
        self._limit = limit

    def __iter__(self) -> Iterator[bytes]:
        received, head = 0, bytearray()
        for chunk in self._chunks:
            received += len(chunk)
            head += chunk[: max(0, MAX_STORED_REPLY_CHARS - len(head))]
            if received > self._limit:
                raise ReplyTooLarge(bytes(head), self._limit)
            yield chunk

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def bound_reply(response: httpx.Response) -> None:
    """httpx response hook (it runs before the body is read): read the body through a BoundedStream of
    MAX_REPLY_BYTES. A hook rather than a transport keeps httpx's own transport, proxies from the
    environment included."""
    response.stream = BoundedStream(response.stream, MAX_REPLY_BYTES)


@dataclass
class Answer:
    """The outcome of one question to the judge, after retries: a parsed value or an error."""

    value: tuple | None
    raw_output: str | None
    latency_s: float
    requests: int
    error: str | None = None


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, ollama.ResponseError):
        return exc.status_code >= 500 or exc.status_code == 429
    return isinstance(exc, (ConnectionError, httpx.TransportError))


@dataclass(frozen=True)
class Asker:
    """Sends one question with bounded retries: exponential backoff after connection errors, timeouts and 5xx;
    a malformed answer is shown back to the judge with the reason and asked again. Setting ``stop`` (an
    interrupted batch) ends the retries, so Ctrl-C does not wait for every worker to exhaust them."""

    client: ollama.Client
    model: str
    prompt: JudgePrompt
    retries: int
    backoff_s: float
    stop: threading.Event = field(default_factory=threading.Event)

    def __call__(self, messages: list[dict], seed: int, parse: Callable[[str], tuple]) -> Answer:
        started = time.perf_counter()
        conversation, raw, error, failures = list(messages), None, None, 0
        for attempt in range(self.retries + 1):
            if self.stop.is_set():
                return Answer(None, raw, time.perf_counter() - started, attempt, "interrupted")
            try:
                reply = self.client.chat(
                    model=self.model,
                    messages=conversation,
                    format=self.prompt.schema,
                    options={**SAMPLING_OPTIONS, "seed": seed},
                    stream=False,
                )
            except ReplyTooLarge as exc:  # the same request gives the same runaway reply: not asked again
                raw = f"{exc.head.decode('utf-8', errors='replace')}{TRUNCATED}over {MAX_REPLY_BYTES:,} bytes]"
                return Answer(None, raw, time.perf_counter() - started, attempt + 1, f"ReplyTooLarge: {exc}")
            except Exception as exc:  # noqa: BLE001 - sorted below; anything unexpected is recorded, not raised
                error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, ollama.ResponseError) and exc.status_code == 404:
                    raise UserError(
                        f"the Ollama server no longer has model {self.model!r}: {exc.error}; "
                        f"run `ollama pull {self.model}`"
                    ) from None
                if not _retryable(exc):
                    return Answer(None, raw, time.perf_counter() - started, attempt + 1, error)
                if attempt < self.retries:
                    self.stop.wait(min(self.backoff_s * 2**failures, MAX_BACKOFF_S))
                failures += 1
                continue
            whole = reply.message.content or ""
            raw = cap_text(whole)
            try:
                return Answer(parse(whole), raw, time.perf_counter() - started, attempt + 1)
            except MalformedAnswer as exc:
                error = f"malformed answer: {exc}"
                conversation = [
                    *messages,
                    {"role": "assistant", "content": raw},
                    repair_message(str(exc), self.prompt.mode),
                ]
        return Answer(None, raw, time.perf_counter() - started, self.retries + 1, error)


def _score_task(ask: Asker, work: dict, seed: int) -> dict:
    answer = ask(ask.prompt.messages(work, (work["text"],)), seed + work["repeat"], parse_score)
    score, rationale = answer.value or (None, None)
    return {
        "response_id": work["response_id"],
        "repeat": work["repeat"],
        "score": score,
        "rationale": None if rationale is None else cap_text(rationale),
        "raw_output": answer.raw_output,
        "latency_s": answer.latency_s,
        "error": answer.error,
        "requests": answer.requests,
    }


def _pairwise_task(ask: Asker, work: dict, seed: int) -> dict:
    """Ask with A first, then with B first; a verdict that changes with the order is a tie. When the first
    question fails the second is not asked: the pair is asked again on the next run anyway."""
    first = ask(ask.prompt.messages(work, (work["text_a"], work["text_b"])), seed + work["repeat"], parse_verdict)
    second = (
        ask(ask.prompt.messages(work, (work["text_b"], work["text_a"])), seed + work["repeat"], parse_verdict)
        if first.value
        else Answer(None, None, 0.0, 0, "not asked")
    )
    verdict_ab = first.value[0] if first.value else None
    verdict_ba = SWAP[second.value[0]] if second.value else None
    failures = [f"{order}: {a.error}" for order, a in (("A first", first), ("B first", second)) if a.value is None]
    error = "; ".join(failures) or None
    consistent = None if error else int(verdict_ab == verdict_ba)
    return {
        "item_id": work["item_id"],
        "model_a_id": work["model_a_id"],
        "model_b_id": work["model_b_id"],
        "repeat": work["repeat"],
        "verdict_ab": verdict_ab,
        "verdict_ba": verdict_ba,
        "winner": None if error else (verdict_ab if consistent else "tie"),
        "consistent": consistent,
        "raw_output": json.dumps({"a_first": first.raw_output, "b_first": second.raw_output}),
        "latency_s": first.latency_s + second.latency_s,
        "error": error,
        "requests": first.requests + second.requests,
    }


def _run_pool(
    work: list[dict],
    task: Callable[[dict], dict],
    save: Callable[[list[dict]], None],
    *,
    concurrency: int,
    progress: bool,
    desc: str,
    stop: threading.Event,
) -> dict:
    """Run ``task`` over ``work`` with at most ``concurrency`` in flight; this thread saves each result as it
    completes (SQLite stays on one thread). Saving comes before refilling, so a kill -9 loses at most
    ``concurrency`` answers; results that completed together share one commit (one fsync)."""
    counts = {"judged": 0, "failed": 0, "requests": 0}
    first_failure: tuple[int, str] | None = None  # (work index, what failed): the first in data set order
    started = time.perf_counter()
    pending = enumerate(work)
    in_flight: dict[Future, tuple[int, dict]] = {}
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge")
    bar = tqdm(total=len(work), unit="item", desc=desc, disable=not progress, dynamic_ncols=True)

    def refill() -> None:
        while len(in_flight) < concurrency and (entry := next(pending, None)) is not None:
            in_flight[executor.submit(task, entry[1])] = entry

    try:
        refill()
        while in_flight:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            units = {future: in_flight.pop(future) for future in done}
            finished = [(units[future], future.result()) for future in done if future.exception() is None]
            save([result for _, result in finished])  # keep what finished even when a neighbour raised
            for future in done:
                if future.exception() is not None:
                    raise future.exception()
            refill()
            for (index, unit), result in finished:
                counts["requests"] += result["requests"]
                if result["error"]:
                    counts["failed"] += 1
                    failure = (
                        f"item {unit['item_id']} ({unit.get('model', 'pair')}, repeat {unit['repeat']}): "
                        f"{result['error']}"
                    )
                    logger.info("failed: %s", failure)  # the store keeps every error; one line reports the first
                    if first_failure is None or index < first_failure[0]:
                        first_failure = (index, failure)
                else:
                    counts["judged"] += 1
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
    }


# --- summaries ---------------------------------------------------------------------------------------------


def length_controlled_win_rate(
    outcomes: Sequence[float], length_a: Sequence[float], length_b: Sequence[float]
) -> float | None:
    """AlpacaEval 2's length-controlled win rate of A: fit P(A wins) = sigmoid(theta + phi * tanh(d / sd(d)))
    with d the length difference (ties count as half a win), then report sigmoid(theta), the win rate the
    judge would give at equal lengths. Coefficients are bounded so a fully separated sample stays finite."""
    y = np.asarray(outcomes, dtype=float)
    if y.size == 0:
        return None
    difference = np.asarray(length_a, dtype=float) - np.asarray(length_b, dtype=float)
    spread = difference.std()
    feature = np.tanh(difference / spread) if spread > 0 else np.zeros_like(difference)
    design = np.column_stack([np.ones_like(feature), feature])

    def loss_and_gradient(coefficients: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ coefficients
        loss = np.mean(np.logaddexp(0.0, z) - y * z)  # binomial cross-entropy with fractional outcomes
        return float(loss), design.T @ (expit(z) - y) / y.size

    fit = minimize(loss_and_gradient, np.zeros(2), jac=True, method="L-BFGS-B", bounds=[(-10.0, 10.0)] * 2)
    return float(expit(fit.x[0]))


def _rate(count: float, total: int) -> float | None:
    return round(count / total, 4) if total else None


def pairwise_summary(rows: list[dict]) -> dict:
    """Win rates, order (position) bias and length preference from stored pairwise verdicts."""
    judged = [row for row in rows if row["winner"] is not None]
    wins = {side: sum(row["winner"] == side for row in judged) for side in ("A", "B", "tie")}
    first_twice = sum(row["verdict_ab"] == "A" and row["verdict_ba"] == "B" for row in judged)
    second_twice = sum(row["verdict_ab"] == "B" and row["verdict_ba"] == "A" for row in judged)
    decisive = [row for row in judged if row["winner"] != "tie" and row["length_a"] != row["length_b"]]
    longer_won = sum((row["winner"] == "A") == (row["length_a"] > row["length_b"]) for row in decisive)
    outcomes = [WINNER_RESULT[row["winner"]] for row in judged]
    lc_rate = length_controlled_win_rate(
        outcomes, [row["length_a"] for row in judged], [row["length_b"] for row in judged]
    )
    return {
        "model_a": rows[0]["model_a"] if rows else None,
        "model_b": rows[0]["model_b"] if rows else None,
        "judged": len(judged),
        "failed": len(rows) - len(judged),
        "wins_a": wins["A"],
        "wins_b": wins["B"],
        "ties": wins["tie"],
        "win_rate_a": _rate(wins["A"] + 0.5 * wins["tie"], len(judged)),
        "win_rate_b": _rate(wins["B"] + 0.5 * wins["tie"], len(judged)),
        "inconsistent_rate": _rate(sum(not row["consistent"] for row in judged), len(judged)),
        "position_bias_rate": _rate(first_twice + second_twice, len(judged)),
        "first_position_rate": _rate(first_twice, first_twice + second_twice),
        "longer_preferred_rate": _rate(longer_won, len(decisive)),
        "lc_win_rate_a": None if lc_rate is None else round(lc_rate, 4),
        "lc_win_rate_b": None if lc_rate is None else round(1 - lc_rate, 4),
    }


def score_summary(rows: list[dict]) -> dict:
    """Per model: responses scored, failed attempts still unanswered, mean and spread of the per-response mean
    score; and the judge's per-response spread across repeats (it drifts even at temperature 0)."""
    by_response: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    failed: dict[str, int] = defaultdict(int)
    for row in rows:
        if row["score"] is None:
            failed[row["model"]] += 1
        else:
            by_response[row["model"]][row["response_id"]].append(row["score"])
    models: dict[str, dict] = {}
    for model in dict.fromkeys(row["model"] for row in rows):
        means = [float(np.mean(scores)) for scores in by_response[model].values()]
        models[model] = {
            "scored": len(means),
            "failed": failed[model],
            "mean_score": round(float(np.mean(means)), 3) if means else None,
            "stdev_score": round(float(np.std(means, ddof=1)), 3) if len(means) > 1 else None,
        }
    spreads = [
        float(np.std(scores, ddof=1))
        for responses in by_response.values()
        for scores in responses.values()
        if len(scores) > 1
    ]
    repeats = {
        "responses": len(spreads),
        "mean_stdev": round(float(np.mean(spreads)), 3) if spreads else None,
        "max_stdev": round(max(spreads), 3) if spreads else None,
        "changed": sum(spread > 0 for spread in spreads),
    }
    return {"models": models, "repeats": repeats}


# --- the batch -------------------------------------------------------------------------------------------


def _models_to_judge(db, mode: str, response_keys: Sequence[str] | None) -> list[str]:
    if response_keys:
        for name in response_keys:
            store.model_id(db, name)  # raises a UserError listing the known names
        names = list(dict.fromkeys(response_keys))
    else:
        names = [name for name, count in store.model_response_counts(db).items() if count]
    if not names:
        raise UserError("the database holds no responses to judge; run `workbench import` first")
    if mode == "pairwise" and len(names) != 2:
        raise UserError(
            f"pairwise judging needs exactly two models (--response-key A B); got {len(names)}: "
            + ", ".join(repr(n) for n in names)
        )
    return names


def run_judge(
    db_path: str | Path,
    judge_model: str,
    *,
    host: str | None = None,
    mode: str = "score",
    response_keys: Sequence[str] | None = None,
    dataset: str | None = None,
    concurrency: int = 4,
    limit: int | None = None,
    rubric: str | Path | None = None,
    repeats: int = 1,
    timeout: float = 120.0,
    retries: int = 3,
    seed: int = DEFAULT_SEED,
    judge_name: str | None = None,
    backoff_s: float = 0.5,
    progress: bool = True,
) -> dict:
    """Judge every response (score mode) or item pair (pairwise mode) that this judge has not answered yet,
    store each answer as it arrives, and return a summary of everything the judge has stored. When every
    question of the batch failed (server errors, runaway replies...) the failures are stored and a UserError
    says how many and the first reason; a partial failure is in the summary's ``run`` (``failed``,
    ``first_error``)."""
    for label, value, low in (
        ("--concurrency", concurrency, 1),
        ("--repeats", repeats, 1),
        ("--retries", retries, 0),
        ("--limit", limit, 1),
    ):
        if value is not None and value < low:
            raise UserError(f"{label} must be at least {low}, got {value}")
    if timeout <= 0:
        raise UserError(f"--timeout must be positive, got {timeout}")
    prompt = load_prompt(mode, rubric)
    host = resolve_host(host)
    db = store.open_db(db_path)
    try:
        models = _models_to_judge(db, mode, response_keys)
        client = ollama.Client(host=host, timeout=timeout, event_hooks={"response": [bound_reply]})
        judge_model, digest = pulled_model(client, host, judge_model)
        options = {**SAMPLING_OPTIONS, "seed": seed}
        key = {
            "model": judge_model,
            "digest": digest,
            "template_hash": prompt.template_hash,
            "options": options,
            "mode": mode,
        }
        default_name = (
            f"{judge_model}/{mode}/" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        )
        judge = store.get_or_create_ollama_judge(
            db, name=judge_name or default_name, **key, score_min=SCORE_MIN, score_max=SCORE_MAX
        )
        flags = {  # every field of the prompt: an instruction or reference can carry an injection too
            row["response_id"]: detect_item_injection(
                {
                    "instruction": row["instruction"],
                    "input": row["input"],
                    "reference_output": row["reference_output"],
                    "response": row["text"],
                }
            )
            for row in store.response_rows(db, dataset=dataset, models=models)
        }
        store.set_injection_flags(db, flags)
        ask = Asker(client, judge_model, prompt, retries, backoff_s)
        desc = f"judging with {judge_model}"
        if mode == "score":
            work = store.pending_scores(db, judge["id"], models=models, repeats=repeats, dataset=dataset, limit=limit)
            task, save = _score_task, store.save_judge_scores
        else:
            work = store.pending_pairwise(
                db,
                judge["id"],
                model_a=models[0],
                model_b=models[1],
                repeats=repeats,
                dataset=dataset,
                limit=limit,
            )
            task, save = _pairwise_task, store.save_judge_pairwise
        run = _run_pool(
            work,
            lambda unit: task(ask, unit, seed),
            lambda results: save(db, judge["id"], results),
            concurrency=concurrency,
            progress=progress,
            desc=desc,
            stop=ask.stop,
        )
        if run["failed"] and not run["judged"]:
            raise UserError(failure_line(run))
        if mode == "score":
            results = score_summary(store.judge_score_results(db, judge["id"]))
        else:
            results = {"pairwise": pairwise_summary(store.judge_pairwise_results(db, judge["id"]))}
        flagged = [row for row in store.flagged_responses(db) if flags.get(row["response_id"])]
    finally:
        db.close()
    return {
        "judge": judge["name"],
        "judge_model": judge_model,
        "digest": digest,
        "template_hash": prompt.template_hash,
        "mode": mode,
        "host": host,
        "run": run,
        **results,
        "flagged": [{key: row[key] for key in ("model", "item_id", "injection_flag")} for row in flagged],
    }


def failure_line(run: dict) -> str:
    """One line on the failures of a batch: how many, and the first one in data set order."""
    every = "all " if run["failed"] == run["pending"] else ""
    return (
        f"{every}{run['failed']} of {run['pending']} judgements failed; first: {run['first_error']}. "
        "The failures are stored; a rerun asks again"
    )


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def format_summary(summary: dict) -> str:
    """The human-readable report printed at the end of a batch."""
    run = summary["run"]
    lines = [
        f"judge {summary['judge']} ({summary['judge_model']}, digest {summary['digest'][:19] or '?'}, "
        f"template {summary['template_hash'][:12]})",
        f"this run: {run['judged']} judged, {run['failed']} of {run['pending']} failed, {run['requests']} requests in "
        f"{run['elapsed_s']:.1f} s" + (f" ({run['items_per_s']:.2f} items/s)" if run["items_per_s"] else ""),
    ]
    if summary["mode"] == "score":
        for model, stats in summary["models"].items():
            mean = "-" if stats["mean_score"] is None else f"{stats['mean_score']:.2f}"
            lines.append(f"  {model}: mean score {mean} over {stats['scored']} responses, {stats['failed']} failed")
        repeats = summary["repeats"]
        if repeats["responses"]:
            lines.append(
                f"  repeats: per-response stdev mean {repeats['mean_stdev']:.2f}, max "
                f"{repeats['max_stdev']:.2f}; {repeats['changed']}/{repeats['responses']} responses vary"
            )
    else:
        p = summary["pairwise"]
        lines += [
            f"  {p['model_a']} (A) vs {p['model_b']} (B): {p['wins_a']} A, {p['wins_b']} B, {p['ties']} ties "
            f"over {p['judged']} items ({p['failed']} failed)",
            f"  win rate A {_percent(p['win_rate_a'])}, B {_percent(p['win_rate_b'])}; length-controlled "
            f"A {_percent(p['lc_win_rate_a'])}, B {_percent(p['lc_win_rate_b'])}",
            f"  swapping the order changed the verdict on {_percent(p['inconsistent_rate'])} of items "
            f"(same position chosen twice: {_percent(p['position_bias_rate'])}); the longer answer won "
            f"{_percent(p['longer_preferred_rate'])} of decisive items",
        ]
    if summary["flagged"]:
        lines.append(f"  {len(summary['flagged'])} responses look like prompt injection (flagged in the store):")
        lines += [f"    {row['model']} item {row['item_id']}: {row['injection_flag']}" for row in summary["flagged"]]
    return "\n".join(lines)


def _handle(args: argparse.Namespace) -> int:
    summary = run_judge(
        args.db,
        args.judge_model,
        host=args.host,
        mode=args.mode,
        response_keys=args.response_key,
        dataset=args.dataset,
        concurrency=args.concurrency,
        limit=args.limit,
        rubric=args.rubric,
        repeats=args.repeats,
        timeout=args.timeout,
        retries=args.retries,
        seed=args.seed,
        judge_name=args.judge_name,
        progress=sys.stderr.isatty(),
    )
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if summary["run"]["failed"]:  # some judged, some not: the summary stands, the command did not succeed
        print(f"error: {failure_line(summary['run'])}", file=sys.stderr)
        return 1
    return 0


def add_cli(subparsers) -> None:
    """Register ``workbench judge``."""
    parser = subparsers.add_parser(
        "judge",
        help="score stored responses with a local Ollama model (LLM-as-a-judge, batch, cached)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", required=True, help="workbench database file")
    parser.add_argument("--judge-model", required=True, help="Ollama model name, e.g. llama3.1:8b")
    parser.add_argument("--host", help=f"Ollama server (default: $OLLAMA_HOST or {DEFAULT_HOST})")
    parser.add_argument(
        "--mode",
        choices=("score", "pairwise"),
        default="score",
        help="score: 0-100 against the reference; pairwise: two models, both orders",
    )
    parser.add_argument(
        "--response-key",
        nargs="+",
        metavar="KEY",
        help="models (response keys) to judge (default: all; pairwise needs two)",
    )
    parser.add_argument("--dataset", help="only this data set's items")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default: 4)")
    parser.add_argument("--limit", type=int, help="only the first N items of the data set")
    parser.add_argument("--rubric", help="text file replacing the default grading instructions")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="judge each item N times with seeds SEED..SEED+N-1 (judge variance)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        help="extra attempts after a connection error, timeout, 5xx or malformed answer",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"judge seed (default: {DEFAULT_SEED})")
    parser.add_argument("--judge-name", help="name of the judge in the store (default: MODEL/MODE/KEY-HASH)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=_handle)
