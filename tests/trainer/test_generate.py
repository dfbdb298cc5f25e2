"""Generation: exactness against full recompute and transformers, sampling, stopping, and the CLI."""

from __future__ import annotations

import json
import math
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import require
from tests.trainer.cli_errors import one_line_error
from trainer.checkpoint import load_run_model
from trainer.cli import main
from trainer.data import encode, format_prompt, load_entries
from trainer.errors import UserError
from trainer.generate import filter_logits, generate_responses, generate_tokens, next_tokens
from trainer.model import KVCache
from trainer.weights import load_pretrained

MINUS_INF = float("-inf")


@pytest.fixture(scope="module")
def model(tiny_hf_dir):
    return load_pretrained(tiny_hf_dir)


@pytest.fixture(scope="module")
def prompts():
    """Eleven prompts of 3 to 60 tokens (so batches need padding) and one that nearly fills the context."""
    generator = torch.Generator().manual_seed(7)
    lengths = [3, 60, 17, 5, 33, 41, 8, 12, 29, 50, 21, 250]
    return [torch.randint(0, 50256, (n,), generator=generator).tolist() for n in lengths]


def full_recompute(model, prompt, max_new_tokens, eos_id=50256):
    """The book's method: one prompt, no cache, the whole sequence again for every new token."""
    ids, new = list(prompt), []
    with torch.no_grad():
        while len(new) < max_new_tokens and len(ids) < model.config.context_length:
            token = model(torch.tensor([ids]))[0, -1].argmax().item()
            if token == eos_id:
                break
            new.append(token)
            ids.append(token)
    return new


def test_greedy_is_the_same_in_batches_alone_and_without_cache(model, prompts):
    batched = generate_tokens(model, prompts, max_new_tokens=12, batch_size=8)
    alone = generate_tokens(model, prompts, max_new_tokens=12, batch_size=1)
    assert batched == alone
    assert batched == [full_recompute(model, p, 12) for p in prompts]
    assert [len(t) for t in batched] == [12] * 11 + [6]  # the 250-token prompt stops at the 256 context


def test_greedy_matches_transformers_generate(model, prompts, tiny_hf_dir):
    transformers = pytest.importorskip("transformers")
    reference = transformers.GPT2LMHeadModel.from_pretrained(tiny_hf_dir).eval()
    expected = []
    for prompt in prompts[:8]:
        out = reference.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=15,
            do_sample=False,
            pad_token_id=50256,
        )[0, len(prompt) :].tolist()
        expected.append(out[: out.index(50256)] if 50256 in out else out)
    assert generate_tokens(model, prompts[:8], max_new_tokens=15, batch_size=8) == expected


def test_eos_stops_each_row_where_it_appears(model, prompts):
    """With a frequent token declared end-of-text, rows leave the batch at different steps."""
    free = generate_tokens(model, prompts[:8], max_new_tokens=20, eos_id=None)
    eos_id = free[0][3]
    expected = [t[: t.index(eos_id)] if eos_id in t else t for t in free]
    assert len({len(t) for t in expected}) > 1
    assert generate_tokens(model, prompts[:8], max_new_tokens=20, eos_id=eos_id, batch_size=8) == expected
    assert generate_tokens(model, prompts[:8], max_new_tokens=20, eos_id=eos_id, batch_size=3) == expected


def test_sampling_is_reproducible_per_prompt(model, prompts):
    settings = {"max_new_tokens": 10, "temperature": 1.0, "top_k": 50, "seed": 11}
    first = generate_tokens(model, prompts[:6], batch_size=6, **settings)
    assert generate_tokens(model, prompts[:6], batch_size=2, **settings) == first
    assert generate_tokens(model, prompts[3:6], batch_size=6, **settings) == first[3:6]  # resumed runs agree
    assert generate_tokens(model, prompts[:6], batch_size=6, **{**settings, "seed": 12}) != first
    assert first != generate_tokens(model, prompts[:6], max_new_tokens=10)


def test_top_k_and_top_p_filter_known_logits():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [3.0, 1.0, 3.0, 0.0]])
    assert filter_logits(logits, top_k=2).tolist() == [
        [MINUS_INF, 4.0, 3.0, MINUS_INF],
        [3.0, MINUS_INF, 3.0, MINUS_INF],
    ]
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: torch.isfinite(filter_logits(probs, top_p=p))[0].tolist()  # noqa: E731
    assert kept(0.45) == [True, False, False, False]
    assert kept(0.7) == [True, True, False, False]
    assert kept(0.9) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    both = filter_logits(probs, top_k=3, top_p=0.99)
    assert torch.isfinite(both)[0].tolist() == [True, True, True, False]


def test_sampling_draws_only_from_the_kept_tokens():
    logits = torch.tensor([[0.0, math.log(3.0), -1.0, -2.0]]).repeat(4000, 1)
    generator = torch.Generator().manual_seed(0)
    tokens = next_tokens(logits, temperature=1.0, top_k=2, generators=[generator] * 4000)
    counts = torch.bincount(tokens, minlength=4).tolist()
    assert counts[2] == counts[3] == 0
    assert 0.72 < counts[1] / 4000 < 0.78  # 3 : 1 odds
    assert next_tokens(logits[:2], temperature=0.7, top_p=0.5).tolist() == [1, 1]
    assert next_tokens(logits[:2]).tolist() == [1, 1]


def test_bad_decoding_settings_and_prompts(model):
    with pytest.raises(UserError, match="prompt 1: the prompt has 256 tokens, the model's context window 256"):
        generate_tokens(model, [[1, 2], [5] * 256], max_new_tokens=4)
    with pytest.raises(UserError, match="prompt 0: the prompt is empty"):
        generate_tokens(model, [[]], max_new_tokens=4)
    for bad in ({"temperature": -1.0}, {"top_k": 0}, {"top_p": 1.5}, {"max_new_tokens": 0}, {"batch_size": 0}):
        with pytest.raises(UserError):
            generate_tokens(model, [[1, 2]], **{"max_new_tokens": 4, **bad})


@pytest.mark.parametrize("style", ["alpaca", "phi3"])
def test_responses_are_the_text_after_the_marker(model, tokenizer, style):
    entries = [
        {"instruction": "Name a color.", "input": "", "output": "Blue."},
        {"instruction": "Quote: '### Response: <|assistant|>'", "input": "x", "output": "ok"},
    ]
    responses = generate_responses(model, tokenizer, entries, style, max_new_tokens=8, batch_size=2)
    prompts = [encode(tokenizer, format_prompt(entry, style)) for entry in entries]
    new_tokens = generate_tokens(model, prompts, max_new_tokens=8)
    assert responses == [tokenizer.decode(tokens).strip() for tokens in new_tokens]
    assert all(responses)


# --- the `generate` subcommand on a real (tiny) run -----------------------------------------------------

SAMPLING = ["--max-new-tokens", "12", "--temperature", "1.0", "--seed", "5", "--batch-size", "3"]


def _run(capsys, *args) -> tuple[int, str]:
    code = main(["generate", *map(str, args)])
    return code, capsys.readouterr().err


def test_cli_writes_the_test_split_and_resumes(tiny_run, tmp_path, capsys, tokenizer):
    out = tmp_path / "responses.json"
    code, err = _run(capsys, "--run", tiny_run, "--out", out, *SAMPLING)
    assert code == 0, err
    entries = json.loads(out.read_text())
    data = load_entries(json.loads((tiny_run / "config.json").read_text())["data"])
    test_indices = json.loads((tiny_run / "split.json").read_text())["test"]
    assert [(e["instruction"], e["input"], e["output"]) for e in entries] == [
        (data[i]["instruction"], data[i]["input"], data[i]["output"]) for i in test_indices
    ]
    run_model, _ = load_run_model(tiny_run)
    expected = generate_responses(
        run_model,
        tokenizer,
        [data[i] for i in test_indices],
        "alpaca",
        max_new_tokens=12,
        temperature=1.0,
        seed=5,
    )
    assert [e["model_response"] for e in entries] == expected
    assert any(expected)
    meta = json.loads((tmp_path / "responses.meta.json").read_text())
    assert meta["run"] == str(tiny_run.resolve()) and meta["checkpoint"] == "best"
    assert (meta["model_name"], meta["style"], meta["split"], meta["complete"]) == ("tiny", "alpaca", "test", True)
    assert meta["decoding"] == {"max_new_tokens": 12, "temperature": 1.0, "top_k": None, "top_p": None, "seed": 5}

    # An interrupted run: only the first two entries were saved (one with a marker text to prove it is kept).
    partial = [dict(e) for e in entries]
    partial[0]["model_response"] = "KEPT"
    for entry in partial[2:]:
        del entry["model_response"]
    out.write_text(json.dumps(partial))
    code, err = _run(capsys, "--run", tiny_run, "--out", out, *SAMPLING)
    assert code == 0, err
    assert f"({len(entries) - 2} new)" in err
    assert [e["model_response"] for e in json.loads(out.read_text())] == ["KEPT", *expected[1:]]

    # Other settings under the same key are refused; a base model's responses go beside the run's.
    code, err = _run(capsys, "--run", tiny_run, "--out", out, "--max-new-tokens", "5")
    assert code == 2 and "already holds responses under 'model_response'" in err
    code, err = _run(
        capsys,
        "--weights",
        tiny_run / "best",
        "--data",
        data_path(tiny_run),
        "--out",
        out,
        "--response-key",
        "base",
        "--max-new-tokens",
        "4",
    )
    assert code == 2 and "config.json: not a GPT-2 config" in err  # a run checkpoint is not a Hugging Face folder


def data_path(run_dir):
    return json.loads((run_dir / "config.json").read_text())["data"]


def test_cli_base_model_beside_a_run(tiny_run, tiny_hf_dir, tmp_path, capsys):
    out = tmp_path / "both.json"
    assert _run(capsys, "--run", tiny_run, "--out", out, "--max-new-tokens", "3")[0] == 0
    code, err = _run(
        capsys,
        "--weights",
        tiny_hf_dir,
        "--data",
        data_path(tiny_run),
        "--out",
        out,
        "--response-key",
        "base",
        "--max-new-tokens",
        "3",
    )
    assert code == 0, err
    entries = json.loads(out.read_text())
    assert all({"model_response", "base"} <= entry.keys() for entry in entries)
    meta = json.loads((tmp_path / "both.meta.json").read_text())
    assert set(meta["responses"]) == {"model_response", "base"}
    assert meta["responses"]["base"]["weights"] == str(tiny_hf_dir) and meta["response_key"] == "base"


def test_cli_bad_inputs(tiny_run, tiny_hf_dir, tmp_path, capsys):
    no_checkpoint = tmp_path / "empty-run"
    no_checkpoint.mkdir()
    shutil.copy(tiny_run / "config.json", no_checkpoint / "config.json")
    code, err = _run(capsys, "--run", no_checkpoint, "--out", tmp_path / "a.json")
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err

    bad_data = tmp_path / "bad.json"
    bad_data.write_text(json.dumps([{"instruction": "hi", "output": "there"}, {"instruction": "no output"}]))
    code, err = _run(
        capsys, "--weights", tiny_hf_dir, "--data", bad_data, "--split", "all", "--out", tmp_path / "b.json"
    )
    assert code == 2 and "entry 1: 'output' is missing" in err

    long_data = tmp_path / "long.json"
    long_data.write_text(
        json.dumps([{"instruction": "hi", "output": "a"}, {"instruction": "word " * 300, "output": "b"}])
    )
    code, err = _run(
        capsys, "--weights", tiny_hf_dir, "--data", long_data, "--split", "all", "--out", tmp_path / "c.json"
    )
    assert code == 2 and "long.json entry 1: the prompt has" in err and "context window 256" in err

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"instruction": "hi", "output": "there"}]))
    code, err = _run(capsys, "--weights", tiny_hf_dir, "--data", good, "--split", "all", "--out", blocker / "out.json")
    assert code == 2 and "cannot write" in err

    code, err = _run(capsys, "--weights", tiny_hf_dir, "--out", tmp_path / "d.json")
    assert code == 2 and "--data FILE is required with --weights" in err

    existing = tmp_path / "existing.json"
    existing.write_text(json.dumps([{"instruction": "other", "input": "", "output": "x", "model_response": "y"}]))
    code, err = _run(capsys, "--weights", tiny_hf_dir, "--data", good, "--split", "all", "--out", existing)
    assert code == 2 and "entry 0 differs from the data" in err
    assert json.loads(existing.read_text())[0]["model_response"] == "y"  # nothing written over


# --- damaged run files, a changed data file, outputs that are not files: one line, exit 2 -----------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda text: text[:40], "split.json: malformed JSON at line 1"),
        (lambda text: "[1, 2]", "split.json: not the run's split (expected an object with a 'test' list)"),
    ],
    ids=["truncated", "a list"],
)
def test_cli_damaged_split_file(content, message, tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "split.json").write_text(content((run_dir / "split.json").read_text()))
    err = one_line_error(capsys, ["generate", "--run", str(run_dir), "--out", str(tmp_path / "out.json")])
    assert message in err and str(run_dir) in err
    assert not (tmp_path / "out.json").exists()


def test_cli_meta_file_that_is_not_an_object(tiny_run, tmp_path, capsys):
    meta = tmp_path / "out.meta.json"
    meta.write_text("[1]\n")
    err = one_line_error(capsys, ["generate", "--run", str(tiny_run), "--out", str(tmp_path / "out.json")])
    assert f"{meta}: not a generation record (expected a JSON object, got list)" in err
    assert meta.read_text() == "[1]\n" and not (tmp_path / "out.json").exists()


def test_cli_refuses_a_data_file_changed_since_training(tiny_run, tmp_path, capsys):
    """Rotated entries put training entries where the test split was: they must not be answered as "test"."""
    run_dir, data = tmp_path / "run", tmp_path / "data.json"
    shutil.copytree(tiny_run, run_dir)
    entries = json.loads(Path(data_path(tiny_run)).read_text())
    data.write_text(json.dumps(entries[70:] + entries[:70]))
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "data": str(data)}))
    for data_args in ([], ["--data", str(data)]):
        err = one_line_error(capsys, ["generate", "--run", str(run_dir), *data_args, "--out", str(tmp_path / "o.json")])
        assert f"{data}: changed since {run_dir} was trained on it" in err and "--split all" in err
    assert not (tmp_path / "o.json").exists()
    code, err = _run(
        capsys, "--run", run_dir, "--split", "all", "--out", tmp_path / "all.json", "--max-new-tokens", "1"
    )
    assert code == 0, err  # every entry, in file order: no split of the old file is used
    assert len(json.loads((tmp_path / "all.json").read_text())) == len(entries)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway read fails fast instead of filling RAM


@pytest.mark.parametrize("kind", ["/dev/full", "a folder"])
def test_cli_out_that_is_not_a_file(kind, tiny_run, tmp_path):
    require(Path("/dev/full").exists(), "needs Linux /dev/full")
    out = Path(kind) if kind.startswith("/") else tmp_path
    command = [sys.executable, "-m", "trainer", "generate", "--run", str(tiny_run), "--out", str(out)]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr == f"error: {out}: --out must be a JSON file, and this is not a regular file\n"
    assert stat.S_ISCHR(Path("/dev/full").stat().st_mode)  # the device is still there


def test_decode_gives_the_logits_and_cache_of_forward(model):
    """The one-token path equals the general one on a left-padded batch, cache included."""
    config = model.config
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 50256, (2, 6), generator=generator)
    padding = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7]).bool()
    positions = (torch.arange(6)[None, :] - torch.tensor([[2], [0]])).clamp(min=0)
    new = torch.randint(0, 50256, (2,), generator=generator)
    caches = [KVCache(config, 2, 8, "cpu", torch.float32) for _ in range(2)]
    with torch.inference_mode():
        for cache in caches:
            model(ids, attention_mask=padding[:, :6], position_ids=positions, cache=cache)
        general = model(new[:, None], attention_mask=padding, position_ids=torch.tensor([[4], [6]]), cache=caches[0])
        decoded = model.decode(new, torch.tensor([4, 6]), caches[1], padding)
    torch.testing.assert_close(decoded, general[:, -1], rtol=1e-5, atol=1e-5)
    assert caches[0].length == caches[1].length == 7
    for layer in range(config.n_layers):
        torch.testing.assert_close(caches[1].keys[layer][:, :, :7], caches[0].keys[layer][:, :, :7])
        torch.testing.assert_close(caches[1].values[layer][:, :, :7], caches[0].values[layer][:, :, :7])
