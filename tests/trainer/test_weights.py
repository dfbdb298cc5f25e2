"""Hugging Face GPT-2 layout: logits parity with transformers, round trips, and clear errors on bad folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import require
from trainer.errors import UserError
from trainer.model import CONFIGS
from trainer.weights import load_pretrained, save_hf_checkpoint

transformers = pytest.importorskip("transformers")


def _token_batch(vocab_size: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (3, 47), generator=torch.Generator().manual_seed(0))


def test_logits_match_transformers(tiny_hf_dir):
    ours = load_pretrained(tiny_hf_dir)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    ids = _token_batch(ours.config.vocab_size)
    with torch.no_grad():
        diff = (ours(ids) - reference(ids).logits).abs().max().item()
    assert diff < 1e-4
    assert ours.config == CONFIGS["tiny"]
    assert ours.lm_head.weight is ours.wte.weight and not ours.training


def test_reads_the_prefixed_layout_transformers_writes(tiny_hf_dir, tmp_path):
    """``save_pretrained`` names tensors ``transformer.h.0...`` (the openai-community files do not)."""
    reference = transformers.GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    reference.save_pretrained(tmp_path)
    assert any(name.startswith("transformer.") for name in load_file(tmp_path / "model.safetensors"))
    ids = _token_batch(reference.config.vocab_size)
    with torch.no_grad():
        diff = (load_pretrained(tmp_path)(ids) - reference(ids).logits).abs().max().item()
    assert diff < 1e-4


def test_round_trip_keeps_every_tensor_and_the_original_names(tiny_hf_dir, tmp_path):
    first = load_pretrained(tiny_hf_dir)
    save_hf_checkpoint(first, tmp_path)
    second = load_pretrained(tmp_path)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    written = load_file(tmp_path / "model.safetensors")
    assert written.keys() == load_file(tiny_hf_dir / "model.safetensors").keys()
    assert "lm_head.weight" not in written
    assert written["h.0.attn.c_attn.weight"].shape == (64, 192)  # Conv1D: [in, out]
    assert written["h.1.mlp.c_proj.weight"].shape == (256, 64)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["n_embd"], config["n_layer"], config["n_head"], config["n_positions"]) == (64, 2, 4, 256)


@pytest.fixture
def broken_dir(tiny_hf_dir, tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(tiny_hf_dir, folder)
    return folder


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def test_missing_files_are_user_errors(broken_dir):
    (broken_dir / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"model\.safetensors: missing"):
        load_pretrained(broken_dir)
    (broken_dir / "config.json").unlink()
    with pytest.raises(UserError, match=r"config\.json: missing"):
        load_pretrained(broken_dir)


def test_shape_mismatch_names_the_tensor(broken_dir):
    _edit_config(broken_dir, n_embd=32, n_head=2)
    message = r"tensor 'h\.0\.attn\.c_attn\.bias' has shape \(192,\), config\.json implies \(96,\)"
    with pytest.raises(UserError, match=message):
        load_pretrained(broken_dir)


def test_missing_layers_are_listed(broken_dir):
    _edit_config(broken_dir, n_layer=3)
    with pytest.raises(UserError, match=r"missing tensors h\.2\.attn\.c_attn\.bias, h\.2\.attn\.c_attn\.weight"):
        load_pretrained(broken_dir)


def test_foreign_tensors_and_corrupt_files_are_refused(broken_dir):
    tensors = load_file(broken_dir / "model.safetensors")
    save_file({**tensors, "score.weight": torch.zeros(2, 64)}, broken_dir / "model.safetensors")
    with pytest.raises(UserError, match="unexpected tensor 'score.weight'"):
        load_pretrained(broken_dir)
    (broken_dir / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_pretrained(broken_dir)
    (broken_dir / "config.json").write_text("{")
    with pytest.raises(UserError, match="invalid JSON at line 1"):
        load_pretrained(broken_dir)


def test_unknown_name_and_offline_download_say_what_to_do(tmp_path):
    with pytest.raises(UserError, match="no such folder, and not a GPT-2 model name"):
        load_pretrained(tmp_path / "nowhere")
    from huggingface_hub import try_to_load_from_cache

    require(try_to_load_from_cache("openai-community/gpt2-xl", "config.json") is None, "gpt2-xl is cached here")
    with pytest.raises(UserError, match=r"huggingface-cli download openai-community/gpt2-xl --local-dir DIR"):
        load_pretrained("gpt2-xl")


def test_unreachable_hub_fails_at_once_without_retries(tmp_path, sample_data):
    """The hub client alone retries for ~25 s before giving up; one failed try must be enough."""
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    env |= {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf-home")}  # nothing listens; no cache
    command = [sys.executable, "-m", "trainer", "finetune", "--data", str(sample_data), "--model", "gpt2"]
    started = time.monotonic()
    result = subprocess.run(
        [*command, "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120, env=env
    )
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(
        "error: cannot download openai-community/gpt2 (http://127.0.0.1:9 does not answer and it is not in the cache)"
    )
    assert result.stderr.count("\n") == 1, result.stderr[-2000:]  # no retry warnings either
    assert "--weights DIR" in result.stderr
    assert seconds < 10  # about 4 s here, most of it importing torch
