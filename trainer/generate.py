"""Batched generation with a key/value cache, response extraction, and the ``generate`` subcommand.

The book generates one prompt at a time and recomputes the whole sequence for every new token. Here prompts
are sorted by length and decoded in batches: left padding with an attention mask and per-row positions makes
every row compute what it would compute alone, the cache makes each step cost one token per row, and rows
that reach end-of-text leave the batch so they stop costing compute.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from trainer.checkpoint import CHECKPOINTS, load_run_model
from trainer.cpu_layout import lay_out_for_streaming
from trainer.data import (
    STYLES,
    check_style_unchanged,
    check_turns,
    encode,
    extract_response,
    format_instruction,
    format_prompt,
    is_chat_style,
    load_entries,
    resolve_style,
    response_marker,
    split_entries,
    stop_string,
)
from trainer.entries import DEFAULT_RESPONSE_KEY, parse_json, read_text
from trainer.errors import UserError
from trainer.files import write_atomically
from trainer.formats import COLUMNS_HELP, FORMATS_HELP, parse_columns, resolve_source
from trainer.formats import data_sha256 as source_sha256
from trainer.model import GPT, KVCache
from trainer.shards import SHARD_HELP, Shard, parse_shard
from trainer.tokenizer import END_OF_TEXT_ID, get_tokenizer
from trainer.train import pick_device

# Called after each batch with the prompts' indices and their new tokens.
BatchCallback = Callable[[list[int], list[list[int]]], None]
SPLITS = ("test", "val", "train", "all")


def generate_tokens(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    eos_id: int | None = END_OF_TEXT_ID,
    batch_size: int = 8,
    on_batch: BatchCallback | None = None,
    prompt_names: Sequence[str] | None = None,
    stop: Callable[[list[int]], bool] | None = None,
) -> list[list[int]]:
    """New tokens for every prompt (end-of-text excluded), decoded in length-sorted batches.

    Greedy when ``temperature`` is 0. With a ``seed``, each prompt samples from its own generator seeded by
    the seed and the prompt's tokens: a response does not depend on batch size, order or an interrupted run.
    A row stops at ``eos_id`` (never when it is None), after ``max_new_tokens``, when prompt and response
    fill the context window, or once ``stop(new tokens so far)`` is true (that last token kept).
    ``prompt_names`` label prompts in error messages. On the CPU the first call moves the model's weights,
    for good, to the faster-streaming layout of :mod:`trainer.cpu_layout` (same values).
    """
    _check_decoding(max_new_tokens, temperature, top_k, top_p, batch_size)
    names = prompt_names or [f"prompt {i}" for i in range(len(prompts))]
    _check_fits([len(p) for p in prompts], model.config.context_length, names)
    device = model.wte.weight.device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    results: list[list[int]] = [[] for _ in prompts]
    lay_out_for_streaming(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                generators = None
                if temperature > 0 and seed is not None:
                    generators = [_prompt_generator(seed, prompts[i], device) for i in batch]
                tokens = _generate_batch(
                    model,
                    [prompts[i] for i in batch],
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    generators=generators,
                    eos_id=eos_id,
                    stop=stop,
                )
                for index, new_tokens in zip(batch, tokens, strict=True):
                    results[index] = new_tokens
                if on_batch is not None:
                    on_batch(batch, tokens)
    finally:
        model.train(was_training)
    return results


def _generate_batch(
    model: GPT,
    prompts: list[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generators: list[torch.Generator] | None,
    eos_id: int | None,
    stop: Callable[[list[int]], bool] | None = None,
) -> list[list[int]]:
    """Decode one batch: a left-padded prefill, then one token per step for the rows still running."""
    device, dtype = model.wte.weight.device, model.wte.weight.dtype
    lengths = [len(p) for p in prompts]
    longest = max(lengths)
    budgets = [min(max_new_tokens, model.config.context_length - n) for n in lengths]
    padding = [longest - n for n in lengths]
    # The last new token is sampled but never fed back, so the cache needs one slot less.
    cache = KVCache(model.config, len(prompts), longest + max(budgets) - 1, device, dtype)
    ids = torch.tensor([[0] * pad + list(p) for pad, p in zip(padding, prompts, strict=True)], device=device)
    pad_counts = torch.tensor(padding, device=device)
    mask = torch.arange(cache.max_len, device=device)[None, :] >= pad_counts[:, None]
    positions = (torch.arange(longest, device=device)[None, :] - pad_counts[:, None]).clamp(min=0)
    logits = model(
        ids,
        attention_mask=mask[:, :longest] if any(padding) else None,
        position_ids=positions,
        cache=cache,
        last_only=True,
    )[:, -1]
    next_positions = torch.tensor(lengths, device=device)
    rows = list(range(len(prompts)))  # the running rows, as indices into prompts
    outputs: list[list[int]] = [[] for _ in prompts]
    while True:
        row_generators = None if generators is None else [generators[r] for r in rows]
        tokens = next_tokens(logits, temperature=temperature, top_k=top_k, top_p=top_p, generators=row_generators)
        keep = []
        for j, (row, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            if token == eos_id:
                continue
            outputs[row].append(token)
            if len(outputs[row]) < budgets[row] and not (stop is not None and stop(outputs[row])):
                keep.append(j)
        if not keep:
            return outputs
        if len(keep) < len(rows):
            kept = torch.tensor(keep, device=device)
            cache.keep_rows(kept)
            tokens, mask, next_positions = tokens[kept], mask[kept], next_positions[kept]
            rows = [rows[j] for j in keep]
        step_mask = mask[:, : cache.length + 1] if any(padding[r] for r in rows) else None
        logits = model.decode(tokens, next_positions, cache, step_mask)
        next_positions = next_positions + 1


def next_tokens(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generators: Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """One token per row of ``logits`` ``[rows, vocab]``: the argmax, or a sample (one generator per row)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p), dim=-1)
    if generators is None:
        return torch.multinomial(probs, 1).squeeze(1)
    samples = [torch.multinomial(row, 1, generator=g) for row, g in zip(probs, generators, strict=True)]
    return torch.cat(samples)


def filter_logits(logits: torch.Tensor, *, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the ``top_k`` largest and outside the nucleus of mass ``top_p``.

    The nucleus is the smallest set of most likely tokens whose probability reaches ``top_p`` (the most likely
    token always stays); ties at the k-th value all stay, as in the book.
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _prompt_generator(seed: int, prompt: Sequence[int], device: torch.device) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{','.join(map(str, prompt))}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _check_decoding(
    max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None, batch_size: int
) -> None:
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise UserError(f"temperature must be 0 (greedy) or positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")


def _check_fits(lengths: list[int], context_length: int, names: Sequence[str]) -> None:
    """Refuse empty prompts and prompts that leave no room for a response in the context window."""
    for length, name in zip(lengths, names, strict=True):
        if length == 0:
            raise UserError(f"{name}: the prompt is empty")
        if length >= context_length:
            raise UserError(
                f"{name}: the prompt has {length} tokens, the model's context window {context_length}; "
                "nothing is left for the response"
            )


def generate_responses(
    model: GPT,
    tokenizer,
    entries: Sequence[dict],
    style: str,
    *,
    entry_names: Sequence[str] | None = None,
    on_responses: Callable[[list[int], list[str], list[list[int]]], None] | None = None,
    recipe: str = "default",
    **decoding,
) -> list[str]:
    """The response to every entry's prompt in ``style``: the generated text after the response marker.

    ``entry_names`` label entries in error messages; ``on_responses(indices, responses, new_tokens)`` sees
    each batch as it finishes (for saving partial work); ``decoding`` goes to :func:`generate_tokens`. A
    ``recipe`` ``book`` run is prompted as the book's chapter 7 does: with the instruction and input alone
    (``format_input``), the model writing the response marker itself, which is then removed from its text.
    """
    book = recipe == "book" and not is_chat_style(style)
    prompts = [encode(tokenizer, (format_instruction if book else format_prompt)(entry, style)) for entry in entries]
    names = entry_names or [f"entry {i}" for i in range(len(entries))]
    marker = response_marker(style)

    def respond(new_tokens: list[int]) -> str:
        if book:  # the book's generated_text[len(input_text):].replace("### Response:", "").strip()
            return tokenizer.decode(new_tokens).replace(marker, "").strip()
        # The prompt ends with the marker; an instruction that quotes the marker must not confuse extraction.
        # A chat style's response ends at its stop string (<|im_end|> ...), which extraction cuts off.
        return extract_response(marker + tokenizer.decode(new_tokens), style)

    def report(indices: list[int], tokens: list[list[int]]) -> None:
        on_responses(indices, [respond(t) for t in tokens], tokens)

    tokens = generate_tokens(
        model,
        prompts,
        on_batch=report if on_responses else None,
        prompt_names=names,
        stop=stop_at_string(tokenizer, style),
        **decoding,
    )
    return [respond(t) for t in tokens]


def stop_at_string(tokenizer, style: str) -> Callable[[list[int]], bool] | None:
    """For a chat style, whether new tokens end in its stop string (``<|im_end|>`` ...): GPT-2 has no such
    token, so the text of the last few tokens is checked; None for styles that end at end-of-text alone."""
    text = stop_string(style)
    if text is None:
        return None
    window = len(encode(tokenizer, text)) + 2  # a stop string merged with the tokens around it still fits

    def ends_in_stop(new_tokens: list[int]) -> bool:
        return text in tokenizer.decode(new_tokens[-window:])

    return ends_in_stop


# ----------------------------------------------------------------------------------------------------------
# The `generate` subcommand: a data split in, the book's JSON layout out, resumable.


def generate_file(
    out: str | os.PathLike,
    *,
    run: str | os.PathLike | None = None,
    checkpoint: str = "best",
    weights: str | None = None,
    style: str | None = None,
    data: str | os.PathLike | None = None,
    columns: Mapping[str, str] | None = None,
    split: str = "test",
    response_key: str = DEFAULT_RESPONSE_KEY,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    device: str = "auto",
    tokenizer_file: str | None = None,
    shard: str | Shard | None = None,
    progress: bool = True,
) -> Path:
    """Write the responses of a run's model (or of pretrained ``weights``) to ``out``; resume a partial file.

    ``out`` holds the selected entries with the response under ``response_key``, beside any other model's
    responses already in it; ``out.meta.json`` records the model, checkpoint, data and decoding settings.
    With a ``shard`` (``"I/N"``) only the split's entries of that shard are answered (see
    :func:`entry_identity`), so N workers can share a split; each writes its own ``out``, and importing all of
    them into the workbench gives what one unsharded run gives. ``data`` is any source ``trainer.formats`` reads,
    with ``columns`` mapping entry keys to its columns (default: the run's data and column mapping).
    Returns the path of ``out``.
    """
    shard = parse_shard(shard)
    if (run is None) == (weights is None):
        raise UserError("give either --run RUN_DIR or --weights NAME|DIR")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    _check_decoding(max_new_tokens, temperature, top_k, top_p, batch_size)
    if temperature > 0 and seed is None:
        seed = int.from_bytes(os.urandom(4), "little")  # recorded in the meta file: the run can be repeated
    torch_device = pick_device(device)
    if run is not None:
        model, run_config = load_run_model(run, checkpoint, device=torch_device)
        if style is not None and resolve_style(style) != run_config["style"]:
            raise UserError(f"{run}: the run was trained with style {run_config['style']!r}, not {style!r}")
        style = run_config["style"]
        check_style_unchanged(style, run_config.get("style_sha256"), str(run))
        if data is None:
            data, columns = run_config["data"], columns or run_config.get("data_columns")
        source = {
            "run": str(Path(run).resolve()),
            "name": run_config.get("name") or Path(run).name,
            "model_name": run_config.get("model_name"),
            "checkpoint": checkpoint,
            "weights": None,
        }
    else:
        if data is None:
            raise UserError("--data FILE is required with --weights (there is no run to take it from)")
        from trainer.weights import load_pretrained

        model, run_config = load_pretrained(weights, device=torch_device), None
        style = resolve_style(style or "alpaca")
        name = Path(weights).name
        source = {"run": None, "name": name, "model_name": name, "checkpoint": None, "weights": str(weights)}
    data = resolve_source(data)
    entries = load_entries(data, columns)
    check_turns(entries, style, data)
    data_sha256 = source_sha256(data, entries)
    file_indices = _select_split(entries, data, data_sha256, split, run, run_config)
    if shard is not None:
        in_split, file_indices = len(file_indices), [i for i in file_indices if shard.holds(entry_identity(entries[i]))]
        if not file_indices:
            raise UserError(
                f"shard {shard} holds none of the {in_split} entries of the {split} split; use fewer shards"
            )
    selected = [entries[i] for i in file_indices]
    record = {
        **source,
        "style": style,
        "response_key": response_key,
        "split": split,
        "data": data,
        "data_sha256": data_sha256,
        "shard": None if shard is None else str(shard),
        "decoding": {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "seed": seed,
        },
    }
    output = ResponseFile(Path(out), selected, record)
    todo = output.missing()
    tokenizer = get_tokenizer(tokenizer_file)
    bar = tqdm(
        total=len(selected),
        initial=len(selected) - len(todo),
        unit="entry",
        desc="generate",
        disable=not progress,
        dynamic_ncols=True,
    )
    started, new_tokens = time.perf_counter(), 0

    def save(indices: list[int], responses: list[str], tokens: list[list[int]]) -> None:
        nonlocal new_tokens
        output.add({todo[i]: text for i, text in zip(indices, responses, strict=True)})
        new_tokens += sum(map(len, tokens))
        bar.update(len(indices))
        bar.set_postfix_str(f"{new_tokens / (time.perf_counter() - started):.1f} tok/s")

    with bar:
        generate_responses(
            model,
            tokenizer,
            [selected[i] for i in todo],
            style,
            entry_names=[f"{Path(data).name} entry {file_indices[i]}" for i in todo],
            on_responses=save,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
            recipe=run_config.get("recipe", "default") if run_config else "default",
        )
    output.finish()
    print(f"wrote {len(selected)} responses ({len(todo)} new) under {response_key!r} to {output.path}", file=sys.stderr)
    return output.path


class ResponseFile:
    """The output JSON and its ``.meta.json``, saved atomically after every batch so a crash loses nothing.

    Several models' responses can share one file under different keys; the meta file keeps one record per
    key (``responses``) and repeats the latest one at the top level. A key already in the file resumes only
    when its record matches this generation's settings; otherwise it is refused rather than overwritten.
    """

    IDENTITY = ("run", "model_name", "checkpoint", "weights", "style", "split", "data_sha256", "shard", "decoding")

    def __init__(self, path: Path, entries: list[dict], record: dict):
        if path.exists() and not path.is_file():  # a folder, or a device such as /dev/full that reads forever
            raise UserError(f"{path}: --out must be a JSON file, and this is not a regular file")
        self.path = path
        self.meta_path = path.with_name(path.name.removesuffix(".json") + ".meta.json")
        self.key = record["response_key"]
        self.entries = self._merge_existing(entries)
        self.meta = _read_json(self.meta_path) if self.meta_path.is_file() else {}
        if not isinstance(self.meta, dict) or not isinstance(self.meta.get("responses", {}), dict):
            raise UserError(
                f"{self.meta_path}: not a generation record (expected a JSON object, got "
                f"{type(self.meta).__name__}); remove it or choose another --out"
            )
        previous = self.meta.get("responses", {}).get(self.key)
        has_responses = any(self.key in entry for entry in self.entries)
        same_settings = previous is not None and all(previous.get(k) == record.get(k) for k in self.IDENTITY)
        if has_responses and not same_settings:
            raise UserError(
                f"{path} already holds responses under {self.key!r} from another model or other settings "
                f"(see {self.meta_path.name}); choose another --response-key or --out"
            )
        self.record = {**record, "created_at": (previous or {}).get("created_at", _now())}
        self._save(complete=False)

    def _merge_existing(self, entries: list[dict]) -> list[dict]:
        """The entries, with the responses of the existing file when it holds the same entries."""
        if not self.path.exists():
            return [dict(entry) for entry in entries]
        existing = _read_json(self.path)
        if not isinstance(existing, list) or len(existing) != len(entries):
            raise UserError(f"{self.path} exists and does not hold these {len(entries)} entries; choose another --out")
        for index, (old, new) in enumerate(zip(existing, entries, strict=True)):
            if not isinstance(old, dict) or (old.get("instruction"), old.get("input", "")) != (
                new["instruction"],
                new.get("input", ""),
            ):
                raise UserError(f"{self.path} entry {index} differs from the data; choose another --out")
        return [{**new, **old} for old, new in zip(existing, entries, strict=True)]

    def missing(self) -> list[int]:
        """Indices of the entries that have no response under this key yet."""
        return [i for i, entry in enumerate(self.entries) if self.key not in entry]

    def add(self, responses: dict[int, str]) -> None:
        for index, text in responses.items():
            self.entries[index][self.key] = text
        self._save(complete=False)

    def finish(self) -> None:
        self._save(complete=True, finished_at=_now())

    def _save(self, *, complete: bool, **extra) -> None:
        done = len(self.entries) - len(self.missing())
        record = {**self.record, "complete": complete, "responses_done": done, "entries": len(self.entries), **extra}
        meta = {**record, "responses": {**self.meta.get("responses", {}), self.key: record}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write (its folder: {exc.strerror or exc})") from exc
        for path, data in ((self.path, self.entries), (self.meta_path, meta)):
            write_atomically(path, json.dumps(data, indent=4, ensure_ascii=False) + "\n")


def entry_identity(entry: dict) -> str:
    """What decides an entry's shard: its instruction and input. Entries repeated in a file (same instruction
    and input) fall in one shard, so the workbench numbers their occurrences as it would in the whole file."""
    return f"{entry['instruction']}\x1f{entry.get('input', '')}"


def _read_json(path: Path):
    """A JSON file this command wrote (responses, their meta, the run's split), or one line on why not."""
    return parse_json(path, read_text(path))


def _select_split(
    entries: list[dict], data: str, data_sha256: str, split: str, run, run_config: dict | None
) -> list[int]:
    """File indices of the split: the run's own split when ``data`` is the file it was trained on.

    The run's file changed since training (another hash) is refused: its recorded split would now name other
    entries, and training entries would be answered as test ones. Another file gets the book's split."""
    if split == "all":
        return list(range(len(entries)))
    if run_config is None:
        return split_entries(entries).indices[split]
    if run_config.get("data_sha256") != data_sha256:
        if data == resolve_source(run_config["data"]):
            raise UserError(
                f"{data}: changed since {run} was trained on it (its sha256 is not the one in the run's "
                f"config.json), so the run's {split} split no longer names the same entries; restore the file, "
                "or pass --split all"
            )
        return split_entries(entries).indices[split]
    split_file = Path(run) / "split.json"
    if not split_file.is_file():
        return split_entries(entries, seed=run_config["split"].get("shuffle_seed")).indices[split]
    recorded = _read_json(split_file)
    if not isinstance(recorded, dict) or not isinstance(recorded.get(split), list):
        raise UserError(
            f"{split_file}: not the run's split (expected an object with a {split!r} list); remove it and the split is "
            "worked out again from the run's config.json"
        )
    indices = recorded[split]
    if not all(isinstance(i, int) and 0 <= i < len(entries) for i in indices):
        raise UserError(f"{split_file}: the {split} indices do not fit {data} ({len(entries)} entries)")
    return indices


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def add_cli(subparsers) -> None:
    """Register ``generate``."""
    parser = subparsers.add_parser(
        "generate",
        help="generate responses for a data split (batched, KV cache, resumable)",
        description="Generate a response for every entry of a data split with a fine-tuned run or a "
        "pretrained model, and write them in the book's JSON layout (resumes an interrupted run).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run folder written by `finetune`")
    source.add_argument(
        "--weights",
        help="pretrained model instead of a run: gpt2, gpt2-medium, ... or a folder in the Hugging Face layout",
    )
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    parser.add_argument(
        "--style", help=f"prompt style: {', '.join(STYLES)} or jinja:FILE (default: the run's; alpaca with --weights)"
    )
    parser.add_argument("--data", help=f"instruction data (default: the run's data): {FORMATS_HELP}")
    parser.add_argument("--columns", help=f"{COLUMNS_HELP} (default: the run's with its data)")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--out", required=True, help="output JSON (FILE.meta.json is written beside it)")
    parser.add_argument("--response-key", default=DEFAULT_RESPONSE_KEY)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int, help="sampling seed (random and recorded when not given)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: auto)")
    parser.add_argument("--tokenizer-file", help="tiktoken ranks file for offline use")
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help=f"{SHARD_HELP} (an entry's identity: its instruction and input). Give each worker its own --out; "
        "`workbench import` each file into one store to merge them. For one JSON file, import the data file "
        "first (its order is kept), then the shards, then `workbench export --format json`",
    )
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> None:
    generate_file(
        args.out,
        run=args.run,
        checkpoint=args.checkpoint,
        weights=args.weights,
        style=args.style,
        data=args.data,
        columns=parse_columns(args.columns),
        split=args.split,
        response_key=args.response_key,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        device=args.device,
        tokenizer_file=args.tokenizer_file,
        shard=args.shard,
    )
