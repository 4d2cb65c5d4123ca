"""Adaptive consensus (after Adaptive-Consistency, Aggarwal et al., 2023).

Ask two models; while they disagree, ask one more, until the posterior probability that the
current leader is the true majority answer reaches the target, the panel is full, or the next
model would exceed the budget. The probability is the Beta stopping criterion of the paper
(:func:`core.consensus.stats.leader_probability`): with ``v1`` and ``v2`` the votes of the two
leading answers, ``P = 1 - I_{1/2}(v1 + 1, v2 + 1)``, so two agreeing models give 0.875, three
0.9375, four 0.969, and 1-1 gives 0.5. With reliability weights, the votes are the weighted
shares scaled back to the number of valid voters (``v = n * share``), so weighting moves the
leader and the margin but not the amount of evidence.

Failed proposers count towards ``max_models`` and their cost towards the budget (they were
called), but they never vote. The outcome's confidence is ``P``; ``needs_more`` is set while the
target is not reached, also when the loop stopped for budget or panel size (a signal for review).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from core.consensus.stats import leader_probability
from core.consensus.types import AdaptiveDecision, CandidateAnswer
from core.consensus.vote import majority_vote, split_candidates, tally

MIN_MODELS = 2
CONFIDENT, MAX_MODELS, BUDGET, WARM_UP, DISAGREEMENT, EXHAUSTED = (
    "confident",
    "max_models",
    "budget",
    "warm_up",
    "disagreement",
    "exhausted",
)


def _decimal(value: Decimal | float | int) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def adaptive_step(
    cands_so_far: Sequence[CandidateAnswer],
    *,
    target_confidence: float,
    max_models: int,
    remaining_budget_usd: Decimal | float,
    next_model_cost_usd: Decimal | float,
    weights: Mapping[str, float] | None = None,
) -> AdaptiveDecision:
    """Decide whether to stop or ask one more model, given the answers so far.

    Stops with reason ``"confident"`` when at least two models answered and the leader's
    posterior probability is >= ``target_confidence``; otherwise ``"max_models"`` when
    ``max_models`` candidates were asked, ``"budget"`` when ``next_model_cost_usd`` exceeds
    ``remaining_budget_usd`` (the budget left after paying for ``cands_so_far``). Otherwise it
    continues with reason ``"warm_up"`` (fewer than two valid answers) or ``"disagreement"``.
    """
    if not 0.0 < target_confidence <= 1.0:
        raise ValueError("target_confidence must be within (0, 1]")
    if max_models < 1:
        raise ValueError("max_models must be at least 1")
    vote = majority_vote(cands_so_far, weights, strategy="adaptive")
    ballots, _ = split_candidates(cands_so_far)
    probability = 0.0
    if ballots:
        tallies = tally(ballots, weights)
        total = sum(t.weight for t in tallies)
        v1 = len(ballots) * tallies[0].weight / total
        v2 = len(ballots) * tallies[1].weight / total if len(tallies) > 1 else 0.0
        probability = leader_probability(v1, v2)
    # A small tolerance: P(2-0) is 0.8749999… in floating point, and must meet a 0.875 target.
    confident = len(ballots) >= MIN_MODELS and probability >= target_confidence - 1e-9
    if confident:
        stop, reason = True, CONFIDENT
    elif len(cands_so_far) >= max_models:
        stop, reason = True, MAX_MODELS
    elif _decimal(next_model_cost_usd) > _decimal(remaining_budget_usd):
        stop, reason = True, BUDGET
    else:
        stop, reason = False, WARM_UP if len(ballots) < MIN_MODELS else DISAGREEMENT
    detail = f"{reason}: leader probability {probability:.3f} (target {target_confidence:.3f})"
    if vote.reasons:
        detail = f"{detail}; {vote.reasons}"
    outcome = vote.model_copy(
        update={"confidence": probability, "needs_more": not confident, "reasons": detail}
    )
    return AdaptiveDecision(
        stop=stop,
        reason=reason,
        outcome=outcome,
        models_used=len(cands_so_far),
        cost_usd=sum((c.cost_usd for c in cands_so_far), Decimal(0)),
    )


def run_adaptive_offline(
    answers_in_order: Sequence[CandidateAnswer],
    *,
    target_confidence: float,
    max_models: int,
    budget_usd: Decimal | float,
    weights: Mapping[str, float] | None = None,
) -> AdaptiveDecision:
    """Replay the adaptive loop over precomputed answers (in the order models would be asked).

    Each answer's ``cost_usd`` is what asking that model costs. Returns the final decision; its
    ``models_used`` and ``cost_usd`` are what the loop spent. Stops with ``"exhausted"`` when the
    list ends before any other stopping reason.
    """
    budget = _decimal(budget_usd)
    used: list[CandidateAnswer] = []
    while True:
        upcoming = answers_in_order[len(used)] if len(used) < len(answers_in_order) else None
        decision = adaptive_step(
            used,
            target_confidence=target_confidence,
            max_models=max_models,
            remaining_budget_usd=budget - sum((c.cost_usd for c in used), Decimal(0)),
            next_model_cost_usd=upcoming.cost_usd if upcoming is not None else Decimal(0),
            weights=weights,
        )
        if decision.stop:
            return decision
        if upcoming is None:
            return decision.model_copy(update={"stop": True, "reason": EXHAUSTED})
        used.append(upcoming)
