"""Statistics for eval results: bootstrap confidence intervals, paired tests, McNemar, regression.

All functions are deterministic: resampling uses ``numpy.random.default_rng(seed)``.
Conventions:

* paired functions take per-case scores in the same case order (``a[i]`` and ``b[i]`` belong to
  the same case) and report differences as ``b - a`` (candidate minus baseline);
* effect size is Cohen's d_z: mean of the differences over their sample standard deviation
  (ddof=1), 0 when that deviation is 0;
* empty inputs, mismatched lengths and non-finite values raise ``ValueError`` (the caller decides
  how an errored case enters a comparison; it is never guessed here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel
from scipy import stats as sps

FloatArray = npt.NDArray[np.float64]

# Differences (and spreads) smaller than this are floating-point noise: 0.3 - (0.1 + 0.2) != 0.
_TOLERANCE = 1e-12
# Resample in blocks so memory stays bounded (~8 MB of indices per block) for large datasets.
_BLOCK_ELEMENTS = 1_000_000


class Interval(BaseModel):
    """Mean with a two-sided percentile bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float


class PairedResult(BaseModel):
    """Paired comparison of two targets on the same cases; differences are ``b - a``."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided
    effect_size: float  # Cohen's d_z
    method: str


class McNemarResult(BaseModel):
    """McNemar test on paired pass/fail outcomes."""

    n: int
    a_only: int  # cases a passed and b failed
    b_only: int  # cases b passed and a failed
    p_value: float  # two-sided


class RegressionVerdict(BaseModel):
    """Whether a candidate run is significantly worse than its baseline (one-sided test)."""

    regressed: bool
    p_value: float
    effect_size: float
    mean_baseline: float
    mean_candidate: float
    n: int
    method: str
    reason: str


def _as_array(values: Sequence[float], name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of numbers")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains a non-finite value")
    return arr


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Both samples and their differences ``b - a`` (float noise rounded to exactly 0)."""
    arr_a, arr_b = _as_array(a, "a"), _as_array(b, "b")
    if arr_a.size != arr_b.size:
        raise ValueError(f"paired samples differ in length ({arr_a.size} vs {arr_b.size})")
    diffs = arr_b - arr_a
    diffs[np.abs(diffs) < _TOLERANCE] = 0.0
    return arr_a, arr_b, diffs


def _constant(values: FloatArray) -> bool:
    return float(np.ptp(values)) < _TOLERANCE


def _bootstrap_means(values: FloatArray, n_resamples: int, seed: int) -> FloatArray:
    rng = np.random.default_rng(seed)
    n = values.size
    block = max(1, _BLOCK_ELEMENTS // n)
    means = np.empty(n_resamples, dtype=np.float64)
    done = 0
    while done < n_resamples:
        size = min(block, n_resamples - done)
        idx = rng.integers(0, n, size=(size, n))
        means[done : done + size] = values[idx].mean(axis=1)
        done += size
    return means


def _check_confidence(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be strictly between 0 and 1")
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")


def _percentile_interval(
    values: FloatArray, *, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float]:
    if values.size == 1 or _constant(values):
        only = float(values.mean())
        return only, only
    means = _bootstrap_means(values, n_resamples, seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Interval:
    """Mean of ``values`` with a percentile bootstrap confidence interval.

    A single value or identical values give a zero-width interval at the mean.
    """
    _check_confidence(confidence, n_resamples)
    arr = _as_array(values, "values")
    low, high = _percentile_interval(arr, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return Interval(mean=float(arr.mean()), low=low, high=high, n=int(arr.size), confidence=confidence)


def _cohens_dz(diffs: FloatArray) -> float:
    if diffs.size < 2:
        return 0.0
    sd = float(diffs.std(ddof=1))
    if sd < _TOLERANCE or not math.isfinite(sd):
        return 0.0
    return float(diffs.mean()) / sd


def _wilcoxon_p(diffs: FloatArray, alternative: Literal["two-sided", "less", "greater"]) -> float:
    """Wilcoxon signed-rank p-value; zero differences are dropped (Wilcoxon's method)."""
    nonzero = diffs[diffs != 0.0]
    if nonzero.size == 0:
        return 1.0
    result = sps.wilcoxon(nonzero, zero_method="wilcox", alternative=alternative)
    p = float(result.pvalue)
    return 1.0 if math.isnan(p) else min(1.0, p)


def _bootstrap_p(diffs: FloatArray, n_resamples: int, seed: int) -> float:
    """Two-sided paired bootstrap p-value: resample the differences shifted to mean 0 (the null)."""
    observed = float(diffs.mean())
    if _constant(diffs):
        return 1.0 if observed == 0.0 else 1.0 / (n_resamples + 1)
    null_means = _bootstrap_means(diffs - observed, n_resamples, seed)
    extreme = int(np.count_nonzero(np.abs(null_means) >= abs(observed) - 1e-12))
    return (extreme + 1) / (n_resamples + 1)


def paired_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    method: Literal["wilcoxon", "bootstrap"] = "wilcoxon",
    seed: int = 0,
    confidence: float = 0.95,
    n_resamples: int = 2000,
) -> PairedResult:
    """Paired two-sided test of ``b - a`` over the same cases.

    ``wilcoxon``: Wilcoxon signed-rank test (scipy; zero differences dropped). ``bootstrap``:
    paired bootstrap of the mean difference. Both report a percentile bootstrap CI of the mean
    difference. All pairs equal gives p_value 1.0.
    """
    _check_confidence(confidence, n_resamples)
    _, _, diffs = _paired(a, b)
    if method == "wilcoxon":
        p_value = _wilcoxon_p(diffs, "two-sided")
    elif method == "bootstrap":
        p_value = _bootstrap_p(diffs, n_resamples, seed)
    else:
        raise ValueError(f"unknown paired test method {method!r}")
    if not np.any(diffs):
        p_value = 1.0
    low, high = _percentile_interval(diffs, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return PairedResult(
        n=int(diffs.size),
        mean_diff=float(diffs.mean()),
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        effect_size=_cohens_dz(diffs),
        method=method,
    )


# Below this many discordant pairs the chi-square approximation is poor: use the exact test.
_MCNEMAR_EXACT_BELOW = 25


def mcnemar(a_pass: Sequence[bool], b_pass: Sequence[bool]) -> McNemarResult:
    """McNemar's test on paired pass/fail outcomes (two-sided).

    Exact binomial test on the discordant pairs when there are fewer than 25 of them, otherwise
    the chi-square statistic with continuity correction, ``(|a_only - b_only| - 1)^2 / (a_only + b_only)``.
    """
    if len(a_pass) != len(b_pass):
        raise ValueError(f"paired samples differ in length ({len(a_pass)} vs {len(b_pass)})")
    if not a_pass:
        raise ValueError("a_pass is empty")
    a_only = sum(1 for x, y in zip(a_pass, b_pass, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a_pass, b_pass, strict=True) if y and not x)
    discordant = a_only + b_only
    if discordant == 0:
        p_value = 1.0
    elif discordant < _MCNEMAR_EXACT_BELOW:
        p_value = float(sps.binomtest(min(a_only, b_only), discordant, 0.5).pvalue)
    else:
        statistic = (abs(a_only - b_only) - 1) ** 2 / discordant
        p_value = float(sps.chi2.sf(statistic, df=1))
    return McNemarResult(n=len(a_pass), a_only=a_only, b_only=b_only, p_value=min(1.0, p_value))


def regression_verdict(
    baseline: Sequence[float], candidate: Sequence[float], *, alpha: float = 0.05, min_drop: float = 0.0
) -> RegressionVerdict:
    """Compare a candidate run with its baseline on the same cases (paired, one-sided).

    Regressed iff the one-sided Wilcoxon signed-rank test finds the candidate significantly
    LOWER (p < alpha) and the mean drop ``mean(baseline) - mean(candidate)`` exceeds ``min_drop``.
    An improvement or no change is never a regression.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be strictly between 0 and 1")
    if min_drop < 0.0:
        raise ValueError("min_drop must be >= 0")
    arr_base, arr_cand, diffs = _paired(baseline, candidate)
    p_value = _wilcoxon_p(diffs, "less")
    mean_base, mean_cand = float(arr_base.mean()), float(arr_cand.mean())
    drop = mean_base - mean_cand
    significant = p_value < alpha
    regressed = significant and drop > min_drop
    if regressed:
        reason = f"mean dropped by {drop:.4g} (p={p_value:.3g} < {alpha})"
    elif not significant:
        reason = f"no significant drop (one-sided p={p_value:.3g} >= {alpha})"
    else:
        reason = f"significant but the mean drop {drop:.4g} is not above min_drop {min_drop:.4g}"
    return RegressionVerdict(
        regressed=regressed,
        p_value=p_value,
        effect_size=_cohens_dz(diffs),
        mean_baseline=mean_base,
        mean_candidate=mean_cand,
        n=int(diffs.size),
        method="wilcoxon-signed-rank-one-sided",
        reason=reason,
    )
