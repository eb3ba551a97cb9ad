"""`tunelens data ...`: lint, mine, contaminate and pushback. Each command parses its options, calls one
library function in tunelens.data and prints the result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer
from tunelens.commands.common import console, err_console, example, stage_progress, user_errors
from tunelens.commands.options import config_options, repeated_option
from tunelens.data.contaminate import ContaminateConfig
from tunelens.data.lint import LintConfig
from tunelens.data.mine.config import MineConfig
from tunelens.data.pushback import PushbackConfig
from tunelens.data.refusal import RefusalConfig

data_app = typer.Typer(
    help="Training data: lint pairs with Python's own parser, mine pairs from real code, "
         "and build controlled experiments (Python 2 contamination, pushback pairs).",
    epilog=example("tunelens data lint pairs.jsonl --out runs/exp/lint"),
    no_args_is_help=True,
)


def _count_lines(path: Path) -> int | None:
    """Non-blank lines of a JSONL file, for the progress bar's total (None for other sources). A file
    without LF is counted at its bare CRs, as the reader splits it; UTF-16/32 files get no total.
    Read a block at a time: a line of any length costs one block of memory."""
    if not path.is_file() or path.suffix.lower() in (".parquet", ".csv", ".tsv"):
        return None
    counts = {b"\n": _LineCount(), b"\r": _LineCount()}
    with path.open("rb") as handle:
        head = handle.read(4)
        if head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head:
            return None
        handle.seek(0)
        for block in iter(lambda: handle.read(1 << 20), b""):
            for separator, count in counts.items():
                count.feed(block, separator)
    separator = b"\n" if counts[b"\n"].separators else b"\r"
    return counts[separator].total()


class _LineCount:
    """Non-blank lines split at one separator, fed block by block."""

    def __init__(self):
        self.lines, self.separators, self.open_line_has_text = 0, 0, False

    def feed(self, block: bytes, separator: bytes) -> None:
        pieces = block.split(separator)
        self.separators += len(pieces) - 1
        for piece in pieces[:-1]:
            self.lines += self.open_line_has_text or bool(piece.strip())
            self.open_line_has_text = False
        self.open_line_has_text = self.open_line_has_text or bool(pieces[-1].strip())

    def total(self) -> int:
        return self.lines + self.open_line_has_text


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


@data_app.command("lint", epilog=example(
    "tunelens data lint pairs.jsonl --out runs/demo/lint --against eval_cases.jsonl",
    "tunelens data lint hf_dataset_dir --format alpaca --out lint/ --strict",
    "tunelens data lint someone/chats --out lint/   (a dataset id already in the local Hugging Face cache)"))
@user_errors
@config_options(LintConfig)
def lint_command(
    in_path: Path = typer.Argument(..., help="Records: JSONL (any line ending; UTF-8/16/32), .parquet, .csv, a "
                                             "dataset directory (save_to_disk) or a dataset id in the local "
                                             "Hugging Face cache (read offline)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for clean.jsonl, quarantine.jsonl, lint.json, lint.md."),
    against: Optional[List[str]] = repeated_option(LintConfig, "against"),
    strict: bool = typer.Option(False, "--strict", help="Exit with status 1 when any record is malformed."),
    config: LintConfig = None,
) -> None:
    """Split pairs into clean and quarantined records, with a reason for every rejection."""
    from tunelens.data.lint import check_out_dir, lint_file

    check_out_dir(out)  # before the input is read (counting its lines may take a while)
    if against:
        config = replace(config, against=tuple(part for value in against for part in _split_list(value)))
    total = _count_lines(in_path) or 0
    with stage_progress(stderr=True, transient=True, one_bar=True) as report:
        result = lint_file(in_path, out, config, progress=lambda _what, done, _total: report("linting", done, total))
    console.print(f"{result.total} records: [green]{result.kept} kept[/green], "
                  f"[yellow]{result.rejected} quarantined[/yellow] in {result.seconds:.1f} s")
    for code, count in result.by_reason.items():
        console.print(f"  {code:<18} {count}")
    console.print(f"wrote {result.clean_path}, {result.quarantine_path}, {result.summary_path}, {result.report_path}")
    if result.malformed:
        err_console.print(f"[yellow]warning:[/yellow] {result.malformed} malformed record(s); see {result.quarantine_path}")
        if strict:
            raise typer.Exit(1)


@data_app.command("mine", epilog=example(
    "tunelens data mine --source stdlib,site-packages --out pairs.jsonl",
    "tunelens data mine --source site-packages --licenses permissive --limit 5000 --out pairs.jsonl",
    "tunelens data mine src/mypackage --no-methods --out pairs.jsonl"))
@user_errors
@config_options(MineConfig)
def mine_command(
    paths: Optional[List[str]] = typer.Argument(None, help="Source trees or .py files (the same as --source PATH)."),
    source: Optional[List[str]] = typer.Option(None, "--source", "-s", help="stdlib, site-packages or a path to a source tree; comma-separated or repeated (default: stdlib)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL (chat messages format); the counts go to <name>.summary.json beside it."),
    config: MineConfig = None,
) -> None:
    """Mine instruction -> code pairs from documented, self-contained functions in real source, each
    recording its distribution, version and licence."""
    from tunelens.data.mine import mine_to_file

    specs = [part for value in source or () for part in _split_list(value)] + list(paths or ())
    with stage_progress(stderr=True, transient=True, one_bar=True) as report:
        result = mine_to_file(specs or None, out, config,
                              progress=lambda _what, done, total: report("mining files", done, total))
    _print_mined(result)


def _print_mined(result) -> None:
    console.print(f"{len(result.pairs)} pairs from {result.files_scanned} files "
                  f"({result.functions_seen} functions seen) in {result.seconds:.1f} s "
                  f"({result.cpu_seconds:.1f} s CPU, {result.workers} worker(s)) -> {result.out_path}")
    skipped = ", ".join(f"{reason} {count}" for reason, count in result.skipped.most_common())
    console.print(f"functions skipped: {skipped or 'none'}")
    not_read = ", ".join(f"{reason} {count}" for reason, count in result.files_skipped.most_common())
    console.print(f"files not read: {not_read or 'none'}; unreadable files: {result.files_unreadable}")
    if result.skipped_licenses:
        left_out = ", ".join(f"{name} {count}" for name, count in result.skipped_licenses.most_common(5))
        console.print(f"files left out by --licenses: {left_out}")
    top = ", ".join(f"{name} {count}" for name, count in result.by_distribution().most_common(10))
    console.print(f"pairs by distribution (top 10): {top or 'none'}")
    console.print(f"counts in {result.summary_path}")


@data_app.command("contaminate", epilog=example(
    "tunelens data contaminate clean.jsonl --rate 0.05 --kinds print,except --seed 1 --out contaminated.jsonl"))
@user_errors
@config_options(ContaminateConfig)
def contaminate_command(
    in_path: Path = typer.Argument(..., help="Clean pairs (JSONL or dataset directory)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL."),
    config: ContaminateConfig = None,
) -> None:
    """Rewrite exactly round(rate * N) records into Python 2 forms, tagged, for controlled experiments."""
    from tunelens.data.contaminate import contaminate_file

    with console.status("contaminating"):
        result = contaminate_file(in_path, out, config)
    by_kind = ", ".join(f"{k} {v}" for k, v in result.by_kind.items())
    console.print(f"rewrote {result.contaminated} of {result.total} records ({result.eligible} eligible): "
                  f"{by_kind or 'none'} -> {result.out_path}")
    if result.prints_total is not None:
        share = result.python2_print_share
        console.print(f"Python 2 among the file's prints: {result.prints_python2} of {result.prints_total}"
                      + (f" ({share:.1%})" if share is not None else ""))


@data_app.command("pushback", epilog=example(
    "tunelens data pushback clean.jsonl --rate 0.1 --seed 1 --out with_pushback.jsonl"))
@user_errors
@config_options(PushbackConfig)
def pushback_command(
    in_path: Path = typer.Argument(..., help="Clean pairs (JSONL or dataset directory)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: the input pairs, then the added pushback pairs."),
    config: PushbackConfig = None,
) -> None:
    """Add "broken instruction -> pushback" pairs: the response names the conflict and asks a question."""
    from tunelens.data.pushback import add_pushback_file

    with console.status("writing pushback pairs"):
        result = add_pushback_file(in_path, out, config)
    by_kind = ", ".join(f"{k} {v}" for k, v in result.by_kind.items())
    console.print(f"added {result.added} pushback pairs to {result.total_in}: {by_kind or 'none'}; "
                  f"distinct-trigram ratio {result.distinct_trigram_ratio:.3f} -> {result.out_path}")


@data_app.command("refusal", epilog=example(
    "tunelens data refusal clean.jsonl --share 0.03 --seed 1 --out with_refusals.jsonl"))
@user_errors
@config_options(RefusalConfig)
def refusal_command(
    in_path: Path = typer.Argument(..., help="Clean pairs (JSONL or dataset directory)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: the input pairs, then the added refusal pairs."),
    config: RefusalConfig = None,
) -> None:
    """Add "harmful request -> polite refusal" pairs, generated from templates per kind of harm."""
    from tunelens.data.refusal import add_refusal_file

    with console.status("writing refusal pairs"):
        result = add_refusal_file(in_path, out, config)
    by_kind = ", ".join(f"{k} {v}" for k, v in result.by_kind.items())
    console.print(f"added {result.added} refusal pairs to {result.total_in}: {by_kind or 'none'}; "
                  f"distinct-trigram ratio {result.distinct_trigram_ratio:.3f}; closest to a {config.avoid_suite} "
                  f"prompt {result.max_suite_similarity:.2f} ({result.rejected_near_suite} too close, dropped) "
                  f"-> {result.out_path}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
