"""`--help` that reads on an 80-column terminal: click's plain two-column layout, options grouped.

Rich's option tables share the width among six columns, squeezing the help text into a third of 80
columns; click's layout keeps the option column at most 30 characters. The groups are the panels each
option names (`rich_help_panel`), in the order of `GROUP_ORDER`.
"""

from __future__ import annotations

import typer
from typer.core import TyperArgument, TyperCommand

GROUP_ORDER = ("Arguments", "Data", "Model", "LoRA", "Optimisation", "Sampling", "Evaluation", "Gate", "Server",
               "Output", "Options")


class GroupedCommand(TyperCommand):
    """A command whose help is click's plain layout with one section per group of options."""

    def format_help(self, ctx, formatter) -> None:
        self.rich_markup_mode = None  # TyperCommand's plain layout, which calls format_options below
        super().format_help(ctx, formatter)

    def format_options(self, ctx, formatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            group = "Arguments" if isinstance(param, TyperArgument) else getattr(param, "rich_help_panel", None)
            groups.setdefault(group or "Options", []).append(record)
        for name in sorted(groups, key=lambda g: GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER)):
            with formatter.section(name):
                formatter.write_dl(groups[name], col_max=30)

    def format_epilog(self, ctx, formatter) -> None:
        if self.epilog:  # an example line: kept as written, not re-wrapped
            formatter.write_paragraph()
            for line in self.epilog.splitlines():
                formatter.write(f"{line}\n")


def use_grouped_help(app: typer.Typer) -> None:
    """Give every command of `app` (and of its sub-apps) the grouped plain help."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):  # a command that chose its own class keeps it
            info.cls = GroupedCommand
    for group in app.registered_groups:
        use_grouped_help(group.typer_instance)
