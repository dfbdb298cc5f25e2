"""Export a run's model for other servers: GGUF (llama.cpp, Ollama) with a Modelfile, or a complete HF folder.

GGUF is llama.cpp's ``gpt2`` architecture: our ``nn.Linear`` weights are already ``[out, in]``, the layout
llama.cpp wants (Hugging Face's Conv1D files are the transpose), a tied head is ``token_embd`` itself so no
``output`` tensor is written (an untied one, as ``--recipe book`` trains, is), and the GPT-2 vocabulary and
merges ride inside the file. The Hugging Face folder is weights, config, tokenizer files and a generation
config: what ``transformers``, vLLM and lm-eval load as is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from trainer.checkpoint import CHECKPOINTS, load_run_model
from trainer.data import chat_template_source, format_prompt, is_chat_style, stop_string
from trainer.errors import UserError
from trainer.files import write_atomically
from trainer.model import GPT, TIED_HEAD
from trainer.tokenizer import END_OF_TEXT, END_OF_TEXT_ID, vocab_and_merges

FORMATS = ("gguf", "hf")
DTYPES = ("f32", "f16", "q8_0")
HF_DTYPES = {"f32": torch.float32, "f16": torch.float16}
MODELFILE = "Modelfile"
LAYER_NORM_EPS = 1e-5  # trainer.model's LayerNorms
# Our tensor names (per block after ``h.N.``) -> llama.cpp's ``gpt2`` names (per block after ``blk.N.``).
GLOBAL_NAMES = {
    "wte.weight": "token_embd.weight",
    "wpe.weight": "position_embd.weight",
    "ln_f.weight": "output_norm.weight",
    "ln_f.bias": "output_norm.bias",
    TIED_HEAD: "output.weight",  # written only when untied: llama.cpp's gpt2 falls back to token_embd without it
}
BLOCK_NAMES = {
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}


def gguf_tensor_name(name: str) -> str:
    """llama.cpp's name for one of our state-dict tensors (``h.0.attn.c_attn.weight`` -> ``blk.0.attn_qkv.weight``)."""
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    _, layer, rest = name.split(".", 2)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{BLOCK_NAMES[module]}.{kind}"


def chat_template(style: str) -> str:
    """A Jinja chat template that turns chat messages into the run's prompt: servers that read the GGUF's
    template (llama.cpp's) then answer chat completions in the style the model was trained on. The messages'
    contents, joined by blank lines, stand where an entry's instruction would. A chat style's own template
    is written as it is."""
    if is_chat_style(style):
        return chat_template_source(style)
    marker = "\x00INSTRUCTION\x00"
    before, after = format_prompt({"instruction": marker}, style).split(marker)
    joined = "{% for message in messages %}{{ message['content'] }}{% if not loop.last %}\n\n{% endif %}{% endfor %}"
    return _jinja_text(before) + joined + _jinja_text(after)


def _jinja_text(text: str) -> str:
    """``text`` as a Jinja literal, so that braces in a prompt style are never read as template syntax."""
    return "{{ " + json.dumps(text) + " }}" if text else ""


def write_gguf(
    model: GPT, path: str | os.PathLike, *, dtype: str = "f32", name: str = "gpt2", style: str = "alpaca"
) -> Path:
    """Write ``model`` as a llama.cpp ``gpt2`` GGUF file at ``path`` (written beside it, then renamed).

    ``dtype`` f32 keeps every tensor as trained; f16 and q8_0 convert the matrices and keep the 1-D tensors
    (norms, biases) and the position embeddings in f32, as llama.cpp's own converter does. ``style`` sets the
    chat template the file carries.
    """
    import gguf

    if dtype not in DTYPES:
        raise UserError(f"unknown GGUF dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    config = model.config
    if not config.qkv_bias:
        raise UserError("llama.cpp's gpt2 architecture needs query/key/value biases; this model has none")
    path = Path(path)
    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    vocab, merges = vocab_and_merges()
    tokens = sorted(vocab, key=vocab.__getitem__)
    if len(tokens) != config.vocab_size:
        raise UserError(f"the model has {config.vocab_size} token embeddings, the GPT-2 tokenizer {len(tokens)}")
    writer = gguf.GGUFWriter(None, "gpt2")
    writer.add_name(name)
    writer.add_context_length(config.context_length)
    writer.add_embedding_length(config.emb_dim)
    writer.add_feed_forward_length(4 * config.emb_dim)
    writer.add_block_count(config.n_layers)
    writer.add_head_count(config.n_heads)
    writer.add_layer_norm_eps(LAYER_NORM_EPS)
    writer.add_file_type(file_types[dtype])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i == END_OF_TEXT_ID else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    writer.add_token_merges([f"{left} {right}" for left, right in merges])
    writer.add_bos_token_id(END_OF_TEXT_ID)
    writer.add_eos_token_id(END_OF_TEXT_ID)
    writer.add_add_bos_token(False)  # GPT-2 prompts start with their first word, never with end-of-text
    writer.add_chat_template(chat_template(style))
    if dtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for tensor_name, tensor in model.state_dict().items():
        if tensor_name == TIED_HEAD and config.tied_head:
            continue
        _add_tensor(writer, gguf_tensor_name(tensor_name), tensor.detach().to("cpu", torch.float32).numpy(), dtype)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        writer.write_header_to_file(partial)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, path)
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        partial.unlink(missing_ok=True)
    return path


def _add_tensor(writer, name: str, array: np.ndarray, dtype: str) -> None:
    import gguf

    if dtype == "f32" or array.ndim == 1 or name == "position_embd.weight":
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    elif dtype == "q8_0" and gguf.quants.Q8_0.can_quantize(array):
        quantized = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:  # f16, and q8_0's matrices whose rows are not whole blocks of 32 (llama.cpp's converter does the same)
        writer.add_tensor(name, array.astype(np.float16))


def modelfile_text(gguf_name: str, style: str, context_length: int) -> str:
    """An Ollama ``Modelfile`` for the GGUF beside it: the run's prompt around the user's message, greedy and
    unpenalised as ``generate`` decodes (Ollama's default repeat penalty would change the answers), stopping at
    end-of-text (and a chat style's stop string), with the model's context window (Ollama's default is longer
    than GPT-2's)."""
    template = format_prompt({"instruction": "{{ .Prompt }}"}, style)
    stops = [END_OF_TEXT, *filter(None, [stop_string(style)])]
    return (
        f"FROM ./{gguf_name}\n"
        f'TEMPLATE """{template}"""\n'
        + "".join(f'PARAMETER stop "{stop}"\n' for stop in stops)
        + "PARAMETER temperature 0\n"
        "PARAMETER repeat_penalty 1\n"
        f"PARAMETER num_ctx {context_length}\n"
    )


def write_hf_folder(model: GPT, folder: str | os.PathLike, *, dtype: str = "f32") -> Path:
    """A complete Hugging Face GPT-2 folder: weights and config, tokenizer files, a generation config (greedy,
    end-of-text); ``AutoModelForCausalLM``/``AutoTokenizer``, vLLM and lm-eval's ``hf`` backend load it as is.

    The files are written in a folder beside ``folder`` and then moved in, so a kill or a full disk leaves
    ``folder`` as it was (apart from the instant of the moves)."""
    from trainer.tokenizer import save_hf_tokenizer
    from trainer.weights import save_hf_checkpoint

    if dtype not in HF_DTYPES:
        raise UserError(f"the Hugging Face format takes --dtype {' or '.join(HF_DTYPES)}, not {dtype!r}")
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    generation = {"bos_token_id": END_OF_TEXT_ID, "eos_token_id": END_OF_TEXT_ID, "do_sample": False}
    try:
        save_hf_checkpoint(model, staging, dtype=HF_DTYPES[dtype])
        save_hf_tokenizer(staging)
        (staging / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        folder.mkdir(parents=True, exist_ok=True)
        for path in staging.iterdir():
            os.replace(path, folder / path.name)
    except OSError as exc:
        raise UserError(f"{folder}: cannot write ({exc.strerror or exc})") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def export_run(
    run: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fmt: str = "gguf",
    checkpoint: str = "best",
    dtype: str = "f32",
    force: bool = False,
) -> Path:
    """Export a run's ``checkpoint`` to the folder ``out``: ``NAME-DTYPE.gguf`` and a ``Modelfile`` (gguf), or
    a Hugging Face folder (hf). Returns the GGUF file's path, or the folder. An ``out`` that holds files is
    refused unless ``force`` (then the exported files replace their namesakes and nothing else is touched)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if dtype not in (DTYPES if fmt == "gguf" else HF_DTYPES):
        choices = DTYPES if fmt == "gguf" else HF_DTYPES
        raise UserError(f"--format {fmt} takes --dtype {', '.join(choices)}, not {dtype!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(
            f"{out}: folder is not empty; choose a new --out, or pass --force to replace the exported files"
        )
    model, run_config = load_run_model(run, checkpoint)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the folder ({exc.strerror or exc})") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"{out}: cannot write into the folder (permission denied)")
    if fmt == "hf":
        return write_hf_folder(model, out, dtype=dtype)
    name = run_config.get("name") or Path(run).resolve().name
    style = run_config["style"]
    path = write_gguf(model, out / f"{name}-{dtype}.gguf", dtype=dtype, name=name, style=style)
    write_atomically(out / MODELFILE, modelfile_text(path.name, style, model.config.context_length))
    return path


def add_cli(subparsers) -> None:
    """Register ``export``."""
    parser = subparsers.add_parser(
        "export",
        help="export a run as GGUF (llama.cpp, Ollama) or a Hugging Face folder",
        description="Write a run's model as a GGUF file with an Ollama Modelfile beside it, or as a complete "
        "Hugging Face folder (weights, config, tokenizer, generation config).",
    )
    parser.add_argument("--run", required=True, help="run folder written by `finetune`")
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    parser.add_argument("--format", choices=FORMATS, default="gguf", dest="fmt")
    parser.add_argument("--out", required=True, help="folder to write (new or empty, or any with --force)")
    parser.add_argument("--dtype", choices=DTYPES, default="f32", help="f32 (default), f16, or q8_0 (GGUF only)")
    parser.add_argument("--force", action="store_true", help="write into a folder that already holds files")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> None:
    path = export_run(args.run, args.out, fmt=args.fmt, checkpoint=args.checkpoint, dtype=args.dtype, force=args.force)
    print(f"wrote {path}", file=sys.stderr)
