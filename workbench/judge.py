"""``workbench judge``: score stored responses with an LLM on Ollama or any OpenAI-compatible server, in batch,
resumably.

The book sends one free-text request at a time and parses an integer. Here requests run in a bounded thread
pool, ask for a JSON schema at temperature 0 with a fixed seed, and every answer is committed as it arrives;
the judge's identity (server kind, model, digest or declared revision, prompt template hash, options) is the
cache key, so a rerun only asks for what is missing and a changed model or prompt re-judges. Pairwise mode asks
twice with the answers swapped. Several servers (--base-url, repeated) share the work; a server that stops
answering hands its questions to the others.

Several machines or processes share a batch with --shard I/N: each judges the items whose SHA-256 of their
stable item id, modulo N, is I-1, and writes into the same database file (SQLite's WAL journal and a busy
timeout queue their commits); a killed shard rerun with the same --shard asks only for what it lost.

Exit status: 0 when every question was answered; 1 when some failed (the summary is printed, then one
`error:` line with the count and the first failure); 2 when all failed or the input is wrong (one `error:`
line only). Failed questions are stored with their error and asked again by the next run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from trainer.errors import UserError
from trainer.shards import SHARD_HELP, Shard, parse_shard
from trainer.tracking import add_cli_options, log_summary_run, require_backends
from workbench import store
from workbench.backends import (
    Backend,
    add_server_arguments,
    check_request_options,
    connect,
    resolve_hosts,
    served_everywhere,
)
from workbench.backends.pool import Answer, Asker, cap_text, print_batch_outcome, run_pool
from workbench.judge_prompts import (
    SCORE_MAX,
    SCORE_MIN,
    JudgePrompt,
    detect_item_injection,
    load_prompt,
    parse_score,
    parse_verdict,
    repair_message,
)
from workbench.stats import WINNER_RESULT

DEFAULT_SEED = 42
# Sampling options of every request; with the base seed they are part of the judge's cache key.
SAMPLING_OPTIONS = {"temperature": 0}
SWAP = {"A": "B", "B": "A", "tie": "tie"}
UNVERSIONED = (
    "the server reports no weights digest and no --judge-revision was given: hosted models change under the "
    "same name, so this judge's cache cannot tell their versions apart"
)


@dataclass(frozen=True)
class Questions:
    """Asks the judge one question on a given server: the prompt's schema at temperature 0 and ``seed``, a
    malformed answer shown back with the reason (see Asker for retries)."""

    ask: Asker
    model: str
    prompt: JudgePrompt
    max_tokens: int | None = None

    def __call__(self, backend: Backend, messages: list[dict], seed: int, parse) -> Answer:
        def request(server: Backend, conversation: list[dict]) -> str:
            return server.chat(
                self.model,
                conversation,
                schema=self.prompt.schema,
                seed=seed,
                temperature=SAMPLING_OPTIONS["temperature"],
                max_tokens=self.max_tokens,
            )

        def repair(first: list[dict], raw: str, reason: str) -> list[dict]:
            return [*first, {"role": "assistant", "content": raw}, repair_message(reason, self.prompt.mode)]

        return self.ask(backend, request, messages, parse, repair)


def _score_task(ask: Questions, backend: Backend, work: dict, seed: int) -> dict:
    answer = ask(backend, ask.prompt.messages(work, (work["text"],)), seed + work["repeat"], parse_score)
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


def _pairwise_task(ask: Questions, backend: Backend, work: dict, seed: int) -> dict:
    """Ask with A first, then with B first; a verdict that changes with the order is a tie. When the first
    question fails the second is not asked: the pair is asked again on the next run anyway."""
    seed += work["repeat"]
    first = ask(backend, ask.prompt.messages(work, (work["text_a"], work["text_b"])), seed, parse_verdict)
    second = (
        ask(backend, ask.prompt.messages(work, (work["text_b"], work["text_a"])), seed, parse_verdict)
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


def _judge_key(kind: str, model: str, digest: str, prompt: JudgePrompt, seed: int, mode: str) -> dict:
    return {
        "kind": kind,
        "model": model,
        "digest": digest,
        "template_hash": prompt.template_hash,
        "options": {**SAMPLING_OPTIONS, "seed": seed},
        "mode": mode,
    }


def _default_judge_name(key: dict) -> str:
    """MODEL/MODE/HASH of the cache key. An Ollama judge's hash leaves the kind out, so names given before
    other servers existed stay the same."""
    hashed = {name: value for name, value in key.items() if name != "kind" or value != "ollama"}
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:8]
    return f"{key['model']}/{key['mode']}/{digest}"


def run_judge(
    db_path: str | Path,
    judge_model: str,
    *,
    backend: str = "ollama",
    host: str | Sequence[str] | None = None,
    api_key_env: str | None = None,
    judge_revision: str | None = None,
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
    max_tokens: int | None = None,
    shard: str | Shard | None = None,
    progress: bool = True,
) -> dict:
    """Judge every response (score mode) or item pair (pairwise mode) that this judge has not answered yet,
    store each answer as it arrives, and return a summary of everything the judge has stored. ``host`` is one
    server or several sharing the work (``concurrency`` requests in flight on each). When every question of
    the batch failed (server errors, runaway replies...) the failures are stored and a UserError says how many
    and the first reason; a partial failure is in the summary's ``run`` (``failed``, ``first_error``).
    With a ``shard`` (``"I/N"``) only that shard's items are asked (the summary still covers everything the
    judge stored); N processes with shards 1/N..N/N, at once on one database, do the whole batch."""
    shard = parse_shard(shard)
    check_request_options(concurrency, retries, timeout, repeats=repeats, limit=limit, max_tokens=max_tokens)
    if backend == "ollama" and judge_revision is not None:
        raise UserError("--judge-revision is for --backend openai; Ollama reports each model's digest itself")
    prompt = load_prompt(mode, rubric)
    with ExitStack() as cleanup:  # closes the database and every client, however the batch ends
        servers = [
            cleanup.enter_context(closing(connect(backend, url, timeout=timeout, api_key_env=api_key_env)))
            for url in resolve_hosts(backend, host)
        ]
        db = store.open_db(db_path)
        cleanup.callback(db.close)
        models = _models_to_judge(db, mode, response_keys)
        served = served_everywhere(servers, judge_model)
        judge_model = served.id
        digest = f"revision:{judge_revision}" if judge_revision else served.digest or ""
        key = _judge_key(servers[0].kind, judge_model, digest, prompt, seed, mode)
        judge = store.get_or_create_llm_judge(
            db, name=judge_name or _default_judge_name(key), **key, score_min=SCORE_MIN, score_max=SCORE_MAX
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
        ask = Questions(Asker(retries, backoff_s), judge_model, prompt, max_tokens)
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
        if shard is not None:
            work = [unit for unit in work if shard.holds(unit["item_id"])]
        run = run_pool(
            work,
            servers,
            lambda server, unit: task(ask, server, unit, seed),
            lambda results: save(db, judge["id"], results),
            concurrency=concurrency,
            progress=progress,
            desc=f"judging with {judge_model}",
            stop=ask.ask.stop,
            describe=lambda unit: f"item {unit['item_id']} ({unit.get('model', 'pair')}, repeat {unit['repeat']})",
            done_label="judged",
        )
        if run["failed"] and not run["judged"]:
            raise UserError(failure_line(run))
        if mode == "score":
            results = score_summary(store.judge_score_results(db, judge["id"]))
        else:
            pair = [
                row
                for row in store.judge_pairwise_results(db, judge["id"])
                if [row["model_a"], row["model_b"]] == models
            ]
            results = {"pairwise": pairwise_summary(pair)}  # this pair's verdicts: the judge may have others
        flagged = [row for row in store.flagged_responses(db) if flags.get(row["response_id"])]
    return {
        "judge": judge["name"],
        "backend": servers[0].kind,
        "judge_model": judge_model,
        "digest": digest,
        "versioned": bool(digest),
        "template_hash": prompt.template_hash,
        "mode": mode,
        "hosts": [server.url for server in servers],
        "shard": None if shard is None else str(shard),
        "structured_output": servers[0].output_format,
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
        f"template {summary['template_hash'][:12]})" + (f", shard {summary['shard']}" if summary["shard"] else ""),
        f"this run: {run['judged']} judged, {run['failed']} of {run['pending']} failed, {run['requests']} requests in "
        f"{run['elapsed_s']:.1f} s" + (f" ({run['items_per_s']:.2f} items/s)" if run["items_per_s"] else ""),
    ]
    if len(run["servers"]) > 1 or run["servers"][0]["down"]:
        lines += [
            f"  {server['url']}: {server['answered']} answered"
            + (f", stopped: {server['down']}" if server["down"] else "")
            for server in run["servers"]
        ]
    if not summary["versioned"]:
        lines.append(f"  note: {UNVERSIONED}; pass --judge-revision to name the version")
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


# The summary's settings, logged as a tracker run's parameters; its numbers are the metrics.
TRACKED_SETTINGS = ("judge", "backend", "judge_model", "digest", "template_hash", "mode", "hosts", "shard")


def _handle(args: argparse.Namespace) -> int:
    log_to = require_backends(args.log_to)  # a missing package stops us before any question is asked
    summary = run_judge(
        args.db,
        args.judge_model,
        backend=args.backend,
        host=args.host,
        api_key_env=args.api_key_env,
        judge_revision=args.judge_revision,
        max_tokens=args.max_tokens,
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
        shard=args.shard,
        progress=sys.stderr.isatty(),
    )
    settings = {key: summary[key] for key in TRACKED_SETTINGS}
    log_summary_run(
        log_to,
        {**summary, "flagged": len(summary["flagged"])},
        experiment="judge",
        run_name=f"judge/{summary['judge']}",
        params={**settings, "repeats": args.repeats, "seed": args.seed, "dataset": args.dataset, "limit": args.limit},
        log_dir=args.log_dir,
        default_dir=".",
    )
    return print_batch_outcome(summary, format_summary(summary), args.json, failure_line)


def add_cli(subparsers) -> None:
    """Register ``workbench judge``."""
    parser = subparsers.add_parser(
        "judge",
        help="score stored responses with an LLM on Ollama or an OpenAI-compatible server (batch, cached)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", required=True, help="workbench database file")
    parser.add_argument(
        "--judge-model", required=True, help="model name as the server lists it, e.g. llama3.1:8b on Ollama"
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--judge-revision",
        help="(openai) the judge's version, part of the cache key: servers rarely report a weights digest",
    )
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
    parser.add_argument("--limit", type=int, help="only the first N items of the data set")
    parser.add_argument("--rubric", help="text file replacing the default grading instructions")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="judge each item N times with seeds SEED..SEED+N-1 (judge variance)",
    )
    parser.add_argument("--max-tokens", type=int, help="cap on each reply's tokens (default: the server's)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"judge seed (default: {DEFAULT_SEED})")
    parser.add_argument("--judge-name", help="name of the judge in the store (default: MODEL/MODE/KEY-HASH)")
    parser.add_argument("--shard", metavar="I/N", help=f"{SHARD_HELP} (an item's identity: its stable item id)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_cli_options(parser, log_dir_default="the working folder")
    parser.set_defaults(func=_handle)
