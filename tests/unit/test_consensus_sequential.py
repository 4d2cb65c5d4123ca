"""Cost-aware sequential consensus: posterior, lookahead choice, stopping, budget, offline replay."""

from __future__ import annotations

import itertools
import math
import random
from decimal import Decimal

import pytest

from core.consensus import (
    CandidateAnswer,
    Voter,
    answer_posterior,
    choose_next,
    majority_vote,
    run_sequential_offline,
    sequential_step,
)
from core.consensus.sequential import stop_probability, voter_weight
from core.consensus.stats import vote_weight


def c(model: str, text: str | None, ok: bool = True, cost: str = "0.01") -> CandidateAnswer:
    return CandidateAnswer(model=model, text=text, ok=ok, cost_usd=Decimal(cost))


POOL = [
    Voter("strong-dear", 0.85, Decimal("0.0030")),
    Voter("good-mid", 0.82, Decimal("0.0015")),
    Voter("ok-cheap", 0.75, Decimal("0.0003")),
    Voter("weak-cheap", 0.60, Decimal("0.0002")),
]


def test_posterior_matches_the_log_odds_weights() -> None:
    # alternatives=1: the weight is the weighted vote's log-odds weight.
    assert voter_weight(0.8) == pytest.approx(vote_weight(0.8))
    post, unseen = answer_posterior([("a", 0.75), ("a", 0.82)])
    w = math.log(0.75 / 0.25) + math.log(0.82 / 0.18)
    assert post["a"] == pytest.approx(1 / (1 + math.exp(-w)))  # the one other answer has W = 0
    assert unseen == pytest.approx(1 - post["a"])
    # A split between equally reliable models is even; more alternatives make agreement stronger.
    split, _ = answer_posterior([("a", 0.8), ("b", 0.8)])
    assert split == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}
    assert answer_posterior([("a", 0.8), ("a", 0.8)], alternatives=3)[0]["a"] > post["a"] - 0.1
    with pytest.raises(ValueError, match="reliability"):
        answer_posterior([("a", 1.5)])
    with pytest.raises(ValueError, match="alternatives"):
        voter_weight(0.8, alternatives=0)


def test_stop_probability_is_the_chance_of_agreement_under_the_model() -> None:
    # Nothing asked yet; two voters of 0.75 and 0.82 reach 0.93 only by agreeing: with one
    # alternative they agree on the truth (0.75*0.82) or on the wrong answer (0.25*0.18).
    p = stop_probability([], [0.75, 0.82], target_confidence=0.9)
    assert p == pytest.approx(0.75 * 0.82 + 0.25 * 0.18)
    assert stop_probability([], [0.75], target_confidence=0.5) == 0.0  # one vote never stops
    # Brute force over every answer sequence for one vote so far and two more voters.
    votes = [("a", 0.7)]
    brute = 0.0
    post, unseen = answer_posterior(votes)
    for truth, pt in [*post.items(), ("b", unseen)]:
        for answers in itertools.product("ab", repeat=2):
            pr = pt
            for ans, rel in zip(answers, (0.6, 0.9), strict=True):
                pr *= rel if ans == truth else 1 - rel
            new = votes + [(x, r) for x, r in zip(answers, (0.6, 0.9), strict=True)]
            if max(answer_posterior(new)[0].values()) >= 0.9:
                brute += pr
    assert stop_probability(votes, [0.6, 0.9], target_confidence=0.9) == pytest.approx(brute)


def test_first_pair_is_the_best_agreement_per_dollar() -> None:
    pair = choose_next([], POOL, target_confidence=0.85)
    assert [v.model for v in pair] == ["good-mid", "ok-cheap"]
    # Cost matters: priced alike, the two most reliable models are the best pair.
    flat = [Voter(v.model, v.reliability, Decimal("0.001")) for v in POOL]
    assert [v.model for v in choose_next([], flat, target_confidence=0.85)] == ["strong-dear", "good-mid"]
    # A single slot left: the most reliable affordable model.
    assert [v.model for v in choose_next([], POOL, target_confidence=0.85, slots=1)] == ["strong-dear"]
    assert choose_next([], POOL, target_confidence=0.85, budget_usd=Decimal("0.0001")) == []


def test_stops_when_the_first_pair_agrees() -> None:
    decision, ask = sequential_step(
        [c("good-mid", "42"), c("ok-cheap", "The answer is 42.")],
        POOL,
        target_confidence=0.9,
        max_models=5,
    )
    assert decision.stop
    assert ask == []
    assert decision.reason == "confident"
    assert decision.outcome.strategy == "adaptive"
    assert decision.outcome.answer == "42"
    assert decision.outcome.winner_models == ["good-mid", "ok-cheap"]
    assert decision.outcome.confidence == pytest.approx(
        answer_posterior([("42", 0.82), ("42", 0.75)])[0]["42"]
    )
    assert not decision.outcome.needs_more


def test_a_disagreement_escalates_to_whoever_settles_it_per_dollar() -> None:
    cands = [c("good-mid", "42"), c("ok-cheap", "41")]
    decision, ask = sequential_step(cands, POOL, target_confidence=0.9, max_models=5)
    assert not decision.stop
    assert decision.reason == "ask"
    assert decision.outcome.needs_more
    assert decision.outcome.answer == "42"  # the more reliable side leads
    assert decision.outcome.dissent == ["ok-cheap"]
    assert len(ask) >= 1
    assert set(ask) <= {"strong-dear", "weak-cheap"}
    # Whatever is asked, it must be able to settle it: its stop probability is positive.
    votes = [("42", 0.82), ("41", 0.75)]
    rel = {v.model: v.reliability for v in POOL}
    assert stop_probability(votes, [rel[m] for m in ask], target_confidence=0.9) > 0


def test_failed_proposers_count_as_asked_never_as_votes() -> None:
    cands = [c("good-mid", None, ok=False, cost="0.0015"), c("ok-cheap", "42")]
    decision, ask = sequential_step(cands, POOL, target_confidence=0.9, max_models=5)
    assert not decision.stop
    assert decision.outcome.failed == ["good-mid"]
    assert "good-mid" not in ask
    assert decision.cost_usd == Decimal("0.0015") + Decimal("0.01")
    # No valid answer at all: an empty outcome, still asking.
    none, ask = sequential_step([c("ok-cheap", None, ok=False)], POOL, target_confidence=0.9, max_models=5)
    assert none.outcome.error
    assert none.outcome.confidence == 0.0
    assert ask


def test_stops_for_panel_size_budget_and_exhaustion() -> None:
    split = [c("good-mid", "42"), c("ok-cheap", "41")]
    full, _ = sequential_step(split, POOL, target_confidence=0.99, max_models=2)
    assert (full.stop, full.reason) == (True, "max_models")
    assert full.outcome.needs_more  # a signal for review
    broke, _ = sequential_step(split, POOL, target_confidence=0.99, max_models=5, remaining_budget_usd=0)
    assert (broke.stop, broke.reason) == (True, "budget")
    two = POOL[1:3]
    done, _ = sequential_step(split, two, target_confidence=0.99, max_models=5)
    assert (done.stop, done.reason) == (True, "exhausted")
    with pytest.raises(ValueError, match="target_confidence"):
        sequential_step(split, POOL, target_confidence=0, max_models=5)
    with pytest.raises(ValueError, match="max_models"):
        sequential_step(split, POOL, target_confidence=0.9, max_models=0)


def test_unknown_models_get_the_pool_mean_reliability() -> None:
    decision, _ = sequential_step(
        [c("stranger", "7"), c("ok-cheap", "7")], POOL, target_confidence=0.5, max_models=5
    )
    mean = sum(v.reliability for v in POOL) / len(POOL)
    assert decision.outcome.confidence == pytest.approx(answer_posterior([("7", mean), ("7", 0.75)])[0]["7"])


def test_offline_replay_is_cheaper_than_the_full_panel_and_as_accurate() -> None:
    """On simulated independent voters, the loop keeps the weighted vote's accuracy for less."""
    rng = random.Random(5)
    cost = {v.model: v.cost_usd for v in POOL}
    rel = {v.model: v.reliability for v in POOL}
    right_seq = right_full = 0
    spent = Decimal(0)
    n = 400
    for _ in range(n):
        answers = {
            m: CandidateAnswer(model=m, text="yes" if rng.random() < rel[m] else "no", cost_usd=cost[m])
            for m in rel
        }
        decision = run_sequential_offline(answers, POOL, target_confidence=0.9, max_models=4)
        right_seq += decision.outcome.answer == "yes"
        spent += decision.cost_usd
        right_full += majority_vote(list(answers.values()), rel).answer == "yes"
    full_cost = n * sum(cost.values(), Decimal(0))
    assert spent < full_cost * Decimal("0.65")  # 58% with this seed
    assert right_seq >= right_full - n * 0.02
    # Deterministic: the same answers give the same decision.
    again = run_sequential_offline(answers, POOL, target_confidence=0.9, max_models=4)
    assert again == run_sequential_offline(answers, POOL, target_confidence=0.9, max_models=4)
