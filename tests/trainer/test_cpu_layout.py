"""The decoding layout: weights on 2 MiB pages, matrices column-major, same numbers and same model."""

from __future__ import annotations

import gc
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.checkpoint import WEIGHTS_FILE, save_checkpoint
from trainer.cpu_layout import HUGE_PAGE, lay_out_for_streaming
from trainer.generate import generate_tokens
from trainer.model import CONFIGS, GPT, GPTConfig

THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _fresh_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIGS["tiny"]).eval()


def _huge_kib_around(address: int) -> int:
    """``AnonHugePages`` of the mapping of this process that holds ``address``."""
    smaps = Path("/proc/self/smaps").read_text()
    for header, body in re.findall(r"^([0-9a-f]+-[0-9a-f]+) [^\n]*\n((?:[A-Z][^\n]*\n)+)", smaps, re.M):
        start, end = (int(part, 16) for part in header.split("-"))
        if start <= address < end:
            return int(re.search(r"AnonHugePages:\s+(\d+) kB", body).group(1))
    raise AssertionError(f"no mapping holds {address:#x}")


def test_values_parameters_and_logits_stay_the_same():
    model = _fresh_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    identities = {name: id(p) for name, p in model.named_parameters()}
    ids = torch.randint(0, 50257, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids)
    lay_out_for_streaming(model)
    gc.collect()  # the mapping must outlive the Python objects that made it
    assert {name: id(p) for name, p in model.named_parameters()} == identities
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
        if param.dim() == 2:  # column-major: the transposed view of a contiguous [in, out] block
            assert param.stride() == (1, param.shape[0]), name
            assert param.t().is_contiguous(), name
    assert model.lm_head.weight is model.wte.weight  # still tied
    with torch.no_grad():
        torch.testing.assert_close(model(ids), logits, rtol=1e-5, atol=1e-5)


def test_weights_sit_on_huge_pages_once():
    if not THP_SETTING.exists() or "[never]" in THP_SETTING.read_text():
        pytest.skip("this kernel gives no transparent huge pages")
    torch.manual_seed(0)
    model = GPT(GPTConfig(context_length=64, emb_dim=512, n_heads=4, n_layers=2)).eval()  # 100 MB of weights
    lay_out_for_streaming(model)
    address = model.wte.weight.data_ptr()
    assert address % HUGE_PAGE == 0  # the first tensor starts on a 2 MiB boundary
    assert _huge_kib_around(address) >= 2 * 1024  # a private mapping, so THP applies (shared ones are shmem)
    lay_out_for_streaming(model)
    assert model.wte.weight.data_ptr() == address  # once per model


def test_generation_equal_and_the_model_still_trains_and_saves(tmp_path):
    plain, laid_out = _fresh_model(), _fresh_model()
    generator = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 50256, (n,), generator=generator).tolist() for n in (4, 30)]
    lay_out_for_streaming(laid_out)
    expected = [_greedy(plain, prompt, 10) for prompt in prompts]  # the book's way, on the untouched model
    assert generate_tokens(laid_out, prompts, max_new_tokens=10, batch_size=2, eos_id=None) == expected
    assert generate_tokens(laid_out, prompts, max_new_tokens=10, batch_size=1, eos_id=None) == expected

    optimizer = torch.optim.AdamW(laid_out.parameters(), lr=1e-3)
    laid_out.train()
    ids = torch.tensor([prompts[1]])
    loss = torch.nn.functional.cross_entropy(laid_out(ids[:, :-1]).flatten(0, 1), ids[0, 1:])
    loss.backward()
    optimizer.step()
    assert not torch.equal(laid_out.h[0].mlp.c_fc.weight, plain.h[0].mlp.c_fc.weight)  # it trained
    save_checkpoint(laid_out.config, laid_out.state_dict(), tmp_path / "best")
    saved = load_file(tmp_path / "best" / WEIGHTS_FILE)
    for name, param in laid_out.named_parameters():
        assert torch.equal(saved[name], param.detach()), name


def _greedy(model: GPT, prompt: list[int], steps: int) -> list[int]:
    """New tokens by full recompute, one prompt, no cache (the book's method)."""
    ids, new = list(prompt), []
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(torch.tensor([ids]))[0, -1].argmax())
            new.append(token)
            ids.append(token)
    return new
