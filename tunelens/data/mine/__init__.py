"""`data mine`: instruction -> code pairs from real Python source.

Sources are the running Python's standard library (`stdlib`), its installed distributions
(`site-packages`) and any source tree; files are parsed with `ast`, never imported. One pair per public,
documented, self-contained function or method: the instruction is written from the docstring and the
signature, the response is the function's source. Every pair records its source (distribution, version,
licence, module, qualified name, path, line), and passes the lint stage's checks before it is written,
so a mined file passes `data lint` unchanged.

Modules: `sources` (which files, and whose), `licenses` (licence of a distribution, the allowlist),
`extract` (one file -> its pairs; the rules), `instructions` (the wording), `run` (the pool and the
merge), `draw` (training and held-out pairs from a mined pool).
"""

from tunelens.data.mine.config import MineConfig
from tunelens.data.mine.draw import draw_pairs
from tunelens.data.mine.instructions import docstring_summary, write_instruction
from tunelens.data.mine.licenses import license_allowed, license_of
from tunelens.data.mine.run import MineResult, mine_pairs, mine_to_file
from tunelens.data.mine.sources import KEYWORDS, SITE_PACKAGES, STDLIB

__all__ = ["MineConfig", "MineResult", "mine_pairs", "mine_to_file", "draw_pairs", "docstring_summary",
           "write_instruction", "license_of", "license_allowed", "KEYWORDS", "STDLIB", "SITE_PACKAGES"]
