"""``workbench generate``: a served model's responses to a data set's items, stored as a model.

Any model a server offers (llama.cpp, vLLM, Ollama, LM Studio, a hosted API; or this project's own run
exported to GGUF) answers the items of a stored data set, so it can be reviewed and judged beside the others.
Prompt styles ``alpaca``, ``phi3`` and the trainer's other styles (``chatml`` ...) send this project's own prompt
as a plain completion (``/v1/completions``): the model sees exactly the text ``python -m trainer generate`` gives a
run (a chat style's response is cut at its stop string). ``chat`` sends the instruction (and
its input) as one user message through the server's chat template, for instruction-tuned models.

Every response is committed as it arrives, so a rerun asks only for the items still without one and a kill -9
loses only the requests in flight. The decoding (server protocol, model id and digest, style, max tokens,
temperature, seed) is stored with each response; adding responses made otherwise to the same model is refused.

Exit status: 0 when every item got a response; 1 when some failed (asked again by the next run); 2 when all
failed or the input is wrong (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from contextlib import ExitStack, closing
from pathlib import Path

from trainer.data import STYLES, format_prompt, stop_string, user_message
from trainer.errors import UserError
from workbench import store
from workbench.backends import (
    Backend,
    add_server_arguments,
    check_request_options,
    connect,
    resolve_hosts,
    served_everywhere,
)
from workbench.backends.pool import Asker, print_batch_outcome, run_pool

PROMPT_STYLES = (*STYLES, "chat")
DEFAULT_MAX_TOKENS = 256
DEFAULT_SEED = 123


def _items_to_answer(db, dataset: str, split: str | None) -> list[dict]:
    if dataset not in store.dataset_names(db):
        known = ", ".join(repr(name) for name in store.dataset_names(db)) or "none"
        raise UserError(f"unknown data set {dataset!r}; known: {known}")
    items = store.dataset_items(db, dataset)
    if split is None:
        return items
    chosen = [item for item in items if item["split"] == split]
    if not chosen:
        splits = ", ".join(sorted({repr(item["split"]) for item in items if item["split"]})) or "none"
        raise UserError(f"data set {dataset!r} has no items in split {split!r} (its splits: {splits})")
    return chosen


def _refuse_other_decoding(db, name: str, dataset: str, decoding_json: str) -> None:
    """Responses made otherwise (another server model, style or decoding, or imported) must not be mixed in."""
    if name not in store.model_names(db):
        return
    for row in store.response_rows(db, dataset=dataset, models=[name]):
        if row["decoding_json"] != decoding_json:
            raise UserError(
                f"model {name!r} already holds responses to {dataset!r} made otherwise ({row['decoding_json']}, "
                f"not {decoding_json}); choose another --name"
            )


def run_generate(
    db_path: str | Path,
    model: str,
    *,
    dataset: str,
    backend: str = "openai",
    host: str | Sequence[str] | None = None,
    api_key_env: str | None = None,
    split: str | None = None,
    prompt_style: str = "alpaca",
    name: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = 0.0,
    seed: int = DEFAULT_SEED,
    concurrency: int = 4,
    timeout: float = 120.0,
    retries: int = 3,
    backoff_s: float = 0.5,
    progress: bool = True,
) -> dict:
    """Ask the served ``model`` for a response to every item of ``dataset`` (or its ``split``) that the store
    model ``name`` (default: the server's model id) lacks; store each as it arrives; return a summary."""
    check_request_options(concurrency, retries, timeout, max_tokens=max_tokens)
    if temperature < 0:
        raise UserError(f"--temperature must not be negative, got {temperature}")
    if prompt_style not in PROMPT_STYLES:
        raise UserError(f"unknown prompt style {prompt_style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    with ExitStack() as cleanup:  # closes the database and every client, however the batch ends
        servers = [
            cleanup.enter_context(closing(connect(backend, url, timeout=timeout, api_key_env=api_key_env)))
            for url in resolve_hosts(backend, host)
        ]
        db = store.open_db(db_path)
        cleanup.callback(db.close)
        items = _items_to_answer(db, dataset, split)
        served = served_everywhere(servers, model)
        name = name or served.id
        decoding = {
            "server": servers[0].kind,
            "model": served.id,
            "digest": served.digest,
            "prompt_style": prompt_style,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        decoding_json = json.dumps(decoding, sort_keys=True)
        _refuse_other_decoding(db, name, dataset, decoding_json)
        stored = store.response_ids_by_item(db, name, dataset) if name in store.model_names(db) else {}
        work = [item for item in items if item["id"] not in stored]
        model_id = store.get_or_create_model(db, name) if work else None
        ask = Asker(retries, backoff_s)
        stop = None if prompt_style == "chat" else stop_string(prompt_style)

        def request(server: Backend, unit: dict) -> str:
            if prompt_style == "chat":
                message = {"role": "user", "content": user_message(unit)}
                return server.chat(
                    served.id, [message], schema=None, seed=seed, temperature=temperature, max_tokens=max_tokens
                )
            prompt = format_prompt(unit, prompt_style)
            text = server.complete(served.id, prompt, seed=seed, temperature=temperature, max_tokens=max_tokens)
            return text.partition(stop)[0] if stop else text  # a chat style's turn ends at its stop string

        def task(server: Backend, unit: dict) -> dict:
            answer = ask(server, lambda s, _: request(s, unit), [], lambda text: (text.strip(),))
            text = answer.value[0] if answer.value else None
            return {
                "item_id": unit["id"],
                "text": text,
                "source": server.url,
                "error": answer.error,
                "requests": answer.requests,
            }

        def save(results: list[dict]) -> None:
            for result in results:  # one transaction each: a response is kept the moment it is saved
                if result["error"] is None:
                    response = {key: result[key] for key in ("item_id", "text", "source")}
                    store.upsert_responses(db, model_id, [{**response, "decoding_json": decoding_json}])

        run = run_pool(
            work,
            servers,
            task,
            save,
            concurrency=concurrency,
            progress=progress,
            desc=f"asking {served.id}",
            stop=ask.stop,
            describe=lambda unit: f"item {unit['id']}",
            done_label="generated",
        )
        if run["failed"] and not run["generated"]:
            raise UserError(failure_line(run))
    return {
        "model": name,
        "served_model": served.id,
        "dataset": dataset,
        "split": split,
        "decoding": decoding,
        "items": len(items),
        "already_stored": len(items) - len(work),
        "hosts": [server.url for server in servers],
        "run": run,
    }


def failure_line(run: dict) -> str:
    every = "all " if run["failed"] == run["pending"] else ""
    return (
        f"{every}{run['failed']} of {run['pending']} responses failed; first: {run['first_error']}. "
        "A rerun asks again for the missing ones"
    )


def format_summary(summary: dict) -> str:
    run = summary["run"]
    rate = f" ({run['items_per_s']:.2f} items/s)" if run["items_per_s"] else ""
    return "\n".join(
        [
            f"model {summary['model']} ({summary['served_model']} at {', '.join(summary['hosts'])}, "
            f"{summary['decoding']['prompt_style']} prompts) on {summary['dataset']}"
            + (f" split {summary['split']}" if summary["split"] else ""),
            f"this run: {run['generated']} new responses, {run['failed']} of {run['pending']} failed, "
            f"{run['requests']} requests in {run['elapsed_s']:.1f} s{rate}; {summary['already_stored']} of "
            f"{summary['items']} items were already answered",
        ]
    )


def _handle(args: argparse.Namespace) -> int:
    summary = run_generate(
        args.db,
        args.model,
        dataset=args.dataset,
        backend=args.backend,
        host=args.host,
        api_key_env=args.api_key_env,
        split=args.split,
        prompt_style=args.prompt_style,
        name=args.name,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        concurrency=args.concurrency,
        timeout=args.timeout,
        retries=args.retries,
        progress=sys.stderr.isatty(),
    )
    return print_batch_outcome(summary, format_summary(summary), args.json, failure_line)


def add_cli(subparsers) -> None:
    """Register ``workbench generate``."""
    parser = subparsers.add_parser(
        "generate",
        help="ask a served model (OpenAI-compatible server or Ollama) for responses to a data set, resumably",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", required=True, help="workbench database file")
    parser.add_argument("--model", required=True, help="model name as the server lists it")
    parser.add_argument("--dataset", required=True, help="stored data set whose items are asked")
    parser.add_argument("--split", help="only the items of this split (e.g. test; default: every item)")
    parser.add_argument(
        "--prompt-style",
        choices=PROMPT_STYLES,
        default="alpaca",
        help="alpaca/phi3: this project's prompt as a plain completion; chat: the server's chat template "
        "(default: alpaca)",
    )
    parser.add_argument("--name", help="model name in the store (default: the server's model id)")
    add_server_arguments(parser, default_backend="openai")
    parser.add_argument(
        "--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help=f"new tokens per response ({DEFAULT_MAX_TOKENS})"
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default: 0, greedy)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"sampling seed (default: {DEFAULT_SEED})")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=_handle)
