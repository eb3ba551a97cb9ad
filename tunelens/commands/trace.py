"""Commands of this stage (registered by tunelens.cli)."""

import typer


def register(app: typer.Typer) -> None:
    """No commands yet."""
