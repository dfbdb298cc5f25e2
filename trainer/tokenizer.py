"""The GPT-2 tokenizer (tiktoken), with an offline path from a ranks file.

``tiktoken.get_encoding("gpt2")`` downloads its files. Offline, the same encoding is built from a ``.tiktoken``
ranks file: one given explicitly, the one named by ``WORKBENCH_TOKENIZER_FILE``, or the copy shipped inside the
``openai-whisper`` package (``pip install --no-deps openai-whisper``; it is never imported, only read).
"""

from __future__ import annotations

import functools
import importlib.util
import math
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


def byte_level_alphabet() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (``bytes_to_unicode``): how vocabulary files spell
    tokens. Printable Latin-1 bytes stand for themselves; the rest are moved to code points from 256 up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = {byte: chr(byte) for byte in printable}
    moved = (byte for byte in range(256) if byte not in alphabet)
    alphabet |= {byte: chr(256 + n) for n, byte in enumerate(moved)}
    return alphabet


@functools.lru_cache(maxsize=2)
def vocab_and_merges(tokenizer_file: str | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The GPT-2 vocabulary (byte-level spelling -> id, end-of-text included) and its 50,000 merges, in rank
    order, recovered from the tiktoken ranks: what Hugging Face tokenizer files and GGUF files store.

    tiktoken keeps only the ranks. A token's merge is the pair that byte-pair encoding its bytes with the
    lower ranks alone leaves, so it is found by running that encoding until two parts remain.
    """
    ranks = get_tokenizer(tokenizer_file)._mergeable_ranks
    alphabet = byte_level_alphabet()

    def spelled(token: bytes) -> str:
        return "".join(alphabet[byte] for byte in token)

    def split_in_two(token: bytes, rank: int) -> tuple[bytes, bytes]:
        parts = [bytes([byte]) for byte in token]
        while len(parts) > 2:
            pairs = [(ranks.get(a + b, math.inf), i) for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))]
            _, i = min(pair for pair in pairs if pair[0] < rank)
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return parts[0], parts[1]

    ordered = sorted(ranks.items(), key=lambda item: item[1])
    merges = [tuple(map(spelled, split_in_two(token, rank))) for token, rank in ordered if len(token) > 1]
    vocab = {spelled(token): rank for token, rank in ordered} | {END_OF_TEXT: END_OF_TEXT_ID}
    return vocab, merges


def save_hf_tokenizer(folder: str | os.PathLike) -> Path:
    """Write the GPT-2 tokenizer in Hugging Face's files (``tokenizer.json``, ``vocab.json``, ``merges.txt``...)
    to ``folder``, offline: what ``AutoTokenizer.from_pretrained`` reads beside the weights."""
    from transformers import GPT2TokenizerFast

    vocab, merges = vocab_and_merges()
    GPT2TokenizerFast(vocab=vocab, merges=merges).save_pretrained(folder)
    return Path(folder)
