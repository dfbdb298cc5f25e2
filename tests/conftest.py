"""Shared test setup: offline settings, the ../shared folder and the tokenizer ranks file.

Set WORKBENCH_STRICT=1 (CI does) to turn skips for a missing ../shared folder or browser into failures.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("WORKBENCH_SHARED_DIR", REPO.parent / "shared"))
STRICT = os.environ.get("WORKBENCH_STRICT") == "1"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_ranks = SHARED / "tokenizers" / "gpt2.tiktoken"
if _ranks.is_file():
    os.environ.setdefault("WORKBENCH_TOKENIZER_FILE", str(_ranks))


def require(condition: bool, reason: str) -> None:
    """Skip when a local prerequisite is missing; fail instead under WORKBENCH_STRICT=1 (CI)."""
    if not condition:
        if STRICT:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder (book data, judge scores, MMLU CSVs); used by path, never copied."""
    require(SHARED.is_dir(), f"{SHARED} not found (set WORKBENCH_SHARED_DIR)")
    return SHARED


@pytest.fixture(scope="session")
def tokenizer():
    from trainer.tokenizer import get_tokenizer

    return get_tokenizer()


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """Our own bundled instruction sample."""
    return REPO / "datasets" / "instruction-sample.json"


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> Path:
    """A random GPT-2 of the ``tiny`` shape in the Hugging Face layout (model.safetensors + config.json).

    Every tensor is perturbed (biases and LayerNorms too) so that parity tests exercise all of them.
    """
    import torch

    from trainer.model import CONFIGS, GPT
    from trainer.weights import save_hf_checkpoint

    torch.manual_seed(1234)
    model = GPT(CONFIGS["tiny"])
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return save_hf_checkpoint(model, tmp_path_factory.mktemp("tiny_hf"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, sample_data) -> Path:
    """A real run folder: the tiny model fine-tuned for a few steps on the bundled sample (alpaca style)."""
    from trainer.train import finetune

    run_dir = tmp_path_factory.mktemp("runs") / "tiny-run"
    finetune(
        data=sample_data,
        out=run_dir,
        style="alpaca",
        model="tiny",
        max_steps=4,
        batch_size=4,
        lr=1e-3,
        eval_every=2,
        eval_batches=1,
        seed=123,
        device="cpu",
        progress=False,
    )
    return run_dir


@pytest.fixture(scope="session")
def tiny_gguf(tiny_run, tmp_path_factory) -> Path:
    """``tiny_run`` exported as an f32 GGUF file (its Modelfile beside it)."""
    require(importlib.util.find_spec("gguf") is not None, "gguf not installed (pip install -e '.[test]')")
    from trainer.export import export_run

    return export_run(tiny_run, tmp_path_factory.mktemp("export") / "gguf")


# The served model: the tiny shape with GPT-2's 1,024-token window, random weights. The tiny run's 256 tokens
# would not hold a judge prompt (about 330 tokens) and its answer.
SERVED_MODEL = "tiny-gpt2"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """A real ``python -m llama_cpp.server`` on 127.0.0.1 serving a random tiny GPT-2 exported as GGUF.

    Yields a ``tests.llama_server.LlamaServer``: ``base_url`` (``http://127.0.0.1:PORT/v1``), ``model`` (the
    id it serves), ``process``, ``kill()`` and ``start_another()`` (a second server on another port). Every
    server started is stopped at the end of the session.
    """
    require(
        importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("gguf") is not None,
        "llama-cpp-python[server] or gguf not installed (pip install -e '.[test]')",
    )
    import torch

    from tests.llama_server import LlamaServerPool
    from trainer.export import write_gguf
    from trainer.model import CONFIGS, GPT

    folder = tmp_path_factory.mktemp("llama_server")
    torch.manual_seed(0)
    config = dataclasses.replace(CONFIGS["tiny"], context_length=1024)
    gguf_file = write_gguf(GPT(config), folder / f"{SERVED_MODEL}.gguf", name=SERVED_MODEL)
    pool = LlamaServerPool(gguf_file, SERVED_MODEL, n_ctx=config.context_length, log_dir=folder)
    try:
        yield pool.start()
    finally:
        pool.close()
