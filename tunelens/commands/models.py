"""`tunelens models`: the embedded models, installed or not, cached or not, and their size."""

from __future__ import annotations

import typer
from tunelens.commands.common import console, example, new_table


def _human_size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def models_command() -> None:
    """List the embedded models: parameters, licence, whether each is installed and cached, its cache size."""
    from tunelens.model.specs import embedded_status

    table = new_table("embedded models",
                      ("name", "params", "licence", "installed", "cached", "cache size", "description"))
    for row in embedded_status():
        table.add_row(row.name, row.params, row.licence, "yes" if row.installed else f"no ({row.package})",
                      "yes" if row.cached else "no", _human_size(row.size_bytes), row.description)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("models", epilog=example("tunelens models"))(models_command)
