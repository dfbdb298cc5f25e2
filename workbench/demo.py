"""``workbench demo``: the whole pipeline on the bundled sample, then the review app.

Fine-tune GPT-2 on ``datasets/instruction-sample.json`` (from OpenAI's weights when they can be had, else
from a small random model, and the app says so), generate the test split's responses for the base and the
fine-tuned model, import everything, judge with Ollama when a server answers, run the bundled
multiple-choice benchmark, and serve the app. Every step resumes, so running it again is quick.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import UserError
from workbench.backends import DEFAULT_OLLAMA_HOST
from workbench.serve import DEFAULT_PORT, check_address, port_number, serve

REPO_DATASETS = Path(__file__).resolve().parent.parent / "datasets"
SAMPLE_DATA = REPO_DATASETS / "instruction-sample.json"
SAMPLE_MC = REPO_DATASETS / "mc-sample"
PRETRAINED = "gpt2"
DEFAULT_JUDGE = "llama3.1:8b"
APP_HOST = "127.0.0.1"  # the demo's app is for the person at this machine
RANDOM_NOTICE = (
    "Demo without OpenAI's GPT-2 weights (no cached copy and huggingface.co unreachable): both models start "
    "from a small random GPT, so their answers are gibberish. Run the demo online, or pass --weights DIR "
    "with a downloaded openai-community/gpt2 folder, to fine-tune the real model."
)


@dataclass
class Base:
    """Where fine-tuning starts: a model config and its weights (a name or a Hugging Face folder)."""

    model: str
    weights: str
    label: str
    notice: str | None = None
    # Recipe settings for pretrained GPT-2; a random model needs a higher rate and more passes to learn anything.
    lr: float = 5e-5
    epochs: int = 2


def _pretrained_available() -> bool:
    """OpenAI's GPT-2 is in the Hugging Face cache, or can be downloaded (checked without hub retries)."""
    from huggingface_hub import constants, try_to_load_from_cache

    from trainer.weights import HUB_REPOS, WEIGHTS_FILE, hub_reachable

    cached = try_to_load_from_cache(HUB_REPOS[PRETRAINED], WEIGHTS_FILE)
    if isinstance(cached, str):
        return True
    return not constants.HF_HUB_OFFLINE and hub_reachable()


def _config_name(folder: Path) -> str:
    """The name of the GPT-2 size stored in a Hugging Face folder (fine-tuning checks the shape by name)."""
    from trainer.model import CONFIGS
    from trainer.weights import read_config

    config = read_config(folder)
    for name, known in CONFIGS.items():
        if (known.emb_dim, known.n_layers, known.n_heads) == (config.emb_dim, config.n_layers, config.n_heads):
            return name
    raise UserError(f"{folder}: not one of the GPT-2 sizes ({', '.join(CONFIGS)})")


def choose_base(work: Path, weights: str | None = None) -> Base:
    """Pretrained GPT-2 when possible; otherwise a random ``tiny`` GPT written in the Hugging Face layout."""
    if weights is not None:
        return Base(_config_name(Path(weights)), weights, label=Path(weights).resolve().name)
    if _pretrained_available():
        return Base("gpt2", PRETRAINED, label=PRETRAINED)
    folder = work / "random-tiny"
    if not (folder / "model.safetensors").is_file():
        import torch

        from trainer.model import CONFIGS, GPT
        from trainer.weights import save_hf_checkpoint

        torch.manual_seed(0)
        save_hf_checkpoint(GPT(CONFIGS["tiny"]), folder)
    return Base("tiny", str(folder), label="random-tiny", notice=RANDOM_NOTICE, lr=1e-3, epochs=12)


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_demo(
    db_path: str | Path = "workbench-demo.db",
    *,
    weights: str | None = None,
    judge_model: str = DEFAULT_JUDGE,
    judge_host: str | None = None,
    max_new_tokens: int = 64,
    device: str = "auto",
) -> str | None:
    """Run every step into ``db_path`` (files beside it in ``<stem>-files/``); return the app's notice."""
    from trainer.generate import generate_file
    from trainer.train import finetune
    from workbench import store
    from workbench.bench import format_results, run_benchmark
    from workbench.importing import import_path
    from workbench.judge import format_summary, run_judge

    db_path = Path(db_path)
    work = db_path.with_name(db_path.stem + "-files")
    work.mkdir(parents=True, exist_ok=True)

    _step("choosing the base model")
    base = choose_base(work, weights)
    print(base.notice or f"fine-tuning from pretrained {base.weights}")

    run_dir = work / f"{base.label}-sft"
    _step(f"fine-tuning {base.label} on {SAMPLE_DATA.name} into {run_dir}")
    trained = finetune(
        data=SAMPLE_DATA,
        out=run_dir,
        model=base.model,
        weights=base.weights,
        epochs=base.epochs,
        lr=base.lr,
        batch_size=8,
        resume=True,
        name=run_dir.name,
        device=device,
    )
    training = (
        f"fine-tuned from {base.label} for {trained['steps']} steps ({trained['epochs']:.3g} epochs), "
        f"best validation loss {trained['best_val_loss']:.3f}"
    )
    print(training)

    responses = work / "test-responses.json"
    _step(f"generating test-set responses into {responses}")
    generate_file(responses, run=run_dir, response_key=run_dir.name, max_new_tokens=max_new_tokens, device=device)
    generate_file(
        responses,
        weights=base.weights,
        data=SAMPLE_DATA,
        style="alpaca",
        response_key=base.label,
        max_new_tokens=max_new_tokens,
        device=device,
    )

    _step(f"importing into {db_path}")
    db = store.open_db(db_path)
    try:
        imports = [import_path(db, path) for path in (SAMPLE_DATA, run_dir, responses)]
        data, _, answers = imports
        for outcome in imports:
            print(outcome.describe())
        store.set_app_notice(db, base.notice)  # `workbench serve` on this file shows it too
    finally:
        db.close()

    _step(f"judging with Ollama ({judge_model})")
    try:
        judged = run_judge(db_path, judge_model, host=judge_host, concurrency=4, timeout=120)
    except UserError as exc:
        print(
            f"skipped: {exc}\n(start `ollama serve`, `ollama pull {judge_model}`, then `workbench judge "
            f"--db {db_path} --judge-model {judge_model}`)"
        )
        judging = f"skipped (see above); later: `workbench judge --db {db_path} --judge-model {judge_model}`"
    else:
        print(format_summary(judged))
        scores = judged["models"]
        means = ", ".join(
            f"{model} {'-' if stats['mean_score'] is None else format(stats['mean_score'], '.1f')}"
            for model, stats in scores.items()
        )
        scored = sum(stats["scored"] for stats in scores.values())
        judging = f"{scored} responses by {judged['judge_model']}: mean score {means} (0-100)"

    _step(f"multiple-choice benchmark on {SAMPLE_MC}")
    accuracies = []
    for source in ({"run": str(run_dir)}, {"hf_model": base.weights}):
        outcome = run_benchmark(db_path, mmlu_dir=SAMPLE_MC, batch_size=16, **source)
        print(f"{outcome['model']}{' (from the store)' if outcome['cached'] else ''}")
        print(format_results(outcome["results"]))
        overall = next(row for row in outcome["results"] if row["metric"] == "acc_macro")
        accuracies.append(f"{outcome['model']} {overall['value']:.3f}")

    _step("summary")
    print(
        f"database   {db_path} (run folder and responses in {work.name}/)\n"
        f"imported   data set {data.dataset!r}, {data.items} entries ({answers.items} in the test split)\n"
        f"           run {run_dir.name}: {training}\n"
        f"           {answers.responses} responses to the test split: {', '.join(answers.models)}\n"
        f"judged     {judging}\n"
        f"benchmark  0-shot accuracy on the {overall['n']} bundled questions (chance 0.25): {', '.join(accuracies)}"
    )
    return base.notice


def _cli(args: argparse.Namespace) -> None:
    if not args.no_serve:
        check_address(APP_HOST, args.port)  # a busy port is better told now than after minutes of pipeline
    run_demo(args.db, weights=args.weights, judge_model=args.judge_model, judge_host=args.host, device=args.device)
    url = f"http://{APP_HOST}:{args.port}"
    if args.no_serve:
        print(f"app        `workbench serve --db {args.db}` opens it on {url}")
        return
    print(f"app        opening on {url} now; later `workbench serve --db {args.db}` opens it again")
    _step("review app")
    serve(args.db, host=APP_HOST, port=args.port)  # the notice, if any, is in the database


def add_cli(subparsers) -> None:
    """Register ``workbench demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="fine-tune, generate, judge, benchmark and review the bundled sample, end to end",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--db", default="workbench-demo.db", help="database file (default: %(default)s)")
    parser.add_argument(
        "--weights",
        help="a Hugging Face GPT-2 folder to start from (default: gpt2 if it can be had, else a random tiny model)",
    )
    parser.add_argument("--judge-model", default=DEFAULT_JUDGE, help="Ollama judge model (default: %(default)s)")
    parser.add_argument("--host", help=f"Ollama server (default: $OLLAMA_HOST or {DEFAULT_OLLAMA_HOST})")
    parser.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT, help="review app port (default: %(default)s)")
    parser.add_argument("--no-serve", action="store_true", help="stop after the pipeline, without the app")
    parser.set_defaults(func=_cli)
