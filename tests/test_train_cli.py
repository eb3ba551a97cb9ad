"""`tunelens train`, `tunelens data show-mask` and `accelerate launch` with two CPU processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tunelens.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _write_data(path, n=8):
    rows = [{"id": f"r{i}", "prompt": f"Write function {i}.", "completion": "def f(x):\n" + "    x = x * 2\n" * (i % 3 + 1)}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_command_yaml_then_flags(tmp_path, tiny_model_dir):
    data = _write_data(tmp_path / "pairs.jsonl")
    config = tmp_path / "train.yaml"
    config.write_text("max_steps: 3\nbatch_size: 2\nlearning_rate: 1e-3\neval_split: 0.25\n")
    out = tmp_path / "run" / "adapter"
    result = runner.invoke(app, ["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out),
                                 "--config", str(config), "--max-steps", "2", "--lora-r", "4"])
    assert result.exit_code == 0, result.output
    assert "LoRA placement" in result.output
    # tiny llama, r=4: 2 layers x (512 + 768 + 512 + 1536 + 768) LoRA parameters
    assert "trainable parameters: 8,192" in result.output
    assert "pairs: 8 = 6 train + 2 eval" in result.output
    # The loss curve: a sparkline in the summary, a PNG beside the per-step metrics.
    assert "over 2 steps (per step: " in result.output
    assert (out.parent / "adapter-loss.png").read_bytes().startswith(b"\x89PNG")
    assert not (out.parent / "adapter-logs").exists()  # no tracker asked for, no tracker directory
    provenance = json.loads((out / "tunelens.json").read_text())
    assert provenance["steps"] == 2 and provenance["config"]["lora_r"] == 4
    assert provenance["config"]["learning_rate"] == 1e-3 and provenance["config"]["batch_size"] == 2


def test_train_command_rejects_unknown_yaml_key(tmp_path, tiny_model_dir):
    data = _write_data(tmp_path / "pairs.jsonl")
    config = tmp_path / "train.yaml"
    config.write_text("max_steps: 3\nlearnig_rate: 1e-3\n")
    result = runner.invoke(app, ["train", "--model", str(tiny_model_dir), "--data", str(data),
                                 "--out", str(tmp_path / "a"), "--config", str(config)])
    assert result.exit_code == 2
    assert "'learnig_rate' is unknown (did you mean 'learning_rate'?)" in result.output


def test_show_mask_prints_spans_and_counts(tmp_path, tiny_model_dir):
    from tunelens.model.specs import load_tokenizer
    from tunelens.model.prompts import encode_pair

    data = _write_data(tmp_path / "pairs.jsonl")
    result = runner.invoke(app, ["data", "show-mask", str(data), "--model", str(tiny_model_dir), "--n", "2"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    tok = load_tokenizer(str(tiny_model_dir))
    for i in range(2):
        ids, prompt_len = encode_pair(tok, f"Write function {i}.", "def f(x):\n" + "    x = x * 2\n" * (i % 3 + 1))
        assert f"masked {prompt_len} prompt tokens (no loss) · trained {len(ids) - prompt_len} completion" in result.output
    assert "r1 (line 2)" in result.output and "r2 (line 3)" not in result.output
    assert "[trained>]def f(x):" in result.output


def test_accelerate_two_cpu_processes_match_one_process(tmp_path, tiny_model_dir):
    """2 processes x batch 1 gives the same update as 1 process x batch 2 (DDP over gloo)."""
    from tunelens.model.load import load_model
    from tunelens.train.config import TrainConfig
    from tunelens.train.run import train

    data = _write_data(tmp_path / "pairs.jsonl")
    flags = ["--max-steps", "3", "--batch-size", "1", "--lora-dropout", "0", "--eval-split", "0.25", "--lr", "1e-3"]
    out = tmp_path / "ddp" / "adapter"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(REPO / "examples" / "accelerate" / "cpu-2proc.yaml"), "--num_processes", "2", "--main_process_port", "29517",
         "-m", "tunelens", "train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), *flags],
        env=env, capture_output=True, text=True, cwd=tmp_path)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    provenance = json.loads((out / "tunelens.json").read_text())
    assert provenance["processes"] == 2 and provenance["steps"] == 3

    model, tok = load_model(str(tiny_model_dir), device="cpu")
    config = TrainConfig(max_steps=3, batch_size=2, lora_dropout=0.0, eval_split=0.25, learning_rate=1e-3)
    single = train(config, data, tmp_path / "single" / "adapter", model=model, tokenizer=tok)
    got, want = load_file(out / "adapter_model.safetensors"), load_file(single.out_dir / "adapter_model.safetensors")
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-5, rtol=0), key
    assert provenance["eval_loss"] == pytest.approx(single.eval_loss, abs=1e-5)
