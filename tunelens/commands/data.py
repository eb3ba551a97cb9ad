"""`tunelens data ...`: lint, mine, contaminate and pushback. Each command parses its options, calls one
library function in tunelens.data and prints the result."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from tunelens.commands.common import console, err_console, example, user_errors

data_app = typer.Typer(
    help="Training data: lint pairs with Python's own parser, mine pairs from real code, "
         "and build controlled experiments (Python 2 contamination, pushback pairs).",
    epilog=example("tunelens data lint pairs.jsonl --out runs/exp/lint"),
    no_args_is_help=True,
)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True)


def _count_lines(path: Path) -> int | None:
    """Non-blank lines of a JSONL file, for the progress bar's total (None for other sources). A file
    without LF is counted at its bare CRs, as the reader splits it; UTF-16/32 files get no total."""
    if not path.is_file() or path.suffix.lower() in (".parquet", ".csv", ".tsv"):
        return None
    with path.open("rb") as handle:
        data = handle.read()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        return None
    separator = b"\n" if b"\n" in data else b"\r"
    return sum(1 for line in data.split(separator) if line.strip())


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


@data_app.command("lint", epilog=example(
    "tunelens data lint pairs.jsonl --out runs/demo/lint --against eval_cases.jsonl",
    "tunelens data lint hf_dataset_dir --format alpaca --out lint/ --strict",
    "tunelens data lint someone/chats --out lint/   (a dataset id already in the local Hugging Face cache)"))
@user_errors
def lint_command(
    in_path: Path = typer.Argument(..., help="Records: JSONL (any line ending; UTF-8/16/32), .parquet, .csv, a "
                                             "dataset directory (save_to_disk) or a dataset id in the local "
                                             "Hugging Face cache (read offline)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for clean.jsonl, quarantine.jsonl, lint.json, lint.md."),
    against: Optional[List[str]] = typer.Option(None, "--against", help="Eval suite names or files (comma-separated or repeated) whose cases must not leak into training."),
    fmt: str = typer.Option("auto", "--format", help="auto, chat (incl. multi-turn), sharegpt, prompt-completion "
                                                     "(strings or TRL message lists), alpaca or text."),
    near_dup_threshold: float = typer.Option(0.85, "--near-dup-threshold", min=0.01, max=1.0, help="Word 3-gram Jaccard similarity at which two pairs are near duplicates (1 = exact only)."),
    leak_threshold: float = typer.Option(0.5, "--leak-threshold", min=0.01, max=1.0, help="Share of n-grams shared with an eval case that makes a leak."),
    leak_ngram: int = typer.Option(8, "--leak-ngram", min=1, max=64, help="n of the word n-grams compared for leaks."),
    max_record_mb: float = typer.Option(1.0, "--max-record-mb", min=0.001, help="Longer records are quarantined as malformed."),
    strict: bool = typer.Option(False, "--strict", help="Exit with status 1 when any record is malformed."),
) -> None:
    """Split pairs into clean and quarantined records, with a reason for every rejection."""
    from tunelens.data.lint import LintConfig, lint_file

    suites = tuple(part for value in against or () for part in _split_list(value))
    config = LintConfig(fmt=fmt, near_duplicate_threshold=near_dup_threshold, against=suites,
                        leak_threshold=leak_threshold, leak_ngram=leak_ngram,
                        max_record_bytes=int(max_record_mb * 1_000_000))
    with _progress() as progress:
        task = progress.add_task("linting", total=_count_lines(in_path))
        result = lint_file(in_path, out, config, on_progress=lambda done: progress.update(task, completed=done))
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
    "tunelens data mine --out pairs.jsonl",
    "tunelens data mine src/mypackage --methods --limit 2000 --out pairs.jsonl"))
@user_errors
def mine_command(
    sources: Optional[List[Path]] = typer.Argument(None, help="Python files or directories (default: this Python's standard library)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL (chat messages format)."),
    methods: bool = typer.Option(False, "--methods", help="Also mine self-contained documented methods of public classes."),
    max_lines: int = typer.Option(60, "--max-lines", min=2, help="Skip longer functions."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Stop after this many pairs."),
    seed: int = typer.Option(0, "--seed", help="Changes which phrasing each instruction gets."),
) -> None:
    """Mine instruction -> code pairs from documented, self-contained functions in real source."""
    from tunelens.data.mine import MineConfig, mine_to_file

    config = MineConfig(include_methods=methods, max_lines=max_lines, limit=limit, seed=seed)
    with _progress() as progress:
        task = progress.add_task("mining files", total=None)
        result = mine_to_file(sources, out, config,
                              on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    console.print(f"{len(result.pairs)} pairs from {result.files_scanned} files "
                  f"({result.functions_seen} functions seen) in {result.seconds:.1f} s -> {result.out_path}")
    skipped = ", ".join(f"{reason} {count}" for reason, count in result.skipped.most_common())
    console.print(f"skipped: {skipped or 'none'}; unreadable files: {result.files_unreadable}")


@data_app.command("contaminate", epilog=example(
    "tunelens data contaminate clean.jsonl --rate 0.05 --kinds print,except --seed 1 --out contaminated.jsonl"))
@user_errors
def contaminate_command(
    in_path: Path = typer.Argument(..., help="Clean pairs (JSONL or dataset directory)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL."),
    rate: float = typer.Option(..., "--rate", min=0.0, max=1.0, help="Share of records to rewrite into Python 2."),
    kinds: str = typer.Option("print,except,backtick,ne,octal,long,ur,exec,raise,name", "--kinds",
                              help="Comma-separated Python 2 forms to use."),
    seed: int = typer.Option(0, "--seed", help="Random seed for choosing records and kinds."),
) -> None:
    """Rewrite exactly round(rate * N) records into Python 2 forms, tagged, for controlled experiments."""
    from tunelens.data.contaminate import ContaminateConfig, contaminate_file

    with console.status("contaminating"):
        result = contaminate_file(in_path, out, ContaminateConfig(rate=rate, kinds=_split_list(kinds), seed=seed))
    by_kind = ", ".join(f"{k} {v}" for k, v in result.by_kind.items())
    console.print(f"rewrote {result.contaminated} of {result.total} records ({result.eligible} eligible): "
                  f"{by_kind or 'none'} -> {result.out_path}")


@data_app.command("pushback", epilog=example(
    "tunelens data pushback clean.jsonl --rate 0.1 --seed 1 --out with_pushback.jsonl"))
@user_errors
def pushback_command(
    in_path: Path = typer.Argument(..., help="Clean pairs (JSONL or dataset directory)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: the input pairs, then the added pushback pairs."),
    rate: float = typer.Option(..., "--rate", min=0.0, max=10.0, help="Pushback pairs to add, as a share of the input."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Comma-separated break kinds (default: all six)."),
) -> None:
    """Add "broken instruction -> pushback" pairs: the response names the conflict and asks a question."""
    from tunelens.data.pushback import KINDS, PushbackConfig, add_pushback_file

    config = PushbackConfig(rate=rate, seed=seed, kinds=_split_list(kinds) if kinds else KINDS)
    with console.status("writing pushback pairs"):
        result = add_pushback_file(in_path, out, config)
    by_kind = ", ".join(f"{k} {v}" for k, v in result.by_kind.items())
    console.print(f"added {result.added} pushback pairs to {result.total_in}: {by_kind or 'none'}; "
                  f"distinct-trigram ratio {result.distinct_trigram_ratio:.3f} -> {result.out_path}")


@data_app.command("refusal", epilog=example(
    "tunelens data refusal clean.jsonl --share 0.03 --seed 1 --out with_refusals.jsonl"))
@user_errors
def refusal_command(
    in_path: Path = typer.Argument(..., help="Clean pairs (JSONL or dataset directory)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: the input pairs, then the added refusal pairs."),
    share: float = typer.Option(..., "--share", min=0.0, max=0.99, help="Refusal pairs as a share of the output file."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Comma-separated kinds of harm (default: all)."),
    avoid_suite: str = typer.Option("safety", "--avoid-suite", help="Eval suite whose prompts the generated "
                                                                    "requests must not resemble (held out)."),
) -> None:
    """Add "harmful request -> polite refusal" pairs, generated from templates per kind of harm."""
    from tunelens.data.refusal import KINDS, RefusalConfig, add_refusal_file

    config = RefusalConfig(share=share, seed=seed, kinds=_split_list(kinds) if kinds else KINDS,
                           avoid_suite=avoid_suite)
    with console.status("writing refusal pairs"):
        result = add_refusal_file(in_path, out, config)
    by_kind = ", ".join(f"{k} {v}" for k, v in result.by_kind.items())
    console.print(f"added {result.added} refusal pairs to {result.total_in}: {by_kind or 'none'}; "
                  f"distinct-trigram ratio {result.distinct_trigram_ratio:.3f}; closest to a {avoid_suite} "
                  f"prompt {result.max_suite_similarity:.2f} ({result.rejected_near_suite} too close, dropped) "
                  f"-> {result.out_path}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
