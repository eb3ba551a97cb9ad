"""Every generated page of docs/ and the README, from the run records committed under docs/runs/.

    python scripts/pages.py            # rewrite every page whose records are there, then README.md
    python scripts/pages.py --check    # exit 1 naming each page that differs from its regenerated self

A record is a run directory's summary.json (and, for the few-shot study, its answers.jsonl) copied to
docs/runs/<name>/, small files and no weights; the run record inside it names the commit, command, versions
and machine. Benchmark records are the `--json` output of bench/*.py under docs/runs/bench/: they make
docs/bench.md, and the `<!-- bench: NAME -->` blocks of every other page under docs/ (scripts/bench_doc.py).
tests/test_pages.py runs the check, so a page edited by hand, or a record changed without its page, fails
the tests.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "docs" / "runs"


@dataclass(frozen=True)
class Page:
    target: str  # the page, relative to the repository root
    records: tuple[str, ...]  # directories under docs/runs/ it is made from
    command: str  # the command that made the first record


PAGES = (
    Page("docs/demo.md", ("demo",), "tunelens demo"),
    Page("docs/demo-study.md", ("demo-study",), "tunelens demo --study"),
    Page("docs/demo-quick.md", ("demo-quick",), "tunelens demo --quick"),
    Page("docs/few-shot-study.md", ("fewshot", "fewshot-B"), "tunelens study few-shot"),
    Page("docs/safety.md", ("safety",), "tunelens study safety"),
    Page("docs/bench.md", ("bench",), "python bench/NAME.py --json docs/runs/bench/NAME.json"),
    Page("docs/lessons.md", ("lessons",), "tunelens study lessons"),
)


def has_records(page: Page) -> bool:
    if page.target == "docs/bench.md":
        return any((RUNS / "bench").glob("*.json"))
    if page.target == "docs/lessons.md":  # it says "pending" with the commands until records exist
        return True
    return all((RUNS / name / "summary.json").is_file() for name in page.records)


def bench_records() -> dict[str, dict]:
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_doc

    return bench_doc.read_records(RUNS / "bench")


BLOCK_MARKS = ("<!-- bench: ", "<!-- humaneval -->")


def with_blocks(text: str) -> str:
    """A page's text with its `<!-- bench: NAME -->` blocks regenerated from docs/runs/bench/NAME.json, and its
    `<!-- humaneval -->` block from the eval runs under docs/runs/humaneval/."""
    sys.path.insert(0, str(ROOT / "scripts"))
    if "<!-- bench: " in text:
        import bench_doc

        text = bench_doc.fill_blocks(text, bench_records())
    if "<!-- humaneval -->" in text:
        import humaneval_doc

        text = humaneval_doc.fill(text, RUNS / "humaneval")
    return text


def pages_with_blocks() -> list[Path]:
    generated = {page.target for page in PAGES}
    return [path for path in sorted((ROOT / "docs").glob("*.md")) if str(path.relative_to(ROOT)) not in generated
            and any(mark in path.read_text() for mark in BLOCK_MARKS)]


def render(page: Page) -> str:
    """The page's text, regenerated from its records (figures are written by each script's own main)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from doc_format import read_summary

    first = RUNS / page.records[0]
    shown = f"docs/runs/{page.records[0]}/summary.json"
    if page.target.startswith("docs/demo"):
        import demo_doc

        return demo_doc.render(read_summary(first), page.command, shown)
    if page.target == "docs/few-shot-study.md":
        import fewshot_doc

        return fewshot_doc.render(first, RUNS / page.records[1] if len(page.records) > 1 else None)
    if page.target == "docs/safety.md":
        import safety_doc

        return safety_doc.render(read_summary(first), shown)
    if page.target == "docs/bench.md":
        import bench_doc

        return bench_doc.render(bench_records())
    if page.target == "docs/lessons.md":
        import lessons_doc

        return lessons_doc.render(lessons_doc.records(RUNS))
    raise ValueError(f"{page.target}: no generator for this page")


def readme() -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    import assemble_readme

    return assemble_readme.assemble()


def differences() -> list[str]:
    """Every generated page (and the README) that differs from its regenerated self."""
    wrong = [page.target for page in PAGES if has_records(page) and (ROOT / page.target).read_text() != render(page)]
    wrong += [str(path.relative_to(ROOT)) for path in pages_with_blocks() if path.read_text() != with_blocks(path.read_text())]
    if (ROOT / "README.md").read_text() != readme():
        wrong.append("README.md")
    return wrong


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        wrong = differences()
        for target in wrong:
            print(f"pages: {target} differs from what its record gives: run python scripts/pages.py", file=sys.stderr)
        return 1 if wrong else 0
    for page in PAGES:
        if has_records(page):
            (ROOT / page.target).write_text(render(page))
            print(f"wrote {page.target} from {', '.join(f'docs/runs/{name}' for name in page.records)}")
        else:
            print(f"kept {page.target}: no record under docs/runs/ ({', '.join(page.records)})")
    for path in pages_with_blocks():
        path.write_text(with_blocks(path.read_text()))
        print(f"wrote the generated blocks of {path.relative_to(ROOT)} from docs/runs/")
    (ROOT / "README.md").write_text(readme())
    print("wrote README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
