"""Options of `data mine` (each matches a CLI flag)."""

from __future__ import annotations

from dataclasses import dataclass

from tunelens.data.mine.licenses import ANY, parse_allowlist
from tunelens.errors import UserError


@dataclass(frozen=True)
class MineConfig:
    """Options of `data mine`."""

    include_methods: bool = True  # also mine self-contained documented public methods of public classes
    max_lines: int = 60  # longer functions are skipped (too long to learn from as one pair)
    min_lines: int = 3  # shorter functions (signature + docstring + one line) are skipped
    near_duplicate_threshold: float = 0.85  # as in `data lint`, so the output passes it
    limit: int | None = None  # stop after this many pairs
    seed: int = 0  # changes which phrasing each function gets
    licenses: tuple[str, ...] = (ANY,)  # allowlist: any, permissive, UNKNOWN, SPDX ids or families (BSD)
    workers: int | None = None  # processes parsing files; None: one per available core, 1: in-process

    def __post_init__(self):
        if self.max_lines < self.min_lines or self.min_lines < 1:
            raise UserError("need 1 <= min_lines <= max_lines")
        if self.limit is not None and self.limit < 1:
            raise UserError("limit must be at least 1")
        if self.workers is not None and self.workers < 1:
            raise UserError("workers must be at least 1")
        object.__setattr__(self, "licenses", parse_allowlist(self.licenses))
