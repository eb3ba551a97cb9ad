"""Resume after SIGKILL ends at the same adapter as an uninterrupted run (tiny model, real processes)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from tunelens.errors import UserError
from tunelens.train.checkpoints import checkpoint_root
from tunelens.train.config import TrainConfig
from tunelens.train.run import train

CONFIG = dict(batch_size=2, max_steps=8, checkpoint_every=2, keep_checkpoints=2, lora_dropout=0.1,
              eval_split=0.2, learning_rate=1e-3, lr_schedule="cosine", warmup_ratio=0.2, seed=7)
KILL_AT_STEP = 5  # after the step-4 checkpoint, before the step-6 one: step 5 is lost and redone

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from tunelens.model.load import load_model
    from tunelens.train.config import TrainConfig
    from tunelens.train.run import train

    model_dir, data, out, config, kill_at = sys.argv[1:6]
    model, tok = load_model(model_dir, device="cpu")

    def progress(event):
        if event.phase == "step" and event.step == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: like the OOM killer

    train(TrainConfig(**json.loads(config)), data, out, model=model, tokenizer=tok, on_event=progress)
""")


pytestmark = pytest.mark.usefixtures("one_thread")


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _write_data(path, n=10):
    rows = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"Write helper {i}."},
                                         {"role": "assistant", "content": f"def helper_{i}(x):\n" + "    x += 1\n" * (i % 4 + 1) + "    return x\n"}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, tiny_model_dir):
    from tunelens.model.load import load_model

    data = _write_data(tmp_path / "pairs.jsonl")
    out = tmp_path / "killed" / "adapter"
    child = subprocess.run([sys.executable, "-c", CHILD, str(tiny_model_dir), str(data), str(out),
                            json.dumps(CONFIG), str(KILL_AT_STEP)], env=_env(), capture_output=True, text=True)
    assert child.returncode == -9, child.stderr[-2000:]
    root = checkpoint_root(out)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["step-0000002", "step-0000004"]
    assert not out.exists()

    # A directory that never got its state file (a checkpoint cut short) is not taken for one.
    (root / "step-0000006").mkdir()
    config = TrainConfig(**CONFIG)
    model, tok = load_model(str(tiny_model_dir), device="cpu")
    with pytest.raises(UserError, match="pass --resume"):
        train(config, data, out, model=model, tokenizer=tok)
    with pytest.raises(UserError, match="learning_rate=0.001.*learning_rate=0.002"):
        train(TrainConfig(**{**CONFIG, "learning_rate": 2e-3}), data, out, model=model, tokenizer=tok, resume=True)

    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("".join(f"{k}: {v}\n" for k, v in CONFIG.items()))
    resumed = subprocess.run([sys.executable, "-m", "tunelens", "train", "--model", str(tiny_model_dir),
                              "--data", str(data), "--out", str(out), "--config", str(yaml_file), "--resume"],
                             env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resumed from step 4" in resumed.stdout
    # The killed run logged steps 1-5; the resumed one redid 5: every step is in the metrics once.
    rows = [json.loads(line) for line in (out.parent / "adapter-metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row] == list(range(1, 9))
    assert not root.exists()  # a finished run leaves nothing to resume

    model, tok = load_model(str(tiny_model_dir), device="cpu")
    reference = train(config, data, tmp_path / "straight" / "adapter", model=model, tokenizer=tok)
    got = load_file(out / "adapter_model.safetensors")
    want = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-5, rtol=0), (key, (got[key] - want[key]).abs().max())
    assert any(want[k].abs().max() > 0 for k in want if "lora_B" in k)
    provenance = json.loads((out / "tunelens.json").read_text())
    assert provenance["eval_loss"] == pytest.approx(reference.eval_loss, abs=1e-5)
