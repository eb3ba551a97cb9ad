"""Assemble README.md from docs/readme-head.md and the stage pages under docs/ (headings one level down).

    python scripts/assemble_readme.py
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["demo.md", "demo-study.md", "data.md", "train.md", "adapters.md", "export.md", "trace.md", "eval.md", "eval-suites.md", "gate.md",
         "few-shot.md", "few-shot-study.md", "serve.md", "safety.md"]


def demoted(text: str) -> str:
    """Headings outside code fences get one more `#`; image links are made relative to the root."""
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and re.match(r"^#{1,5} ", line):
            line = "#" + line
        out.append(line)
    return "\n".join(out).replace("](images/", "](docs/images/")


def from_root(text: str) -> str:
    """Links to the benchmark page, written relative to docs/, made relative to the root."""
    return text.replace("](bench.md", "](docs/bench.md")


def assemble() -> str:
    parts = [from_root((ROOT / "docs" / "readme-head.md").read_text())]
    parts += [from_root(demoted((ROOT / "docs" / name).read_text())) for name in PAGES if (ROOT / "docs" / name).exists()]
    return "\n\n".join(part.rstrip() + "\n" for part in parts)


def main() -> None:
    (ROOT / "README.md").write_text(assemble())


if __name__ == "__main__":
    main()
