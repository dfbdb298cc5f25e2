"""Instruction fine-tuning (the book's chapter 7 recipe) as a resumable, data-parallel training loop.

The loss is the book's: cross entropy over next-token targets, ignoring ``-100``. Around it: AdamW on the
foreach/fused path, periodic train/validation loss, early stopping, ``best``/``last`` checkpoints, resume
after a crash with the same data order and RNG, gradient accumulation and clipping, bf16 autocast, and
DistributedDataParallel or FSDP2 sharding when launched by ``torchrun`` on one machine or several.

A step is one global batch: ``batch size x grad accum x processes`` sequences, the next ones of the epoch's
seeded order, and its loss is the mean over all their target tokens. So the data and the updates of a step do
not depend on how many processes share it, and a run can be resumed with another number of processes as long
as that product stays the same (it is refused otherwise: the steps would cover other data).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from trainer import checkpoint as ckpt
from trainer.data import (
    IGNORE_INDEX,
    InstructionDataset,
    check_style,
    check_turns,
    collate,
    load_entries,
    resolve_style,
    split_entries,
    style_sha256,
)
from trainer.distributed import (
    Distributed,
    full_optimizer_state,
    full_weights,
    gradient_sync,
    is_sharded,
    load_optimizer_state,
    wrap,
)
from trainer.errors import UserError
from trainer.files import write_atomically
from trainer.formats import data_sha256, resolve_source
from trainer.hooks import RunContext, StepHook, is_evaluation
from trainer.lora import (
    LoraSettings,
    add_adapters,
    load_lora_run,
    merged_tensors,
    save_adapter,
    save_random_base,
    trainable_line,
)
from trainer.model import CONFIGS, GPT
from trainer.tokenizer import get_tokenizer
from trainer.tracking import Tracking, require_backends, tracking_run

logger = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
# Settings that shape the loss curve: resuming with any of them changed would splice two different runs.
RESUME_IDENTITY = (
    "model_name",
    "model",
    "weights",
    "lora",
    "style",
    "style_sha256",
    "data_sha256",
    "data_columns",
    "mask_prompt",
    "seed",
    "split",
    "recipe",
)
TRAIN_IDENTITY = ("lr", "weight_decay", "max_length")  # and the global batch, checked on its own
# ``default`` is this trainer's; ``book`` reproduces chapter 7 as printed (docs/recipe-book.md lists the differences).
RECIPES = ("default", "book")
GRAD_CLIP = {"default": 1.0, "book": None}  # the book's train_model_simple does not clip


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple's MPS, then the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def loss_on_batch(model, inputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean (or ``sum``) cross entropy over the targets that are not ``IGNORE_INDEX`` (the book's
    ``calc_loss_batch``)."""
    logits = model(inputs)
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction
    )


@dataclass
class Progress:
    """Where training stands: saved in ``last/state.pt`` and restored on resume."""

    step: int = 0
    tokens_seen: int = 0
    best_val_loss: float = math.inf
    best_step: int = -1
    evals_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)


def _build_model(model_name: str, weights: str | None, device: torch.device) -> tuple[GPT, str]:
    """The model to fine-tune and how its weights were chosen (``random``, a name, or a folder path)."""
    if model_name not in CONFIGS:
        raise UserError(f"unknown model {model_name!r}; choose one of {', '.join(CONFIGS)}")
    weights = weights or ("random" if model_name == "tiny" else model_name)
    if weights == "random":
        return GPT(CONFIGS[model_name]).to(device), weights
    from trainer.weights import load_pretrained

    model = load_pretrained(weights, device=device)
    expected = CONFIGS[model_name]
    shape = ("emb_dim", "n_heads", "n_layers", "vocab_size")
    if any(getattr(model.config, key) != getattr(expected, key) for key in shape):
        raise UserError(f"weights {weights} do not have the shape of --model {model_name}")
    source = str(Path(weights).resolve()) if Path(weights).exists() else weights
    return model.train(), source


def _step_batches(dataset_size: int, hp: dict, seed: int, epoch: int, dist_info: Distributed) -> list[list[list[int]]]:
    """This rank's micro-batches for every step of one epoch; a last partial global batch is dropped.

    Step ``s`` takes entries ``s x global batch`` onwards of the epoch's seeded permutation (the order
    DistributedSampler gives one process), and rank ``r`` the ``r``-th consecutive share of them: the same
    entries make a step whatever the number of processes."""
    order = torch.randperm(dataset_size, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    batch_size, share = hp["batch_size"], hp["batch_size"] * hp["grad_accum"]
    steps = []
    for start in range(0, dataset_size - hp["global_batch"] + 1, hp["global_batch"]):
        mine = order[start + dist_info.rank * share : start + (dist_info.rank + 1) * share]
        steps.append([mine[i : i + batch_size] for i in range(0, share, batch_size)])
    return steps


def _processes(count: int) -> str:
    return f"{count} process{'es' if count > 1 else ''}"


def _check_global_batch(config_file: Path, old: dict, new: dict) -> None:
    """Resuming with another number of processes is fine, with another global batch it is another run."""
    old_global = old["batch_size"] * old["grad_accum"] * old["world_size"]
    if old_global == new["global_batch"]:
        return
    per_micro_batch = new["batch_size"] * new["world_size"]
    hint = f", e.g. --grad-accum {old_global // per_micro_batch}" if old_global % per_micro_batch == 0 else ""
    raise UserError(
        f"{config_file}: cannot resume with a global batch of {new['global_batch']} sequences a step (batch size "
        f"{new['batch_size']} x grad accum {new['grad_accum']} x {_processes(new['world_size'])}): the run was "
        f"made with {old_global} ({old['batch_size']} x {old['grad_accum']} x {_processes(old['world_size'])}); "
        f"keep the product at {old_global}{hint}"
    )


def _write_plot(
    run_dir: Path,
    history: list[dict],
    hook: StepHook | None = None,
    hook_rows: Sequence[dict] = (),
    steps_per_epoch=1,
    book_epochs: int | None = None,
) -> None:
    """``loss.png``: train and validation loss against epochs, tokens seen on a second x axis; a step hook's
    rows (judge scores) on a second y axis.

    With ``book_epochs`` it is the book's ``plot_losses`` (ch07 previous_chapters.py): its size and labels,
    whole epochs on the axis, evaluations spread evenly over ``torch.linspace(0, epochs, n)``, and a copy
    as ``loss-plot.pdf``, the file name it writes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    book = book_epochs is not None
    labels = ("Training loss", "Validation loss", "Epochs", "Loss", "Tokens seen")
    train_label, val_label, x_label, y_label, top_label = labels if book else (label.lower() for label in labels)
    epochs = torch.linspace(0, book_epochs, len(history)).tolist() if book else [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(5, 3) if book else (6, 4))
    ax.plot(epochs, [row["train_loss"] for row in history], label=train_label)
    ax.plot(epochs, [row["val_loss"] for row in history], linestyle="-.", label=val_label)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.legend(loc="upper right")
    if hook is not None and hook_rows:
        hook.plot(ax.twinx(), [row["step"] / steps_per_epoch for row in hook_rows], list(hook_rows))
    if book:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    top = ax.twiny()  # same curve against tokens seen, drawn invisibly so the two axes line up
    top.plot([row["tokens_seen"] for row in history], [row["train_loss"] for row in history], alpha=0)
    top.set_xlabel(top_label)
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=100)
    if book:
        fig.savefig(run_dir / "loss-plot.pdf")
    plt.close(fig)


def _start_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def _prepare_run(run_dir: Path, run_config: dict, resume: bool) -> dict | None:
    """Refuse to overwrite a finished run, and to resume one made with different settings.

    Returns the config of the run being resumed (None when there is none yet)."""
    existing = run_dir / ckpt.CONFIG_FILE
    if not resume:
        if existing.exists():
            raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        return None
    if not existing.exists():
        return None  # nothing to resume yet: start fresh (a crash before the first checkpoint)
    old = ckpt.read_run_config(run_dir)
    old = {"recipe": "default", "style_sha256": None, **old}  # what runs made before these keys existed used
    changed = [key for key in RESUME_IDENTITY if old.get(key) != run_config[key]]
    changed += [f"train.{key}" for key in TRAIN_IDENTITY if old["train"].get(key) != run_config["train"][key]]
    if changed:
        raise UserError(f"{existing}: cannot resume, the run was made with different {', '.join(changed)}")
    _check_global_batch(existing, old["train"], run_config["train"])
    return old


def _check_run_folder(run_dir: Path) -> None:
    """Fail at once, not after hours of training, when the run folder cannot be created or written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: --out must be a run folder, and this is not a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        raise UserError(f"{run_dir}: cannot write the run folder here ({exc.strerror or exc})") from exc


def _rewind_metrics(run_dir: Path, step: int) -> list[dict]:
    """Keep the metrics up to the resumed step (-1: none); later ones are redone.

    A last line without its newline is a row a kill cut short while it was appended; it comes after the
    checkpoint's own row and is dropped with the other later rows. Any other damage stops the resume, since
    the loss curve (and early stopping) would silently lose evaluations."""
    path = run_dir / METRICS_FILE
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.split("\n")
    complete, unfinished = lines[:-1], lines[-1]  # text after the final newline, if any, was cut short
    advice = "the run cannot be resumed from it: fix it, or start again without --resume in a new --out"
    rows = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {number} is not a metrics row ({exc.msg}); {advice}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise UserError(f"{path}: line {number} is not a metrics row (no step number); {advice}")
        rows.append(row)
    rows = [row for row in rows if row["step"] <= step]
    evaluations = [row for row in rows if is_evaluation(row)]
    if step >= 0 and (not evaluations or evaluations[-1]["step"] != step):
        cut = "cut short, " if unfinished.strip() else ""
        raise UserError(f"{path}: {cut}no row for step {step}, where last/ was saved; {advice}")
    write_atomically(path, "".join(json.dumps(row) + "\n" for row in rows))  # a kill now cannot cut kept rows
    return rows


def finetune(
    *,
    data: str | os.PathLike,
    out: str | os.PathLike,
    columns: Mapping[str, str] | None = None,
    style: str = "alpaca",
    model: str = "tiny",
    weights: str | None = None,
    epochs: int = 2,
    max_steps: int | None = None,
    batch_size: int = 8,
    lr: float = 5e-5,
    weight_decay: float = 0.1,
    mask_prompt: bool = False,
    resume: bool = False,
    patience: int | None = None,
    seed: int = 123,
    eval_every: int = 5,
    eval_batches: int | None = 5,
    grad_accum: int = 1,
    grad_clip: float | None = None,
    bf16: bool = False,
    fsdp: bool = False,
    device: str = "auto",
    max_length: int | None = None,
    tokenizer_file: str | None = None,
    shuffle_seed: int | None = None,
    name: str | None = None,
    lora: LoraSettings | None = None,
    progress: bool = True,
    log_to: Sequence[str] = (),
    log_dir: str | os.PathLike | None = None,
    hook: StepHook | None = None,
    recipe: str | None = None,
) -> dict:
    """Fine-tune ``model`` on the instruction file ``data`` into the run folder ``out``; return a summary.

    ``weights``: ``random``, a model name or a Hugging Face-layout folder (default: pretrained for gpt2*,
    random for tiny). ``patience`` stops after that many evaluations without a better validation loss.
    ``eval_batches`` limits each evaluation to that many batches per split (None: all). Under ``torchrun``
    every process trains on its share of each global batch and only global rank 0 writes; ``fsdp`` shards
    weights, gradients and optimizer state across the processes instead of copying them to each.
    ``log_to`` names trackers (``trainer.tracking``) that rank 0 mirrors every metrics row to, in ``log_dir``
    (default: the run folder; MLflow: ./mlruns). ``data`` may be any source ``trainer.formats`` reads, with
    ``columns`` mapping entry keys to its column names. ``hook`` gets the weights every ``hook.every`` steps
    and writes rows beside the losses (``trainer.hooks``; the workbench's judge during training).
    ``lora`` trains low-rank adapters on the frozen model instead of all its weights (``trainer.lora``);
    checkpoints then hold the adapter alone.

    ``recipe`` ``book`` reproduces the book's chapter 7 (docs/recipe-book.md): an untied output head started
    from the token embedding, no gradient clipping, the Phi-3 marker with its colon, masking that keeps the
    response marker in the loss, and the book's evaluation steps and plot. None: the resumed run's recipe, else
    ``default``. ``grad_clip`` None is the recipe's (1.0, or off for the book), 0 is off.
    """
    _check_settings(style, epochs, max_steps, batch_size, lr, patience, eval_every, eval_batches, grad_accum)
    recipe = _resolve_recipe(recipe, Path(out), resume)
    book = recipe == "book"
    style = "phi3-book" if book and style == "phi3" else resolve_style(style)
    grad_clip = GRAD_CLIP[recipe] if grad_clip is None else (grad_clip or None)
    log_to = require_backends(log_to)
    dist_info, torch_device = Distributed.from_environment(pick_device(device))
    if book and lora is not None:
        raise UserError("--recipe book reproduces the book's full fine-tuning; --lora-rank is not part of it")
    if fsdp and lora is not None:
        raise UserError("--fsdp with --lora-rank is not supported: LoRA keeps the frozen base whole; train under DDP")
    if fsdp and dist_info.world_size == 1:
        raise UserError("--fsdp shards the model across processes: launch it with torchrun and 2 or more processes")
    data_source, run_dir = resolve_source(data), Path(out).resolve()
    entries = load_entries(data_source, columns)
    check_turns(entries, style, data_source)
    split = split_entries(entries, seed=shuffle_seed)
    tokenizer = get_tokenizer(tokenizer_file)
    if dist_info.is_main:
        _check_run_folder(run_dir)
    torch.manual_seed(seed)
    network, weights_source = _build_model(model, weights, torch_device)
    if book:
        network.untie_head()
    if lora is not None:
        add_adapters(network, lora)
    max_length = max_length or network.config.context_length
    train_set, val_set = (
        InstructionDataset(part, tokenizer, style, loss_on_marker=book) for part in (split.train, split.val)
    )
    global_batch = batch_size * grad_accum * dist_info.world_size
    hp = {"batch_size": batch_size, "grad_accum": grad_accum, "global_batch": global_batch}
    steps_per_epoch = len(_step_batches(len(train_set), hp, seed, 0, dist_info))
    if steps_per_epoch == 0:
        raise UserError(
            f"{data_source}: the train split has {len(train_set)} entries, fewer than one step needs "
            f"({batch_size} x {grad_accum} x {dist_info.world_size} processes); lower --batch-size"
        )
    total_steps = steps_per_epoch * epochs if max_steps is None else max_steps
    run_config = {
        "name": name or run_dir.name,
        "model_name": model,
        "model": network.config.to_dict(),
        "weights": weights_source,
        "lora": None if lora is None else lora.to_dict(),
        "style": style,
        "style_sha256": style_sha256(style),
        "data": data_source,
        "data_sha256": data_sha256(data_source, entries),
        "data_columns": dict(columns) if columns else None,
        "mask_prompt": mask_prompt,
        "recipe": recipe,
        "seed": seed,
        "split": {
            "train": len(split.train),
            "test": len(split.test),
            "val": len(split.val),
            "shuffle_seed": shuffle_seed,
        },
        "train": {
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "patience": patience,
            "eval_every": eval_every,
            "eval_batches": eval_batches,
            "grad_accum": grad_accum,
            "global_batch": global_batch,
            "grad_clip": grad_clip,
            "bf16": bf16,
            "max_length": max_length,
            "world_size": dist_info.world_size,
            "fsdp": fsdp,
            "device": torch_device.type,
        },
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    previous_config = None
    if dist_info.is_main:
        previous_config = _prepare_run(run_dir, run_config, resume)
        if resume:
            ckpt.has_training_state(run_dir / "last")  # finishes a swap a kill interrupted, before others look
    dist_info.barrier()  # rank 0 has checked the folder before anyone reads a checkpoint from it
    resumable = resume and ckpt.has_training_state(run_dir / "last")
    saved_state = _restore_weights(run_dir, run_config, network, torch_device) if resumable else None
    model = wrap(network, dist_info, torch_device, fsdp)
    optimizer = torch.optim.AdamW(
        [param for param in model.parameters() if param.requires_grad],  # a LoRA run: the adapters only
        lr=lr,
        weight_decay=weight_decay,
        **({"fused": True} if torch_device.type == "cuda" else {"foreach": True}),
    )
    state = Progress()
    if saved_state is not None:
        state = _restore_training(saved_state, network, optimizer, torch_device)
    if resumable and previous_config is not None:
        run_config["created_at"] = previous_config["created_at"]
    log_handler, trainer, kept_hook_rows = None, None, []
    try:
        # The trackers start before the run folder is written to: one that cannot start leaves it as it was.
        with tracking_run(
            log_to if dist_info.is_main else (),
            experiment="finetune",
            run_name=run_config["name"],
            params=run_config,
            log_dir=log_dir,
            default_dir=run_dir,
        ) as tracker:
            if dist_info.is_main:
                run_dir.mkdir(parents=True, exist_ok=True)
                log_handler = _start_log(run_dir)
                kept = _rewind_metrics(run_dir, state.step if resumable else -1)
                state.history = [row for row in kept if is_evaluation(row)]
                (run_dir / ckpt.CONFIG_FILE).write_text(json.dumps(run_config, indent=2) + "\n")
                (run_dir / "split.json").write_text(json.dumps(split.indices) + "\n")
                if lora is not None and weights_source == "random":
                    save_random_base(network, run_dir)
                logger.info(
                    "%s %s at step %d: %d parameters, %d train / %d val entries, %d steps per epoch, device %s x %d",
                    "resuming" if resumable else "starting",
                    run_dir.name,
                    state.step,
                    network.num_parameters(),
                    len(train_set),
                    len(val_set),
                    steps_per_epoch,
                    torch_device,
                    dist_info.world_size,
                )
                logger.info(trainable_line(network)[0])
                if hook is not None:
                    kept_hook_rows = [row for row in kept if not is_evaluation(row)]
                    hook.start(
                        RunContext(run_dir, run_config, state.step, split.val, tokenizer, torch_device), kept_hook_rows
                    )
            trainer = _Loop(
                network=network,
                model=model,
                optimizer=optimizer,
                run_dir=run_dir,
                run_config=run_config,
                state=state,
                train_set=train_set,
                val_set=val_set,
                dist_info=dist_info,
                device=torch_device,
                steps_per_epoch=steps_per_epoch,
                total_steps=total_steps,
                tracker=tracker,
                hook=hook,
                hook_rows=kept_hook_rows,
            )
            summary = trainer.run(progress=progress and dist_info.is_main)
    finally:
        if hook is not None and dist_info.is_main:
            hook.close()
        if log_handler is not None:
            logger.removeHandler(log_handler)
            log_handler.close()
        # The DDP wrapper goes first: its reducer must not hold the last reference to the process group, or its
        # destructor (which keeps the GIL) joins gloo's workers while one waits for the GIL: a hang at exit.
        trainer = model = None
        dist_info.close()
    return summary


def _check_settings(style, epochs, max_steps, batch_size, lr, patience, eval_every, eval_batches, grad_accum):
    check_style(style)
    positive = {
        "epochs": epochs,
        "batch size": batch_size,
        "eval every": eval_every,
        "grad accum": grad_accum,
    }
    for label, value in positive.items():
        if value < 1:
            raise UserError(f"{label} must be at least 1, got {value}")
    for label, value in {"max steps": max_steps, "patience": patience, "eval batches": eval_batches}.items():
        if value is not None and value < 1:
            raise UserError(f"{label} must be at least 1, got {value}")
    if lr <= 0:
        raise UserError(f"learning rate must be positive, got {lr}")


def _resolve_recipe(recipe: str | None, run_dir: Path, resume: bool) -> str:
    """The recipe asked for; without one, a resumed run keeps the recipe it was made with."""
    if recipe is None:
        existing = run_dir / ckpt.CONFIG_FILE
        recipe = ckpt.read_run_config(run_dir).get("recipe", "default") if resume and existing.exists() else "default"
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    return recipe


def _restore_weights(run_dir: Path, run_config: dict, network: GPT, device: torch.device) -> dict:
    """Load ``last``'s weights into the whole (not yet wrapped) model; return its training state."""
    if run_config["lora"]:  # the base it was made with and the adapter, wrapped as ``network`` is
        saved = load_lora_run(run_dir, run_config, "last", merge=False)
    else:
        saved = ckpt.load_checkpoint(run_dir / "last", expected=network.config)  # on the CPU: copy_ moves it
    with torch.no_grad():
        for target, source in zip(network.parameters(), saved.parameters(), strict=True):
            target.copy_(source)
    return ckpt.load_training_state(run_dir / "last", device=device)


def _restore_training(saved_state: dict, network: GPT, optimizer, device: torch.device) -> Progress:
    """Optimizer state (sharded when the model is), RNG and progress, once the model is wrapped."""
    load_optimizer_state(network, optimizer, saved_state["optimizer"])
    torch.set_rng_state(saved_state["torch_rng"].cpu())
    if device.type == "cuda" and "cuda_rng" in saved_state:
        torch.cuda.set_rng_state(saved_state["cuda_rng"].cpu(), device)
    return Progress(**saved_state["progress"])


class _Loop:
    """The training loop proper; its pieces (eval, checkpoints, batches) share this run's settings."""

    def __init__(
        self,
        *,
        network,
        model,
        optimizer,
        run_dir,
        run_config,
        state,
        train_set,
        val_set,
        dist_info,
        device,
        steps_per_epoch,
        total_steps,
        tracker: Tracking,
        hook: StepHook | None = None,
        hook_rows: Sequence[dict] = (),
    ):
        self.network, self.optimizer, self.run_dir = network, optimizer, run_dir
        self.tracker = tracker
        self.hook, self.hook_rows, self.hook_step = hook, list(hook_rows), None
        self.config, self.hp, self.state = run_config, run_config["train"], state
        self.train_set, self.val_set, self.dist, self.device = train_set, val_set, dist_info, device
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.model = model  # what trains: network, its DDP wrapper, or network itself sharded by FSDP
        self.autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if self.hp["bf16"] else contextlib.nullcontext()
        )

    def _collate(self, dataset: InstructionDataset, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = collate(
            [dataset[i] for i in indices],
            max_length=self.hp["max_length"],
            mask_prompt=self.config["mask_prompt"],
        )
        return inputs.to(self.device), targets.to(self.device)

    @torch.no_grad()
    def _eval_loss(self, dataset: InstructionDataset) -> float:
        """Mean batch loss over the first ``eval_batches`` batches in file order, shared across ranks."""
        size = self.hp["batch_size"]
        batches = [list(range(i, min(i + size, len(dataset)))) for i in range(0, len(dataset), size)]
        batches = batches[: self.hp["eval_batches"] or len(batches)]
        mine = batches[self.dist.rank :: self.dist.world_size]
        # A sharded forward is a collective: ranks short of a batch join each round with one whose loss is dropped.
        rounds = math.ceil(len(batches) / self.dist.world_size) if is_sharded(self.model) else len(mine)
        self.network.eval()
        total = 0.0
        for round_index in range(rounds):
            indices = mine[round_index] if round_index < len(mine) else batches[0]
            with self.autocast:
                loss = loss_on_batch(self.network, *self._collate(dataset, indices)).item()
            total += loss if round_index < len(mine) else 0.0
        self.network.train()
        # Each rank counts only the batches it evaluated: the sums over ranks are then all batches once.
        total, count = self.dist.sum([total, float(len(mine))], self.device)
        return total / count

    def _evaluate(self) -> bool:
        """Record one evaluation; save checkpoints; return True when patience has run out."""
        state = self.state
        row = {
            "step": state.step,
            "epoch": round(state.step / self.steps_per_epoch, 4),
            "tokens_seen": state.tokens_seen,
            "train_loss": self._eval_loss(self.train_set),
            "val_loss": self._eval_loss(self.val_set),
        }
        state.history.append(row)
        improved = row["val_loss"] < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_step, state.evals_without_improvement = (
                row["val_loss"],
                state.step,
                0,
            )
        else:
            state.evals_without_improvement += 1
        weights, resume_state = full_weights(self.network), self._resume_state()  # collectives under FSDP
        if self.dist.is_main:
            self._record(row)
            message = (
                f"step {row['step']} epoch {row['epoch']:.2f} tokens {row['tokens_seen']}: "
                f"train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}" + (" (best)" if improved else "")
            )
            logger.info(message)
            if improved:
                self._save(weights, "best")
            self._save(weights, "last", resume_state)
        patience = self.hp["patience"]
        return patience is not None and state.evals_without_improvement >= patience

    def _submit_weights(self) -> None:
        """Hand the hook this step's weights: gathered by every rank (a collective under FSDP), used by rank 0."""
        weights = full_weights(self.network)
        if self.dist.is_main:
            if self.config["lora"]:  # the hook gets a plain GPT's weights, as from any run
                weights = merged_tensors(weights, LoraSettings.from_dict(self.config["lora"]))
            self.hook.submit(self.state.step, weights)
        self.hook_step = self.state.step

    def _collect(self, wait: bool) -> None:
        """Write the hook's finished rows beside the losses, and mirror them to the trackers."""
        if self.hook is None or not self.dist.is_main:
            return
        for row in self.hook.collect(wait):
            self._record(row)
            self.hook_rows.append(row)

    def _record(self, row: dict) -> None:
        """Append one row to metrics.jsonl and mirror it to the trackers (rank 0)."""
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as metrics:
            metrics.write(json.dumps(row) + "\n")
        self._track(row)

    def _save(self, weights: dict[str, torch.Tensor], checkpoint: str, state: dict | None = None) -> None:
        """A full checkpoint, or for a LoRA run the adapter alone."""
        folder, config = self.run_dir / checkpoint, self.network.config
        if self.config["lora"]:
            save_adapter(LoraSettings.from_dict(self.config["lora"]), config, weights, folder, state)
        else:
            ckpt.save_checkpoint(config, weights, folder, state)

    def _track(self, row: dict) -> None:
        """Mirror one metrics row to the trackers, at its step."""
        self.tracker.log_metrics({key: value for key, value in row.items() if key != "step"}, row["step"])

    def _resume_state(self) -> dict:
        state = {
            "optimizer": full_optimizer_state(self.network, self.optimizer),
            "progress": {key: value for key, value in vars(self.state).items() if key != "history"},
            "torch_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _train_step(self, micro_batches: list[list[int]]) -> tuple[float, int]:
        """One optimizer step over this rank's micro-batches; returns the step's loss and global tokens.

        The loss is the mean over every target token of the global batch, however the batch is shared out:
        each micro-batch adds its summed token losses over the global target count, times the number of
        processes since DDP and FSDP average gradients over them."""
        batches = [self._collate(self.train_set, indices) for indices in micro_batches]
        local_targets = sum(int((targets != IGNORE_INDEX).sum()) for _, targets in batches)
        (global_targets,) = self.dist.sum([float(local_targets)], self.device)
        scale = self.dist.world_size / max(global_targets, 1.0)
        loss_sum, tokens = torch.zeros((), device=self.device), 0
        for i, (inputs, targets) in enumerate(batches):
            with gradient_sync(self.model, enabled=i == len(batches) - 1):
                with self.autocast:
                    loss = loss_on_batch(self.model, inputs, targets, reduction="sum") * scale
                loss.backward()
            loss_sum += loss.detach()
            tokens += inputs.numel()
        if self.hp["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.hp["grad_clip"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, tokens = self.dist.sum([loss_sum.item(), float(tokens)], self.device)
        return loss_sum / self.dist.world_size, int(tokens)

    def run(self, progress: bool) -> dict:
        state, hp = self.state, self.hp
        started, start_tokens = time.perf_counter(), state.tokens_seen
        stopped_early = False
        for row in [*state.history, *self.hook_rows]:  # a resumed run: the rows it kept, then the new ones
            self._track(row)
        # The book evaluates after steps 1, 6, 11, ... (its step counter starts at 0 after the first update) and
        # not before training; this trainer at steps 0, 5, 10, ..., the untrained baseline starting the curve.
        offset = 1 if self.config["recipe"] == "book" else 0
        if state.step == 0 and not state.history and not offset:
            stopped_early = self._evaluate()
            if self.hook is not None:
                self._submit_weights()
        bar = tqdm(
            total=self.total_steps,
            initial=state.step,
            desc="fine-tuning",
            unit="step",
            disable=not progress,
            dynamic_ncols=True,
        )
        with bar:
            while state.step < self.total_steps and not stopped_early:
                epoch, position = divmod(state.step, self.steps_per_epoch)
                steps = _step_batches(len(self.train_set), hp, self.config["seed"], epoch, self.dist)
                for micro_batches in steps[position:]:
                    loss, tokens = self._train_step(micro_batches)
                    state.step += 1
                    state.tokens_seen += tokens
                    elapsed = time.perf_counter() - started
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{(state.tokens_seen - start_tokens) / elapsed:.0f}")
                    bar.update()
                    if self.hook is not None and state.step % self.hook.every == 0:
                        self._submit_weights()
                    self._collect(wait=False)
                    if (state.step - offset) % hp["eval_every"] == 0 or state.step == self.total_steps:
                        stopped_early = self._evaluate()
                        if stopped_early or state.step == self.total_steps:
                            break
            if stopped_early and self.dist.is_main:
                logger.info(
                    "early stop at step %d: no better validation loss in %d evaluations (best %.4f at step %d)",
                    state.step,
                    hp["patience"],
                    state.best_val_loss,
                    state.best_step,
                )
        if self.hook is not None and self.hook_step != state.step:
            self._submit_weights()  # the last step, when it is not a multiple of hook.every
        self._collect(wait=True)
        elapsed = time.perf_counter() - started
        if self.dist.is_main:
            book_epochs = hp["epochs"] if offset else None
            _write_plot(self.run_dir, state.history, self.hook, self.hook_rows, self.steps_per_epoch, book_epochs)
        _, trainable, total = trainable_line(self.network)
        summary = {
            "run_dir": str(self.run_dir),
            "trainable_parameters": trainable,
            "parameters": total,
            "steps": state.step,
            "epochs": state.step / self.steps_per_epoch,
            "tokens_seen": state.tokens_seen,
            "best_val_loss": state.best_val_loss,
            "best_step": state.best_step,
            "train_loss": state.history[-1]["train_loss"],
            "val_loss": state.history[-1]["val_loss"],
            "stopped_early": stopped_early,
            "seconds": round(elapsed, 2),
            "tokens_per_second": round((state.tokens_seen - start_tokens) / elapsed, 1) if elapsed > 0 else None,
        }
        if self.dist.is_main:
            logger.info("done: %s", json.dumps(summary))
        self.tracker.log_summary({"summary": summary}, step=state.step)
        return summary
