"""Training history: `metrics.jsonl` (one row per optimizer step), experiment trackers, the loss curve.

The JSONL file is the record that always exists; `--report-to` sends the same rows to TensorBoard, Weights
& Biases, trackio or MLflow through Accelerate's trackers, when their libraries are installed. A resumed
run cuts the file back to its checkpoint's step, then appends, so each step appears once.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from tunelens.errors import UserError
from tunelens.io import atomic_write_bytes, atomic_write_jsonl, read_jsonl

TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow")  # each the name of its package too
SPARK_BARS = "▁▂▃▄▅▆▇█"


def metrics_path(out_dir: Path) -> Path:
    """`<out>-metrics.jsonl` beside the adapter, like `<out>-checkpoints/` (the adapter dir stays pure PEFT)."""
    return out_dir.parent / f"{out_dir.name}-metrics.jsonl"


def logs_dir(out_dir: Path) -> Path:
    """Where file-based trackers (TensorBoard) write: `<out>-logs/`."""
    return out_dir.parent / f"{out_dir.name}-logs"


def check_trackers(names: Sequence[str]) -> None:
    """A clear one-line error for a tracker whose library is not installed (TrainConfig refuses unknown ones)."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise UserError(f"--report-to {name} needs the {name} package: pip install {name}")


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics file; a torn last line (a run killed mid-write) is skipped."""
    rows = read_jsonl(path, torn_tail=True) if Path(path).is_file() else []
    return [row for row in rows if isinstance(row, dict) and isinstance(row.get("step"), int)]


class MetricsLog:
    """Appends one JSON line per optimizer step, flushed and fsynced, so a crash loses at most the line in flight."""

    def __init__(self, path: Path, start_step: int):
        self.path = Path(path)
        # A fresh run starts an empty file; a resumed one keeps only the steps its checkpoint holds.
        atomic_write_jsonl(self.path, [row for row in read_metrics(self.path) if row["step"] <= start_step]
                           if start_step else [])
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def append(self, row: dict) -> None:
        # One write() per line on an O_APPEND descriptor: the line lands whole or (on a crash) torn at the end.
        os.write(self._fd, (json.dumps(row) + "\n").encode("utf-8"))
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def tracker_config(config: dict) -> dict:
    """Hyperparameters as trackers accept them (scalars and text; lists joined)."""
    return {key: ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            for key, value in config.items()}


def loss_sparkline(losses: Sequence[float], width: int = 48) -> str:
    """The loss curve as one line of block characters (mean of each of `width` buckets), low = ▁."""
    values = [v for v in losses if v == v]  # drop NaN
    if not values:
        return ""
    buckets = [values[i * len(values) // width:(i + 1) * len(values) // width] for i in range(width)]
    means = [sum(b) / len(b) for b in buckets if b] if len(values) > width else values
    low, span = min(means), (max(means) - min(means)) or 1.0
    return "".join(SPARK_BARS[min(len(SPARK_BARS) - 1, int((v - low) / span * len(SPARK_BARS)))] for v in means)


def render_loss_curve(metrics: Path | Iterable[dict], png_path: Path | None = None,
                      title: str = "training loss") -> bytes:
    """PNG of loss per optimizer step (and eval loss, where rows hold one) from a metrics file or its rows,
    drawn with matplotlib's object API on the Agg canvas, so no global backend is switched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_metrics(metrics) if isinstance(metrics, (str, Path)) else list(metrics)
    figure = Figure(figsize=(6, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    train = [(row["step"], row["loss"]) for row in rows if row.get("loss") is not None]
    axes.plot([s for s, _ in train], [loss for _, loss in train], label="train loss", lw=1.2)
    evals = [(row["step"], row["eval_loss"]) for row in rows if row.get("eval_loss") is not None]
    if evals:
        axes.plot(*zip(*evals), "o-", label="eval loss", lw=1.2)
    axes.set(xlabel="optimizer step", ylabel="loss per trained token", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    if png_path is not None:
        atomic_write_bytes(png_path, buffer.getvalue())
    return buffer.getvalue()
