"""Command-line options derived from a config dataclass.

Each field of a stage's config is declared once with `tunelens.config.option` (default, help, choices,
bounds, flag name); `config_options(Cls)` turns the fields into Typer options plus `--config FILE` (YAML)
and hands the command one checked `Cls` from `load_config` (defaults, then the file, then the flags), so
the CLI, the YAML file and validation cannot disagree about a default or a bound.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from tunelens.config import load_config
from tunelens.errors import UserError

CONFIG_FILE_HELP = "YAML file of options (keys are the option names with - or _); flags given here win over it."
METAVARS = {int: "N", float: "X", str: "TEXT"}

# `--help` groups options the way users think of a run (tunelens.commands.help prints the groups).
_GROUPS = {
    "Data": ("data", "eval_split", "max_length", "packing", "train_pairs", "pair_tokens", "heldout", "sources",
             "mine_sources", "licenses", "kinds", "rate", "share", "shares", "pushback_shares", "limit"),
    "Model": ("model", "adapter", "device", "dtype", "threads", "check_adapter", "backend", "base_url", "api"),
    "LoRA": ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "fused_lora"),
    "Optimisation": ("learning_rate", "lr_schedule", "warmup_ratio", "weight_decay", "max_grad_norm", "epochs",
                     "max_steps", "batch_size", "grad_accum", "gradient_checkpointing", "logits", "bf16", "seed"),
    "Sampling": ("max_new_tokens", "temperature", "top_p", "samples", "raw", "few_shot", "few_shot_index",
                 "eval_batch_size"),
    "Output": ("out", "html", "report_to", "checkpoint_every", "keep_checkpoints", "eval_every", "resume",
               "quiet", "fmt"),
}
_GROUP_OF = {name: group for group, names in _GROUPS.items() for name in names}


def group_of(field_name: str) -> str:
    """The --help group of a config field ("Options" for the ones no group names)."""
    if field_name.startswith("lora_"):
        return "LoRA"
    return _GROUP_OF.get(field_name, "Options")


def config_options(cls: type, *, skip: tuple[str, ...] = (),
                   profiles: dict[str, tuple[Callable[[], Any], str]] | None = None) -> Callable[[Callable], Callable]:
    """Decorate a command taking ``config: cls`` so that every field of ``cls`` not in ``skip`` (nor one of
    its own parameters) is an option, and ``--config FILE`` reads a YAML file of them. ``profiles`` maps a
    flag to (a factory of a ``cls``, help): ``--quick`` starts from that instance instead of the defaults."""
    profiles = profiles or {}

    def decorate(func: Callable) -> Callable:
        own = inspect.signature(func)
        kept = [p for p in own.parameters.values() if p.name != "config"]
        fields = [f for f in dataclasses.fields(cls) if f.name not in skip and f.name not in own.parameters]
        hints = typing.get_type_hints(cls)
        derived = [_parameter(cls, f, hints[f.name]) for f in fields]
        derived.append(inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                         default=typer.Option(None, "--config", help=CONFIG_FILE_HELP)))
        derived += [inspect.Parameter(_profile_param(flag), inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                      default=typer.Option(False, flag, help=text))
                    for flag, (_factory, text) in profiles.items()]

        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            overrides = {f.name: kwargs.pop(f.name, None) for f in fields}
            chosen = [flag for flag in profiles if kwargs.pop(_profile_param(flag))]
            if len(chosen) > 1:
                raise UserError(f"choose one of {', '.join(chosen)}")
            base = profiles[chosen[0]][0]() if chosen else None
            config = load_config(cls, kwargs.pop("config_file", None), overrides, base=base)
            return func(*args, config=config, **kwargs)

        parameters = [*kept, *derived]
        command.__signature__ = own.replace(parameters=parameters)
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return decorate


def repeated_option(cls: type, name: str) -> Any:
    """A repeatable flag (``--watch a --watch b``) for the tuple field ``name`` of ``cls``, for values that may
    hold a comma: the command's own parameter of that name, whose values it folds into its config."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return typer.Option(None, *_flag_names(field), help=field.metadata.get("help", "") + " Repeatable.")


def _flag_names(field: dataclasses.Field, negatable: bool = False) -> list[str]:
    flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
    short = [field.metadata["short"]] if field.metadata.get("short") else []
    return [f"{flag}/--no-{flag[2:]}" if negatable else flag, *short]


def _parameter(cls: type, field: dataclasses.Field, hint: Any) -> inspect.Parameter:
    meta = field.metadata
    kind = _cli_type(hint)
    names = _flag_names(field, negatable=kind is bool)
    bounds = {key: meta[key] for key in ("min", "max") if key in meta and kind in (int, float)}
    text = meta.get("help", "") + (f" One of: {', '.join(map(str, meta['choices']))}." if "choices" in meta else "")
    shown = _shown_default(field.default)
    if shown:  # in the help text: Typer would print a string default as "(32)"
        text += f"  [default: {shown}]"
    # None means "not given": load_config then keeps the YAML value or the field's default.
    default = typer.Option(None, *names, help=text, show_default=False, metavar=METAVARS.get(kind),
                           rich_help_panel=group_of(field.name), **bounds)
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Optional[kind])


def _profile_param(flag: str) -> str:
    return "profile_" + flag.lstrip("-").replace("-", "_")


def _shown_default(value: Any) -> str | bool:
    if value is None or value == ():
        return False
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _cli_type(hint: Any) -> type:
    """The type Typer parses a field's flag as; tuples are given as comma-separated text."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is tuple:
        return str
    if hint in (bool, int, float, str):
        return hint
    raise TypeError(f"config type {hint!r} has no command-line form")
