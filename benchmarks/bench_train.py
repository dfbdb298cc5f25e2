"""Training throughput of our GPT-2 124M against transformers and a naive-attention model like the book's.

One optimizer step = forward, backward and AdamW step on the same batch of 8 x 128 tokens, in fp32 and with
bf16 autocast. The contenders run interleaved, one step each per round, because these machines are noisy;
the matmul peak (MFU's denominator) is re-measured right before every step. Reports median tokens/s, MFU
(6 x parameters x tokens/s over the peak of the same precision), and the median of per-round ratios against
the targets (fp32 >= 1.0x transformers with MFU >= 60 %; bf16 >= 1.8x the naive fp32 model).

    python benchmarks/bench_train.py [--steps 5] [--batch-size 8] [--seq-len 128] [--device cpu]

With ``--nproc N`` it measures scaling instead: the same training step (our model, DDP, or FSDP2 with
``--fsdp``) under ``torchrun`` with 1 and then N processes on this machine, each process on its own batch
(weak scaling; the 1-process baseline is the plain model), and prints tokens/s per process and the scaling
efficiency (N-process tokens/s per process over the 1-process tokens/s). ``--threads`` sets each process's
CPU threads.

    python benchmarks/bench_train.py --nproc 2 [--model gpt2] [--fsdp] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from trainer.distributed import Distributed, wrap
from trainer.model import CONFIGS, GPT
from trainer.train import loss_on_batch, pick_device

# --- the naive variant: the book's chapter 4 model (explicit masked softmax attention, untied head) --------


class NaiveMultiHeadAttention(nn.Module):
    def __init__(self, dim: int, heads: int, context_length: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.W_query = nn.Linear(dim, dim)
        self.W_key = nn.Linear(dim, dim)
        self.W_value = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, dim = x.shape
        q, k, v = (
            w(x).view(batch, steps, self.heads, self.head_dim).transpose(1, 2)
            for w in (self.W_query, self.W_key, self.W_value)
        )
        scores = q @ k.transpose(2, 3)
        scores.masked_fill_(self.mask.bool()[:steps, :steps], -torch.inf)
        weights = torch.softmax(scores / self.head_dim**0.5, dim=-1)
        context = (weights @ v).transpose(1, 2).contiguous().view(batch, steps, dim)
        return self.out_proj(context)


class NaiveLayerNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class NaiveGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * x**3)))


class NaiveBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_length: int):
        super().__init__()
        self.att = NaiveMultiHeadAttention(dim, heads, context_length)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), NaiveGELU(), nn.Linear(4 * dim, dim))
        self.norm1, self.norm2 = NaiveLayerNorm(dim), NaiveLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.att(self.norm1(x))
        return x + self.ff(self.norm2(x))


class NaiveGPT(nn.Module):
    """The book's ``GPTModel`` (no dropout, as in its fine-tuning chapter)."""

    def __init__(self, vocab: int, context_length: int, dim: int, heads: int, layers: int):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, dim)
        self.pos_emb = nn.Embedding(context_length, dim)
        self.trf_blocks = nn.Sequential(*(NaiveBlock(dim, heads, context_length) for _ in range(layers)))
        self.final_norm = NaiveLayerNorm(dim)
        self.out_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))
        return self.out_head(self.final_norm(self.trf_blocks(x)))


# --- contenders ---------------------------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    step: Callable[[torch.Tensor, torch.Tensor], float]
    precision: str  # "fp32" or "bf16": which matmul peak its MFU is measured against
    seconds: list[float] = field(default_factory=list)
    mfu: list[float] = field(default_factory=list)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def make_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    bf16: bool,
    device: torch.device,
    forward: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
):
    """One training step as the trainer does it: loss, backward, optimizer step, zeroed gradients."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> float:
        start = time.perf_counter()
        with autocast:
            loss = forward(model, inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def hf_loss(model, inputs, targets):
    logits = model(input_ids=inputs).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def build_contenders(device: torch.device) -> tuple[list[Contender], int]:
    """The six contenders, and our model's parameter count (MFU's numerator, the same work for all)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = CONFIGS["gpt2"]
    torch.manual_seed(0)
    ours = GPT(config).to(device).train()
    ours_opt = torch.optim.AdamW(
        ours.parameters(),
        lr=5e-5,
        weight_decay=0.1,
        **({"fused": True} if device.type == "cuda" else {"foreach": True}),
    )
    hf_config = GPT2Config(
        n_embd=config.emb_dim,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        n_positions=config.context_length,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        attn_implementation="sdpa",
    )
    hf = GPT2LMHeadModel(hf_config).to(device).train()
    assert hf.config._attn_implementation == "sdpa"
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=5e-5, weight_decay=0.1)
    naive = (
        NaiveGPT(config.vocab_size, config.context_length, config.emb_dim, config.n_heads, config.n_layers)
        .to(device)
        .train()
    )
    naive_opt = torch.optim.AdamW(naive.parameters(), lr=5e-5, weight_decay=0.1)  # the book's call
    contenders = []
    for precision in ("fp32", "bf16"):
        bf16 = precision == "bf16"
        contenders += [
            Contender(f"ours {precision}", make_step(ours, ours_opt, bf16, device, loss_on_batch), precision),
            Contender(f"transformers sdpa {precision}", make_step(hf, hf_opt, bf16, device, hf_loss), precision),
            Contender(f"naive (book) {precision}", make_step(naive, naive_opt, bf16, device, loss_on_batch), precision),
        ]
    return contenders, ours.num_parameters()


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int = 2048, repeats: int = 3) -> float:
    """Best-of-``repeats`` FLOP/s of one square matmul: the machine's practical peak right now."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


# --- scaling over processes ----------------------------------------------------------------------------------


def scaling_worker(args: argparse.Namespace) -> None:
    """One torchrun process: train ``args.model`` on random batches; rank 0 prints its median step time."""
    dist_info, device = Distributed.from_environment(pick_device(args.device))
    config = CONFIGS[args.model]
    torch.manual_seed(0)
    network = GPT(config).to(device).train()
    model = wrap(network, dist_info, device, args.fsdp and dist_info.world_size > 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1, foreach=device.type != "cuda")
    generator = torch.Generator().manual_seed(dist_info.rank)  # each process its own batch, as in training
    batch = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len + 1), generator=generator).to(device)
    seconds = []
    for step in range(args.steps + 1):  # step 0 warms up
        start = time.perf_counter()
        loss_on_batch(model, batch[:, :-1], batch[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step > 0:
            seconds.append(time.perf_counter() - start)
    times = torch.tensor([statistics.median(seconds)], dtype=torch.float64, device=device)
    if dist_info.world_size > 1:  # a step ends when the slowest process is done: gradients are synchronised
        torch.distributed.all_reduce(times, op=torch.distributed.ReduceOp.MAX)
    if dist_info.is_main:
        print(json.dumps({"processes": dist_info.world_size, "seconds_per_step": times.item()}), flush=True)
    dist_info.close()


def run_scaling(args: argparse.Namespace) -> None:
    """Launch the worker with 1 and ``args.nproc`` processes; print tokens/s per process and the efficiency."""
    tokens = args.batch_size * args.seq_len
    print(
        f"torch {torch.__version__}, model {args.model}, {'FSDP2' if args.fsdp else 'DDP'}, device {args.device}, "
        f"batch {args.batch_size} x {args.seq_len} per process, {args.threads} threads per process"
    )
    worker = [sys.executable, os.path.abspath(__file__), "--worker", "--model", args.model, "--device", args.device]
    worker += ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
    worker += ["--fsdp"] if args.fsdp else []
    per_process = {}
    for processes in (1, args.nproc):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        result = subprocess.run(command + worker[1:], capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            sys.exit(f"{processes} processes failed:\n{result.stderr[-3000:]}")
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        per_process[processes] = tokens / measured["seconds_per_step"]
        print(
            f"{processes} process{'es' if processes > 1 else ''}: {per_process[processes]:.1f} tokens/s per process, "
            f"{per_process[processes] * processes:.1f} in all ({measured['seconds_per_step']:.3f} s/step)",
            flush=True,
        )
    efficiency = per_process[args.nproc] / per_process[1]
    print(f"scaling efficiency at {args.nproc} processes: {efficiency:.1%} (tokens/s per process, against 1 process)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="measured steps per contender (after 1 warm-up)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nproc", type=int, help="compare training at 1 and this many processes (torchrun)")
    parser.add_argument("--model", default="gpt2", choices=tuple(CONFIGS), help="model shape for --nproc")
    parser.add_argument("--fsdp", action="store_true", help="with --nproc: shard with FSDP2 instead of DDP")
    parser.add_argument("--threads", type=int, default=1, help="with --nproc: CPU threads per process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return scaling_worker(args)
    if args.nproc:
        return run_scaling(args)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
        f"batch {args.batch_size} x {args.seq_len}"
    )
    contenders, parameters = build_contenders(device)
    generator = torch.Generator().manual_seed(0)
    tokens = args.batch_size * args.seq_len
    vocab_size = CONFIGS["gpt2"].vocab_size
    batch = torch.randint(0, vocab_size, (args.batch_size, args.seq_len + 1), generator=generator).to(device)
    inputs, targets = batch[:, :-1], batch[:, 1:]
    for round_index in range(args.steps + 1):
        for contender in contenders:
            # The peak right before the step: a neighbour's burst then lowers both, not just one of them.
            peak = matmul_peak(DTYPES[contender.precision], device)
            seconds = contender.step(inputs, targets)
            if round_index > 0:  # round 0 warms up allocators and kernels
                contender.seconds.append(seconds)
                contender.mfu.append(6 * parameters * tokens / seconds / peak)
        print(
            f"round {round_index}: "
            + ", ".join(f"{c.name} {tokens / c.seconds[-1]:.0f} tok/s" for c in contenders if c.seconds),
            flush=True,
        )
    print(f"\n{'contender':28} {'tokens/s':>9} {'s/step':>7} {'MFU':>6}   (medians over {args.steps} rounds)")
    for c in contenders:
        seconds = statistics.median(c.seconds)
        print(f"{c.name:28} {tokens / seconds:9.1f} {seconds:7.2f} {statistics.median(c.mfu):6.1%}")
    by_name = {c.name: c for c in contenders}

    def ratio(ours: str, peer: str) -> float:
        """Median over rounds of the per-round speed ratio: both steps ran within seconds of each other."""
        return statistics.median(b / a for a, b in zip(by_name[ours].seconds, by_name[peer].seconds, strict=True))

    fp32_mfu = statistics.median(by_name["ours fp32"].mfu)
    print("\nratios (median of per-round ratios) and targets:")
    for label, value, target in (
        ("ours fp32 / transformers sdpa fp32", ratio("ours fp32", "transformers sdpa fp32"), 1.0),
        ("ours bf16 / transformers sdpa bf16", ratio("ours bf16", "transformers sdpa bf16"), None),
        ("ours fp32 / naive (book) fp32", ratio("ours fp32", "naive (book) fp32"), None),
        ("ours bf16 / naive (book) fp32", ratio("ours bf16", "naive (book) fp32"), 1.8),
    ):
        verdict = "" if target is None else f" (target >= {target}x: {'met' if value >= target else 'NOT met'})"
        print(f"  {label}: {value:.2f}x{verdict}")
    print(f"  ours fp32 MFU: {fp32_mfu:.1%} (target >= 60%: {'met' if fp32_mfu >= 0.6 else 'NOT met'})")


if __name__ == "__main__":
    main()
