"""MMLU through lm-eval: our ``workbench`` backend against lm-eval's ``hf`` backend on the same weights.

Random GPT-2 124M weights are written once in the Hugging Face layout; both backends load that folder and run
the same MMLU questions (``--limit`` per subject, all 57 subjects by default), 0-shot and 5-shot, in one
process, one backend after the other for each setting. Prints wall times, the speed-up, the tokens each
backend pushed through its model, whether every answer agrees, and forward-pass MFU (one plain forward pass of
each model against the matmul peak of this machine, measured between the passes since the machine is shared).

    python benchmarks/bench_mmlu.py [--mmlu-dir DIR] [--limit 5] [--subjects a,b] [--shots 0,5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from bench_train import matmul_peak  # this folder is on sys.path when a benchmark runs as a script

REPO = Path(__file__).resolve().parent.parent


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_flops(config, batch: int, steps: int) -> float:
    """Matmul FLOPs of one forward pass: weights (2 per parameter per token), attention scores and values."""
    d, layers = config.emb_dim, config.n_layers
    per_token = 2 * layers * 12 * d * d + 2 * d * config.vocab_size  # blocks + output head
    attention = 2 * 2 * layers * steps * d  # QK^T and AV, full (SDPA computes the masked half too)
    return batch * steps * (per_token + attention)


def forward_mfu(our_model, hf_model, batch: int = 8, steps: int = 256, rounds: int = 3) -> tuple[float, float]:
    """MFU of one forward pass (no lm-eval) of our model and of transformers' on the same tokens.

    Each round times the peak and both models; the best of each over the rounds counts.
    """
    tokens = torch.randint(0, our_model.config.vocab_size, (batch, steps))
    flops = forward_flops(our_model.config, batch, steps)
    peak, ours, theirs = 0.0, float("inf"), float("inf")
    with torch.no_grad():
        for _ in range(rounds):
            peak = max(peak, matmul_peak(torch.float32, torch.device("cpu")))
            ours = min(ours, _timed(lambda: our_model(tokens)))
            theirs = min(theirs, _timed(lambda: hf_model(tokens)))
    return flops / ours / peak, flops / theirs / peak


def count_tokens(module: torch.nn.Module) -> list[int]:
    """Count the tokens fed to ``module`` (padding included) through a forward pre-hook."""
    counter = [0]

    def hook(_module, args, kwargs):
        ids = args[0] if args else kwargs.get("input_ids")
        counter[0] += ids.numel()

    module.register_forward_pre_hook(hook, with_kwargs=True)
    return counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mmlu-dir", default=str(REPO.parent / "shared" / "datasets" / "mmlu"))
    parser.add_argument("--limit", type=int, default=5, help="questions per subject")
    parser.add_argument("--subjects", help="comma-separated subset (default: all in the folder)")
    parser.add_argument("--shots", default="0,5")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from trainer.model import CONFIGS, GPT
    from trainer.weights import save_hf_checkpoint
    from workbench.bench import TASK_PREFIX, TASKS_DIR, hf_tokenizer_dir, mmlu_subjects
    from workbench.lm_backend import WorkbenchLM

    subjects = args.subjects.split(",") if args.subjects else mmlu_subjects(args.mmlu_dir, shots=5)
    tasks = [TASK_PREFIX + subject for subject in subjects]
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"mmlu_dir": args.mmlu_dir})
    print(f"threads: {torch.get_num_threads()}; {len(subjects)} subjects x {args.limit} questions")

    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        save_hf_checkpoint(GPT(CONFIGS["gpt2"]), folder)
        ours = WorkbenchLM(weights=folder, batch_size=args.batch_size)
        theirs = HFLM(
            pretrained=folder,
            tokenizer=str(hf_tokenizer_dir()),
            batch_size=args.batch_size,
            device="cpu",
            dtype="float32",
        )
        our_tokens, their_tokens = count_tokens(ours.model), count_tokens(theirs.model)
        for shots in (int(s) for s in args.shots.split(",")):
            outputs, seconds, tokens = {}, {}, {}
            for name, lm, counter in (("workbench", ours, our_tokens), ("hf", theirs, their_tokens)):
                before = counter[0]
                start = time.perf_counter()
                outputs[name] = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=tasks,
                    num_fewshot=shots,
                    limit=args.limit,
                    task_manager=manager,
                    log_samples=True,
                )
                seconds[name], tokens[name] = time.perf_counter() - start, counter[0] - before
            choices = {
                name: {
                    task: [
                        max(range(4), key=lambda i, s=sample: s["filtered_resps"][i][0])
                        for sample in output["samples"][task]
                    ]
                    for task in tasks
                }
                for name, output in outputs.items()
            }
            accuracy = {
                name: sum(sum(s["acc"] for s in output["samples"][t]) for t in tasks)
                / sum(len(output["samples"][t]) for t in tasks)
                for name, output in outputs.items()
            }
            print(
                f"{shots}-shot: workbench {seconds['workbench']:.1f} s ({tokens['workbench']} tokens), "
                f"hf {seconds['hf']:.1f} s ({tokens['hf']} tokens), "
                f"speed-up {seconds['hf'] / seconds['workbench']:.2f}x; "
                f"accuracy {accuracy['workbench']:.4f} vs {accuracy['hf']:.4f}; "
                f"identical answers: {choices['workbench'] == choices['hf']}"
            )
        our_mfu, their_mfu = forward_mfu(ours.model, theirs.model)
        print(f"forward-pass MFU (8 x 256 tokens, fp32): workbench {our_mfu:.0%}, transformers {their_mfu:.0%}")


if __name__ == "__main__":
    main()
