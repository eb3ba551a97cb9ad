"""`tunelens export`: merge an adapter into full weights (library in tunelens/model/export.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from tunelens.commands.common import model_flag, console, example, user_errors
from tunelens.commands.options import config_options
from tunelens.model.export import ExportConfig
from tunelens.model.specs import DEFAULT_MODEL


@user_errors
@config_options(ExportConfig)
def export_command(
    adapter: Path = typer.Option(..., "--adapter",
                                 help="Adapter directory written by `tunelens train` (or any PEFT LoRA)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the merged model to (replaced whole)."),
    model: str = model_flag(None, "Base model [default: the base_model recorded in the adapter's tunelens.json]."),
    config: ExportConfig = None,
) -> None:
    """Merge a LoRA adapter into its base: a model directory transformers loads without PEFT."""
    from tunelens.model.export import export_model

    with console.status(f"merging {adapter} into its base"):
        result = export_model(adapter, out, model, config)
    console.print(f"wrote {result.out_dir}: {result.base_model} + {result.adapter.name} "
                  f"({result.merged_modules} layers merged, {result.dtype}, {result.size_bytes / 1e6:.1f} MB)")


def register(app: typer.Typer) -> None:
    app.command("export", epilog=example(
        "tunelens export --adapter runs/x/adapter --out runs/x/merged",
        f"tunelens export --adapter runs/x/adapter --out merged --dtype bf16 --model {DEFAULT_MODEL}",
    ))(export_command)
