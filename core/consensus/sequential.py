"""Cost-aware sequential consensus: ask the cheapest informative models, stop on posterior confidence.

Each model has a measured reliability ``p`` (the probability it answers right) and a cost per
call. Under the **independent-voter model** (Nitzan & Paroush, 1982; Dawid & Skene, 1979) with
``alternatives`` wrong answers equally likely, the log-likelihood of "the truth is ``a``" grows by

    w = log(p * alternatives / (1 - p))

for every model that answered ``a``. With a uniform prior over the ``alternatives + 1`` possible
answers, the posterior of ``a`` is ``exp(W_a) / (sum_b exp(W_b) + unseen)``, where ``W_b`` sums
the weights of the models that answered ``b`` and ``unseen`` counts the possible answers nobody
gave (each with ``W = 0``). With ``alternatives = 1`` (the default, the most conservative: every
wrong answer is the same one) ``w`` is the log-odds vote weight of :mod:`core.consensus.stats`,
so the leader is the weighted vote's winner and two agreeing models of reliability 0.75 and 0.82
give a posterior of 0.93. ``p`` is clamped to [0.55, 0.99] as for the weighted vote.

The loop stops when at least two models gave a valid answer and the leader's posterior is at
least ``target_confidence``. Otherwise it chooses whom to ask next by **one-step lookahead**:
for each model not asked yet, the probability (under the same model) that its answer would reach
the target, divided by its cost; the best ratio wins. When no single model can reach the target
(no answers yet, or a split that needs two more votes), it looks at pairs the same way and asks
both at once (they can run in parallel). When no pair can either, it asks the most reliable
model left. Cheap, fairly reliable models are therefore asked first, and the strong expensive
ones mainly when the cheap ones disagree.

Correlated errors (models of one family that err alike) make the posterior overconfident; the
calibrated target absorbs part of it. Failed proposers count as asked and paid, never as votes.
Everything here is pure and deterministic: ties go to the earlier model of ``pool``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from core.consensus.stats import MAX_RELIABILITY, MIN_RELIABILITY
from core.consensus.types import AdaptiveDecision, CandidateAnswer, ConsensusOutcome
from core.consensus.vote import Ballot, Tally, display_answer, empty_outcome, split_candidates, votes_of

STRATEGY = "adaptive"
MIN_VOTES = 2
CONFIDENT, MAX_MODELS, BUDGET, EXHAUSTED, ASK = "confident", "max_models", "budget", "exhausted", "ask"
# Lookahead labels; normalised answers never start with "\x00".
_TRUTH, _FRESH = "\x00truth", "\x00fresh"
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Voter:
    """A model that may be asked: its measured reliability and what one call is expected to cost."""

    model: str
    reliability: float
    cost_usd: Decimal


def voter_weight(reliability: float, alternatives: int = 1) -> float:
    """Evidence of one vote: ``log(p * alternatives / (1 - p))`` with ``p`` clamped to [0.55, 0.99]."""
    if alternatives < 1:
        raise ValueError("alternatives must be at least 1")
    if not 0.0 <= reliability <= 1.0 or math.isnan(reliability):
        raise ValueError(f"reliability must be within [0, 1], got {reliability!r}")
    p = min(max(reliability, MIN_RELIABILITY), MAX_RELIABILITY)
    return math.log(p * alternatives / (1.0 - p))


def answer_posterior(
    votes: Sequence[tuple[str, float]], alternatives: int = 1
) -> tuple[dict[str, float], float]:
    """Posterior of each answer given ``(label, reliability)`` votes, and the mass of unseen answers.

    The answers form a space of ``alternatives + 1`` (at least the number of distinct labels).
    """
    totals: dict[str, float] = {}
    for label, reliability in votes:
        totals[label] = totals.get(label, 0.0) + voter_weight(reliability, alternatives)
    unseen = max(alternatives + 1 - len(totals), 0)
    top = max([*totals.values(), 0.0])
    norm = sum(math.exp(w - top) for w in totals.values()) + unseen * math.exp(-top)
    return {label: math.exp(w - top) / norm for label, w in totals.items()}, unseen * math.exp(-top) / norm


def _ranked(posterior: Mapping[str, float], counts: Mapping[str, int]) -> list[str]:
    """Labels by posterior (rounded, so float noise cannot reorder), then votes, then label."""
    return sorted(posterior, key=lambda label: (-round(posterior[label], 12), -counts[label], label))


def _leader_probability(votes: Sequence[tuple[str, float]], alternatives: int) -> float:
    posterior, _ = answer_posterior(votes, alternatives)
    return max(posterior.values(), default=0.0)


def stop_probability(
    votes: Sequence[tuple[str, float]],
    extra: Sequence[float],
    *,
    target_confidence: float,
    alternatives: int = 1,
) -> float:
    """Probability (under the independent-voter model) that asking models of reliabilities
    ``extra`` makes the leader's posterior reach ``target_confidence`` with at least two votes.

    The truth is drawn from the current posterior (one representative for the unseen answers);
    an extra model answers it with its reliability, else any wrong answer uniformly. Wrong
    answers nobody gave yet are merged into one label when there is one such answer, else each is
    treated as distinct (a slight underestimate of agreeing on a new wrong answer).
    """
    posterior, unseen_mass = answer_posterior(votes, alternatives)
    seen = list(posterior)
    truths: list[tuple[str, float]] = list(posterior.items())
    if unseen_mass > 0.0:
        truths.append((_TRUTH, unseen_mass))
    total = 0.0
    for truth, p_truth in truths:
        fresh_answers = alternatives + 1 - len(seen) - (1 if truth == _TRUTH else 0)
        outcomes = [*seen, *([_TRUTH] if truth == _TRUTH else []), *([_FRESH] if fresh_answers > 0 else [])]
        for answers in itertools.product(outcomes, repeat=len(extra)):
            probability = p_truth
            new_votes = list(votes)
            for k, (answer, reliability) in enumerate(zip(answers, extra, strict=True)):
                p = min(max(reliability, MIN_RELIABILITY), MAX_RELIABILITY)
                if answer == truth:
                    probability *= p
                elif answer == _FRESH:
                    probability *= (1.0 - p) * fresh_answers / alternatives
                else:
                    probability *= (1.0 - p) / alternatives
                label = f"{_FRESH}{k}" if answer == _FRESH and fresh_answers > 1 else answer
                new_votes.append((label, reliability))
            if probability <= 0.0 or len(new_votes) < MIN_VOTES:
                continue
            if _leader_probability(new_votes, alternatives) >= target_confidence - _TOLERANCE:
                total += probability
    return total


def _value(probability: float, cost: Decimal) -> float:
    return probability / float(cost) if cost > 0 else math.inf * probability if probability else 0.0


def choose_next(
    votes: Sequence[tuple[str, float]],
    candidates: Sequence[Voter],
    *,
    target_confidence: float,
    alternatives: int = 1,
    slots: int = 2,
    budget_usd: Decimal | None = None,
) -> list[Voter]:
    """Whom to ask next (one model, or a pair when one cannot settle it); empty when nobody fits.

    ``candidates`` are the models not asked yet, in preference order (ties go to the earlier);
    ``slots`` is how many more may be asked; ``budget_usd`` (None: no cap) bounds their cost.
    """
    affordable = [v for v in candidates if budget_usd is None or v.cost_usd <= budget_usd]
    if not affordable or slots < 1:
        return []

    def single(v: Voter) -> float:
        return stop_probability(
            votes, [v.reliability], target_confidence=target_confidence, alternatives=alternatives
        )

    if votes:
        scored = [(_value(single(v), v.cost_usd), -i, v) for i, v in enumerate(affordable)]
        value, _, best = max(scored, key=lambda s: (s[0], s[1]))
        if value > 0.0:
            return [best]
    if slots >= 2:
        pairs = [
            (a, b)
            for a, b in itertools.combinations(affordable, 2)
            if budget_usd is None or a.cost_usd + b.cost_usd <= budget_usd
        ]
        best_pair, best_value = None, 0.0
        for a, b in pairs:
            p = stop_probability(
                votes,
                [a.reliability, b.reliability],
                target_confidence=target_confidence,
                alternatives=alternatives,
            )
            value = _value(p, a.cost_usd + b.cost_usd)
            if value > best_value:
                best_pair, best_value = (a, b), value
        if best_pair is not None:
            return list(best_pair)
    return [min(enumerate(affordable), key=lambda iv: (-iv[1].reliability, iv[0]))[1]]


def _outcome(
    cands: Sequence[CandidateAnswer], reliability: Mapping[str, float], alternatives: int
) -> tuple[ConsensusOutcome, float]:
    ballots, failed = split_candidates(cands)
    if not ballots:
        return empty_outcome(STRATEGY, failed, "no valid candidate answers"), 0.0
    votes = [(b.label, reliability[b.model]) for b in ballots]
    posterior, _ = answer_posterior(votes, alternatives)
    counts = {label: sum(1 for b in ballots if b.label == label) for label in posterior}
    order = _ranked(posterior, counts)
    tallies = [
        Tally(label, tuple(b.model for b in ballots if b.label == label), posterior[label]) for label in order
    ]
    leader = order[0]
    outcome = ConsensusOutcome(
        strategy=STRATEGY,
        answer=display_answer(ballots, leader),
        confidence=min(max(posterior[leader], 0.0), 1.0),
        winner_models=list(tallies[0].models),
        votes=votes_of(tallies),
        dissent=[b.model for b in ballots if b.label != leader],
        failed=failed,
    )
    return outcome, posterior[leader]


def _reliability_of(pool: Sequence[Voter], cands: Sequence[CandidateAnswer]) -> dict[str, float]:
    known = {v.model: v.reliability for v in pool}
    default = sum(known.values()) / len(known) if known else 0.5
    return {**{c.model: default for c in cands}, **known}


def sequential_step(
    cands_so_far: Sequence[CandidateAnswer],
    pool: Sequence[Voter],
    *,
    target_confidence: float,
    max_models: int,
    remaining_budget_usd: Decimal | float | None = None,
    alternatives: int = 1,
) -> tuple[AdaptiveDecision, list[str]]:
    """One decision of the cost-aware loop: stop (and why), or which model(s) to ask next.

    ``pool`` lists every model that may be asked (in preference order), with its reliability and
    expected cost; models in ``cands_so_far`` were asked already. A model missing from ``pool``
    gets the pool's mean reliability. Stops with ``"confident"`` (at least two valid answers and
    the leader's posterior >= the target), ``"max_models"``, ``"budget"`` (nobody affordable with
    ``remaining_budget_usd``, the budget left after ``cands_so_far``) or ``"exhausted"`` (nobody
    left). The outcome's confidence is the leader's posterior; ``needs_more`` is set unless the
    target was reached. Returns the decision and the models to ask (empty when stopping).
    """
    if not 0.0 < target_confidence <= 1.0:
        raise ValueError("target_confidence must be within (0, 1]")
    if max_models < 1:
        raise ValueError("max_models must be at least 1")
    reliability = _reliability_of(pool, cands_so_far)
    outcome, probability = _outcome(cands_so_far, reliability, alternatives)
    ballots: list[Ballot] = split_candidates(cands_so_far)[0]
    confident = len(ballots) >= MIN_VOTES and probability >= target_confidence - _TOLERANCE
    asked = {c.model for c in cands_so_far}
    rest = [v for v in pool if v.model not in asked]
    budget = None if remaining_budget_usd is None else Decimal(str(remaining_budget_usd))
    chosen: list[Voter] = []
    if confident:
        reason = CONFIDENT
    elif len(cands_so_far) >= max_models:
        reason = MAX_MODELS
    elif not rest:
        reason = EXHAUSTED
    else:
        votes = [(b.label, reliability[b.model]) for b in ballots]
        chosen = choose_next(
            votes,
            rest,
            target_confidence=target_confidence,
            alternatives=alternatives,
            slots=max_models - len(cands_so_far),
            budget_usd=budget,
        )
        reason = ASK if chosen else BUDGET
    detail = f"{reason}: leader posterior {probability:.3f} (target {target_confidence:.3f})"
    if chosen:
        detail += f"; next {', '.join(v.model for v in chosen)}"
    decision = AdaptiveDecision(
        stop=not chosen,
        reason=reason,
        outcome=outcome.model_copy(
            update={
                "needs_more": not confident,
                "reasons": detail if outcome.error is None else outcome.reasons,
            }
        ),
        models_used=len(cands_so_far),
        cost_usd=sum((c.cost_usd for c in cands_so_far), Decimal(0)),
    )
    return decision, [v.model for v in chosen]


def run_sequential_offline(
    answers: Mapping[str, CandidateAnswer],
    pool: Sequence[Voter],
    *,
    target_confidence: float,
    max_models: int,
    budget_usd: Decimal | float | None = None,
    alternatives: int = 1,
) -> AdaptiveDecision:
    """Replay the loop over precomputed answers (``answers[model]`` is what asking it returns).

    Pays each asked answer's own ``cost_usd``. Returns the final decision: its ``models_used``
    and ``cost_usd`` are what the loop spent.
    """
    budget = None if budget_usd is None else Decimal(str(budget_usd))
    used: list[CandidateAnswer] = []
    while True:
        spent = sum((c.cost_usd for c in used), Decimal(0))
        decision, ask = sequential_step(
            used,
            [v for v in pool if v.model in answers],
            target_confidence=target_confidence,
            max_models=max_models,
            remaining_budget_usd=None if budget is None else budget - spent,
            alternatives=alternatives,
        )
        if decision.stop:
            return decision
        used.extend(answers[m] for m in ask)
