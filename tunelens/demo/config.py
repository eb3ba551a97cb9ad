"""The demo's settings: one config, three profiles (quick for CI, standard, study)."""

from __future__ import annotations

from dataclasses import replace

from tunelens.config import configclass, option
from tunelens.engine.decode import TEMPERATURE_MAX
from tunelens.errors import UserError
from tunelens.model.specs import DEFAULT_MODEL

# Sizes fit the 2-core CPU budget (standard <= 30 min, study <= 90 min, quick <= 8 min) on gemma3-270m: a
# generation step takes 0.2 s for 1 row and 1.0 s for 36 rows, so rows are batched widely.


@configclass
class DemoConfig:
    """What the demo trains and measures. Every size below is in summary.json beside its results."""

    model: str = option(DEFAULT_MODEL, "Base model: embedded name, directory or .gguf.", short="-m")
    mine_sources: tuple[str, ...] = option(
        ("stdlib", "site-packages"), "Where the pairs are mined: stdlib, site-packages or source paths.")
    train_pairs: int = option(64, "Mined pairs each adapter trains on (before lint and pushback).", min=10)
    heldout: int = option(16, "Unseen mined instructions (one per module) for lessons 1, 2 and 4.", min=5)
    contamination_rates: tuple[float, ...] = option(
        (0.05, 0.3), "Python 2 shares of the training pairs: one adapter A<percent> per rate (lessons 1-2).")
    pushback_shares: tuple[float, ...] = option(
        (0.3,), "Pushback pairs as a share of C's training pairs: one adapter C<percent> per share (lesson 3).")
    pushback_cases: int = option(12, "Broken specs of the pushback suite (each with its clean twin) for lesson 3.",
                                 min=2, max=40)
    propensity_bases: tuple[str, ...] = option(
        (), "Other base models whose pushback and refusal propensity lesson 3 also measures (e.g. smollm2-135m).")
    code_cases: int = option(6, "Code-suite cases in lesson 4's query mix (near-domain code requests).", min=0)
    off_topic: int = option(8, "Questions wanting no code in lesson 4's query mix.", min=0, max=8)
    humaneval_cases: int = option(
        12, "Shortest HumanEval prompts in lesson 4's query mix (code requests unlike the training pairs).",
        min=0, max=164)
    gate_target_coverage: float = option(
        0.8, "Share of the calibration queries lesson 4's threshold keeps on adapter B.", min=0.05, max=1.0)
    gate_alpha: float = option(
        0.2, "Share of all queries on which B may serve a bad answer: the target of conformal recalibration "
             "(lesson 4 and the threshold-transfer study).", min=0.01, max=0.99)
    few_shot_study: bool = option(
        False, "Also run the few-shot copying study (tunelens study few-shot) on the base model.")
    epochs: int = option(2, "Training epochs per adapter.", min=1)
    learning_rate: float = option(1e-3, "High, so a CPU-sized run learns the habits it is shown.", min=0.0)
    batch_size: int = option(4, "Training batch size.", min=1)
    pair_tokens: int = option(112, "Mined pairs are chosen at most this many tokens long.", min=32)
    max_length: int = option(192, "Training sequence cap (room for the longer pushback pairs).", min=32)
    samples: int = option(1, "Sampled answers per prompt, beside the greedy one.", min=0)
    temperature: float = option(0.8, "Temperature of the sampled answers.", min=0.0, max=TEMPERATURE_MAX)
    max_new_tokens: int = option(80, "Most tokens per answer.", min=1)
    eval_batch_size: int = option(48, "Rows per generation batch (base and adapters share batches).", min=1)
    trace_prompts: int = option(40, "Most Python 2 answers per adapter scored at their decision points (lesson 2).",
                                min=1)
    seed: int = option(0, "Seed of mining, drawing, contamination, training and sampling.")
    seeds: int = option(
        1, "Training seeds per adapter setting (docs/protocol.md: the seed is the unit of replication): with K, "
           "every adapter is also trained with seeds seed+1 ... seed+K-1, as <name>-s1 ... <name>-s<K-1>, each "
           "redrawing contamination, pushback, data order and dropout on the same mined pairs.", min=1)

    def validate(self) -> None:
        # 0 is allowed: the 0% adapter is lesson 1's control (docs/protocol.md), trained on the same pairs
        if not self.contamination_rates or any(not 0 <= r < 1 for r in self.contamination_rates):
            raise UserError("demo: contamination rates must be in [0, 1), at least one")
        if any(not 0 < s <= 0.9 for s in self.pushback_shares):
            raise UserError("demo: pushback shares must be in (0, 0.9]; share 0 is adapter B itself")

    @property
    def contaminated_adapters(self) -> tuple[str, ...]:
        return tuple(adapter_name("A", rate) for rate in self.contamination_rates)

    @property
    def pushback_adapters(self) -> tuple[str, ...]:
        return tuple(adapter_name("C", share) for share in self.pushback_shares)

    @property
    def strongest_contamination(self) -> str:
        return adapter_name("A", max(self.contamination_rates))


def seed_adapter(name: str, index: int) -> str:
    """The adapter of setting `name` trained with seed + index: `name` itself for index 0, else <name>-s<index>."""
    if index < 0:
        raise ValueError(f"a seed index is >= 0, got {index}")
    return name if index == 0 else f"{name}-s{index}"


def adapter_name(prefix: str, share: float) -> str:
    """A5 for 5% Python 2 pairs, C30 for 30% pushback pairs: the setting is in the name."""
    return f"{prefix}{round(100 * share)}"


def quick(model: str = DEFAULT_MODEL) -> DemoConfig:
    """CI's smoke run (<= 8 min), greedy only. All eight off-topic questions: at 48 tokens B's code answers
    mostly fail, and lesson 4 needs good answers to calibrate on."""
    return DemoConfig(model=model, train_pairs=24, heldout=6, contamination_rates=(0.3,), pushback_cases=4,
                      code_cases=3, off_topic=8, humaneval_cases=3, epochs=1, samples=0, pair_tokens=96,
                      max_new_tokens=48, trace_prompts=6)


def study(model: str = DEFAULT_MODEL) -> DemoConfig:
    """The dose-responses (<= 90 min), SmolLM2 as a second base (lesson 3 and the threshold transfer) and the
    few-shot copying study."""
    return replace(DemoConfig(model=model), contamination_rates=(0.05, 0.15, 0.3),
                   pushback_shares=(0.05, 0.15, 0.3), propensity_bases=("smollm2-135m",), samples=2,
                   few_shot_study=True)
