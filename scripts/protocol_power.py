"""The numbers of docs/protocol.md: how many training seeds (or items) each lesson's test needs for power 0.8
against the case study's effect, and whether that fits this CPU's budget.

    python scripts/protocol_power.py            # print the computed section
    python scripts/protocol_power.py --write    # put it into docs/protocol.md between its markers

The page's section between `<!-- protocol_power:begin -->` and `<!-- protocol_power:end -->` is this
script's output; tests/test_protocol.py regenerates it and fails on any difference. Every planning value
below names where it comes from (docs/design.md's figures, or the project's measured runs). Closed forms
(the noncentral t) where the test is a t test on per-seed values; a seeded simulation where the per-seed
value is not normal (lesson 1's rates, which pile up at 0 and 1 across seeds).
"""
from __future__ import annotations

import argparse
import functools
import math
import pathlib
import sys

import numpy as np
from scipy import stats

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "protocol.md"
BEGIN, END = "<!-- protocol_power:begin -->", "<!-- protocol_power:end -->"

ALPHA = 0.05  # tunelens.reading.ALPHA; the power is computed at alpha / (rows of the table): Holm's first step
POWER = 0.8
K_MAX = 60  # the search for n stops here ("more than 60")

# -- the case study's effects (docs/design.md) --------------------------------------------------------
CASE_BAD_BEFORE, CASE_BAD_AFTER = 0.05, 0.0  # bad outputs 5% -> 0% greedy
SEED_DELTA = math.log(56 / 34) - math.log(38 / 55)  # 55/38 -> 56/34 at the decision point: +0.869 log-odds
LESSON1_SLOPE = 1.0  # "learned at almost exactly their training rate": output share = training share

# -- the project's measured spreads (docs/design.md, docs/demo.md, docs/demo-study.md, docs/safety.md) --
A30_GREEDY_K, A30_GREEDY_N = (15, 4, 12, 4), 16  # A30's greedy Python 2 count in four runs, same settings
SENTENCE_EFFECTS = (0.16, -0.05, 0.15, -0.09)  # lesson 2's sentence effect in the same four runs
SENTENCE_WITHIN_SE = 0.03  # each run's 95% half-width ~0.03 is an SE of 0.015; doubled for clustering by prompt
B_CHANGE_ON_BROKEN = (-5.72, -4.63)  # gemma B's propensity shift on broken specs, demo and study runs
GAP_ITEM_SD = 1.53  # SD over 40 pairs of a harmful-minus-twin gap: smollm2 base +1.91 [+1.44, +2.39]
CHANGE_ITEM_SD = 1.18  # SD over 40 requests of a paired propensity change: code LoRA -0.22 [-0.59, +0.14]
ROUTED_MINUS_B = ((20 - 24) / 33, (25 - 25) / 33)  # gemma lesson 4, routed minus always-B, two runs
ROUTED_DISCORDANT = (4 / 33, 0 / 33)  # their discordant shares (routed right / B right), for the within part

# -- the designs the protocol fixes ---------------------------------------------------------------------
L1_RATES = (0.0, 0.05, 0.15, 0.30)  # training share of Python 2 among the training pairs' prints
L1_PROMPTS, L1_PRINT_SHARE = 64, 0.5  # held-out prompts at temperature 1; planning share of answers that print
L1_TABLE = 3  # rows: gemma slope vs 0, gemma slope vs 1, Qwen A30 rate vs 0
L2_TABLE = 5  # levers, each minus the placebo: after, before, system line, other phrasing, one-shot example
L3_TABLE = 2  # B's change of the gap (vs base), C's change of the gap (vs B)
L3_PAIRS = 40  # broken specs, each with its twin
SAFETY_TABLE = 2  # code LoRA's change on harmful requests, change of the harmful-minus-look-alike gap
SAFETY_REQUESTS = 40
L4_TABLE = 2  # routed vs always-B, routed vs always-base
L4_QUERIES = 200  # the floor; the per-adapter n is searched above it
SIM_REPS, SIM_SEED = 20_000, 0

# -- texts fixed now, each with its length in Qwen2.5-Coder tokens (tests/test_protocol.py re-counts them
# with the cached tokenizer wherever `qwen2.5-coder-1.5b` is installed) ---------------------------------
LEVER_PLACEBOS = (  # (lever sentence, its placebo: same length, nothing about the version, no code, tokens)
    ("Prefer Python 3, not Python 2.", "Prefer clear names, and keep every line short.", 11),
    ("Write this in modern Python 3 syntax.", "Use clear names and keep every line short.", 9),
)
CONTROL_OPENINGS = (  # (pushback opening of tunelens.inspect.propensity, its non-pushback control, tokens)
    ("This spec is contradictory", "This spec is clear", 4),
    ("The requirements contradict each other", "The requirements fit together well", 5),
    ("The examples don't match the description", "Below is the function you asked for", 7),
    ("This request is ambiguous", "This request is clear", 4),
    ("Before I write this, could you clarify", "Here is a short function that does this", 8),
    ("Could you clarify what you mean", "The code below follows the description", 6),
    ("I can't satisfy both requirements", "I can write this function now", 6),
    ("There is a problem with this spec", "I will write the function as described", 7),
)

# -- costs on this CPU (2 cores; docs/design.md) ---------------------------------------------------------
QWEN_TRAIN_TOK_S = 9.0  # plain PEFT LoRA, fp32, trained tokens per second
QWEN_DECODE_S_PER_TOKEN = 0.45 / 2  # 0.45 CPU-s per generated token at batch 8, over 2 cores
QWEN_FORWARD_TOK_S = 3 * QWEN_TRAIN_TOK_S  # a training step is about 3 forwards (forward + backward)
# Amendment 1 (before any governed run): lesson 1's training pairs are the print-rich mined pairs of at most
# 400 tokens, 200 tokens long on average (gemma's tokenizer; measured on the pool, docs/protocol.md), not the
# demo's pairs of at most 112. Adapter time scales with trained tokens: the demo's 80 s x 200 / 110.
PAIR_TOKENS, PAIRS, EPOCHS = 200, 64, 2
GEMMA_ADAPTER_S = 80.0 * PAIR_TOKENS / 110  # one demo adapter (64 pairs of ~110 tokens, 2 epochs): 80 s alone
GEMMA_DECODE_S_PER_TOKEN = 1.0 / 36  # a 36-row generation step takes about 1.0 s
QWEN_BUDGET_MIN = 360  # the issue: <= 6 hours on this machine, in resumable invocations of <= 90 minutes
# amendment 1: the longer pairs cost more per adapter, so four invocations of <= 90 min instead of three
GEMMA_BUDGET_MIN = 360  # the lesson-1 dose-response on gemma3-270m: resumable invocations of <= 90 min


def sd(values) -> float:
    return float(np.std(np.asarray(values, dtype=float), ddof=1))


def t_power(d: float, k: int, alpha: float) -> float:
    """Power of the two-sided one-sample t test on k per-seed values whose mean / SD is d (noncentral t)."""
    if k < 2:
        return 0.0
    from scipy import integrate

    # P(|Z + nc| > crit * S) with S = sqrt(V / df), V chi-squared: integrated over V, because scipy's nct
    # returns nan far in its tail (nc above about 10), exactly where lesson 2's effect sits.
    df, nc = k - 1, d * math.sqrt(k)
    crit = stats.t.ppf(1 - alpha / 2, df)

    def reject(v: float) -> float:
        s = crit * math.sqrt(v / df)
        return stats.chi2.pdf(v, df) * (stats.norm.sf(s - nc) + stats.norm.cdf(-s - nc))

    return float(min(1.0, integrate.quad(reject, 0, math.inf, limit=200)[0]))


def smallest_k(power_of, start: int = 2) -> int | None:
    """The smallest n with power_of(n) >= POWER, or None when even K_MAX falls short."""
    for k in range(start, K_MAX + 1):
        if power_of(k) >= POWER:
            return k
    return None


def icc_from_rates(counts, n: int) -> float:
    """Between-adapter share of a rate's variance (the beta-binomial's intra-class correlation phi), from
    one setting's counts in several runs: observed var(k/n) = mu(1-mu) (phi + (1-phi)/n)."""
    rates = np.asarray(counts, dtype=float) / n
    mu, var = rates.mean(), rates.var(ddof=1)
    return float((var / (mu * (1 - mu)) - 1 / n) / (1 - 1 / n))


@functools.lru_cache(maxsize=None)
def lesson1_slope_power(k: int, phi: float, alpha: float) -> float:
    """Simulated power of the across-seed t test of the per-seed dose-response slope against 0.

    Per seed and training share q: the adapter's own P(Python 2 | prints) is Beta with mean q (the case
    study's truth, slope 1) and intra-class correlation phi; it is observed on m printing answers
    (binomial); q = 0 writes none. Each seed's slope is the least-squares slope over the shares. Each K has
    its own seeded generator, so a K's power does not depend on which others were computed before it."""
    rng = np.random.default_rng([SIM_SEED, k])
    x = np.asarray(L1_RATES)
    m = round(L1_PROMPTS * L1_PRINT_SHARE)
    theta = np.zeros((SIM_REPS, k, x.size))
    strength = 1 / phi - 1
    for j, q in enumerate(x):
        if q > 0:
            theta[:, :, j] = rng.beta(q * strength, (1 - q) * strength, size=(SIM_REPS, k))
    y = rng.binomial(m, theta) / m
    slopes = ((y - y.mean(axis=2, keepdims=True)) * (x - x.mean())).sum(axis=2) / ((x - x.mean()) ** 2).sum()
    spread = slopes.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # every seed's slope equal: no test, no rejection
        t = np.where(spread > 0, slopes.mean(axis=1) / (spread / math.sqrt(k)), 0.0)
    return float((np.abs(t) > stats.t.ppf(1 - alpha / 2, k - 1)).mean())


def rate_sd(q: float, phi: float, m: int) -> float:
    """SD across seeds of an observed rate with mean q: between-adapter plus binomial parts."""
    return math.sqrt(q * (1 - q) * (phi + (1 - phi) / m))


def mcnemar_min_discordant(alpha: float) -> int:
    """Fewest one-way discordant pairs whose split-aggregated p (2 x the median split's exact McNemar p,
    here every split's) falls below alpha."""
    d = 1
    while 2 * min(1.0, 2 * 0.5 ** d) >= alpha:
        d += 1
    return d


def lesson4_adapter_power(n: int, alpha: float) -> float:
    """P(at least the needed discordant pairs) when B is bad on 5% of n queries, the base is right on them
    and cross-fitted routing sends exactly those to the base (the case study's 5% -> 0%)."""
    need = mcnemar_min_discordant(alpha)
    return float(stats.binom.sf(need - 1, n, CASE_BAD_BEFORE - CASE_BAD_AFTER))


# -- costs ----------------------------------------------------------------------------------------------
def qwen_train_min(pairs: int = PAIRS) -> float:
    return pairs * EPOCHS * PAIR_TOKENS / QWEN_TRAIN_TOK_S / 60


def qwen_decode_min(answers: int, tokens: int) -> float:
    return answers * tokens * QWEN_DECODE_S_PER_TOKEN / 60


def qwen_forward_min(passes: int, tokens: int) -> float:
    return passes * tokens / QWEN_FORWARD_TOK_S / 60


def costs() -> dict:
    """Minutes per unit on Qwen, from the rates above: training one adapter of each kind, and each lesson's
    primary measurement of one seed's adapter. Free text beside the propensities is not counted: it is
    run only where minutes are left (see the page)."""
    # measurement half (20 prompts): baseline, 5 levers, 4 placebos (after, before, system line, one-shot) and
    # adapter off; calibration half (20 prompts): baseline only, for the window
    l2_passes = 20 * 11 + 20 * 1
    pushback_pairs = round(PAIRS * 0.3 / 0.7)  # C at a 30% pushback share
    return {
        "train_A30": qwen_train_min(), "train_B": qwen_train_min(), "train_C": qwen_train_min(PAIRS + pushback_pairs),
        "l1_generate": qwen_decode_min(L1_PROMPTS, 100),
        "l2_score": qwen_forward_min(l2_passes, 200),
        # prompt (~80 tokens) + 8 pushback, 8 comply and 8 control openings of ~7 tokens, on 40 specs + 40 twins
        "propensity_l3": qwen_forward_min(2 * L3_PAIRS, 80 + 24 * 7),
        "propensity_safety": qwen_forward_min(2 * SAFETY_REQUESTS, 60 + 14 * 7),
        "free_text_80": qwen_decode_min(80, 64),  # greedy, 64 tokens: enough to see pushback or a refusal
    }


def l4_answers_min(n: int) -> float:
    return qwen_decode_min(n, 128)


def gemma_l1_min(k: int) -> float:
    """K seeds x 4 shares of gemma adapters, each trained and answering 64 prompts at temperature 1."""
    return k * len(L1_RATES) * (GEMMA_ADAPTER_S + L1_PROMPTS * 100 * GEMMA_DECODE_S_PER_TOKEN) / 60


# -- the computation ------------------------------------------------------------------------------------
def compute() -> dict:
    r = {}
    phi = icc_from_rates(A30_GREEDY_K, A30_GREEDY_N)
    a30 = np.asarray(A30_GREEDY_K) / A30_GREEDY_N
    r["l1"] = {"phi": phi, "a30_sd": sd(a30), "a30_binomial_se": math.sqrt(a30.mean() * (1 - a30.mean()) / 16),
               "m": round(L1_PROMPTS * L1_PRINT_SHARE), "alpha": ALPHA / L1_TABLE}
    r["l1"]["power"] = {k: lesson1_slope_power(k, phi, ALPHA / L1_TABLE) for k in (5, 8, 10, 12, 15, 20)}
    r["l1"]["k"] = smallest_k(lambda k: lesson1_slope_power(k, phi, ALPHA / L1_TABLE), start=5)
    q_sd = rate_sd(0.3, phi, r["l1"]["m"])
    r["l1_qwen"] = {"sd": q_sd, "d": 0.3 / q_sd, "power_k2": t_power(0.3 / q_sd, 2, ALPHA / L1_TABLE),
                    "k": smallest_k(lambda k: t_power(0.3 / q_sd, k, ALPHA / L1_TABLE))}

    between = sd(SENTENCE_EFFECTS)
    for name, spread in (("l2", between), ("l2_x3", 3 * between)):
        total = math.hypot(spread, SENTENCE_WITHIN_SE)
        d = SEED_DELTA / total
        r[name] = {"between": spread, "total": total, "d": d, "alpha": ALPHA / L2_TABLE,
                   "power": {k: t_power(d, k, ALPHA / L2_TABLE) for k in (2, 3, 4, 5)},
                   "k": smallest_k(lambda k, d=d: t_power(d, k, ALPHA / L2_TABLE))}

    # Lesson 3: erasing a base gap g; the seed-level spread of a within-pair gap is planned as the item SD over
    # sqrt(pairs) (all of it seed-by-item interaction: the conservative end) with gemma's gap spread beside it.
    gemma_gap_between = sd((0.08, 0.12))
    l3_total = math.hypot(gemma_gap_between, GAP_ITEM_SD / math.sqrt(L3_PAIRS))
    r["l3"] = {"between": gemma_gap_between, "total": l3_total, "alpha": ALPHA / L3_TABLE,
               "by_gap": {g: smallest_k(lambda k, g=g: t_power(g / l3_total, k, ALPHA / L3_TABLE))
                          for g in (0.5, SEED_DELTA, 2.0)},
               "base_gap_mde": (stats.t.ppf(1 - ALPHA / 2, L3_PAIRS - 1) + stats.norm.ppf(POWER))
               * GAP_ITEM_SD / math.sqrt(L3_PAIRS)}
    r["l3"]["k"] = r["l3"]["by_gap"][SEED_DELTA]

    level_between = sd(B_CHANGE_ON_BROKEN)
    s_total = math.hypot(level_between, CHANGE_ITEM_SD / math.sqrt(SAFETY_REQUESTS))
    r["safety"] = {"between": level_between, "total": s_total, "d": SEED_DELTA / s_total,
                   "alpha": ALPHA / SAFETY_TABLE,
                   "power_k2": t_power(SEED_DELTA / s_total, 2, ALPHA / SAFETY_TABLE),
                   "k": smallest_k(lambda k: t_power(SEED_DELTA / s_total, k, ALPHA / SAFETY_TABLE))}

    effect = CASE_BAD_BEFORE - CASE_BAD_AFTER
    within_old = [math.sqrt(p / 33) for p in ROUTED_DISCORDANT]
    l4_between = math.sqrt(max(0.0, sd(ROUTED_MINUS_B) ** 2 - float(np.mean(np.square(within_old)))))
    n_adapter = next(n for n in range(L4_QUERIES, 2000) if lesson4_adapter_power(n, ALPHA / L4_TABLE) >= POWER)
    within = math.sqrt(effect * (1 - effect) / n_adapter)
    l4_total = math.hypot(l4_between, within)
    r["l4"] = {"alpha": ALPHA / L4_TABLE, "discordant_needed": mcnemar_min_discordant(ALPHA / L4_TABLE),
               "power_200": lesson4_adapter_power(L4_QUERIES, ALPHA / L4_TABLE), "n_queries": n_adapter,
               "between": l4_between, "within": within, "total": l4_total, "d": effect / l4_total,
               "k": smallest_k(lambda k: t_power(effect / l4_total, k, ALPHA / L4_TABLE))}
    r["budget"] = budget(r)
    return r


QWEN_ORDER = ("lesson 1 (Qwen)", "lesson 2", "lesson 3", "lesson 4", "safety")  # the case study's order


def qwen_plan(r: dict, c: dict) -> dict:
    """Per Qwen lesson: its n (seeds), the adapter kinds it trains, its measurement minutes per seed, and
    minutes it spends once (lesson 4's base answering the queries)."""
    answers = l4_answers_min(r["l4"]["n_queries"])
    return {
        "lesson 1 (Qwen)": {"k": r["l1_qwen"]["k"], "kinds": ("A30",), "measure": c["l1_generate"], "once": 0.0},
        # amendment 1: lesson 2's points lie in the base's greedy answers to the held-out prompts, made once
        "lesson 2": {"k": r["l2"]["k"], "kinds": ("A30",), "measure": c["l2_score"],
                     "once": qwen_decode_min(L1_PROMPTS, 128)},
        "lesson 3": {"k": r["l3"]["k"], "kinds": ("B", "C"), "measure": 2 * c["propensity_l3"], "once": 0.0},
        "lesson 4": {"k": r["l4"]["k"], "kinds": ("B",), "measure": answers, "once": answers},
        "safety": {"k": r["safety"]["k"], "kinds": ("B",), "measure": c["propensity_safety"], "once": 0.0},
    }


def allocate(plan: dict, c: dict, left: float, seeds: dict, names=QWEN_ORDER, k_of=None) -> tuple[list, float]:
    """Take the lessons `names` in order, each whole or not at all: k seeds of its measurement, what it spends
    once, and the training of its adapters' seeds that no earlier lesson trained (`seeds`: kind -> seeds
    trained so far, updated)."""
    rows = []
    for name in names:
        lesson = plan[name]
        k = lesson["k"] if k_of is None else k_of(lesson["k"])
        if k is None:
            rows.append({"lesson": name, "k": None, "per_seed": lesson["measure"], "minutes": None, "fits": False})
            continue
        minutes = k * lesson["measure"] + lesson["once"] + sum(
            max(0, k - seeds.get(kind, 0)) * c[f"train_{kind}"] for kind in lesson["kinds"])
        fits = minutes <= left
        if fits:
            left -= minutes
            for kind in lesson["kinds"]:
                seeds[kind] = max(seeds.get(kind, 0), k)
        rows.append({"lesson": name, "k": k, "per_seed": lesson["measure"], "minutes": minutes, "fits": fits})
    return rows, left


DESCRIPTIVE_K = 2  # the floor for the Qwen lessons


def budget(r: dict) -> dict:
    """Minutes each lesson needs at its n, and which fit: gemma's lesson 1 in its own budget; on Qwen the
    base's one-off propensities first, then the lessons in the case study's order, each whole or not at all
    (a lesson below its n is 'not testable here', whatever share of it would fit). What is left then buys
    descriptive runs at K = 2 of the lessons that did not fit, in the same order, also whole or not at all."""
    c = costs()
    k1 = r["l1"]["k"] or K_MAX
    out = {"gemma_l1": {"k": k1, "minutes": gemma_l1_min(k1), "fits": gemma_l1_min(k1) <= GEMMA_BUDGET_MIN}}
    base_once = c["propensity_l3"] + c["propensity_safety"]
    plan, seeds = qwen_plan(r, c), {}
    out["qwen"], left = allocate(plan, c, QWEN_BUDGET_MIN - base_once, seeds)
    untested = [row["lesson"] for row in out["qwen"] if not row["fits"]]
    out["descriptive"], left = allocate(plan, c, left, seeds, names=untested, k_of=lambda _k: DESCRIPTIVE_K)
    out.update(qwen_base_once=base_once, qwen_unit_costs=c, qwen_left=left,
               qwen_l4_base_answers=l4_answers_min(r["l4"]["n_queries"]))
    return out


# -- the page -------------------------------------------------------------------------------------------
def _k(k) -> str:
    return f"more than {K_MAX}" if k is None else str(k)


def _min(m) -> str:
    return "-" if m is None else f"{m:.0f} min"


TABLE_HEAD = ("lesson", "primary estimand", "test (across seeds unless said)", "Holm rows", "effect to detect",
              "n for power 0.8", "minutes at that n", "feasible here?")


def headline_table(r: dict) -> list[str]:
    """The page's headline: per lesson its estimand, test, table size, effect, n, minutes and verdict."""
    b = r["budget"]
    qwen = {row["lesson"]: row for row in b["qwen"]}
    t_test = "one-sample t, df K-1"
    rows = [
        ("1 (gemma3-270m)", "per-seed slope of P(Python 2 \\| prints) on the training share", t_test, L1_TABLE,
         f"slope {LESSON1_SLOPE:.0f}", f"{_k(r['l1']['k'])} seeds x 4 shares", b["gemma_l1"]),
        ("1 (Qwen, A30)", "P(Python 2 \\| prints) at a 30% share", t_test, L1_TABLE, "0.30",
         f"{_k(r['l1_qwen']['k'])} seeds", qwen["lesson 1 (Qwen)"]),
        ("2 (Qwen)", "sentence minus placebo, log-odds at contested points", t_test, L2_TABLE, f"+{SEED_DELTA:.3f}",
         f"{_k(r['l2']['k'])} seeds", qwen["lesson 2"]),
        ("3 (Qwen)", "B's change of the broken - twin gap (vs base)", t_test, L3_TABLE,
         f"-{SEED_DELTA:.3f} (erase a gap that size)", f"{_k(r['l3']['k'])} seeds of B and of C", qwen["lesson 3"]),
        ("4 (Qwen)", "routed minus always-B bad rate", "per adapter: McNemar per split, 2 x median; across seeds: t",
         L4_TABLE, f"-{CASE_BAD_BEFORE - CASE_BAD_AFTER:.2f}",
         f"{r['l4']['n_queries']} queries per adapter; {_k(r['l4']['k'])} seeds", qwen["lesson 4"]),
        ("safety (Qwen)", "code LoRA's change of refusal log-odds on harmful requests", t_test, SAFETY_TABLE,
         f"-{SEED_DELTA:.3f}", f"{_k(r['safety']['k'])} seeds", qwen["safety"]),
    ]
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    for *cells, cost in rows:
        verdict = "yes" if cost["fits"] else "**not testable here**"
        lines.append("| " + " | ".join(map(str, (*cells, _min(cost["minutes"]), verdict))) + " |")
    return lines


def render(r: dict | None = None) -> str:
    r = r or compute()
    l1, q1, l2, l2x, l3, s, l4, b = (r["l1"], r["l1_qwen"], r["l2"], r["l2_x3"], r["l3"], r["safety"], r["l4"],
                                     r["budget"])
    lines = [
        BEGIN,
        "<!-- generated by scripts/protocol_power.py; tests/test_protocol.py fails when this differs -->",
        "",
        *headline_table(r),
        "",
        "The computation, row by row (alpha is 0.05 divided by the table's rows: Holm's first step, the strictest):",
        "",
        f"- **Lesson 1, gemma3-270m.** A30's greedy counts {'/16, '.join(map(str, A30_GREEDY_K))}/16 have an "
        f"across-run SD of {l1['a30_sd']:.3f} against a binomial SE of {l1['a30_binomial_se']:.3f}; as a "
        f"beta-binomial that is an intra-class correlation phi = {l1['phi']:.3f} (var(k/n) = mu(1-mu)(phi + "
        f"(1-phi)/n)). Simulated ({SIM_REPS} replicates, seed {SIM_SEED}): per seed and share q in "
        f"{', '.join(f'{x:.2f}' for x in L1_RATES)}, the adapter's P(Python 2 | prints) ~ Beta(mean q, phi) (the "
        f"case study's truth, slope 1), observed on {l1['m']} printing answers ({L1_PROMPTS} prompts x a planned "
        f"{L1_PRINT_SHARE:.0%} that print); each seed's least-squares slope; a two-sided t test of the K slopes "
        f"against 0 at alpha {l1['alpha']:.4f}. Power: "
        + ", ".join(f"K={k} {p:.2f}" for k, p in l1["power"].items()) + f"; n = {_k(l1['k'])} seeds.",
        f"- **Lesson 1, Qwen A30.** The same phi at q = 0.30 on {l1['m']} printing answers: per-seed SD "
        f"{q1['sd']:.3f}, d = {q1['d']:.2f}; power with K=2 is {q1['power_k2']:.2f}; n = {_k(q1['k'])} seeds.",
        f"- **Lesson 2.** The sentence effect in four runs ({', '.join(f'{v:+.2f}' for v in SENTENCE_EFFECTS)}) "
        f"has an across-run SD of {l2['between']:.3f}; with a within-seed SE of {SENTENCE_WITHIN_SE} (cluster "
        f"bootstrap by prompt) the per-seed SD is {l2['total']:.3f}, d = {SEED_DELTA:.3f} / {l2['total']:.3f} = "
        f"{l2['d']:.2f}. Noncentral t at alpha {l2['alpha']:.3f}: "
        + ", ".join(f"K={k} {p:.2f}" for k, p in l2["power"].items()) + f"; n = {_k(l2['k'])} seeds. If the spread "
        f"on Qwen were three times gemma's (SD {l2x['total']:.3f}, d = {l2x['d']:.2f}): "
        + ", ".join(f"K={k} {p:.2f}" for k, p in l2x["power"].items()) + f"; n = {_k(l2x['k'])}.",
        f"- **Lesson 3.** The base's gap is tested first, over its {L3_PAIRS} spec pairs (paired t, no seeds: the "
        f"base is not trained); with an item SD of {GAP_ITEM_SD} it detects a gap of {l3['base_gap_mde']:.2f} "
        f"log-odds with power 0.8. B's change of the gap: per-seed SD = hypot(gemma's gap spread across runs "
        f"{l3['between']:.3f}, item SD / sqrt({L3_PAIRS}) = {GAP_ITEM_SD / math.sqrt(L3_PAIRS):.3f}) = "
        f"{l3['total']:.3f}; at alpha {l3['alpha']:.3f}, seeds needed to detect the erasure of a gap of "
        + ", ".join(f"{g:.2f}: {_k(k)}" for g, k in l3["by_gap"].items())
        + f". The protocol plans on {SEED_DELTA:.3f} (the size words moved the case study's decision).",
        f"- **Safety.** No figure in the case study: the reference effect is a refusal shift as large as the "
        f"case study's sentence (-{SEED_DELTA:.3f}). A fine-tune moves propensity levels, not gaps, so the "
        f"seed spread is gemma B's level shift across two runs ({', '.join(f'{v:+.2f}' for v in B_CHANGE_ON_BROKEN)}"
        f": SD {s['between']:.3f}) with an item SD of {CHANGE_ITEM_SD} over {SAFETY_REQUESTS} requests: "
        f"per-seed SD {s['total']:.3f}, d = {s['d']:.2f}; power with K=2 is {s['power_k2']:.2f}; "
        f"n = {_k(s['k'])} seeds.",
        f"- **Lesson 4.** Per adapter: B bad on 5% of the queries, the base right on them and the gate sending "
        f"exactly them to the base (the case study's 5% -> 0%); with cross-fitted routing every split's exact "
        f"McNemar sees all of them, and 2 x the median split p falls below {l4['alpha']:.3f} from "
        f"{l4['discordant_needed']} one-way discordant pairs on. P(at least that many) is {l4['power_200']:.2f} "
        f"with {L4_QUERIES} queries, 0.8 from {l4['n_queries']}. Across seeds: gemma's two runs (routed minus "
        f"always-B {', '.join(f'{v:+.3f}' for v in ROUTED_MINUS_B)}) leave a between-seed SD of "
        f"{l4['between']:.3f} after their sampling part; with {l4['n_queries']} queries' SE {l4['within']:.3f}, "
        f"d = {l4['d']:.2f}; n = {_k(l4['k'])} seeds.",
        "",
        f"Budget (today's measured costs; Qwen {QWEN_BUDGET_MIN} min in all, gemma's lesson 1 {GEMMA_BUDGET_MIN} min):",
        "",
        f"- Qwen unit costs: one adapter {b['qwen_unit_costs']['train_B']:.0f} min ({PAIRS} pairs x {EPOCHS} "
        f"epochs x {PAIR_TOKENS} tokens at {QWEN_TRAIN_TOK_S:.0f} tokens/s), C {b['qwen_unit_costs']['train_C']:.0f} "
        f"min (with its pushback pairs); decode {QWEN_DECODE_S_PER_TOKEN:.3f} s per token; teacher-forced "
        f"{QWEN_FORWARD_TOK_S:.0f} tokens/s (a training step is about three forwards). Per seed: lesson 2's scoring "
        f"{b['qwen_unit_costs']['l2_score']:.0f} min; lesson 1's {L1_PROMPTS} answers "
        f"{b['qwen_unit_costs']['l1_generate']:.0f} min; propensity {b['qwen_unit_costs']['propensity_l3']:.0f} min "
        f"(40 specs + 40 twins) and {b['qwen_unit_costs']['propensity_safety']:.0f} min (40 + 40 requests); "
        f"lesson 4's {l4['n_queries']} answers {b['qwen_l4_base_answers']:.0f} min per model; greedy free text "
        f"on 80 prompts {b['qwen_unit_costs']['free_text_80']:.0f} min.",
        f"- Gemma lesson 1 at {b['gemma_l1']['k']} seeds x 4 shares: {b['gemma_l1']['minutes']:.0f} min "
        f"({GEMMA_ADAPTER_S:.0f} s per adapter, {L1_PROMPTS} answers of 100 tokens at "
        f"{GEMMA_DECODE_S_PER_TOKEN:.4f} s per token): {'fits' if b['gemma_l1']['fits'] else 'does not fit'}.",
        f"- Qwen, the base's propensities first (lesson 3's stage 0 and safety): {b['qwen_base_once']:.0f} min; "
        f"then each lesson at its n, whole or not at all (training shared with an earlier lesson is not counted "
        f"twice):",
    ]
    for row in b["qwen"]:
        lines.append(f"  - {row['lesson']}: {_k(row['k'])} seeds, {_min(row['minutes'])}: "
                     f"{'fits' if row['fits'] else 'does not fit'}")
    lines.append(f"- Then descriptive runs at K = {DESCRIPTIVE_K} (per-seed figures, no recipe claim) of the "
                 "lessons that did not fit, in the same order:")
    for row in b["descriptive"]:
        lines.append(f"  - {row['lesson']}: {_min(row['minutes'])}: {'runs' if row['fits'] else 'does not fit'}")
    lines += [f"- Left of the Qwen budget after both: {b['qwen_left']:.0f} min.", "",
              "Verdicts decided now:", ""]
    lines += [f"- {line}" for line in verdicts(r)]
    lines += ["", "Texts fixed now (lengths in Qwen2.5-Coder tokens):", "",
              "| lever (lesson 2) | its placebo | tokens each |", "|---|---|---|"]
    lines += [f"| `{lever}` | `{placebo}` | {tokens} |" for lever, placebo, tokens in LEVER_PLACEBOS]
    lines += ["", "| pushback opening (lesson 3) | its control opening | tokens each |", "|---|---|---|"]
    lines += [f"| `{opening}` | `{control}` | {tokens} |" for opening, control, tokens in CONTROL_OPENINGS]
    lines += ["", END]
    return "\n".join(lines)


def verdicts(r: dict) -> list[str]:
    """One line per lesson: testable here, or why not (its n against the minutes it would take)."""
    b = r["budget"]
    gemma = b["gemma_l1"]
    lines = [f"lesson 1 on gemma3-270m: {'testable' if gemma['fits'] else 'not testable here'}: "
             f"{gemma['k']} seeds x 4 shares, {gemma['minutes']:.0f} of {GEMMA_BUDGET_MIN} min"]
    left = QWEN_BUDGET_MIN - b["qwen_base_once"]
    for row in b["qwen"]:
        if row["fits"]:
            lines.append(f"{row['lesson']}: testable: {row['k']} seeds, {row['minutes']:.0f} min")
            left -= row["minutes"]
        else:
            lines.append(f"{row['lesson']}: not testable here: {_k(row['k'])} seeds would take "
                         f"{_min(row['minutes'])}, with {left:.0f} min left of the Qwen budget")
    return lines


def page_section(text: str) -> str:
    """The generated section of a page (markers included)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{PAGE}: the markers {BEGIN} ... {END} are missing")
    return text[start:end + len(END)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the section in docs/protocol.md")
    args = parser.parse_args(argv)
    section = render()
    if not args.write:
        print(section)
        return 0
    text = PAGE.read_text()
    PAGE.write_text(text.replace(page_section(text), section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
