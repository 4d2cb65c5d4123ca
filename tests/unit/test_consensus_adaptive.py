"""Adaptive consensus: stop on agreement, continue on disagreement, respect budget and panel size."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from core.consensus import CandidateAnswer, adaptive_step, run_adaptive_offline


def c(model: str, text: str | None, ok: bool = True, cost: str = "0.01") -> CandidateAnswer:
    return CandidateAnswer(model=model, text=text, ok=ok, cost_usd=Decimal(cost))


def test_starts_with_two_models() -> None:
    for cands in ([], [c("a", "42")], [c("a", "42"), c("b", None, ok=False)]):
        decision = adaptive_step(
            cands, target_confidence=0.7, max_models=5, remaining_budget_usd=1, next_model_cost_usd=0.01
        )
        assert not decision.stop
        assert decision.reason == "warm_up"  # one agreeing voter (P = 0.75) is never enough


def test_stops_early_on_agreement() -> None:
    decision = adaptive_step(
        [c("a", "42"), c("b", "The answer is 42.")],
        target_confidence=0.85,
        max_models=5,
        remaining_budget_usd=Decimal("1"),
        next_model_cost_usd=Decimal("0.01"),
    )
    assert decision.stop
    assert decision.reason == "confident"
    assert decision.outcome.strategy == "adaptive"
    assert decision.outcome.answer == "42"
    assert decision.outcome.confidence == pytest.approx(0.875)
    assert not decision.outcome.needs_more
    assert decision.models_used == 2
    assert decision.cost_usd == Decimal("0.02")


def test_continues_on_disagreement_until_margin() -> None:
    cands = [c("a", "42"), c("b", "41")]
    decision = adaptive_step(
        cands, target_confidence=0.85, max_models=5, remaining_budget_usd=1, next_model_cost_usd=0.01
    )
    assert not decision.stop
    assert decision.reason == "disagreement"
    assert decision.outcome.confidence == pytest.approx(0.5)
    assert decision.outcome.needs_more
    more = [*cands, c("c", "42"), c("d", "42")]  # 3-1: P = 1 - I_0.5(4, 2) = 0.8125
    assert (
        adaptive_step(
            more, target_confidence=0.85, max_models=9, remaining_budget_usd=1, next_model_cost_usd=0.01
        ).reason
        == "disagreement"
    )
    final = adaptive_step(
        [*more, c("e", "42")],
        target_confidence=0.85,
        max_models=9,
        remaining_budget_usd=1,
        next_model_cost_usd=0.01,
    )
    assert final.stop
    assert final.reason == "confident"  # 4-1: P = 0.890625
    assert final.outcome.dissent == ["b"]


def test_respects_max_models_and_budget() -> None:
    split = [c("a", "42"), c("b", "41"), c("c", "40")]
    at_max = adaptive_step(
        split, target_confidence=0.9, max_models=3, remaining_budget_usd=1, next_model_cost_usd=0.01
    )
    assert at_max.stop
    assert at_max.reason == "max_models"
    assert at_max.outcome.needs_more  # stopped below target: a signal for human review
    broke = adaptive_step(
        split[:2],
        target_confidence=0.9,
        max_models=5,
        remaining_budget_usd=Decimal("0.005"),
        next_model_cost_usd=Decimal("0.01"),
    )
    assert broke.stop
    assert broke.reason == "budget"
    exact = adaptive_step(
        split[:2], target_confidence=0.9, max_models=5, remaining_budget_usd=0.01, next_model_cost_usd=0.01
    )
    assert not exact.stop  # a model that exactly uses up the budget is still affordable
    with pytest.raises(ValueError, match="target_confidence"):
        adaptive_step([], target_confidence=0, max_models=3, remaining_budget_usd=1, next_model_cost_usd=0)
    with pytest.raises(ValueError, match="max_models"):
        adaptive_step([], target_confidence=0.9, max_models=0, remaining_budget_usd=1, next_model_cost_usd=0)


def test_failed_proposers_count_toward_panel_but_never_vote() -> None:
    cands = [c("a", "42"), c("b", None, ok=False), c("c", None, ok=False)]
    decision = adaptive_step(
        cands, target_confidence=0.8, max_models=3, remaining_budget_usd=1, next_model_cost_usd=0.01
    )
    assert decision.stop
    assert decision.reason == "max_models"
    assert decision.outcome.failed == ["b", "c"]
    assert decision.outcome.answer == "42"


def test_weights_move_the_leader() -> None:
    cands = [c("weak", "41"), c("strong", "42")]
    plain = adaptive_step(
        cands, target_confidence=0.8, max_models=5, remaining_budget_usd=1, next_model_cost_usd=0.01
    )
    weighted = adaptive_step(
        cands,
        target_confidence=0.8,
        max_models=5,
        remaining_budget_usd=1,
        next_model_cost_usd=0.01,
        weights={"weak": 0.55, "strong": 0.99},
    )
    assert plain.outcome.answer == "41"  # a tie, broken by label
    assert weighted.outcome.answer == "42"
    assert weighted.outcome.confidence > plain.outcome.confidence


def test_offline_replay_stops_early_and_counts_cost() -> None:
    answers = [c("a", "42"), c("b", "42"), c("c", "41"), c("d", "42"), c("e", "42")]
    agree = run_adaptive_offline(answers, target_confidence=0.85, max_models=5, budget_usd=1)
    assert (agree.reason, agree.models_used, agree.cost_usd) == ("confident", 2, Decimal("0.02"))
    split = [c("a", "42"), c("b", "41"), c("c", "42"), c("d", "42"), c("e", "42")]
    slow = run_adaptive_offline(split, target_confidence=0.85, max_models=5, budget_usd=1)
    assert (slow.reason, slow.models_used, slow.outcome.answer) == ("confident", 5, "42")
    capped = run_adaptive_offline(split, target_confidence=0.85, max_models=3, budget_usd=1)
    assert (capped.reason, capped.models_used) == ("max_models", 3)
    poor = run_adaptive_offline(split, target_confidence=0.85, max_models=5, budget_usd=Decimal("0.035"))
    assert (poor.reason, poor.models_used, poor.cost_usd) == ("budget", 3, Decimal("0.03"))
    short = run_adaptive_offline(split[:3], target_confidence=0.99, max_models=9, budget_usd=1)
    assert (short.reason, short.models_used) == ("exhausted", 3)
    assert short.stop
    assert run_adaptive_offline([], target_confidence=0.9, max_models=5, budget_usd=1).reason == "exhausted"


def test_offline_never_exceeds_budget_or_panel_and_confidence_in_unit_interval() -> None:
    rng = random.Random(2023)
    for _ in range(500):
        answers = [
            c(
                f"m{i}",
                rng.choice(["42", "41", "40", None]),
                ok=rng.random() > 0.1,
                cost=f"{rng.uniform(0, 0.05):.4f}",
            )
            for i in range(rng.randint(0, 9))
        ]
        budget = Decimal(f"{rng.uniform(0, 0.2):.4f}")
        max_models = rng.randint(1, 9)
        decision = run_adaptive_offline(
            answers, target_confidence=rng.uniform(0.5, 0.99), max_models=max_models, budget_usd=budget
        )
        assert decision.stop
        assert decision.cost_usd <= budget
        assert decision.models_used <= max_models
        assert 0.0 <= decision.outcome.confidence <= 1.0
