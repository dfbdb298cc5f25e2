"""``python -m trainer finetune``: the options of :func:`trainer.train.finetune`, parsed into its arguments.

``workbench finetune`` (an LLM judge during training) builds its command from the same options."""

from __future__ import annotations

import argparse
import json
import os

from trainer.data import STYLES
from trainer.formats import COLUMNS_HELP, FORMATS_HELP, parse_columns
from trainer.lora import TARGETS, LoraSettings
from trainer.model import CONFIGS
from trainer.tracking import add_cli_options
from trainer.train import RECIPES, finetune


def add_cli(subparsers) -> None:
    """Register ``finetune``."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune GPT-2 on an instruction file (resumable, torchrun-aware)",
        description="Fine-tune a GPT-2 model on Alpaca-style instruction data (JSON, JSONL, CSV, Parquet or a Hugging "
        "Face data set; chat records too), as in chapter 7 of the book. Writes a run folder with checkpoints, "
        "metrics and a loss plot. To have an LLM judge score the model while it trains, use "
        "`workbench finetune ... --judge-every N`.",
    )
    add_finetune_arguments(parser)
    parser.set_defaults(func=_run_cli)


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """``finetune``'s options; ``workbench finetune`` adds its judge's options to the same ones."""
    parser.add_argument("--data", required=True, help=f"instruction data: {FORMATS_HELP}")
    parser.add_argument("--columns", help=COLUMNS_HELP)
    parser.add_argument("--out", required=True, help="run folder to write (or to continue with --resume)")
    parser.add_argument("--style", default="alpaca", help=f"prompt style: {', '.join(STYLES)}, or jinja:FILE")
    parser.add_argument("--model", required=True, choices=tuple(CONFIGS), help="model shape")
    parser.add_argument(
        "--weights",
        help="'random', a model name or a Hugging Face-layout folder (default: pretrained for gpt2*, random for tiny)",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per micro-batch per process")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--mask-prompt", action="store_true", help="train on the response tokens only")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from last/")
    parser.add_argument("--patience", type=int, help="stop after N evaluations without a better val loss")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--eval-every", type=int, default=5, help="evaluate every N steps")
    parser.add_argument("--eval-batches", type=int, default=5, help="batches per evaluation (0: all)")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--grad-clip", type=float, help="max gradient norm (0: off; default 1.0, off for the book)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun: shard weights, gradients and AdamW state across processes (FSDP2) instead of DDP",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--max-length", type=int, help="truncate sequences (default: the context length)")
    parser.add_argument("--shuffle-seed", type=int, help="shuffle entries before the 85/10/5 split")
    parser.add_argument("--tokenizer-file", help="GPT-2 ranks file in tiktoken format (offline)")
    parser.add_argument("--name", help="run name (default: the folder name)")
    parser.add_argument("--lora-rank", type=int, help="train LoRA adapters of this rank on the frozen model")
    parser.add_argument("--lora-alpha", type=float, help="LoRA scale numerator: updates scale by alpha/rank (2 x rank)")
    parser.add_argument("--lora-targets", help=f"comma-separated layers to adapt (default: {','.join(TARGETS)})")
    parser.add_argument("--lora-dropout", type=float, help="dropout on the adapters' input (default 0)")
    parser.add_argument(
        "--recipe",
        choices=RECIPES,
        help="'book': chapter 7 as printed, see docs/recipe-book.md (default: 'default', or the resumed run's)",
    )
    add_cli_options(parser, log_dir_default="the run folder")


def finetune_arguments(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`finetune` given by parsed ``finetune`` options."""
    return dict(
        data=args.data,
        out=args.out,
        columns=parse_columns(args.columns),
        style=args.style,
        model=args.model,
        weights=args.weights,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        mask_prompt=args.mask_prompt,
        resume=args.resume,
        patience=args.patience,
        seed=args.seed,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches or None,
        grad_accum=args.grad_accum,
        grad_clip=args.grad_clip,
        bf16=args.bf16,
        fsdp=args.fsdp,
        device=args.device,
        max_length=args.max_length,
        tokenizer_file=args.tokenizer_file,
        shuffle_seed=args.shuffle_seed,
        name=args.name,
        lora=LoraSettings.from_options(args.lora_rank, args.lora_alpha, args.lora_targets, args.lora_dropout),
        log_to=args.log_to,
        log_dir=args.log_dir,
        recipe=args.recipe,
    )


def _run_cli(args: argparse.Namespace) -> int:
    summary = finetune(**finetune_arguments(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0
