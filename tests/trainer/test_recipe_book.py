"""``--recipe book``: known answers against the book's own chapter 7 code, and an untied-head run that trains,
resumes, reloads, generates and exports."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import require
from tests.trainer.cli_errors import one_line_error
from trainer.checkpoint import load_run_model
from trainer.cli import main as trainer_main
from trainer.data import InstructionDataset, collate, encode, format_example, format_prompt, load_entries
from trainer.model import CONFIGS, GPT
from trainer.train import finetune

QUICK = {"model": "tiny", "batch_size": 2, "eval_batches": 1, "lr": 1e-3, "device": "cpu", "progress": False}


# --- the book's reference code, copied verbatim -------------------------------------------------------------
# From rasbt/LLMs-from-scratch, ch07/01_main-chapter-code/exercise_experiments.py (the chapter's exercise
# solutions): format_input, format_input_phi, the texts of InstructionDatasetPhi and InstructionDatasetWithMasking,
# and custom_collate_with_masking_fn (its `device` argument and comments dropped, nothing else changed).


def format_input_phi(entry):
    instruction_text = f"<|user|>\n{entry['instruction']}"

    input_text = f"\n{entry['input']}" if entry["input"] else ""

    return instruction_text + input_text


def format_input(entry):
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )

    input_text = f"\n\n### Input:\n{entry['input']}" if entry["input"] else ""

    return instruction_text + input_text


def book_phi3_text(entry):  # InstructionDatasetPhi.__init__'s full_text
    instruction_plus_input = format_input_phi(entry)
    response_text = f"\n<|assistant|>:\n{entry['output']}"
    return instruction_plus_input + response_text


def book_masking_item(entry, tokenizer):  # InstructionDatasetWithMasking: (instruction_length, encoded_text)
    instruction_plus_input = format_input(entry)
    response_text = f"\n\n### Response:\n{entry['output']}"
    full_text = instruction_plus_input + response_text
    return len(tokenizer.encode(instruction_plus_input)), tokenizer.encode(full_text)


def custom_collate_with_masking_fn(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None):
    batch_max_length = max(len(item) + 1 for instruction_length, item in batch)
    inputs_lst, targets_lst = [], []
    for instruction_length, item in batch:
        new_item = item.copy()
        new_item += [pad_token_id]
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        mask = targets == pad_token_id
        indices = torch.nonzero(mask).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index
        targets[: instruction_length - 1] = -100
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst), torch.stack(targets_lst)


# From ch07/01_main-chapter-code/previous_chapters.py: generate (its sampling branch left out: greedy only),
# text_to_token_ids and token_ids_to_text, as gpt_instruction_finetuning.py uses them for the test set.


def generate(model, idx, max_new_tokens, context_size, eos_id=None):
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if idx_next == eos_id:
            break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def text_to_token_ids(text, tokenizer):
    encoded = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    return torch.tensor(encoded).unsqueeze(0)


def token_ids_to_text(token_ids, tokenizer):
    flat = token_ids.squeeze(0)
    return tokenizer.decode(flat.tolist())


# --- known answers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def book_entries(shared_dir):
    """The book's 1,100-entry instruction-data.json."""
    return load_entries(shared_dir / "datasets" / "instruction-data.json")


def test_phi3_book_style_is_the_books_phi3_text(book_entries):
    """Every entry of the book's data set: the same training text, character for character, as the book's
    InstructionDatasetPhi; the prompt ends with the marker and its colon, as its generation strips it."""
    assert any(entry["input"] for entry in book_entries) and not all(entry["input"] for entry in book_entries)
    for entry in book_entries:
        assert format_example(entry, "phi3-book") == book_phi3_text(entry)
        assert format_prompt(entry, "phi3-book") == format_input_phi(entry) + "\n<|assistant|>:"


def test_book_masking_gives_the_books_targets(book_entries, tokenizer):
    """The book's masking exercise keeps the "\\n\\n### Response:" tokens in the loss: our collate of the
    recipe's data set equals its custom_collate_with_masking_fn, batch by batch, targets and inputs."""
    ours = InstructionDataset(book_entries, tokenizer, "alpaca", loss_on_marker=True).examples
    theirs = [book_masking_item(entry, tokenizer) for entry in book_entries]
    assert [(ids, [index >= length for index in range(len(ids))]) for length, ids in theirs] == ours
    for start in range(0, len(ours), 8):
        our_inputs, our_targets = collate(ours[start : start + 8], mask_prompt=True, max_length=1024)
        book_inputs, book_targets = custom_collate_with_masking_fn(theirs[start : start + 8], allowed_max_length=1024)
        assert torch.equal(our_inputs, book_inputs) and torch.equal(our_targets, book_targets)
    # and it differs from our default masking by exactly the marker's tokens
    default = InstructionDataset(book_entries[:1], tokenizer, "alpaca").examples[0]
    marker_tokens = default[1].index(True) - ours[0][1].index(True)
    assert marker_tokens == len(encode(tokenizer, "\n\n### Response:")) == 5


def test_untied_head_has_the_books_163m_parameters():
    with torch.device("meta"):
        model = GPT(CONFIGS["gpt2"])
        assert model.num_parameters() == 124_439_808
        model.untie_head()
    assert model.num_parameters() == 163_037_184
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 163_037_184
    assert model.lm_head.weight is not model.wte.weight and not model.config.tied_head


def test_untied_head_starts_as_a_copy_of_the_token_embedding():
    torch.manual_seed(0)
    model = GPT(CONFIGS["tiny"]).untie_head()
    assert torch.equal(model.lm_head.weight, model.wte.weight)
    assert model.lm_head.weight.data_ptr() != model.wte.weight.data_ptr()
    assert model.config.to_dict()["tied_head"] is False and "tied_head" not in CONFIGS["tiny"].to_dict()


# --- a real run -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def book_run(tmp_path_factory, sample_data):
    run_dir = tmp_path_factory.mktemp("book") / "book-run"
    finetune(data=sample_data, out=run_dir, style="phi3", recipe="book", max_steps=3, eval_every=2, **QUICK)
    return run_dir


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_book_run_records_its_recipe_and_settings(book_run):
    config = json.loads((book_run / "config.json").read_text())
    assert config["recipe"] == "book" and config["style"] == "phi3-book"
    assert config["model"]["tied_head"] is False
    assert config["train"]["grad_clip"] is None
    # the book evaluates after steps 1, 6, 11, ... (here every 2: 1, 3) and not before training
    assert [row["step"] for row in read_metrics(book_run)] == [1, 3]
    assert (book_run / "loss.png").is_file() and (book_run / "loss-plot.pdf").read_bytes()[:5] == b"%PDF-"


def test_default_recipe_clips_and_evaluates_from_step_0(tmp_path, sample_data):
    run_dir = tmp_path / "default"
    finetune(data=sample_data, out=run_dir, style="phi3", max_steps=3, eval_every=2, **QUICK)
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["recipe"], config["style"], config["train"]["grad_clip"]) == ("default", "phi3", 1.0)
    assert "tied_head" not in config["model"] and [row["step"] for row in read_metrics(run_dir)] == [0, 2, 3]
    assert not (run_dir / "loss-plot.pdf").exists()


def test_untied_head_is_saved_and_loaded(book_run):
    stored = load_file(str(book_run / "best" / "model.safetensors"))
    assert stored["lm_head.weight"].shape == (50257, 64)
    model, _ = load_run_model(book_run, "best")
    assert model.lm_head.weight is not model.wte.weight
    assert torch.equal(model.lm_head.weight, stored["lm_head.weight"])
    assert not torch.equal(model.lm_head.weight, model.wte.weight)  # trained apart from the embedding


def test_resume_keeps_the_book_recipe(tmp_path, sample_data, capsys):
    run_dir = tmp_path / "resumed"
    common = ["finetune", "--data", str(sample_data), "--out", str(run_dir), "--model", "tiny", "--style", "phi3"]
    common += ["--batch-size", "2", "--eval-batches", "1", "--eval-every", "2", "--device", "cpu"]
    assert trainer_main([*common, "--recipe", "book", "--max-steps", "2"]) == 0
    assert trainer_main([*common, "--resume", "--max-steps", "4"]) == 0  # no --recipe: the run's
    config = json.loads((run_dir / "config.json").read_text())
    assert config["recipe"] == "book" and config["model"]["tied_head"] is False
    assert [row["step"] for row in read_metrics(run_dir)] == [1, 2, 3, 4]
    capsys.readouterr()
    error = one_line_error(capsys, [*common, "--resume", "--recipe", "default", "--max-steps", "6"])
    assert "cannot resume, the run was made with different" in error and "recipe" in error


def test_untied_run_generates_with_its_own_head(book_run, tokenizer):
    """``generate_tokens`` (KV cache, ``decode``) picks what full forward passes through the untied head pick."""
    from trainer.generate import generate_tokens

    model, _ = load_run_model(book_run, "best")
    prompt = encode(tokenizer, format_prompt({"instruction": "Name a colour."}, "phi3-book"))
    ours = generate_tokens(model, [prompt], max_new_tokens=6)[0]
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(len(ours)):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert ours == ids[len(prompt) :]


def test_untied_run_exports_to_hf_and_gguf(book_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from trainer.export import export_run
    from trainer.weights import load_pretrained

    model, _ = load_run_model(book_run, "best")
    ids = torch.tensor([[15496, 11, 995, 0, 314, 716]])
    with torch.no_grad():
        expected = model(ids)
    folder = export_run(book_run, tmp_path / "hf", fmt="hf")
    assert json.loads((folder / "config.json").read_text())["tie_word_embeddings"] is False
    hf_model = AutoModelForCausalLM.from_pretrained(folder).float().eval()
    reloaded = load_pretrained(folder)
    assert not reloaded.config.tied_head and reloaded.lm_head.weight is not reloaded.wte.weight
    with torch.no_grad():
        torch.testing.assert_close(hf_model(ids).logits, expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(reloaded(ids), expected, atol=0, rtol=0)

    require(importlib.util.find_spec("gguf") is not None, "gguf not installed")
    import gguf

    path = export_run(book_run, tmp_path / "gguf")
    stored = {t.name: t for t in gguf.GGUFReader(path).tensors}
    head = model.lm_head.weight.detach().numpy()
    assert np.array_equal(np.asarray(stored["output.weight"].data).reshape(head.shape), head)


def test_untied_gguf_answers_in_llama_cpp_as_we_do(book_run, tmp_path, tokenizer):
    """llama.cpp uses the file's ``output`` tensor: its greedy tokens are ours (with the embedding as head
    they would not be)."""
    require(importlib.util.find_spec("llama_cpp") is not None, "llama_cpp not installed")
    from tests.llama_greedy import greedy, load
    from trainer.export import export_run
    from trainer.generate import generate_tokens

    model, _ = load_run_model(book_run, "best")
    entries = load_entries(json.loads((book_run / "config.json").read_text())["data"])[:4]
    prompts = [encode(tokenizer, format_prompt(entry, "phi3-book")) for entry in entries]
    ours = generate_tokens(model, prompts, max_new_tokens=12, batch_size=4)
    llama = load(export_run(book_run, tmp_path / "gguf"))
    theirs = greedy(llama, prompts, 12)
    llama.close()
    assert theirs == ours


def test_book_run_generates_as_the_book_does(book_run, tmp_path, tokenizer):
    """``generate --run`` on a book run answers the test split as gpt_instruction_finetuning.py does: prompted
    with format_input_phi(entry) alone (no marker), greedy to end-of-text, the marker removed from the text."""
    from trainer.generate import generate_file

    out = generate_file(tmp_path / "answers.json", run=book_run, max_new_tokens=10, device="cpu", progress=False)
    answers = json.loads(out.read_text())
    model, _ = load_run_model(book_run, "best")
    for entry in answers:
        input_text = format_input_phi(entry)
        token_ids = generate(model, text_to_token_ids(input_text, tokenizer), 10, 256, eos_id=50256)
        generated_text = token_ids_to_text(token_ids, tokenizer)
        response_text = generated_text[len(input_text) :].replace("<|assistant|>:", "").strip()
        assert entry["model_response"] == response_text
    assert len(answers) == 7
