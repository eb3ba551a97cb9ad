"""The demo's data: mine a pool, draw training pairs and unseen prompts, contaminate, lint, add pushback.

Every file lands under <run>/data/ and every count in summary.json is read from what these stages return.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tunelens.demo.config import DemoConfig, adapter_name, seed_adapter
from tunelens.io import atomic_write_jsonl, read_jsonl
from tunelens.data.contaminate import contaminate_file, ContaminateConfig
from tunelens.data.lint import lint_file, LintConfig
from tunelens.data.mine import draw_pairs, mine_pairs, MineConfig
from tunelens.data.pushback import add_pushback_file, PushbackConfig
from tunelens.data.records import load_pairs
from tunelens.model.specs import load_tokenizer
from tunelens.studies.training import fits_tokens


@dataclass
class DemoData:
    """What the lessons need from the data stage: paths per adapter and the counts behind them."""

    training: dict[str, Path] = field(default_factory=dict)  # adapter name -> its training file
    heldout: list[str] = field(default_factory=list)  # unseen instructions
    train_instructions_b: list[str] = field(default_factory=list)  # the gate's index
    counts: dict = field(default_factory=dict)  # everything summary.json reports about the data


def prepare_data(config: DemoConfig, out: Path, report) -> DemoData:
    data_dir = out / "data"
    mined, heldout = _draw(config, data_dir, report)
    training, counts = training_sets(config, data_dir)
    return DemoData(training, [record["messages"][0]["content"] for record in heldout],
                    [pair.instruction for pair in load_pairs(training["B"])], {**mined, **counts})


def training_sets(config: DemoConfig, data_dir: Path, index: int = 0) -> tuple[dict[str, Path], dict]:
    """Every adapter setting's training file for seed config.seed + index, named by seed_adapter, made from
    <data_dir>/mined.jsonl, and the counts of each stage: A<rate> per contamination rate, B (what lint keeps
    of the strongest), C<share> per pushback share (B's pairs plus pushback pairs)."""
    seeded = replace(config, seed=config.seed + index)
    files, counts = {}, {"contamination": {}, "pushback": {}}
    for rate in config.contamination_rates:
        name = seed_adapter(adapter_name("A", rate), index)
        files[name], counts["contamination"][name] = _contaminate(seeded, data_dir, rate)
    b = seed_adapter("B", index)
    files[b], counts["lint"] = _lint(data_dir, files[seed_adapter(config.strongest_contamination, index)])
    for share in config.pushback_shares:
        name = seed_adapter(adapter_name("C", share), index)
        files[name], counts["pushback"][name] = _add_pushback(seeded, data_dir, files[b], share)
    return files, {key: counts[key] for key in ("contamination", "lint", "pushback")}


def _draw(config: DemoConfig, data_dir: Path, report) -> tuple[dict, list[dict]]:
    """Mine the pool (permissive licences) and draw training pairs and held-out prompts short enough for the
    CPU budget; held-out prompts come one per module, from modules that give no training pair."""
    mined = mine_pairs(list(config.mine_sources), MineConfig(seed=config.seed, licenses=("permissive",)),
                       progress=lambda _what, done, total: report("data: mining", done, total))
    # room for the print statement contamination may add, so no pair is truncated in training
    fits = fits_tokens(load_tokenizer(config.model), min(config.pair_tokens, config.max_length), room=12)
    train, heldout = draw_pairs(mined.pairs, train=config.train_pairs, heldout=config.heldout, seed=config.seed,
                                accept=fits)
    atomic_write_jsonl(data_dir / "mined.jsonl", train)
    atomic_write_jsonl(data_dir / "heldout.jsonl", heldout)
    return {"mined_total": len(mined.pairs), "mine_sources": list(config.mine_sources),
            "train_pairs": len(train), "heldout": len(heldout)}, heldout


def _contaminate(config: DemoConfig, data_dir: Path, rate: float) -> tuple[Path, dict]:
    path = data_dir / f"contaminated-{adapter_name('A', rate)}.jsonl"
    result = contaminate_file(data_dir / "mined.jsonl", path,
                              ContaminateConfig(rate=rate, kinds=("print",), seed=config.seed))
    return path, {"rate": rate, "pairs": result.total, "contaminated": result.contaminated,
                  "training_python2_rate": result.contaminated / result.total}


def _lint(data_dir: Path, contaminated: Path) -> tuple[Path, dict]:
    """B trains on what lint keeps of the most contaminated file: lint's recall is part of lesson 1. Ids, not
    only counts: CI checks that lint caught exactly the contaminated pairs, none missed, none extra."""
    linted = lint_file(contaminated, data_dir / "lint", LintConfig())
    tagged = {row["id"] for row in read_jsonl(contaminated) if "contamination" in row}
    caught = {entry.get("record", entry).get("id") for entry in read_jsonl(linted.quarantine_path)
              if any(reason["code"].startswith("py2-") for reason in entry.get("reasons", []))}
    found = len(tagged & caught)
    return linted.clean_path, {"total": linted.total, "kept": linted.kept, "rejected": linted.rejected,
                               "by_reason": linted.by_reason, "contaminated": len(tagged), "caught": found,
                               "recall": found / len(tagged) if tagged else None,
                               "missed_ids": sorted(tagged - caught),
                               "python2_false_alarm_ids": sorted(caught - tagged)}


def _add_pushback(config: DemoConfig, data_dir: Path, clean: Path, share: float) -> tuple[Path, dict]:
    """C's data: B's pairs plus pushback pairs, each breaking one of B's own pairs, so its clean twin is in the
    same training set: C is shown the distinction, not only the habit."""
    path = data_dir / f"clean+pushback-{adapter_name('C', share)}.jsonl"
    # add_pushback_file's rate is relative to the input; `share` is of the whole training set.
    pushed = add_pushback_file(clean, path, PushbackConfig(rate=share / (1 - share), seed=config.seed))
    return path, {"share": share, "added": pushed.added, "pairs": pushed.total_in + pushed.added,
                  "by_kind": pushed.by_kind, "distinct_trigram_ratio": pushed.distinct_trigram_ratio}
