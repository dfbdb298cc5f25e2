"""Generation throughput: our batched KV-cache ``generate_tokens`` against the book's method and transformers.

Same random weights (no pretrained download here) and the same prompts: the 110-entry test split of the
book's instruction file in the alpaca style, greedy, 64 new tokens, for GPT-2 124M and 355M.

- ours: ``trainer.generate.generate_tokens`` (length-sorted batches, left padding, KV cache, finished rows
  dropped), at several batch sizes;
- transformers: ``GPT2LMHeadModel.generate`` (sdpa, KV cache) on the same length-sorted, left-padded batches,
  loaded from the folder ``trainer.weights.save_hf_checkpoint`` wrote;
- the book: chapter 5's ``generate`` as chapter 7 calls it, one prompt at a time, the whole sequence
  recomputed for every new token, with our model's plain forward. It makes ~4 tokens/s, so it runs on the
  first ``--book-prompts`` prompts only; tokens/s is a rate, so its figure compares with the others.

The contenders run interleaved in one process, batch by batch, each spread over the whole run (the machine
is noisy and shared). Tokens/s counts new tokens (end-of-text excluded). With random weights the rows rarely
reach end-of-text, so dropping finished rows is not exercised by the default run; ``--stop-token auto`` makes
every contender also stop at the token random greedy decoding emits most, which ends rows at different steps
and exercises it.
Greedy token identity between ours and transformers (and the book, on its subset) is checked and printed.

    python benchmarks/bench_generate.py [--models gpt2,gpt2-medium] [--batch-sizes 8,16,32] [--book-prompts 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from trainer.cpu_layout import lay_out_for_streaming
from trainer.data import encode, format_prompt, load_entries, split_entries
from trainer.generate import generate_tokens
from trainer.model import CONFIGS, GPT
from trainer.tokenizer import END_OF_TEXT_ID, get_tokenizer
from trainer.weights import save_hf_checkpoint

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "datasets" / "instruction-data.json"
TARGET_VS_TRANSFORMERS = 1.5
TARGET_VS_BOOK = 40.0


def book_generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, context_size: int, eos_id: int | None):
    """The book's ``generate`` (chapter 5) with temperature 0 and no top-k, as chapter 7 calls it per prompt."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if idx_next == eos_id:
            break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def hf_generate(hf_model, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_id: int) -> list[list[int]]:
    """Greedy ``generate`` on one left-padded batch; the new tokens of each row up to its end-of-text."""
    longest = max(map(len, prompts))
    ids = torch.tensor([[eos_id] * (longest - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = hf_model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos_id,
            pad_token_id=END_OF_TEXT_ID,
        )
    rows = out[:, longest:].tolist()
    return [row[: row.index(eos_id)] if eos_id in row else row for row in rows]


Job = tuple[list[int], Callable[[], list[list[int]]]]  # prompt indices, and what generates their new tokens


@dataclass
class Contender:
    """One way of generating: its queue of jobs, its outputs per prompt index and its time per job."""

    name: str
    jobs: list[Job] = field(default_factory=list)
    outputs: dict[int, list[int]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    setup_seconds: float = 0.0  # paid once per call over all prompts

    def run_next(self) -> None:
        indices, generate = self.jobs[len(self.seconds)]
        start = time.perf_counter()
        tokens = generate()
        self.seconds.append(time.perf_counter() - start)
        self.outputs.update(zip(indices, tokens, strict=True))

    @property
    def done(self) -> float:
        return len(self.seconds) / len(self.jobs)

    @property
    def tokens(self) -> int:
        return sum(map(len, self.outputs.values()))

    @property
    def rate(self) -> float:
        return self.tokens / (sum(self.seconds) + self.setup_seconds)


def run_interleaved(contenders: list[Contender]) -> None:
    """Run every job, always next for the contender least far along, so each one's time spans the whole run.

    A busy neighbour then slows every contender alike instead of whichever happened to run at that moment.
    """
    while (behind := min(contenders, key=lambda c: c.done)).done < 1:
        behind.run_next()


def identical(a: Contender, b: Contender) -> str:
    """How many prompts both contenders answered with the same tokens."""
    shared = sorted(set(a.outputs) & set(b.outputs))
    same = sum(a.outputs[i] == b.outputs[i] for i in shared)
    return f"{same}/{len(shared)}"


def pick_stop_token(model: GPT, prompts: list[list[int]], max_new_tokens: int, batch_size: int) -> int:
    """The token greedy decoding of these weights emits most often: an end-of-text that rows really hit."""
    tokens = generate_tokens(model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, eos_id=None)
    return Counter(t for row in tokens for t in row).most_common(1)[0][0]


@dataclass
class Results:
    ours: dict[int, Contender]  # by batch size
    hf: Contender
    book: Contender


def bench_model(name: str, prompts: list[list[int]], args: argparse.Namespace) -> Results:
    """All contenders on one model size, interleaved; prints their figures."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    ours_model = GPT(CONFIGS[name]).eval()
    with tempfile.TemporaryDirectory() as folder:
        save_hf_checkpoint(ours_model, folder)
        hf_model = GPT2LMHeadModel.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32).eval()
    book_model = GPT(CONFIGS[name]).eval()  # a copy: ours moves its weights to its own layout
    book_model.load_state_dict(ours_model.state_dict())
    context = ours_model.config.context_length

    eos_id = END_OF_TEXT_ID
    if args.stop_token == "auto":
        eos_id = pick_stop_token(ours_model, prompts[:16], args.max_new_tokens, 8)
        print(f"  stop token: {eos_id} (the commonest greedy token), as end-of-text for every contender")
    elif args.stop_token is not None:
        eos_id = int(args.stop_token)

    # generate_tokens lays the weights out once per model (trainer.cpu_layout): timed and added to each of ours.
    start = time.perf_counter()
    lay_out_for_streaming(ours_model)
    layout_seconds = time.perf_counter() - start
    # Warm-up: first calls allocate and pick kernels.
    generate_tokens(ours_model, prompts[:2], max_new_tokens=4, batch_size=2)
    hf_generate(hf_model, prompts[:2], 4, eos_id)
    book_generate(book_model, torch.tensor([prompts[0]]), 2, context, eos_id)

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)  # as generate_tokens sorts
    hf_batch = args.hf_batch_size
    ours = {size: Contender(f"ours, batch {size}") for size in args.batch_sizes}
    hf = Contender(f"transformers, batch {hf_batch}")
    book = Contender("book, one prompt, no cache")

    def ours_batch(batch_prompts: list[list[int]], size: int) -> list[list[int]]:
        return generate_tokens(
            ours_model, batch_prompts, max_new_tokens=args.max_new_tokens, batch_size=size, eos_id=eos_id
        )

    def book_prompt(prompt: list[int]) -> list[list[int]]:
        idx = book_generate(book_model, torch.tensor([prompt]), args.max_new_tokens, context, eos_id)
        return [idx[0, len(prompt) :].tolist()]

    def batches(size: int) -> list[tuple[list[int], list[list[int]]]]:
        chunks = [order[first : first + size] for first in range(0, len(order), size)]
        return [(chunk, [prompts[i] for i in chunk]) for chunk in chunks]

    for size, contender in ours.items():
        contender.jobs = [(chunk, partial(ours_batch, batch, size)) for chunk, batch in batches(size)]
    hf.jobs = [
        (chunk, partial(hf_generate, hf_model, batch, args.max_new_tokens, eos_id))
        for chunk, batch in batches(hf_batch)
    ]
    book.jobs = [([i], partial(book_prompt, prompts[i])) for i in range(min(args.book_prompts, len(prompts)))]

    run_interleaved([*ours.values(), hf, book])
    for contender in ours.values():
        contender.setup_seconds = layout_seconds
        print(f"  {contender.name}: {contender.rate:.1f} tokens/s", flush=True)
    print(f"  {hf.name}: {hf.rate:.1f} tokens/s\n  {book.name}: {book.rate:.1f} tokens/s ({len(book.outputs)} prompts)")
    lengths = [len(row) for row in ours[hf_batch].outputs.values()]
    print(
        f"  new tokens per prompt (ours): median {statistics.median(lengths)}, min {min(lengths)}, "
        f"max {max(lengths)}; {sum(n < args.max_new_tokens for n in lengths)} rows stopped early"
    )
    same_across_sizes = all(c.outputs == ours[hf_batch].outputs for c in ours.values())
    print(
        f"  greedy identity: ours vs transformers {identical(ours[hf_batch], hf)}, "
        f"ours vs book {identical(ours[hf_batch], book)}; "
        f"ours across batch sizes {'identical' if same_across_sizes else 'DIFFERENT'}"
    )
    return Results(ours, hf, book)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gpt2,gpt2-medium", help="comma-separated names from trainer CONFIGS")
    parser.add_argument("--batch-sizes", default="8,16,32", help="our batch sizes (the transformers one included)")
    parser.add_argument("--hf-batch-size", type=int, default=8, help="transformers' batch size (and ours compared)")
    parser.add_argument("--book-prompts", type=int, default=8, help="prompts the slow book method generates")
    parser.add_argument("--prompts", type=int, default=110, help="first N prompts of the test split")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--stop-token", help="token id that ends a row (default end-of-text; 'auto': the commonest greedy token)"
    )
    parser.add_argument("--data", default=str(DATA))
    args = parser.parse_args()
    args.batch_sizes = sorted({int(s) for s in args.batch_sizes.split(",")} | {args.hf_batch_size})

    tokenizer = get_tokenizer()
    test = split_entries(load_entries(args.data)).test[: args.prompts]
    prompts = [encode(tokenizer, format_prompt(entry, "alpaca")) for entry in test]
    lengths = sorted(map(len, prompts))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(prompts)} prompts "
        f"({lengths[0]}-{lengths[-1]} tokens, median {statistics.median(lengths)}), greedy, "
        f"{args.max_new_tokens} new tokens"
    )
    summary = []
    for name in args.models.split(","):
        print(f"\n{name}:", flush=True)
        result = bench_model(name, prompts, args)
        best = max(result.ours.values(), key=lambda c: c.rate)
        vs_hf = result.ours[args.hf_batch_size].rate / result.hf.rate
        vs_book = best.rate / result.book.rate
        summary.append((name, vs_hf, best, vs_book))
    print("\nratios against the targets:")
    for name, vs_hf, best, vs_book in summary:
        print(
            f"  {name}: ours / transformers at batch {args.hf_batch_size} = {vs_hf:.2f}x "
            f"(target >= {TARGET_VS_TRANSFORMERS}x: {'met' if vs_hf >= TARGET_VS_TRANSFORMERS else 'NOT met'}); "
            f"{best.name} / book = {vs_book:.1f}x "
            f"(target >= {TARGET_VS_BOOK:.0f}x: {'met' if vs_book >= TARGET_VS_BOOK else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
