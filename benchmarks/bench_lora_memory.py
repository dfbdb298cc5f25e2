"""Trainable parameters, peak memory and checkpoint size of LoRA against full fine-tuning (GPT-2 124M and 355M).

Each case runs in a fresh process so that its peak resident memory (``ru_maxrss``) is its own: random weights,
AdamW on the trainable parameters, ``--steps`` steps of forward, backward and update on one batch of
``--batch-size`` x ``--seq-len`` tokens on the CPU. A LoRA case wraps c_attn, c_proj and c_fc with rank
``--rank`` adapters (alpha 2 x rank) as ``finetune --lora-rank`` does. Checkpoint sizes: ``best/`` (the
weights: ``model.safetensors`` for a full run, the adapter files for LoRA) and ``last/`` (plus the AdamW state).

    python benchmarks/bench_lora_memory.py [--models gpt2,gpt2-medium] [--rank 8] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(model_name: str, rank: int, steps: int, batch_size: int, seq_len: int) -> dict:
    """One case, in this process: figures as a dict (``rank`` 0 is full fine-tuning)."""
    import torch

    from trainer import checkpoint as ckpt
    from trainer.distributed import full_optimizer_state
    from trainer.lora import LoraSettings, add_adapters, save_adapter, trainable_line
    from trainer.model import CONFIGS, GPT
    from trainer.train import loss_on_batch

    torch.manual_seed(0)
    model = GPT(CONFIGS[model_name])
    settings = LoraSettings(rank=rank, alpha=2.0 * rank) if rank else None
    if settings:
        add_adapters(model, settings)
    _, trainable, total = trainable_line(model)
    built = _rss_mib()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True)
    tokens = torch.randint(0, model.config.vocab_size, (batch_size, seq_len + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        loss_on_batch(model, inputs, targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    peak = _rss_mib()
    with tempfile.TemporaryDirectory() as folder:
        weights, resume = model.state_dict(), {"optimizer": full_optimizer_state(model, optimizer)}
        if settings:
            saved = save_adapter(settings, model.config, weights, Path(folder) / "last", resume)
        else:
            saved = ckpt.save_checkpoint(model.config, weights, Path(folder) / "last", resume)
        sizes = {path.name: path.stat().st_size for path in saved.iterdir()}
    return {
        "model": model_name,
        "method": f"LoRA r={rank}" if rank else "full",
        "trainable": trainable,
        "total": total,
        "peak_rss_mib": round(peak),
        "model_built_rss_mib": round(built),
        "training_overhead_mib": round(peak - built),
        "best_mib": round((sum(sizes.values()) - sizes[ckpt.STATE_FILE]) / MIB, 2),
        "last_mib": round(sum(sizes.values()) / MIB, 2),
        "last_step_s": round(seconds[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gpt2,gpt2-medium")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="AdamW's state exists from the first step on")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # MODEL:RANK, run in a child process
    args = parser.parse_args()
    if args.case:
        name, rank = args.case.split(":")
        print(json.dumps(measure(name, int(rank), args.steps, args.batch_size, args.seq_len)))
        return
    rows = []
    for name in args.models.split(","):
        for rank in (0, args.rank):
            command = [sys.executable, __file__, "--case", f"{name}:{rank}", "--steps", str(args.steps)]
            command += ["--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nbatch {args.batch_size} x {args.seq_len} tokens, {args.steps} AdamW steps, CPU, fp32, random weights\n")
    print("| model | method | trainable parameters | peak RSS | RSS over the built model | best/ | last/ |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        share = 100 * row["trainable"] / row["total"]
        print(
            f"| {row['model']} | {row['method']} | {row['trainable']:,} of {row['total']:,} ({share:.2f} %) "
            f"| {row['peak_rss_mib']:,} MiB | {row['training_overhead_mib']:,} MiB | {row['best_mib']:,} MiB "
            f"| {row['last_mib']:,} MiB |"
        )


if __name__ == "__main__":
    main()
