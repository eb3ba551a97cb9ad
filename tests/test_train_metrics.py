"""Per-step metrics.jsonl, TensorBoard through Accelerate, the loss curve, durable writes and staging cleanup."""

import json
import os

import pytest

from tunelens.errors import UserError
from tunelens.train.config import TrainConfig
from tunelens.train.run import train
from tunelens.train.metrics import MetricsLog, loss_sparkline, read_metrics, render_loss_curve

pytestmark = pytest.mark.usefixtures("one_thread")

ROW_KEYS = {"step", "loss", "learning_rate", "grad_norm", "trained_tokens", "tokens_per_s", "step_seconds"}


def _data(path, n=6):
    rows = [{"id": f"m{i}", "prompt": f"Write helper {i}.", "completion": "def f(x):\n" + "    x += 1\n" * (i % 3 + 1)}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tiny():
    from tunelens.testing import tiny_model

    return tiny_model("llama")


def test_every_step_writes_a_metrics_row_and_tensorboard_gets_an_event_file(tmp_path):
    model, tok = _tiny()
    config = TrainConfig(batch_size=2, max_steps=4, eval_split=0.34, eval_every=2, checkpoint_every=0,
                         learning_rate=1e-3, report_to=("tensorboard",))
    out = tmp_path / "run" / "adapter"
    result = train(config, _data(tmp_path / "pairs.jsonl"), out, model=model, tokenizer=tok)
    rows = read_metrics(result.metrics_path)
    assert result.metrics_path == tmp_path / "run" / "adapter-metrics.jsonl"
    steps = [row for row in rows if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2, 3, 4] and all(ROW_KEYS <= set(row) for row in steps)
    # 4 train pairs, batch 2: each step trains the completion tokens of its 2 pairs.
    assert sum(row["trained_tokens"] for row in steps) == result.trained_tokens
    assert steps[-1]["loss"] == pytest.approx(result.train_loss)
    assert steps[1]["eval_loss"] == pytest.approx(result.eval_losses[0][1])
    assert rows[-1] == {"step": 4, "eval_loss": pytest.approx(result.eval_loss)}
    assert all(row["learning_rate"] > 0 and row["grad_norm"] > 0 for row in steps)
    events = list((tmp_path / "run" / "adapter-logs").rglob("events.out.tfevents.*"))
    assert events, list((tmp_path / "run").rglob("*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = EventAccumulator(str(events[0].parent)).Reload()
    assert [e.step for e in logged.Scalars("loss")] == [1, 2, 3, 4]
    assert json.loads((out / "tunelens.json").read_text())["metrics"] == "adapter-metrics.jsonl"


def test_unknown_or_missing_tracker_is_one_clear_error(tmp_path, monkeypatch):
    import importlib.util

    from tunelens.config import load_config

    with pytest.raises(UserError, match="unknown tracker 'neptune'"):
        load_config(TrainConfig, None, {"report_to": "tensorboard,neptune"})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    model, tok = _tiny()
    with pytest.raises(UserError, match=r"^--report-to wandb needs the wandb package: pip install wandb$"):
        train(TrainConfig(max_steps=1, report_to=("wandb",)), _data(tmp_path / "p.jsonl"), tmp_path / "a",
              model=model, tokenizer=tok)


def test_resumed_metrics_keep_each_step_once_and_survive_a_torn_line(tmp_path):
    path = tmp_path / "adapter-metrics.jsonl"
    log = MetricsLog(path, start_step=0)
    for step in range(1, 6):
        log.append({"step": step, "loss": 1.0 / step})
    log.close()
    with open(path, "a") as handle:
        handle.write('{"step": 6, "lo')  # killed mid-line
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3, 4, 5]
    log = MetricsLog(path, start_step=4)  # resumed from the step-4 checkpoint: 5 is redone
    log.append({"step": 5, "loss": 0.3})
    log.close()
    assert [(row["step"], row["loss"]) for row in read_metrics(path)][-2:] == [(4, 0.25), (5, 0.3)]
    MetricsLog(path, start_step=0).close()
    assert read_metrics(path) == []  # a fresh run starts afresh


def test_loss_curve_png_and_sparkline():
    rows = [{"step": s, "loss": 5.0 / s} for s in range(1, 41)] + [{"step": 40, "eval_loss": 0.2}]
    png = render_loss_curve(rows)
    assert png.startswith(b"\x89PNG") and len(png) > 2000
    line = loss_sparkline([row["loss"] for row in rows if "loss" in row], width=10)
    assert len(line) == 10 and line[0] == "█" and line[-1] == "▁"
    assert loss_sparkline([2.0, 2.0]) == "▁▁" and loss_sparkline([]) == ""


# ---------------------------------------------------------------- durable writes and staging leftovers


def test_atomic_directory_fsyncs_every_file_and_directory(tmp_path, monkeypatch):
    from tunelens import io

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(io.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    with io.atomic_directory(tmp_path / "out") as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "a.bin").write_bytes(b"a")
        (staging / "b.json").write_text("{}")
    names = {os.path.basename(p) for p in synced}
    assert {"a.bin", "b.json", "sub"} <= names  # files, then their directories
    assert str(tmp_path) in synced  # the parent, after the rename
    assert not io.staging_dirs_of(tmp_path / "out")


def test_a_run_removes_staging_left_by_a_killed_one_and_only_those(tmp_path):
    out = tmp_path / "adapter"
    root = tmp_path / "adapter-checkpoints"
    leftovers = [tmp_path / ".adapter.tmp-x1", tmp_path / ".adapter.old-x2", root / ".step-0000004.tmp-x3"]
    others = [tmp_path / ".adapter2.tmp-x4", tmp_path / "notes"]
    for path in leftovers + others:
        path.mkdir(parents=True)
        (path / "f").write_text("x")
    model, tok = _tiny()
    config = TrainConfig(batch_size=2, max_steps=1, eval_split=0.0, checkpoint_every=0)
    with pytest.raises(UserError, match="no training pairs"):  # cleaned at the start, even if the run then fails
        (tmp_path / "empty.jsonl").write_text("")
        train(config, tmp_path / "empty.jsonl", out, model=model, tokenizer=tok)
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in others)
