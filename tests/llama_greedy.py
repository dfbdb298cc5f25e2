"""Greedy decoding with llama.cpp (llama-cpp-python) on a GGUF file, in this process or as a command.

``python -m tests.llama_greedy FILE MAX_NEW_TOKENS [--no-extra-buffers] < prompts.json`` prints the new tokens
of every prompt (a JSON list of token lists) as JSON. Run as a command, a crash inside llama.cpp fails one
test instead of killing the test session. ``--no-extra-buffers`` turns off llama.cpp's weight repacking:
its AMX path crashes on q8_0 weights on CPUs with AMX (llama.cpp issue #20824).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

END_OF_TEXT_ID = 50256


def load(path: str | Path, *, n_ctx: int = 256, extra_buffers: bool = True):
    import llama_cpp.llama_cpp as low
    from llama_cpp import Llama

    defaults = low.llama_model_default_params
    if not extra_buffers:  # Llama() takes its model settings from this function and has no switch for this one

        def without_extra_buffers():
            params = defaults()
            params.use_extra_bufts = False
            return params

        low.llama_model_default_params = without_extra_buffers
    try:
        return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=1, logits_all=False, verbose=False)
    finally:
        low.llama_model_default_params = defaults


def greedy(model, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
    """Each prompt's greedy continuation, end-of-text excluded, as ``trainer.generate.generate_tokens`` counts."""
    results = []
    for prompt in prompts:
        new: list[int] = []
        for token in model.generate(list(prompt), temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            if token == END_OF_TEXT_ID or len(new) == max_new_tokens:
                break
            new.append(token)
        results.append(new)
    return results


if __name__ == "__main__":
    model = load(sys.argv[1], extra_buffers="--no-extra-buffers" not in sys.argv)
    print(json.dumps(greedy(model, json.load(sys.stdin), int(sys.argv[2]))))
    model.close()
