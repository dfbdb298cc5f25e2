"""OpenAI's GPT-2 weights in the Hugging Face ``openai-community/gpt2*`` layout: load them, and write it.

That layout is ``model.safetensors`` (tensor names ``wte.weight``, ``h.N.attn.c_attn.weight``, ...,
sometimes prefixed with ``transformer.``) plus a ``config.json`` with ``n_embd``, ``n_layer``, ``n_head``,
``n_positions`` and ``vocab_size``. Its linear layers are ``Conv1D`` modules whose weights are stored
``[in, out]``, the transpose of ``nn.Linear``; that is the only real conversion.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from trainer.errors import UserError
from trainer.model import GPT, TIED_HEAD, GPTConfig

HUB_REPOS = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# Conv1D weights: stored [in, out] by Hugging Face, [out, in] by nn.Linear.
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Tensors some exports carry that hold no learned weights (causal-mask buffers); a tied head repeats wte.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def load_pretrained(name_or_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> GPT:
    """GPT-2 from a local folder in the Hugging Face layout, or by model name (downloaded when online)."""
    folder = _resolve_folder(name_or_dir)
    config = read_config(folder)
    ignored = IGNORED_SUFFIXES + ((TIED_HEAD,) if config.tied_head else ())
    state = _to_our_names(_read_tensors(folder), GPT.stored_shapes(config), folder / WEIGHTS_FILE, ignored)
    return GPT.from_tensors(config, state).to(device).eval()


def save_hf_checkpoint(model: GPT, folder: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model`` as ``model.safetensors`` + ``config.json`` loadable by ``GPT2LMHeadModel``, in ``dtype``."""
    config = model.config
    if not config.qkv_bias:
        raise UserError("the Hugging Face GPT-2 layout needs query/key/value biases; this model has none")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == TIED_HEAD and config.tied_head:
            continue  # tied to wte, as in the original files
        tensor = tensor.detach().to("cpu", dtype)
        tensors[name] = (tensor.t() if name.endswith(TRANSPOSED) else tensor).contiguous()
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(_hf_config(config, dtype), indent=2) + "\n")
    return folder


def _hf_config(config: GPTConfig, dtype: torch.dtype) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_ctx": config.context_length,
        "n_embd": config.emb_dim,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": config.drop_rate,
        "embd_pdrop": config.drop_rate,
        "attn_pdrop": config.drop_rate,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "tie_word_embeddings": config.tied_head,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def _resolve_folder(name_or_dir: str | os.PathLike) -> Path:
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_dir)
    if name not in HUB_REPOS:
        known = ", ".join(HUB_REPOS)
        raise UserError(f"weights {name!r}: no such folder, and not a GPT-2 model name ({known})")
    return _download(name)


def _download(name: str) -> Path:
    """The hub's cached copy of ``name`` (downloaded first when online)."""
    from huggingface_hub import constants, hf_hub_download

    repo = HUB_REPOS[name]
    # Unreachable, the hub's client retries for ~25 s before it falls back to its cache: one quick try decides.
    offline = None
    if constants.HF_HUB_OFFLINE:
        offline = "HF_HUB_OFFLINE is set"
    elif not hub_reachable():
        offline = f"{constants.ENDPOINT} does not answer"
    try:
        for filename in (CONFIG_FILE, WEIGHTS_FILE):
            path = hf_hub_download(repo, filename, local_files_only=offline is not None)
    except Exception as exc:  # offline, no cache, proxy or HTTP errors: all end in the same advice
        reason = f"{offline} and it is not in the cache" if offline else type(exc).__name__
        raise UserError(
            f"cannot download {repo} ({reason}); on a connected machine run "
            f"`huggingface-cli download {repo} --local-dir DIR`, copy DIR here and pass --weights DIR"
        ) from exc
    return Path(path).parent


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the hub (``HF_ENDPOINT``, through any proxy set) answers at all: one try, no retries."""
    import httpx
    from huggingface_hub import constants

    try:
        httpx.head(constants.ENDPOINT, timeout=timeout)  # any HTTP status counts as an answer
    except httpx.HTTPError:  # refused, no DNS, timed out, proxy failure
        return False
    return True


def read_config(folder: Path) -> GPTConfig:
    """The model shape from a Hugging Face GPT-2 folder's ``config.json``."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing (a Hugging Face GPT-2 folder has it beside {WEIGHTS_FILE})")
    try:
        data = json.loads(path.read_text())
        return GPTConfig(
            vocab_size=int(data["vocab_size"]),
            context_length=int(data["n_positions"]),
            emb_dim=int(data["n_embd"]),
            n_heads=int(data["n_head"]),
            n_layers=int(data["n_layer"]),
            drop_rate=0.0,
            tied_head=bool(data.get("tie_word_embeddings", True)),  # transformers' default is tied
        )
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except KeyError as exc:
        raise UserError(f"{path}: not a GPT-2 config, key {exc} missing") from exc
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a GPT-2 config ({exc})") from exc


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing (only the safetensors layout is supported)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from exc


def _to_our_names(
    tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], path: Path, ignored: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Rename, transpose and check every tensor against the shapes the config implies; skip the ``ignored``."""
    state = {}
    for name, tensor in tensors.items():
        name = name.removeprefix("transformer.")
        if name.endswith(ignored):
            continue
        if name not in expected:
            raise UserError(f"{path}: unexpected tensor {name!r} (not a GPT-2 model?)")
        tensor = tensor.t() if name.endswith(TRANSPOSED) else tensor
        if tuple(tensor.shape) != expected[name]:
            raise UserError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, config.json implies {expected[name]}"
            )
        state[name] = tensor.to(torch.float32).contiguous()
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(f"{path}: missing tensors {shown}")
    return state
