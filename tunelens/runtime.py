"""Process-wide runtime settings, changed only for the length of a block and then restored.

torch's intra-op thread count is global to the process: a library function that sets it and returns
leaves every later caller (a test, the demo's next stage, a notebook) running with its choice. Stages
that want their own count take it through `torch_threads`, which puts the previous value back.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` torch intra-op threads, then restore the previous count.

    None leaves the setting alone and does not import torch (so callers without a model stay light)."""
    if count is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
