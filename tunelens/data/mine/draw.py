"""Drawing training pairs and held-out prompts from a mined pool.

A sibling function from the same module (`posixpath.join` beside `posixpath.split`) shares imports, names
and style, so a held-out prompt from a training module would measure recall, not generalisation: held-out
pairs come one per module, from modules that give no training pair.
"""

from __future__ import annotations

import random
from typing import Callable

from tunelens.errors import UserError


def draw_pairs(pairs: list[dict], train: int, heldout: int, seed: int = 0,
               accept: Callable[[dict], bool] | None = None) -> tuple[list[dict], list[dict]]:
    """(training pairs, held-out pairs) drawn at random (seeded) from mined `pairs`.

    Walking the shuffled pool, take the first accepted pair of each new module until there are `heldout`;
    walking it again, the first `train` accepted pairs of other modules. `accept(pair)` (say, a token
    budget) is called lazily in that order, so an expensive check runs on about as many pairs as needed.
    """
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    verdicts: dict[int, bool] = {}

    def ok(index: int) -> bool:
        if accept is not None and index not in verdicts:
            verdicts[index] = bool(accept(pairs[index]))
        return verdicts.get(index, True)

    held, held_modules = [], set()
    for index in order:
        if len(held) == heldout:
            break
        module = _module(pairs[index])
        if module not in held_modules and ok(index):
            held.append(index)
            held_modules.add(module)
    chosen = []
    for index in order:
        if len(chosen) == train:
            break
        if _module(pairs[index]) not in held_modules and ok(index):
            chosen.append(index)
    if len(held) < heldout or len(chosen) < train:
        raise UserError(f"mined pool too small: {len(chosen)} training and {len(held)} held-out pairs "
                        f"found of {train} and {heldout} wanted ({len(pairs)} pairs in the pool)")
    return [pairs[i] for i in chosen], [pairs[i] for i in held]


def _module(pair: dict) -> tuple:
    source = pair.get("source")
    if isinstance(source, dict):
        return source.get("distribution"), source.get("module")
    return (None, pair.get("id", "").rsplit(".", 1)[0])  # pairs mined before sources were recorded
