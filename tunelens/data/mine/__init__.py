"""`data mine`: instruction -> code pairs from real Python source.

Sources are the standard library (`stdlib`), installed distributions (`site-packages`) and any source
tree, parsed with `ast`, never imported. One pair per public, documented, self-contained function or
method: instruction from docstring and signature, response the function's source, with where it came from
(distribution, version, licence, module, qualified name, path, line); every pair passes `data lint`.

Modules: `sources` (which files, whose), `licenses`, `extract` (one file -> its pairs), `instructions`
(the wording), `run` (the pool and the merge), `draw` (training and held-out pairs from a mined pool).
"""

from tunelens.data.mine.config import MineConfig
from tunelens.data.mine.draw import draw_pairs
from tunelens.data.mine.instructions import docstring_summary, write_instruction
from tunelens.data.mine.licenses import license_allowed, license_of
from tunelens.data.mine.run import MineResult, mine_pairs, mine_to_file
from tunelens.data.mine.sources import KEYWORDS, SITE_PACKAGES, STDLIB

__all__ = ["MineConfig", "MineResult", "mine_pairs", "mine_to_file", "draw_pairs", "docstring_summary",
           "write_instruction", "license_of", "license_allowed", "KEYWORDS", "STDLIB", "SITE_PACKAGES"]
