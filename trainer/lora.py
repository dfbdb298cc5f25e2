"""LoRA fine-tuning: low-rank adapters on the frozen GPT-2's linear layers, through the ``peft`` library.

``peft.inject_adapter_in_model`` wraps our ``nn.Linear`` modules in place (``h.N.attn.c_attn`` becomes a LoRA
layer around ``base_layer``), so the model stays a ``GPT`` and the training loop, DDP and checkpoints see a
GPT whose only trainable parameters are the adapters. A LoRA run's ``best/`` and ``last/`` hold the adapter
alone in peft's layout (``adapter_model.safetensors`` + ``adapter_config.json``, loadable with
``PeftModel.from_pretrained``), beside ``config.json`` (the model shape); the base weights are the run's
``weights`` (a model name or folder), or, for random weights, the run's own ``base/`` checkpoint, written once.
:func:`load_lora_run` merges the adapter into the base, so every consumer of ``load_run_model`` gets a plain GPT.

peft is imported inside the functions that use it: it pulls in transformers (seconds), which full runs skip.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from trainer import checkpoint as ckpt
from trainer.errors import UserError
from trainer.model import GPT, GPTConfig

ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
TARGETS = ("c_attn", "c_proj", "c_fc")  # every linear layer of a block; the tied head stays as it is
PEFT_PREFIX = "base_model.model."  # peft names adapter tensors after the PeftModel wrapping the base
ADAPTER_NAME = "default"
BASE_FOLDER = "base"  # a random base's weights, saved once in the run folder


@dataclass(frozen=True)
class LoraSettings:
    """Rank, scale (``alpha / rank``), wrapped modules and dropout of the adapters."""

    rank: int
    alpha: float
    targets: tuple[str, ...] = TARGETS
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise UserError(f"--lora-rank must be at least 1, got {self.rank}")
        if not self.alpha > 0:
            raise UserError(f"--lora-alpha must be positive, got {self.alpha}")
        unknown = [name for name in self.targets if name not in TARGETS]
        if unknown or not self.targets:
            raise UserError(
                f"--lora-targets: unknown module {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"choose from {', '.join(TARGETS)}"
            )
        if not 0 <= self.dropout < 1:
            raise UserError(f"--lora-dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_options(
        cls, rank: int | None, alpha: float | None, targets: str | None, dropout: float | None
    ) -> LoraSettings | None:
        """The settings the ``--lora-*`` options ask for; None for a full fine-tune (no ``--lora-rank``)."""
        if rank is None:
            given = [flag for flag, value in (("alpha", alpha), ("targets", targets), ("dropout", dropout)) if value]
            if given:
                raise UserError(f"--lora-{given[0]} needs --lora-rank")
            return None
        names = tuple(name.strip() for name in targets.split(",") if name.strip()) if targets else TARGETS
        return cls(rank, 2.0 * rank if alpha is None else alpha, names, dropout or 0.0)

    @classmethod
    def from_dict(cls, data: dict) -> LoraSettings:
        return cls(data["rank"], data["alpha"], tuple(data["targets"]), data["dropout"])

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank, lora_alpha=self.alpha, target_modules=list(self.targets), lora_dropout=self.dropout
        )


def add_adapters(model: GPT, settings: LoraSettings) -> GPT:
    """Wrap ``model``'s target layers with fresh adapters (B = 0: the model's output is unchanged) and freeze
    everything else; returns the same model."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(settings.peft_config(), model, adapter_name=ADAPTER_NAME)
    for name, param in model.named_parameters():
        param.requires_grad_(_is_adapter(name))
    return model


def _is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def trainable_line(model: nn.Module) -> tuple[str, int, int]:
    """``trainable: N of M parameters (x.xx %)``, with N and M (the tied head counted once)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable: {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f} %)", trainable, total


def _peft_name(name: str) -> str:
    """``h.0.attn.c_attn.lora_A.default.weight`` -> ``base_model.model.h.0.attn.c_attn.lora_A.weight``."""
    return PEFT_PREFIX + name.replace(f".{ADAPTER_NAME}.", ".")


def adapter_tensors(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter tensors of a LoRA model's state dict, named as peft's adapter files name them."""
    return {
        _peft_name(name): tensor.detach().to("cpu").contiguous()
        for name, tensor in weights.items()
        if _is_adapter(name)
    }


def base_tensors(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base model's tensors of a LoRA model's state dict, under the plain GPT's names."""
    return {name.replace(".base_layer.", "."): tensor for name, tensor in weights.items() if not _is_adapter(name)}


def merged_tensors(weights: dict[str, torch.Tensor], settings: LoraSettings) -> dict[str, torch.Tensor]:
    """A LoRA model's state dict as the plain GPT's, each adapter folded in (``W + B A x alpha / rank``): what
    a step hook gets, computed on the tensors alone since the hook must not touch the training modules."""
    scale = settings.alpha / settings.rank
    merged = {}
    for name, tensor in base_tensors(weights).items():
        layer = name.removesuffix(".weight")
        lora_a = weights.get(f"{layer}.lora_A.{ADAPTER_NAME}.weight")
        if lora_a is not None:
            lora_b = weights[f"{layer}.lora_B.{ADAPTER_NAME}.weight"]
            tensor = tensor + (lora_b @ lora_a).to(tensor.dtype) * scale
        merged[name] = tensor
    return merged


def save_adapter(
    settings: LoraSettings,
    config: GPTConfig,
    weights: dict[str, torch.Tensor],
    folder: str | os.PathLike,
    state: dict | None = None,
) -> Path:
    """Write the adapter part of ``weights`` (a LoRA model's full state dict) in peft's layout to ``folder``,
    with the model shape and the resume ``state``, replacing the folder atomically."""
    tensors = adapter_tensors(weights)

    def write(staging: Path) -> None:
        save_file(tensors, str(staging / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
        settings.peft_config().save_pretrained(str(staging))

    return ckpt.write_checkpoint_folder(folder, config, write, state)


def load_adapter(model: GPT, folder: str | os.PathLike) -> GPT:
    """Load the adapter saved in ``folder`` into ``model`` (already wrapped with the same settings)."""
    path = ckpt.recover(Path(folder)) / ADAPTER_WEIGHTS_FILE
    try:
        tensors = load_file(str(path))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise UserError(f"{path}: cannot read the adapter ({exc})") from exc
    params = {_peft_name(name): param for name, param in model.named_parameters() if _is_adapter(name)}
    found = {(name, tuple(t.shape)) for name, t in tensors.items()}
    expected = {(name, tuple(p.shape)) for name, p in params.items()}
    if found != expected:
        raise UserError(
            f"{path}: the adapter does not match the run's LoRA settings (e.g. {sorted(found ^ expected)[:3]})"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    return model


def save_random_base(model: GPT, run_dir: Path) -> None:
    """Keep a random base's weights in the run folder (once): nothing else could rebuild them exactly."""
    if not (run_dir / BASE_FOLDER / ckpt.WEIGHTS_FILE).is_file():
        ckpt.save_checkpoint(model.config, base_tensors(model.state_dict()), run_dir / BASE_FOLDER)


def load_base(run_dir: str | os.PathLike, run_config: dict, device: str | torch.device = "cpu") -> GPT:
    """The frozen base a LoRA run was trained on: its ``base/`` for random weights, else its ``weights``."""
    expected = GPTConfig.from_dict(run_config["model"])
    if run_config["weights"] == "random":
        return ckpt.load_checkpoint(Path(run_dir) / BASE_FOLDER, device=device, expected=expected)
    from trainer.weights import load_pretrained

    model = load_pretrained(run_config["weights"], device=device)
    if model.config != expected:
        raise UserError(f"{run_config['weights']}: these base weights are not the shape {run_dir} was trained on")
    return model


def load_lora_run(
    run_dir: str | os.PathLike,
    run_config: dict,
    checkpoint: str,
    *,
    device: str | torch.device = "cpu",
    merge: bool = True,
) -> GPT:
    """A LoRA run's ``checkpoint``: its base with the saved adapter, merged into plain ``nn.Linear`` layers
    (or, with ``merge=False``, kept as adapters to train on)."""
    folder = Path(run_dir) / checkpoint
    if not (ckpt.recover(folder) / ADAPTER_WEIGHTS_FILE).is_file():
        raise UserError(f"{folder / ADAPTER_WEIGHTS_FILE} not found: the run has no {checkpoint} checkpoint yet")
    settings = LoraSettings.from_dict(run_config["lora"])
    model = load_adapter(add_adapters(load_base(run_dir, run_config, device), settings), folder)
    return merge_adapters(model) if merge else model


def merge_adapters(model: GPT) -> GPT:
    """Fold every adapter into its layer's weight (``W + B A x alpha / rank``) and drop the LoRA wrappers,
    leaving the plain GPT that files and exports expect."""
    from peft.tuners.lora import LoraLayer

    wrapped = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in wrapped:
        module.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def merge_run(run: str | os.PathLike, out: str | os.PathLike, checkpoint: str = "best") -> Path:
    """Write a LoRA run's checkpoint merged into full weights as a run folder that loads without peft.

    ``out`` gets the run's ``config.json`` (without ``lora``, with ``merged_from``), ``split.json`` and
    ``metrics.jsonl`` when present, and the merged weights as ``best/``."""
    run_dir, out_dir = Path(run).resolve(), Path(out).resolve()
    if checkpoint not in ckpt.CHECKPOINTS:
        raise UserError(f"unknown checkpoint {checkpoint!r}; choose one of {', '.join(ckpt.CHECKPOINTS)}")
    run_config = ckpt.read_run_config(run_dir)
    if not run_config.get("lora"):
        raise UserError(f"{run_dir}: not a LoRA run (its weights are already full; use it as it is)")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir}: already exists and is not an empty folder; choose another --out")
    model = load_lora_run(run_dir, run_config, checkpoint)
    # Written beside ``out`` and renamed into place: a kill -9 mid-merge leaves no half-written run folder.
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ckpt.save_checkpoint(model.config, model.state_dict(), staging / "best")
    for name in ("split.json", "metrics.jsonl"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, staging / name)
    merged_config = {
        **run_config,
        "name": f"{run_config.get('name') or run_dir.name}-merged",
        "lora": None,
        "merged_from": {"run": str(run_dir), "checkpoint": checkpoint, "lora": run_config["lora"]},
    }
    (staging / ckpt.CONFIG_FILE).write_text(json.dumps(merged_config, indent=2) + "\n")
    if out_dir.exists():
        out_dir.rmdir()  # empty, as checked above
    staging.rename(out_dir)
    return out_dir


def add_cli(subparsers) -> None:
    """Register ``merge``."""
    parser = subparsers.add_parser(
        "merge",
        help="merge a LoRA run's adapter into full weights (a run folder that loads without peft)",
        description="Merge the adapter of a LoRA run (finetune --lora-rank) into its base weights and write a run "
        "folder whose best/ holds the full model.",
    )
    parser.add_argument("--run", required=True, help="the LoRA run folder")
    parser.add_argument("--checkpoint", default="best", choices=ckpt.CHECKPOINTS)
    parser.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    print(merge_run(args.run, args.out, args.checkpoint))
    return 0
