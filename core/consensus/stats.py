"""The small amount of statistics the strategies share (plain Python, deterministic).

* **Smoothed share** (:func:`smoothed_share`): a winning vote share ``s`` among ``n`` voters is
  reported as ``(n*s + 1) / (n + 2)``, the posterior mean of a Beta(1, 1) (uniform) prior after
  ``n*s`` agreeing and ``n*(1-s)`` disagreeing votes (Laplace's rule of succession). One vote of
  one is 2/3, three of three 0.8, five of five 6/7: small panels never claim certainty.
* **Vote weights** (:func:`vote_weights`): a model's measured reliability ``p`` (the probability
  it answers right) votes with weight ``log(p / (1 - p))``, the optimal weight for independent
  voters (Nitzan & Paroush, 1982). ``p`` is clamped to [0.55, 0.99] so a weak model still
  counts a little and no single model outvotes a panel unconditionally.
* **Leader probability** (:func:`leader_probability`): the stopping rule of Adaptive-Consistency
  (Aggarwal et al., 2023). With ``v1`` votes for the leader and ``v2`` for the runner-up and a
  uniform prior on their shares, ``p1 / (p1 + p2) ~ Beta(v1 + 1, v2 + 1)``; the probability that
  the leader is the true majority is ``P(p1 > p2) = 1 - I_{1/2}(v1 + 1, v2 + 1)`` where ``I`` is
  the regularised incomplete beta function. For whole counts this equals
  ``P(Binomial(v1 + v2 + 1, 1/2) <= v1)``: 2-0 gives 0.875, 3-0 0.9375, 4-0 0.969, 1-1 0.5.
* **Reliability** (:func:`reliability_update`): Beta(a, b) posterior mean of a model's accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

MIN_RELIABILITY = 0.55
MAX_RELIABILITY = 0.99


def smoothed_share(share: float, voters: int) -> float:
    """Posterior mean (uniform prior) of a winning share ``share`` observed among ``voters``."""
    if voters <= 0:
        return 0.0
    share = min(max(share, 0.0), 1.0)
    return (voters * share + 1.0) / (voters + 2.0)


def vote_weight(reliability: float) -> float:
    """Log-odds vote weight of a model with the given reliability (clamped, always > 0)."""
    p = min(max(reliability, MIN_RELIABILITY), MAX_RELIABILITY)
    return math.log(p / (1.0 - p))


def vote_weights(models: Sequence[str], reliabilities: Mapping[str, float] | None) -> list[float]:
    """The vote weight of each model in ``models`` (1 each when no reliabilities are given).

    A model missing from ``reliabilities`` gets the mean reliability of the models present, so an
    unmeasured model is treated as average rather than as bad. Raises ``ValueError`` when a
    reliability is outside [0, 1] (weights here are probabilities, not arbitrary multipliers).
    """
    if reliabilities is None:
        return [1.0] * len(models)
    for model, p in reliabilities.items():
        if not 0.0 <= p <= 1.0 or math.isnan(p):
            raise ValueError(f"reliability of {model!r} must be within [0, 1], got {p!r}")
    default = sum(reliabilities.values()) / len(reliabilities) if reliabilities else 0.5
    return [vote_weight(reliabilities.get(m, default)) for m in models]


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's continued fraction for the incomplete beta function (Numerical Recipes, betacf)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1`` (the Beta(a, b) CDF at ``x``)."""
    if a <= 0 or b <= 0:
        raise ValueError("a and b must be positive")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        value = front * _beta_continued_fraction(a, b, x) / a
    else:
        value = 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b
    return min(max(value, 0.0), 1.0)


def leader_probability(leader_votes: float, runner_up_votes: float) -> float:
    """Posterior probability that the leader's true share exceeds the runner-up's (see module doc)."""
    v1, v2 = max(leader_votes, 0.0), max(runner_up_votes, 0.0)
    return 1.0 - regularized_incomplete_beta(v1 + 1.0, v2 + 1.0, 0.5)


def reliability_mean(correct: float, wrong: float, prior: tuple[float, float] = (1.0, 1.0)) -> float:
    """Posterior mean ``(a + correct) / (a + b + correct + wrong)`` of a Beta(a, b) prior."""
    a, b = prior
    return (a + correct) / (a + b + correct + wrong)


def reliability_update(
    counts: Mapping[str, tuple[int, int]],
    model: str,
    correct: bool,
    prior: tuple[float, float] = (1.0, 1.0),
) -> tuple[dict[str, tuple[int, int]], float]:
    """Record one graded answer of ``model``; return the new counts and its reliability.

    ``counts`` maps a model to ``(correct, wrong)`` observations and is not modified. The
    reliability is the Beta posterior mean (with the default uniform prior, a model right 9 times
    of 10 has 10/12). Pass :func:`reliabilities` of the counts as ``weights`` to the votes.
    """
    right, wrong = counts.get(model, (0, 0))
    updated = dict(counts)
    updated[model] = (right + 1, wrong) if correct else (right, wrong + 1)
    return updated, reliability_mean(*updated[model], prior=prior)


def reliabilities(
    counts: Mapping[str, tuple[int, int]], prior: tuple[float, float] = (1.0, 1.0)
) -> dict[str, float]:
    """Beta posterior mean reliability of every model in ``counts``."""
    return {model: reliability_mean(r, w, prior=prior) for model, (r, w) in counts.items()}
