"""evals.stats against textbook values, scipy and simple invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from evals.stats import bootstrap_ci, mcnemar, paired_test, regression_verdict

# Darwin's Zea mays data (cross- minus self-fertilised heights, eighths of an inch), the worked
# example of scipy.stats.wilcoxon's documentation: two-sided exact p = 0.04126.
DARWIN = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]


def test_bootstrap_ci_covers_the_mean_and_is_deterministic() -> None:
    values = np.random.default_rng(1).normal(0.7, 0.1, size=50).tolist()
    ci = bootstrap_ci(values, seed=3)
    assert ci.low < ci.mean < ci.high
    assert ci.mean == pytest.approx(float(np.mean(values)))
    assert (ci.n, ci.confidence) == (50, 0.95)
    assert bootstrap_ci(values, seed=3) == ci
    # ~ mean ± 1.96 * sd / sqrt(n)
    half = 1.96 * float(np.std(values, ddof=1)) / math.sqrt(50)
    assert ci.high - ci.low == pytest.approx(2 * half, rel=0.2)
    assert (
        bootstrap_ci(values, confidence=0.5).high - bootstrap_ci(values, confidence=0.5).low
        < ci.high - ci.low
    )


def test_bootstrap_ci_coverage_is_close_to_nominal() -> None:
    rng = np.random.default_rng(7)
    covered = sum(
        (ci := bootstrap_ci(rng.normal(0.0, 1.0, size=40).tolist(), n_resamples=1000, seed=i)).low
        <= 0.0
        <= ci.high
        for i in range(200)
    )
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_ci_degenerate_inputs() -> None:
    assert bootstrap_ci([0.4]).model_dump() == {
        "mean": 0.4,
        "low": 0.4,
        "high": 0.4,
        "n": 1,
        "confidence": 0.95,
    }
    same = bootstrap_ci([1.0] * 10)
    assert (same.low, same.high) == (1.0, 1.0)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.0)


def test_wilcoxon_matches_the_textbook_value() -> None:
    result = paired_test([0.0] * len(DARWIN), DARWIN)
    assert result.p_value == pytest.approx(0.041259765625)
    assert result.p_value == pytest.approx(float(sps.wilcoxon(DARWIN).pvalue))
    assert result.mean_diff == pytest.approx(float(np.mean(DARWIN)))
    assert result.effect_size == pytest.approx(float(np.mean(DARWIN)) / float(np.std(DARWIN, ddof=1)))
    assert result.ci_low < result.mean_diff < result.ci_high
    assert (result.n, result.method) == (15, "wilcoxon")


def test_paired_test_direction_and_equal_pairs() -> None:
    a = [0.2, 0.4, 0.5, 0.1, 0.3, 0.6, 0.2, 0.4]
    b = [x + 0.1 for x in a]
    better = paired_test(a, b)
    assert better.mean_diff == pytest.approx(0.1)
    assert better.effect_size == 0.0  # constant difference: sd 0 → d_z reported as 0
    assert better.p_value < 0.05
    assert paired_test(b, a).mean_diff == pytest.approx(-0.1)
    same = paired_test(a, a)
    assert (same.p_value, same.effect_size, same.mean_diff) == (1.0, 0.0, 0.0)
    assert paired_test(a, a, method="bootstrap").p_value == 1.0
    with pytest.raises(ValueError, match="length"):
        paired_test([1.0], [1.0, 2.0])


def test_paired_bootstrap_p_value() -> None:
    rng = np.random.default_rng(11)
    a = rng.normal(0.5, 0.1, size=60)
    shifted = paired_test(
        a.tolist(), (a + rng.normal(0.08, 0.05, size=60)).tolist(), method="bootstrap", seed=2
    )
    assert shifted.p_value < 0.01
    assert shifted.effect_size > 1.0
    noise = paired_test(a.tolist(), (a + rng.normal(0.0, 0.05, size=60)).tolist(), method="bootstrap", seed=2)
    assert noise.p_value > 0.05
    assert noise.method == "bootstrap"


def _binom_two_sided(k: int, n: int) -> float:
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / float(2**n))


def test_mcnemar_exact_below_25_discordant() -> None:
    # 6 pairs only a passed, 16 only b passed, 59 + 80 concordant (the classic 2x2 example).
    a = [True] * 59 + [True] * 6 + [False] * 16 + [False] * 80
    b = [True] * 59 + [False] * 6 + [True] * 16 + [False] * 80
    result = mcnemar(a, b)
    assert (result.n, result.a_only, result.b_only) == (161, 6, 16)
    assert result.p_value == pytest.approx(_binom_two_sided(6, 22))
    assert result.p_value == pytest.approx(0.0524, abs=1e-4)


def test_mcnemar_chi_square_with_continuity_correction() -> None:
    a = [True] * 10 + [False] * 30 + [True] * 5
    b = [False] * 10 + [True] * 30 + [True] * 5
    result = mcnemar(a, b)
    statistic = (abs(10 - 30) - 1) ** 2 / 40
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(statistic / 2)))  # chi2(1) survival
    assert mcnemar([True, False], [True, False]).p_value == 1.0
    with pytest.raises(ValueError, match="length"):
        mcnemar([True], [True, False])


def test_regression_not_flagged_for_the_same_distribution() -> None:
    flagged = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        baseline, candidate = rng.uniform(0.4, 0.9, size=50), rng.uniform(0.4, 0.9, size=50)
        verdict = regression_verdict(baseline.tolist(), candidate.tolist())
        flagged += verdict.regressed
    assert flagged <= 5  # alpha = 0.05, one-sided: ~2 of 40 expected by chance


def test_regression_flagged_for_a_real_drop() -> None:
    rng = np.random.default_rng(5)
    baseline = rng.uniform(0.5, 1.0, size=40)
    candidate = baseline - rng.uniform(0.0, 0.2, size=40)
    verdict = regression_verdict(baseline.tolist(), candidate.tolist())
    assert verdict.regressed
    assert verdict.p_value < 0.001
    assert verdict.effect_size < 0
    assert verdict.mean_candidate < verdict.mean_baseline
    assert "dropped" in verdict.reason
    # The same data the other way round is an improvement, never a regression.
    assert not regression_verdict(candidate.tolist(), baseline.tolist()).regressed
    # A drop smaller than min_drop is not a regression even when significant.
    small = regression_verdict(baseline.tolist(), candidate.tolist(), min_drop=0.5)
    assert not small.regressed
    assert "min_drop" in small.reason


def test_regression_on_pass_fail_scores_and_identical_runs() -> None:
    baseline = [1.0] * 30
    candidate = [1.0] * 18 + [0.0] * 12
    assert regression_verdict(baseline, candidate).regressed
    same = regression_verdict(baseline, baseline)
    assert not same.regressed
    assert same.p_value == 1.0
