"""Chat-template styles (chatml, llama3, phi3-chat, jinja:FILE): exact texts, loss masks on a hand-made
conversation, stop strings, the sandbox, and a template file that changes after training."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import require
from tests.trainer.cli_errors import one_line_error
from trainer.data import (
    InstructionDataset,
    collate,
    extract_response,
    format_example,
    format_prompt,
    response_marker,
    stop_string,
    user_message,
)
from trainer.errors import UserError
from trainer.export import chat_template, modelfile_text
from trainer.train import finetune

E = 50256
ENTRY = {"instruction": "Convert to plural.", "input": "mouse", "output": "mice"}
CONVERSATION = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello. What do you need?"},
        {"role": "user", "content": "The capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
}
# A template in the Hugging Face convention, as a model repository's tokenizer_config.json carries it (Zephyr's).
ZEPHYR = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + '</s>' }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)


@pytest.fixture
def zephyr(tmp_path):
    path = tmp_path / "zephyr.jinja"
    path.write_text(ZEPHYR)
    return f"jinja:{path}"


@pytest.mark.parametrize(
    ("style", "prompt", "closing"),
    [
        ("chatml", "<|im_start|>user\nConvert to plural.\n\nmouse<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>\n"),
        (
            "llama3",
            "<|start_header_id|>user<|end_header_id|>\n\nConvert to plural.\n\nmouse<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            "<|eot_id|>",
        ),
        ("phi3-chat", "<|user|>\nConvert to plural.\n\nmouse<|end|>\n<|assistant|>\n", "<|end|>\n"),
    ],
)
def test_chat_styles_exact_strings(style, prompt, closing):
    assert format_prompt(ENTRY, style) == prompt
    assert format_example(ENTRY, style) == prompt + "mice" + closing
    assert stop_string(style) == closing.strip()


def assistant_targets(tokenizer, style, entry) -> list[str]:
    """The texts the loss trains on with --mask-prompt: each run of kept targets, decoded."""
    ((ids, trained),) = InstructionDataset([entry], tokenizer, style).examples
    _, targets = collate([(ids, trained)], mask_prompt=True)
    runs, current = [], []
    for token in targets[0].tolist() + [-100]:
        if token == -100 and current:
            runs.append(tokenizer.decode(current))
            current = []
        elif token != -100:
            current.append(token)
    return runs


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("chatml", ["Hello. What do you need?<|im_end|>\n", "Paris.<|im_end|>\n<|endoftext|>"]),
        ("llama3", ["Hello. What do you need?<|eot_id|>", "Paris.<|eot_id|><|endoftext|>"]),
        ("phi3-chat", ["Hello. What do you need?<|end|>\n", "Paris.<|end|>\n<|endoftext|>"]),
    ],
)
def test_masks_keep_only_the_assistant_turns(tokenizer, style, expected):
    """A hand-made conversation (system, two user and two assistant turns): with --mask-prompt the loss is on
    both assistant turns, each with the template's closing text, and the end-of-text; nothing else."""
    assert assistant_targets(tokenizer, style, CONVERSATION) == expected
    ((ids, _),) = InstructionDataset([CONVERSATION], tokenizer, style).examples
    assert tokenizer.decode(ids) == format_example(CONVERSATION, style) and E not in ids  # markers are plain text


def test_jinja_file_template_masks_and_stops(tokenizer, zephyr):
    assert format_prompt(CONVERSATION, zephyr) == (
        "<|system|>\nYou are terse.\n<|user|>\nHi!\n<|assistant|>\nHello. What do you need?</s>\n"
        "<|user|>\nThe capital of France?\n<|assistant|>\n"
    )  # eos_token renders empty: the trainer appends GPT-2's end-of-text itself
    assert assistant_targets(tokenizer, zephyr, CONVERSATION) == [
        "Hello. What do you need?</s>\n",
        "Paris.</s>\n<|endoftext|>",
    ]
    assert stop_string(zephyr) == "</s>" and response_marker(zephyr) == "\n<|assistant|>\n"


@pytest.mark.parametrize("style", ["chatml", "llama3", "phi3-chat"])
def test_extract_response_ends_at_the_stop_string(style):
    generated = format_prompt(ENTRY, style) + "mice" + stop_string(style) + "\nmore text the model ran on"
    assert extract_response(generated, style) == "mice"
    assert extract_response(response_marker(style) + " mice ", style) == "mice"  # no stop string: all of it


def test_single_turn_masks_equal_the_prompt_mask(tokenizer):
    ((ids, trained),) = InstructionDataset([ENTRY], tokenizer, "chatml").examples
    prompt_length = trained.index(True)
    assert tokenizer.decode(ids[:prompt_length]) == format_prompt(ENTRY, "chatml")
    assert tokenizer.decode(ids[prompt_length:]) == "mice<|im_end|>\n" and all(trained[prompt_length:])


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% for m in messages %}{{ m.content }", "line 1: not a Jinja template"),
        ("{{ messages.append(1) }}", "the chat template failed"),  # the sandbox refuses to mutate the data
        ("{{ raise_exception('no system role') }}", "the chat template failed (no system role)"),
        (
            "{% for m in messages %}{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}A:{% endif %}",
            "its assistant turns cannot be found",
        ),
    ],
)
def test_bad_templates_are_user_errors(tmp_path, tokenizer, template, message):
    path = tmp_path / "bad.jinja"
    path.write_text(template)
    with pytest.raises(UserError) as caught:
        InstructionDataset([CONVERSATION], tokenizer, f"jinja:{path}")
    assert message in str(caught.value)


def test_unknown_style_and_missing_template(tmp_path, capsys, sample_data):
    base = ["finetune", "--data", str(sample_data), "--out", str(tmp_path / "r"), "--model", "tiny"]
    assert "unknown prompt style 'chatgpt'" in one_line_error(capsys, [*base, "--style", "chatgpt"])
    error = one_line_error(capsys, [*base, "--style", f"jinja:{tmp_path / 'none.jinja'}"])
    assert error == f"error: chat template not found: {tmp_path / 'none.jinja'}\n"
    assert not (tmp_path / "r").exists()


def test_jinja_run_records_the_template_and_refuses_a_changed_one(tmp_path, sample_data, zephyr, capsys):
    run_dir = tmp_path / "run"
    quick = {"model": "tiny", "batch_size": 2, "eval_batches": 1, "device": "cpu", "progress": False}
    finetune(data=sample_data, out=run_dir, style=zephyr, mask_prompt=True, max_steps=1, eval_every=1, **quick)
    config = json.loads((run_dir / "config.json").read_text())
    path = zephyr.removeprefix("jinja:")
    assert config["style"] == zephyr and len(config["style_sha256"]) == 64

    with open(path, "a") as template:
        template.write("{{ '' }}")
    generate = ["generate", "--run", str(run_dir), "--out", str(tmp_path / "answers.json"), "--device", "cpu"]
    assert (
        one_line_error(capsys, generate)
        == f"error: {run_dir}: the chat template {path} changed since the run used it\n"
    )
    resume = ["finetune", "--data", str(sample_data), "--out", str(run_dir), "--model", "tiny", "--style", zephyr]
    error = one_line_error(capsys, [*resume, "--resume", "--max-steps", "2", "--device", "cpu"])
    assert "cannot resume, the run was made with different style_sha256" in error


def test_generation_stops_at_the_stop_string(tokenizer):
    """A row ends once its new tokens end in the style's stop string: the predicate sees the text of the last
    tokens, and ``generate_tokens`` ends the row on the token that makes it true."""
    import torch

    from trainer.generate import generate_tokens, stop_at_string
    from trainer.model import CONFIGS, GPT

    ends = stop_at_string(tokenizer, "chatml")
    assert ends(tokenizer.encode("Paris.<|im_end|>")) and ends(tokenizer.encode("A long answer.<|im_end|>\n"))
    assert not ends(tokenizer.encode("Paris.<|im_end")) and stop_at_string(tokenizer, "alpaca") is None

    torch.manual_seed(0)
    model = GPT(CONFIGS["tiny"])
    prompt = tokenizer.encode(format_prompt(ENTRY, "chatml"))
    free = generate_tokens(model, [prompt], max_new_tokens=12, eos_id=None)[0]
    stopped = generate_tokens(model, [prompt], max_new_tokens=12, eos_id=None, stop=lambda new: new[-1] == free[4])
    assert stopped[0] == free[: free.index(free[4]) + 1]


@pytest.mark.parametrize("style", ["chatml", "llama3", "phi3-chat"])
def test_exported_template_and_modelfile_give_the_training_prompt(style):
    """The GGUF carries the chat style's own template: llama-cpp-python's Jinja chat formatter renders a user
    message to the prompt the model was trained on; the Modelfile stops at the style's stop string too."""
    assert f'PARAMETER stop "{stop_string(style)}"\n' in modelfile_text("m.gguf", style, 256)
    require(importlib.util.find_spec("llama_cpp") is not None, "llama_cpp not installed")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(template=chat_template(style), eos_token="<|endoftext|>", bos_token="")
    rendered = formatter(messages=[{"role": "user", "content": user_message(ENTRY)}])
    assert rendered.prompt == format_prompt(ENTRY, style)


def test_a_chat_file_trains_on_its_reply_with_the_system_message_in_the_prompt(tmp_path, tokenizer):
    """A chat record read by ``load_entries`` keeps its ``messages``: a chat style renders them (system message
    included) and trains on the assistant's reply alone."""
    from trainer.data import load_entries

    path = tmp_path / "chat.jsonl"
    record = {"messages": [{"role": "system", "content": "Be brief."}, *CONVERSATION["messages"][3:]]}
    path.write_text(json.dumps(record) + "\n")
    (entry,) = load_entries(path)
    assert format_prompt(entry, "chatml") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nThe capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert assistant_targets(tokenizer, "chatml", entry) == ["Paris.<|im_end|>\n<|endoftext|>"]


def test_a_multi_turn_chat_file_trains_on_every_assistant_turn_in_a_chat_style(tmp_path, tokenizer, capsys):
    """Loaded whole, a multi-turn record trains on each reply in a chat style; a completion style, which holds
    one instruction, refuses it by entry rather than train on the last exchange alone."""
    from trainer.cli import main as trainer_main
    from trainer.data import load_entries

    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(CONVERSATION) + "\n")
    (entry,) = load_entries(path)
    assert entry["messages"] == CONVERSATION["messages"]
    assert entry["instruction"] == CONVERSATION["messages"][-2]["content"]
    assert entry["output"] == CONVERSATION["messages"][-1]["content"]
    replies = [turn["content"] for turn in CONVERSATION["messages"] if turn["role"] == "assistant"]
    assert [text.split("<|im_end|>")[0] for text in assistant_targets(tokenizer, "chatml", entry)] == replies

    command = ["finetune", "--data", str(path), "--out", str(tmp_path / "run"), "--model", "tiny"]
    assert trainer_main(command) == 2
    assert capsys.readouterr().err == (
        f"error: {path}: entry 0: a conversation of 2 user turns needs a chat style (--style chatml, llama3, "
        "phi3-chat or jinja:FILE); style 'alpaca' holds one instruction\n"
    )
    assert not (tmp_path / "run").exists()
