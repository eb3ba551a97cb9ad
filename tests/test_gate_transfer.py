"""Threshold transfer across models, on synthetic signals whose answer is known by hand."""

import numpy as np
import pytest

from tunelens.errors import UserError
from tunelens.gate.signals import TrustSignals
from tunelens.gate.transfer import ModelRun, signal_shift, transfer_experiment, transfer_reading

N = 40


def similarity_and_labels():
    # 40 queries, two kinds interleaved; the adapter fails exactly on the 10 least similar queries.
    similarity = np.linspace(0.1, 0.9, N)
    bad = similarity < similarity[10]
    kinds = ["a" if i % 2 else "b" for i in range(N)]
    return similarity, bad, kinds


def run(name, similarity, bad, log_perplexity):
    items = [TrustSignals(max_similarity=float(s), mean_similarity=float(s) - 0.05, adapter_base_kl=0.1 + 0.01 * i,
                          prompt_perplexity=float(np.exp(p)))
             for i, (s, p) in enumerate(zip(similarity, log_perplexity))]
    return ModelRun(name, items, np.asarray(bad, bool), np.zeros(len(bad), bool))


def rows_for(result, signals, source, target):
    return next(r for r in result["table"] if r["signals"] == signals and r["calibrated_on"] == source
                and r["applied_to"] == target)


def test_identical_models_transfer_exactly():
    similarity, bad, kinds = similarity_and_labels()
    log_ppl = 3 - 2 * similarity  # failures are the high-perplexity prompts
    a, b = run("a", similarity, bad, log_ppl), run("b", similarity, bad, log_ppl)
    result = transfer_experiment([a, b], kinds, target_coverage=0.8, alpha=0.1, seed=1)
    assert result["test_queries"] == 20 and len(result["table"]) == 3 * 2  # 3 signal sets x 2 directions
    for row in result["table"]:
        assert row["transferred"] == row["own"] and row["coverage_change"] == 0.0 and row["risk_change"] == 0.0
    assert signal_shift([a, b])["prompt_perplexity"]["correlation"]["b"] == pytest.approx(1.0)


def test_model_signal_in_other_units_does_not_transfer_but_retrieval_does():
    similarity, bad, kinds = similarity_and_labels()
    log_ppl = 3 - 2 * similarity
    source = run("gemma", similarity, bad, log_ppl)
    # Same queries, same failures, but the other model's perplexity is e^5 times higher everywhere: in the
    # source's units every prompt looks like a failure, so the source's threshold keeps nothing.
    target = run("smollm2", similarity, bad, log_ppl + 5)
    result = transfer_experiment([source, target], kinds, target_coverage=0.8, alpha=0.1, seed=1)
    model = rows_for(result, "model", "gemma", "smollm2")
    assert model["own"]["coverage"] >= 0.75 and model["transferred"]["coverage"] == 0.0
    assert model["transferred"]["risk"]["rate"] is None  # nothing kept, no risk to speak of
    # The reverse direction: in the lower units every prompt looks trustworthy, so everything is kept.
    reverse = rows_for(result, "model", "smollm2", "gemma")
    assert reverse["transferred"]["coverage"] == 1.0
    assert reverse["transferred"]["risk"]["k"] == int(bad[np.array(result["test_mask"])].sum())
    retrieval = rows_for(result, "retrieval", "gemma", "smollm2")
    assert retrieval["transferred"] == retrieval["own"]  # the same numbers on both models
    shift = signal_shift([source, target])
    assert shift["max_similarity"]["kind"] == "retrieval" and shift["max_similarity"]["correlation"]["smollm2"] == 1.0
    means = shift["prompt_perplexity"]["mean"]
    assert means["smollm2"] - means["gemma"] == pytest.approx(5)  # log-perplexity, e^5 times higher


def test_conformal_recalibration_finds_a_size_and_the_reading_says_it():
    similarity, bad, kinds = similarity_and_labels()
    a = run("a", similarity, bad, 3 - 2 * similarity)
    b = run("b", similarity, bad, 8 - 2 * similarity)
    result = transfer_experiment([a, b], kinds, target_coverage=0.8, alpha=0.1, seed=0)
    row = rows_for(result, "model", "a", "b")
    # Both signals order the queries perfectly on b too (only b's perplexity units differ), so the conformal
    # threshold on b's 20 calibration answers keeps bad ones while 20/21 * served_bad + 1/21 <= 0.1 allows:
    # served_bad <= 0.055, i.e. at most one of them.
    from tunelens.gate.failure import fit_failure_rule

    calibration = ~np.array(result["test_mask"])
    rule = fit_failure_rule([i for i, c in zip(a.items, calibration) if c], row["signal_names"], bad[calibration])
    kept = rule.scores(b.items) >= row["conformal"]["threshold"]
    assert (kept & bad & calibration).sum() <= 1 and (kept & ~bad).sum() > 0
    assert [s["n"] for s in row["conformal"]["sizes"]] == [5, 10, 20]
    lines = transfer_reading(result)
    assert len(lines) == len(result["table"])
    assert any("calibrated on a -> applied to b" in line and "model signals" in line for line in lines)


def test_mismatched_runs_are_refused():
    similarity, bad, kinds = similarity_and_labels()
    a = run("a", similarity, bad, similarity)
    short = run("b", similarity[:-1], bad[:-1], similarity[:-1])
    with pytest.raises(UserError, match="same"):
        transfer_experiment([a, short], kinds, target_coverage=0.8, alpha=0.1)
    with pytest.raises(UserError, match="two models"):
        transfer_experiment([a], kinds, target_coverage=0.8, alpha=0.1)
    all_bad = run("c", similarity, np.ones(N, bool), similarity)
    with pytest.raises(UserError, match="all badly"):
        transfer_experiment([a, all_bad], kinds, target_coverage=0.8, alpha=0.1)
