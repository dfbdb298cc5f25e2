"""The GPT-2 tokenizer (tiktoken), with an offline path from a ranks file.

``tiktoken.get_encoding("gpt2")`` downloads its files. Offline, the same encoding is built from a ``.tiktoken``
ranks file: one given explicitly, the one named by ``WORKBENCH_TOKENIZER_FILE``, or the copy shipped inside the
``openai-whisper`` package (``pip install --no-deps openai-whisper``; it is never imported, only read).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

from trainer.errors import UserError

END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
ENV_VAR = "WORKBENCH_TOKENIZER_FILE"
# GPT-2's pre-tokenizer split, as in tiktoken_ext.openai_public.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _whisper_ranks() -> Path | None:
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "gpt2.tiktoken"
    return path if path.is_file() else None


def encoding_from_ranks(path: str | os.PathLike) -> tiktoken.Encoding:
    """Build the GPT-2 encoding from a ranks file in tiktoken's format."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer file not found: {path}")
    try:
        ranks = load_tiktoken_bpe(str(path))
    except Exception as exc:  # tiktoken raises bare ValueErrors/binascii errors on a bad file
        raise UserError(f"{path}: not a tiktoken ranks file ({exc})") from exc
    return tiktoken.Encoding(
        name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={END_OF_TEXT: END_OF_TEXT_ID}
    )


@functools.lru_cache(maxsize=8)
def get_tokenizer(tokenizer_file: str | None = None) -> tiktoken.Encoding:
    """The GPT-2 encoding: from ``tokenizer_file``, ``$WORKBENCH_TOKENIZER_FILE``, openai-whisper, or tiktoken."""
    path = tokenizer_file or os.environ.get(ENV_VAR) or _whisper_ranks()
    if path:
        return encoding_from_ranks(path)
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as exc:
        raise UserError(
            "cannot load the GPT-2 tokenizer: tiktoken could not download it "
            f"({type(exc).__name__}). Offline, pass --tokenizer-file PATH or set {ENV_VAR} to a gpt2.tiktoken "
            "ranks file, or run `pip install --no-deps openai-whisper`, which ships one."
        ) from exc
