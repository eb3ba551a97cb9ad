"""`tunelens train` and `tunelens data show-mask` (registered by tunelens.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tunelens.commands.common import console, example, model_flag, quiet_library_output, user_errors
from tunelens.commands.options import config_options
from tunelens.model.specs import DEFAULT_MODEL
from tunelens.train.config import TrainConfig


def register(app: typer.Typer) -> None:
    app.command("train", epilog=example(
        f"tunelens train --model {DEFAULT_MODEL} --data runs/demo/clean.jsonl --out runs/demo/adapter",
        "accelerate launch --config_file examples/accelerate/cpu-2proc.yaml -m tunelens train "
        "--data clean.jsonl --out runs/x/adapter --config train.yaml --resume",
        "tunelens train --data clean.jsonl --out runs/x/adapter --packing --report-to tensorboard"))(train_command)
    _register_show_mask()


def _register_show_mask() -> None:
    # `data` is the data engineer's command group; show-mask belongs with it but uses the training
    # tokenisation, so it is defined here and added to that group.
    from tunelens.commands.data import data_app

    data_app.command("show-mask", epilog=example(
        f"tunelens data show-mask runs/demo/clean.jsonl --model {DEFAULT_MODEL} --n 3"))(show_mask_command)


@user_errors
@config_options(TrainConfig)
def train_command(
    data: Path = typer.Option(..., "--data", help="Training pairs (JSONL or a saved dataset directory).",
                              show_default=False),
    out: Path = typer.Option(..., "--out", help="Adapter directory to write (PEFT format + tunelens.json).",
                             show_default=False),
    model: str = model_flag(),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in <out>-checkpoints/."),
    config: TrainConfig = None,
) -> None:
    """Train a LoRA adapter (text decoder only, completion-only loss) on instruction -> code pairs."""
    from tunelens.train.run import train

    quiet_library_output()
    with _TrainDisplay() as display:
        result = train(config, data, out, model_spec=model, resume=resume, on_event=display.update)
    if result.is_main_process:
        _print_summary(result)


class _TrainDisplay:
    """The placement table before training, then one Rich progress bar with loss, tokens/s and ETA."""

    def __enter__(self):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.task = None
        return self

    def __exit__(self, *exc):
        if self.task is not None:
            self.progress.stop()
        return False

    def update(self, event) -> None:
        if event.phase == "start":
            print_placement(event.placement)
            if event.detail:
                console.print(event.detail)
            self.progress.start()
            self.task = self.progress.add_task("train", total=event.total_steps, completed=event.step,
                                               loss="-", speed="- tok/s")
        elif event.phase == "step":
            self.progress.update(self.task, completed=event.step, loss=f"{event.loss:.4f}",
                                 speed=f"{event.tokens_per_s:,.0f} tok/s")
        elif event.phase == "eval":
            self.progress.console.print(f"step {event.step}: eval loss {event.eval_loss:.4f}")
        elif event.phase == "checkpoint":
            self.progress.console.print(f"step {event.step}: checkpoint {event.detail}", style="dim")


def print_placement(placement) -> None:
    from rich.table import Table

    from tunelens.train.lora_setup import layer_ranges

    table = Table(title=f"LoRA placement: {placement.decoder_path or '(root)'} — {placement.num_layers} decoder layers")
    for column in ("module", "layers", "absent in layers", "in -> out", "LoRA params"):
        table.add_column(column, justify="right" if column == "LoRA params" else "left")
    for row in placement.rows:
        table.add_row(row.kind, layer_ranges(row.layers), layer_ranges(row.absent),
                      " | ".join(f"{i} -> {o}" for i, o in row.shapes), f"{row.lora_params:,}")
    console.print(table)
    share = placement.trainable_params / max(1, placement.total_params)
    console.print(f"trainable parameters: {placement.trainable_params:,} "
                  f"({share:.2%} of {placement.total_params:,}); {len(placement.module_names)} linears adapted")
    if placement.kv_shared_layers:
        console.print(f"KV-shared layers (reuse an earlier layer's keys/values; no k_proj/v_proj): "
                      f"{layer_ranges(placement.kv_shared_layers)}")
    if placement.frozen_towers:
        console.print(f"frozen, no LoRA: {', '.join(placement.frozen_towers)}")


def _print_summary(result) -> None:
    console.print(f"adapter written to {result.out_dir} ({result.steps} steps"
                  + (f", resumed from step {result.resumed_from_step}" if result.resumed_from_step else "") + ")")
    console.print(f"pairs: {result.n_pairs} = {result.n_train} train + {result.n_eval} eval"
                  + (f" + {len(result.skipped)} skipped (prompt longer than max_length)" if result.skipped else "")
                  + (f"; {len(result.truncated)} truncated at max_length" if result.truncated else ""))
    loss = f"{result.train_loss:.4f}" if result.train_loss is not None else "-"
    eval_loss = f"{result.eval_loss:.4f}" if result.eval_loss is not None else "-"
    console.print(f"train loss {loss}, eval loss {eval_loss}; {result.trained_tokens:,} trained tokens in "
                  f"{result.train_seconds:.1f} s ({result.tokens_per_s:,.1f} tokens/s)")
    _print_loss_curve(result)


def _print_loss_curve(result) -> None:
    """A sparkline of the loss per step, and the same curve as a PNG beside the metrics file."""
    from tunelens.train.metrics import loss_sparkline, read_metrics, render_loss_curve

    rows = read_metrics(result.metrics_path) if result.metrics_path else []
    losses = [row["loss"] for row in rows if row.get("loss") is not None]
    if len(losses) < 2:
        return
    png = result.metrics_path.with_name(result.metrics_path.name.replace("-metrics.jsonl", "-loss.png"))
    render_loss_curve(rows, png)
    console.print(f"loss {losses[0]:.3f} {loss_sparkline(losses)} {losses[-1]:.3f} over {len(losses)} steps "
                  f"(per step: {result.metrics_path}; curve: {png})", highlight=False)


@user_errors
def show_mask_command(
    file: Path = typer.Argument(..., help="Records: JSONL, parquet, CSV, a saved dataset directory or a dataset id "
                                          "in the local Hugging Face cache.", show_default=False),
    model: str = model_flag(DEFAULT_MODEL, "Model whose tokenizer and prompt format to use."),
    n: int = typer.Option(3, "--n", min=1, help="How many records to show."),
    max_length: Optional[int] = typer.Option(None, help="Show where training would cut pairs (max_length).",
                                             show_default=False),
) -> None:
    """Print records as the trainer sees them: masked context (dim) and trained tokens (green), every
    assistant turn of a multi-turn chat trained; a `text` record is trained whole."""
    from tunelens.model.specs import load_tokenizer
    from tunelens.data.records import load_pairs
    from tunelens.train.encoding import mask_spans

    tokenizer = load_tokenizer(model)
    pairs = load_pairs(file)[:n]
    for pair in pairs:
        print_masked_pair(pair, mask_spans(tokenizer, pair, max_length))


def print_masked_pair(pair, view) -> None:
    from rich.text import Text

    console.rule(f"{pair.id} (line {pair.line})")
    styles = {"masked": "dim strike", "trained": "bold green", "cut": "red strike"}
    # Markers as text too, so the boundary shows without colour (logs, pipes, NO_COLOR).
    markers = {"masked": ("", ""), "trained": ("[trained>]", "[<trained]"), "cut": ("[cut>]", "")}
    text = Text()
    for part, state in view.spans:
        opening, closing = markers[state]
        text.append(opening, style="reverse")
        text.append(part, style=styles[state])
        text.append(closing, style="reverse")
    console.print(text)
    legend = (f"[dim strike]masked[/dim strike] {view.masked_tokens} prompt tokens (no loss) · "
              f"[bold green]trained[/bold green] {view.trained_tokens} completion tokens")
    if view.trained_turns > 1:
        legend += f" in {view.trained_turns} assistant turns"
    if view.cut_tokens:
        legend += f" · [red strike]cut[/red strike] {view.cut_tokens} tokens past max_length"
    console.print(legend, highlight=False)
