"""LoRA fine-tuning (``finetune --lora-rank``): a frozen base, small adapter checkpoints in peft's layout, a merge
that gives the same logits, and every consumer of a run (generate, export, bench, the store) taking adapter runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.cli_errors import one_line_error
from tests.trainer.test_train import kill_once_past, read_metrics
from trainer.checkpoint import load_run_model
from trainer.cli import main as trainer_main
from trainer.lora import LoraSettings, add_adapters, load_base, load_lora_run, merge_run, trainable_line
from trainer.model import CONFIGS, GPT
from trainer.train import finetune

LORA = LoraSettings(rank=8, alpha=16.0)
QUICK = {"model": "tiny", "batch_size": 4, "eval_batches": 1, "lr": 1e-2, "device": "cpu", "progress": False}
ADAPTER_FILES = {"adapter_model.safetensors", "adapter_config.json", "config.json"}
TOKENS = torch.tensor([[15496, 11, 995, 0, 318, 257, 1332, 13], [40, 716, 257, 3303, 13, 50256, 50256, 50256]])


def files_of(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, sample_data) -> Path:
    """The tiny model's random weights with rank-8 adapters trained for 6 steps."""
    run_dir = tmp_path_factory.mktemp("lora") / "tiny-lora"
    finetune(data=sample_data, out=run_dir, max_steps=6, eval_every=2, seed=123, lora=LORA, **QUICK)
    return run_dir


@pytest.fixture(scope="module")
def merged_run(lora_run, tmp_path_factory) -> Path:
    return merge_run(lora_run, tmp_path_factory.mktemp("merged") / "tiny-lora-merged")


def logits(model: GPT) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(TOKENS)


def test_lora_lowers_the_validation_loss_and_saves_the_adapter_alone(lora_run):
    rows = read_metrics(lora_run)
    assert [row["step"] for row in rows] == [0, 2, 4, 6]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.1
    for checkpoint in ("best", "last"):
        assert files_of(lora_run / checkpoint) == ADAPTER_FILES | ({"state.pt"} if checkpoint == "last" else set())
    adapter = (lora_run / "best" / "adapter_model.safetensors").stat().st_size
    base = (lora_run / "base" / "model.safetensors").stat().st_size
    assert adapter < base / 100  # 16,384 adapter weights against 3.3M
    peft_config = json.loads((lora_run / "best" / "adapter_config.json").read_text())
    assert (peft_config["peft_type"], peft_config["r"], peft_config["lora_alpha"]) == ("LORA", 8, 16.0)
    assert sorted(peft_config["target_modules"]) == ["c_attn", "c_fc", "c_proj"]
    config = json.loads((lora_run / "config.json").read_text())
    assert config["lora"] == {"rank": 8, "alpha": 16.0, "targets": ["c_attn", "c_proj", "c_fc"], "dropout": 0.0}
    # rank 8 x (64 + 192) + 8 x (64 + 64) + 8 x (64 + 256) + 8 x (256 + 64), in each of 2 blocks
    assert "trainable: 16,384 of 3,349,312 parameters (0.49 %)" in (lora_run / "train.log").read_text()


def test_only_the_adapter_changes(lora_run, tmp_path, tiny_hf_dir, sample_data):
    """The random base saved in the run is the seed's initial model; from a weights folder, the base stays as
    loaded, and only lora_A/lora_B tensors moved (lora_B starts at zero)."""
    torch.manual_seed(123)
    initial = GPT(CONFIGS["tiny"]).state_dict()
    saved_base = load_file(str(lora_run / "base" / "model.safetensors"))
    assert saved_base.keys() == initial.keys() - {"lm_head.weight"}
    for name, tensor in saved_base.items():
        torch.testing.assert_close(tensor, initial[name], rtol=0, atol=0)

    from trainer.weights import load_pretrained

    run_dir = tmp_path / "from-folder"
    finetune(data=sample_data, out=run_dir, weights=str(tiny_hf_dir), max_steps=2, eval_every=2, lora=LORA, **QUICK)
    assert not (run_dir / "base").exists()  # the weights folder is the base: nothing copied
    before = load_pretrained(tiny_hf_dir).state_dict()
    after = load_lora_run(run_dir, json.loads((run_dir / "config.json").read_text()), "last", merge=False)
    after_weights = after.state_dict()
    adapters = {name for name in after_weights if ".lora_" in name}
    assert {name.replace(".base_layer.", ".") for name in after_weights.keys() - adapters} == before.keys()
    for name, tensor in after_weights.items():
        if name in adapters:
            continue
        torch.testing.assert_close(tensor, before[name.replace(".base_layer.", ".")], rtol=0, atol=0)
    assert all(after_weights[name].abs().sum() > 0 for name in adapters if ".lora_B." in name)


def test_merged_weights_give_the_logits_of_base_plus_adapter(lora_run):
    config = json.loads((lora_run / "config.json").read_text())
    with_adapter = load_lora_run(lora_run, config, "best", merge=False)
    merged, run_config = load_run_model(lora_run)
    assert run_config == config and not merged.training
    assert all(type(module) is torch.nn.Linear for name, module in merged.named_modules() if "c_" in name[-6:])
    assert merged.lm_head.weight is merged.wte.weight
    assert set(merged.state_dict()) == set(GPT(CONFIGS["tiny"]).state_dict())
    torch.testing.assert_close(logits(merged), logits(with_adapter))
    assert not torch.allclose(logits(merged), logits(load_base(lora_run, config)))  # the adapter does something


def test_peft_itself_loads_the_adapter_folder(lora_run):
    """The files are peft's layout: ``PeftModel.from_pretrained`` on the base gives our merged model's logits."""
    from peft import PeftModel

    base = load_base(lora_run, json.loads((lora_run / "config.json").read_text()))
    with_peft = PeftModel.from_pretrained(base, str(lora_run / "best"))
    with torch.no_grad():
        peft_logits = with_peft.eval()(TOKENS)
    torch.testing.assert_close(peft_logits, logits(load_run_model(lora_run)[0]))


def test_merge_command_writes_a_full_run_that_loads_without_peft(lora_run, merged_run, tmp_path, capsys):
    assert files_of(merged_run / "best") == {"model.safetensors", "config.json"}
    assert {"config.json", "split.json", "metrics.jsonl"} <= files_of(merged_run)
    merged_config = json.loads((merged_run / "config.json").read_text())
    assert merged_config["lora"] is None and merged_config["merged_from"]["run"] == str(lora_run)
    probe = (
        "import sys; from trainer.checkpoint import load_run_model; "
        f"load_run_model({str(merged_run)!r}); print('peft' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"
    torch.testing.assert_close(logits(load_run_model(merged_run)[0]), logits(load_run_model(lora_run)[0]))

    out = tmp_path / "via-cli"
    assert trainer_main(["merge", "--run", str(lora_run), "--checkpoint", "last", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    torch.testing.assert_close(logits(load_run_model(out)[0]), logits(load_run_model(lora_run, "last")[0]))


def test_rank_8_on_gpt2_medium_trains_under_one_percent():
    with torch.device("meta"):
        model = add_adapters(GPT(CONFIGS["gpt2-medium"]), LORA)
    line, trainable, total = trainable_line(model)
    print(line)
    # 24 blocks x rank 8 x (1024 + 3072 + 1024 + 1024 + 1024 + 4096 + 4096 + 1024)
    assert trainable == 24 * 8 * 16384 and trainable / total < 0.01
    assert line == f"trainable: {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f} %)"
    assert all(param.requires_grad == (".lora_" in name) for name, param in model.named_parameters())


BAD_FLAGS = {
    "rank 0": (["--lora-rank", "0"], "error: --lora-rank must be at least 1, got 0"),
    "unknown target": (
        ["--lora-rank", "8", "--lora-targets", "c_attn,wte"],
        "error: --lora-targets: unknown module 'wte'; choose from c_attn, c_proj, c_fc",
    ),
    "alpha alone": (["--lora-alpha", "16"], "error: --lora-alpha needs --lora-rank"),
    "dropout 1": (["--lora-rank", "4", "--lora-dropout", "1"], "error: --lora-dropout must be in [0, 1), got 1.0"),
    "with the book's recipe": (
        ["--lora-rank", "4", "--recipe", "book"],
        "error: --recipe book reproduces the book's full fine-tuning; --lora-rank is not part of it",
    ),
    "with fsdp": (
        ["--lora-rank", "4", "--fsdp"],
        "error: --fsdp with --lora-rank is not supported: LoRA keeps the frozen base whole; train under DDP",
    ),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_bad_lora_flags_are_one_error_line(case, tmp_path, sample_data, capsys):
    flags, message = BAD_FLAGS[case]
    argv = ["finetune", "--data", str(sample_data), "--out", str(tmp_path / "run"), "--model", "tiny", *flags]
    assert one_line_error(capsys, argv).strip() == message
    assert not (tmp_path / "run").exists()


def test_merge_refuses_a_full_run_and_a_taken_out(tiny_run, lora_run, tmp_path, capsys):
    err = one_line_error(capsys, ["merge", "--run", str(tiny_run), "--out", str(tmp_path / "m")])
    assert err.strip() == f"error: {tiny_run}: not a LoRA run (its weights are already full; use it as it is)"
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    err = one_line_error(capsys, ["merge", "--run", str(lora_run), "--out", str(tmp_path / "taken")])
    taken = tmp_path / "taken"
    assert err.strip() == f"error: {taken}: already exists and is not an empty folder; choose another --out"
    assert (tmp_path / "taken" / "x").read_text() == "keep"
    err = one_line_error(capsys, ["merge", "--run", str(lora_run), "--out", str(tmp_path / "taken" / "x")])
    assert "already exists and is not an empty folder" in err and (tmp_path / "taken" / "x").read_text() == "keep"
    (tmp_path / "empty").mkdir()
    assert trainer_main(["merge", "--run", str(lora_run), "--out", str(tmp_path / "empty")]) == 0
    assert {path.name for path in tmp_path.iterdir()} == {"taken", "empty"}  # no staging folder left behind


def test_generation_of_a_lora_run_is_its_merged_runs(lora_run, merged_run, tmp_path):
    from trainer.generate import generate_file

    settings = {"max_new_tokens": 6, "batch_size": 4, "device": "cpu", "progress": False, "split": "val"}
    responses = [
        json.loads(generate_file(tmp_path / f"{name}.json", run=run, **settings).read_text())
        for name, run in (("lora", lora_run), ("merged", merged_run))
    ]
    assert [e["model_response"] for e in responses[0]] == [e["model_response"] for e in responses[1]]
    assert len(responses[0]) == 5


def test_export_of_a_lora_run_is_its_merged_runs(lora_run, merged_run, tmp_path):
    from trainer.export import export_run

    exported = [export_run(run, tmp_path / name, fmt="hf") for name, run in (("lora", lora_run), ("m", merged_run))]
    tensors = [load_file(str(folder / "model.safetensors")) for folder in exported]
    assert tensors[0].keys() == tensors[1].keys()
    for name in tensors[0]:
        torch.testing.assert_close(tensors[0][name], tensors[1][name], rtol=0, atol=0)


def test_the_workbench_imports_and_benchmarks_a_lora_run(lora_run, tmp_path):
    from workbench import importing, store
    from workbench.bench import run_benchmark

    db_path = tmp_path / "workbench.db"
    summary = importing.import_path(store.open_db(db_path), lora_run)
    assert summary.models == [lora_run.name] and summary.metrics == 4
    db = store.open_db(db_path)
    model = db["models"].get(store.model_id(db, lora_run.name))
    assert json.loads(model["config_json"])["lora"]["rank"] == 8
    mc_sample = Path(__file__).resolve().parents[2] / "datasets" / "mc-sample"
    bench = run_benchmark(db_path, run=str(lora_run), mmlu_dir=mc_sample, limit=1)
    assert bench["model"] == lora_run.name and len(bench["samples"]) == 4


def _finetune_command(sample_data, out: Path, *extra: str) -> list[str]:
    return [
        *("-m", "trainer", "finetune", "--data", str(sample_data), "--model", "tiny", "--out", str(out)),
        *("--max-steps", "12", "--eval-every", "2", "--seed", "5", "--batch-size", "2", "--eval-batches", "1"),
        *("--lr", "1e-2", "--device", "cpu", "--lora-rank", "4", *extra),
    ]


@pytest.mark.slow
def test_resume_of_a_lora_run_after_kill_9_continues_the_same_curve(tmp_path, sample_data):
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, *_finetune_command(sample_data, killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    kill_once_past(process, killed, step=4)
    assert read_metrics(killed)[-1]["step"] < 12  # really interrupted mid-run
    assert trainer_main(_finetune_command(sample_data, killed, "--resume")[2:]) == 0
    assert trainer_main(_finetune_command(sample_data, tmp_path / "reference")[2:]) == 0
    resumed_rows, reference_rows = read_metrics(killed), read_metrics(tmp_path / "reference")
    assert [row["step"] for row in resumed_rows] == list(range(0, 13, 2))
    for resumed, expected in zip(resumed_rows, reference_rows, strict=True):
        assert resumed["tokens_seen"] == expected["tokens_seen"]
        assert resumed["train_loss"] == pytest.approx(expected["train_loss"], abs=1e-4)
        assert resumed["val_loss"] == pytest.approx(expected["val_loss"], abs=1e-4)
    state = torch.load(killed / "last" / "state.pt", weights_only=True)
    assert all(".lora_" in name for name in state["optimizer"]["state"])  # AdamW moments of the adapters only


def test_resume_with_other_lora_settings_is_refused(lora_run, tmp_path, sample_data):
    from trainer.errors import UserError

    run_dir = tmp_path / "copy"
    shutil.copytree(lora_run, run_dir)
    other = LoraSettings(rank=4, alpha=16.0)
    with pytest.raises(UserError, match="cannot resume, the run was made with different lora"):
        finetune(data=sample_data, out=run_dir, resume=True, max_steps=8, eval_every=2, lora=other, **QUICK)


@pytest.mark.slow
def test_lora_under_torchrun_two_processes_on_gloo(tmp_path, sample_data):
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += _finetune_command(sample_data, run_dir)[1:]
    command[command.index("--max-steps") + 1] = "4"
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows] == [0, 2, 4] and rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert files_of(run_dir / "last") == ADAPTER_FILES | {"state.pt"}
    load_run_model(run_dir, "last")


def _without_base(run_dir: Path) -> str:
    shutil.rmtree(run_dir / "base")
    return f"{run_dir / 'base' / 'config.json'} not found: not a checkpoint folder"


def _torn_adapter(run_dir: Path) -> str:
    path = run_dir / "best" / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    return f"{path}: cannot read the adapter"


def _other_rank(run_dir: Path) -> str:
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "lora": {**config["lora"], "rank": 4}}))
    return f"{run_dir / 'best' / 'adapter_model.safetensors'}: the adapter does not match the run's LoRA settings"


def _no_checkpoint(run_dir: Path) -> str:
    shutil.rmtree(run_dir / "best")
    return f"{run_dir / 'best' / 'adapter_model.safetensors'} not found: the run has no best checkpoint yet"


@pytest.mark.parametrize("damage", [_without_base, _torn_adapter, _other_rank, _no_checkpoint])
def test_a_damaged_lora_run_is_one_error_line(damage, lora_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(lora_run, run_dir)
    message = damage(run_dir)
    err = one_line_error(capsys, ["export", "--run", str(run_dir), "--format", "hf", "--out", str(tmp_path / "out")])
    assert err.startswith(f"error: {message}")
    assert not (tmp_path / "out").exists()


class RecordingHook:
    """A step hook (``trainer.hooks.StepHook``) that keeps a copy of the weights it is handed."""

    every = 2

    def __init__(self):
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def start(self, context, kept_rows) -> None:
        pass

    def submit(self, step: int, weights: dict[str, torch.Tensor]) -> None:
        self.weights[step] = {name: tensor.clone() for name, tensor in weights.items()}

    def collect(self, wait: bool) -> list[dict]:
        return []

    def plot(self, axes, epochs, rows) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_step_hook_gets_the_merged_weights_of_a_plain_gpt(tmp_path, sample_data):
    """The judge during training (``workbench finetune --judge-every``) loads what it is handed into a plain GPT."""
    hook, run_dir = RecordingHook(), tmp_path / "hooked"
    finetune(data=sample_data, out=run_dir, max_steps=2, eval_every=2, lora=LORA, hook=hook, **QUICK)
    assert sorted(hook.weights) == [0, 2]
    expected = load_run_model(run_dir, "last")[0].state_dict()
    for step in (0, 2):
        assert hook.weights[step].keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(hook.weights[2][name], tensor)
    assert any(not torch.equal(hook.weights[0][name], expected[name]) for name in expected)
