"""Token generation speed: our ``generate_tokens`` against llama.cpp (llama-cpp-python) on the same weights.

Same random weights (fixed seed; no pretrained download here), written for llama.cpp with ``trainer.export``;
same prompts (the test split of the book's instruction file in the alpaca style, or the repository's sample),
greedy, the same number of new tokens and the same number of threads (``torch.set_num_threads`` and
llama.cpp's ``n_threads``). Contenders, for each model size:

- llama.cpp, one prompt at a time (``Llama.generate``, greedy, state reset before every prompt so no prompt
  reuses another's shared preamble), on the f32 GGUF and, with ``--low-precision``, on f16 and q8_0;
- ours at batch 1 and at each ``--batch-sizes`` (length-sorted batches, left padding, KV cache), in f32 and,
  with ``--low-precision``, in bf16 (the CPU's native half type; llama.cpp has no bf16 matmul path here).

Rounds alternate the contenders (each round in a rotated order) because the machine is noisy and shared;
the table gives each contender's median tokens/s over the rounds (new tokens, end-of-text excluded, prefill
included) and the median over rounds of its ratio to llama.cpp f32 at batch 1 and to llama.cpp at the same
precision in the same round. Greedy identity of
our f32 tokens and llama.cpp's f32 tokens is counted and printed.

    python benchmarks/bench_llamacpp.py [--models gpt2,gpt2-medium] [--batch-sizes 4,8,16] [--rounds 3]
    python benchmarks/bench_llamacpp.py --models gpt2 --prompts 4 --rounds 4 --batch-sizes 8 --no-low-precision
    (the quick one: about a minute on 2 quiet cores; with f16/q8_0/bf16 too, about 2 minutes)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import torch

from trainer.data import encode, format_prompt, load_entries, split_entries
from trainer.export import write_gguf
from trainer.generate import generate_tokens
from trainer.model import CONFIGS, GPT
from trainer.tokenizer import END_OF_TEXT_ID, get_tokenizer

REPO = Path(__file__).resolve().parent.parent
BOOK_DATA = REPO.parent / "shared" / "datasets" / "instruction-data.json"
SAMPLE_DATA = REPO / "datasets" / "instruction-sample.json"
TARGET_BATCH_1 = 0.9  # ours at batch 1 / llama.cpp at batch 1, f32
TARGET_BATCHED = 2.0  # ours at our best batch / llama.cpp at batch 1, f32
# Our half type against llama.cpp's: the CPU multiplies bf16 natively; llama.cpp stores f16 or 8-bit blocks.
OUR_HALF = "bf16"
LLAMA_HALVES = ("f16", "q8_0")


@dataclass
class Contender:
    """One way of generating every prompt's new tokens, with its tokens/s per round."""

    engine: str  # "ours" or "llama.cpp"
    dtype: str
    batch: int
    generate: Callable[[list[list[int]]], list[list[int]]]  # prompts -> their new tokens
    rates: list[float] = field(default_factory=list)
    outputs: list[list[int]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.engine} {self.dtype} batch {self.batch}"

    def run(self, prompts: list[list[int]]) -> None:
        start = time.perf_counter()
        self.outputs = self.generate(prompts)
        self.rates.append(sum(map(len, self.outputs)) / (time.perf_counter() - start))

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def ratio(self, other: Contender) -> float:
        """Median over rounds of this contender's tokens/s over ``other``'s in the same round.

        Within a round the two ran minutes apart at most, so a busy neighbour slows both alike; the ratio of
        the medians would mix rounds with different loads.
        """
        return statistics.median(a / b for a, b in zip(self.rates, other.rates, strict=True))


def llama_generate(llm, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_id: int) -> list[list[int]]:
    """llama.cpp's greedy tokens for each prompt, one prompt at a time, nothing carried over between prompts."""
    results = []
    for prompt in prompts:
        llm.reset()  # no prefix reuse: every prompt pays its whole prefill, as ours does
        new: list[int] = []
        for token in llm.generate(prompt, temp=0.0, repeat_penalty=1.0, reset=True):
            if token == eos_id:
                break
            new.append(token)
            if len(new) == max_new_tokens:
                break
        results.append(new)
    return results


def load_llama(path: Path, context_length: int, threads: int):
    """llama.cpp on ``path`` without its extra weight buffers (AMX repacking).

    On this machine's AMX CPU, llama.cpp 0.3.36's AMX path crashes (SIGSEGV in ``ggml_backend_amx_mul_mat``) on
    any q8_0 prompt of more than one token; llama-cpp-python does not expose ``use_extra_bufts``, so the default
    model parameters it starts from are patched while the model loads. f32 and f16 never use those buffers.
    """
    import llama_cpp
    import llama_cpp.llama_cpp as low_level

    defaults = low_level.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    with mock.patch.object(low_level, "llama_model_default_params", without_extra_buffers):
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=context_length,
            n_threads=threads,
            n_threads_batch=threads,
            seed=0,
            verbose=False,
        )


def model_contenders(name: str, folder: Path, args: argparse.Namespace) -> tuple[list[Contender], float]:
    """Every contender on one model size (weights from one seed), and the seconds writing the GGUF files took."""
    torch.manual_seed(0)
    model = GPT(CONFIGS[name]).eval()
    half_model = GPT(CONFIGS[name]).to(torch.bfloat16).eval()
    half_model.load_state_dict(model.state_dict())
    context = model.config.context_length
    llama_dtypes = ("f32", *LLAMA_HALVES) if args.low_precision else ("f32",)
    start = time.perf_counter()
    files = {dtype: write_gguf(model, folder / f"{name}-{dtype}.gguf", dtype=dtype) for dtype in llama_dtypes}
    export_seconds = time.perf_counter() - start

    def ours(m: GPT, batch: int) -> Callable[[list[list[int]]], list[list[int]]]:
        return lambda prompts: generate_tokens(m, prompts, max_new_tokens=args.max_new_tokens, batch_size=batch)

    def llama(llm) -> Callable[[list[list[int]]], list[list[int]]]:
        return lambda prompts: llama_generate(llm, prompts, args.max_new_tokens, END_OF_TEXT_ID)

    contenders = []
    for dtype, path in files.items():
        contenders.append(Contender("llama.cpp", dtype, 1, llama(load_llama(path, context, args.threads))))
    models = {"f32": model, OUR_HALF: half_model} if args.low_precision else {"f32": model}
    for dtype, m in models.items():
        for batch in [1, *args.batch_sizes]:
            contenders.append(Contender("ours", dtype, batch, ours(m, batch)))
    return contenders, export_seconds


def run_rounds(contenders: list[Contender], prompts: list[list[int]], rounds: int) -> None:
    """Every contender over all prompts once per round, the order rotated each round, so noise spreads evenly."""
    for contender in contenders:  # warm-up: first calls allocate buffers and pick kernels
        contender.generate(prompts[: contender.batch])
    start = time.perf_counter()
    for r in range(rounds):
        shift = r % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            contender.run(prompts)
        print(f"  round {r + 1}/{rounds} done after {time.perf_counter() - start:.0f} s", flush=True)


def table_rows(name: str, contenders: list[Contender]) -> list[list[str]]:
    """One row per contender: tokens/s and its ratios to llama.cpp f32 and to llama.cpp at its own precision."""
    llama = {c.dtype: c for c in contenders if c.engine == "llama.cpp"}
    rows = []
    for c in contenders:
        peers = [d for d in LLAMA_HALVES if d in llama] if c.dtype == OUR_HALF else []
        same_precision = ", ".join(f"{c.ratio(llama[d]):.2f}x {d}" for d in peers)
        rows.append(
            [
                name,
                c.engine,
                c.dtype,
                str(c.batch),
                f"{c.median:.1f}",
                f"{min(c.rates):.1f}-{max(c.rates):.1f}",
                f"{c.ratio(llama['f32']):.2f}x",
                same_precision,
            ]
        )
    return rows


HEADER = ["model", "engine", "dtype", "batch", "tokens/s (median)", "range", "vs llama.cpp f32 b1", "vs llama.cpp"]


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdicts(name: str, contenders: list[Contender]) -> list[str]:
    """The targets: ours f32 batch 1 >= 0.9x llama.cpp f32 batch 1, our best f32 batch >= 2x."""
    llama = next(c for c in contenders if c.engine == "llama.cpp" and c.dtype == "f32")
    ours = [c for c in contenders if c.engine == "ours" and c.dtype == "f32"]
    single = next(c for c in ours if c.batch == 1)
    best = max(ours, key=lambda c: c.median)
    lines = []
    for label, c, target in (("batch 1", single, TARGET_BATCH_1), (f"best, batch {best.batch}", best, TARGET_BATCHED)):
        ratio = c.ratio(llama)
        lines.append(
            f"  {name}: ours f32 {label} / llama.cpp f32 batch 1 = {ratio:.2f}x "
            f"(target >= {target}x: {'met' if ratio >= target else 'NOT met'})"
        )
    same = sum(a == b for a, b in zip(single.outputs, llama.outputs, strict=True))
    lines.append(f"  {name}: greedy tokens ours f32 = llama.cpp f32 on {same}/{len(single.outputs)} prompts")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gpt2,gpt2-medium", help="comma-separated names from trainer CONFIGS")
    parser.add_argument("--batch-sizes", default="4,8,16", help="our batch sizes beside batch 1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16, help="first N prompts of the test split")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 2))
    parser.add_argument("--no-low-precision", dest="low_precision", action="store_false", help="f32 only")
    parser.add_argument(
        "--data", default=str(BOOK_DATA if BOOK_DATA.is_file() else SAMPLE_DATA), help="instruction JSON file"
    )
    args = parser.parse_args(argv)
    args.batch_sizes = sorted({int(s) for s in args.batch_sizes.split(",") if s} - {1})
    torch.set_num_threads(args.threads)

    tokenizer = get_tokenizer()
    test = split_entries(load_entries(args.data)).test[: args.prompts]
    prompts = [encode(tokenizer, format_prompt(entry, "alpaca")) for entry in test]
    lengths = sorted(map(len, prompts))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {args.threads} threads (ours and llama.cpp); load average {load}; "
        f"{len(prompts)} prompts ({lengths[0]}-{lengths[-1]} tokens) from {Path(args.data).name}, greedy, "
        f"{args.max_new_tokens} new tokens, {args.rounds} rounds",
        flush=True,
    )
    rows, lines = [], []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            contenders, export_seconds = model_contenders(name, Path(folder), args)
            print(f"{name}: GGUF files written in {export_seconds:.1f} s; {len(contenders)} contenders", flush=True)
            run_rounds(contenders, prompts, args.rounds)
            rows += table_rows(name, contenders)
            lines += verdicts(name, contenders)
    print()
    print(markdown_table(rows))
    print()
    print("\n".join(lines))
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
