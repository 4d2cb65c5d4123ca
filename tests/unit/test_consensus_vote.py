"""Consensus: answer normalisation, majority and weighted votes, the shared statistics."""

from __future__ import annotations

import math
import random
from decimal import Decimal

import pytest

from core.consensus import (
    STRATEGIES,
    CandidateAnswer,
    choose,
    leader_probability,
    majority_vote,
    normalize_answer,
    reliabilities,
    reliability_update,
    smoothed_share,
    token_f1,
)
from core.consensus.stats import regularized_incomplete_beta, vote_weight
from core.errors import BadRequest
from core.orchestration.contracts import Strategy


def c(model: str, text: str | None, ok: bool = True, cost: str = "0.001") -> CandidateAnswer:
    return CandidateAnswer(model=model, text=text, ok=ok, cost_usd=Decimal(cost))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The answer is X.", "x"),
        ("  Canberra  ", "canberra"),
        ("so the answer is: **Canberra**.", "canberra"),
        ("Final answer: $1,000", "1000"),
        ("1,000", "1000"),
        ("1000.0", "1000"),
        ("+1000", "1000"),
        ("0.50", "0.5"),
        ("-0", "0"),
        ("-12.50", "-12.5"),
        ("3.14", "3.14"),
        ("1,2,3", "1 2 3"),
        ("True", "yes"),
        ("YES!", "yes"),
        ("correct", "yes"),
        ("The answer is no.", "no"),
        ("false", "no"),
        ("true love", "true love"),
        ("The Amazon", "amazon"),
        ("an apple a day", "apple day"),
        ("A", "a"),
        ("The answer is (A).", "a"),
        ("the", "the"),
        ('"Sydney"', "sydney"),
        ("don't", "dont"),
        ("Paraná", "paraná"),
        ("O(log n)", "o log n"),
        ("O(n log n)", "o n log n"),
        ("\\boxed{42}", "42"),
        ("answerable question", "answerable question"),
        ("50%", "50"),
        ("?!", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_normalize_answer_table(raw: str | None, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_token_f1() -> None:
    assert token_f1("the cat sat", "a cat sat") == 1.0
    assert token_f1("cat sat", "dog ran") == 0.0
    assert token_f1("", "x") == 0.0
    assert math.isclose(token_f1("cat sat down", "cat sat"), 0.8)


def test_unanimous_vote_is_confident_but_not_certain() -> None:
    out = majority_vote([c("a", "391"), c("b", "The answer is 391."), c("c", "391.0")])
    assert out.strategy == "majority"
    assert out.answer == "391"  # the shortest original text of the winning group
    assert out.winner_models == ["a", "b", "c"]
    assert out.votes == {"391": ["a", "b", "c"]}
    assert out.dissent == []
    assert out.failed == []
    assert math.isclose(out.confidence, 4 / 5)  # (3 + 1) / (3 + 2)
    assert not out.needs_more
    assert majority_vote([c("a", "x")]).confidence == pytest.approx(2 / 3)  # 1 of 1 is not 1.0


def test_split_vote_records_dissent() -> None:
    out = majority_vote([c("a", "Canberra"), c("b", "Sydney"), c("c", "canberra.")])
    assert out.answer == "Canberra"
    assert out.winner_models == ["a", "c"]
    assert out.dissent == ["b"]
    assert out.votes == {"canberra": ["a", "c"], "sydney": ["b"]}
    assert math.isclose(out.confidence, 3 / 5)  # (2 + 1) / (3 + 2)


def test_tie_is_deterministic_and_less_confident() -> None:
    cands = [c("a", "Sydney"), c("b", "Canberra")]
    out = majority_vote(cands)
    assert out.answer == "Canberra"  # equal support: lexicographic label
    assert majority_vote(list(reversed(cands))).answer == "Canberra"
    assert out.needs_more
    assert out.reasons is not None
    assert math.isclose(out.confidence, 0.5 / 2)  # (1 + 1) / (2 + 2), halved by the 2-way tie
    clear = majority_vote([c("a", "Sydney"), c("b", "Canberra"), c("c", "Canberra")])
    assert clear.confidence > out.confidence


def test_weighted_tie_break_and_outvoting() -> None:
    # Equal counts: the more reliable side wins.
    out = majority_vote([c("weak", "Sydney"), c("strong", "Canberra")], {"weak": 0.6, "strong": 0.9})
    assert out.strategy == "weighted"
    assert out.answer == "Canberra"
    assert not out.needs_more
    # Two strong models outweigh three weak ones (log-odds weights), but not three average ones.
    rel = {"s1": 0.92, "s2": 0.9, "w1": 0.6, "w2": 0.6, "w3": 0.6, "m1": 0.85, "m2": 0.85, "m3": 0.85}
    strong = [c("s1", "42"), c("s2", "42")]
    assert majority_vote([*strong, c("w1", "41"), c("w2", "41"), c("w3", "41")], rel).answer == "42"
    assert majority_vote([*strong, c("w1", "41"), c("w2", "41"), c("w3", "41")]).answer == "41"
    assert majority_vote([*strong, c("m1", "41"), c("m2", "41"), c("m3", "41")], rel).answer == "41"


def test_weights_missing_model_is_average_and_bad_weights_raise() -> None:
    out = majority_vote([c("known", "x"), c("unknown", "y")], {"known": 0.8})
    assert out.needs_more  # the unknown model counts as average (= 0.8 here): a tie
    with pytest.raises(ValueError, match="within"):
        majority_vote([c("a", "x")], {"a": 2.0})


def test_all_failed_is_an_error_not_an_answer() -> None:
    out = majority_vote([c("a", None, ok=False), c("b", "  ", ok=True)])
    assert out.answer == ""
    assert out.confidence == 0.0
    assert out.failed == ["a", "b"]
    assert out.error
    assert out.needs_more
    assert majority_vote([]).error


def test_failed_proposer_is_recorded_not_dropped() -> None:
    out = majority_vote([c("a", "42"), c("b", "boom", ok=False), c("c", "42")])
    assert out.failed == ["b"]
    assert out.winner_models == ["a", "c"]
    assert "b" not in out.dissent
    assert math.isclose(out.confidence, 3 / 4)  # two valid voters


def test_smoothed_share_and_beta_math() -> None:
    assert smoothed_share(1.0, 0) == 0.0
    assert smoothed_share(1.0, 5) == pytest.approx(6 / 7)
    for v1, v2 in [(2, 0), (3, 0), (4, 0), (1, 1), (5, 3), (0, 0), (12, 7)]:
        n = v1 + v2 + 1
        exact = sum(math.comb(n, j) for j in range(v1 + 1)) / 2**n  # P(Binomial(n, 1/2) <= v1)
        assert leader_probability(v1, v2) == pytest.approx(exact, abs=1e-12)
    assert leader_probability(2, 0) == pytest.approx(0.875)
    assert regularized_incomplete_beta(2.5, 1.5, 0.0) == 0.0
    assert regularized_incomplete_beta(2.5, 1.5, 1.0) == 1.0
    assert regularized_incomplete_beta(1, 1, 0.3) == pytest.approx(0.3)  # uniform CDF
    assert regularized_incomplete_beta(2, 1, 0.3) == pytest.approx(0.09)  # x^2
    assert vote_weight(0.5) == vote_weight(0.55) > 0
    assert vote_weight(1.0) == vote_weight(0.99)


def test_reliability_update_is_a_beta_posterior_and_pure() -> None:
    counts: dict[str, tuple[int, int]] = {}
    for correct in [True] * 9 + [False]:
        counts, mean = reliability_update(counts, "m", correct)
    assert counts == {"m": (9, 1)}
    assert mean == pytest.approx(10 / 12)
    before = dict(counts)
    _, mean2 = reliability_update(counts, "m", False, prior=(2.0, 2.0))
    assert counts == before
    assert mean2 == pytest.approx(11 / 15)
    assert reliabilities({"a": (0, 0)}) == {"a": 0.5}


def test_registry_matches_the_orchestration_contract() -> None:
    assert set(STRATEGIES) == {s.value for s in Strategy}
    assert choose("Adaptive").incremental
    assert choose("semantic").needs == "embeddings"
    with pytest.raises(BadRequest):
        choose("coin-flip")


def test_vote_confidence_always_in_unit_interval() -> None:
    rng = random.Random(1234)
    labels = ["391", "381", "The answer is 391.", "", "yes", "no", "1,000", "1000.0"]
    for _ in range(2000):
        n = rng.randint(0, 9)
        cands = [
            c(f"m{rng.randint(0, 5)}", rng.choice(labels + [None]), ok=rng.random() > 0.15) for _ in range(n)
        ]
        weights = {f"m{i}": rng.random() for i in range(6)} if rng.random() < 0.5 else None
        out = majority_vote(cands, weights)
        assert 0.0 <= out.confidence <= 1.0
        assert len(out.failed) + len(out.winner_models) + len(out.dissent) == n
