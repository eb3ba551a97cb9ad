"""Options of `data mine`: each field is one of its flags and a key of its --config YAML file."""

from __future__ import annotations

from tunelens.config import configclass, option
from tunelens.data.mine.licenses import ANY, parse_allowlist
from tunelens.errors import UserError


@configclass
class MineConfig:
    """Options of `data mine`."""

    include_methods: bool = option(True, "Also mine self-contained documented methods of public classes.",
                                   flag="--methods")
    max_lines: int = option(60, "Skip longer functions (lines, decorators included): too long to learn from as "
                                "one pair.", min=1)
    min_lines: int = option(3, "Skip shorter functions (signature + docstring + one line).", min=1)
    near_duplicate_threshold: float = option(0.85, "Drop a pair this similar to one already mined (as in `data "
                                                   "lint`, so the output passes it).", min=0.0, max=1.0)
    limit: int | None = option(None, "Stop after this many pairs.", min=1)
    seed: int = option(0, "Changes which phrasing each instruction gets.")
    licenses: tuple[str, ...] = option((ANY,), "Licences to keep, comma-separated: any, permissive (MIT, BSD, "
                                               "Apache, ISC, PSF...), UNKNOWN, or SPDX ids and families such as MIT,BSD.")
    workers: int | None = option(None, "Processes parsing files (default: one per core; 1 mines in this process).",
                                 min=1)

    def validate(self) -> None:
        if self.max_lines < self.min_lines:
            raise UserError("need 1 <= min_lines <= max_lines")
        # Normalised here so every way of building the config (code, YAML, flags) keeps the same allowlist.
        object.__setattr__(self, "licenses", parse_allowlist(self.licenses))
