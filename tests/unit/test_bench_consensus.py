"""Smoke test of bench/consensus.py's offline comparison on 20 fake questions (no simulator)."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

from bench.consensus import Record, bootstrap, compare, make_questions
from core.consensus import CandidateAnswer

MODELS = [f"sim-x/m{i}" for i in range(7)]
ACCURACY = [0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6]
PRICE = [
    Decimal("0.003"),
    Decimal("0.001"),
    Decimal("0.002"),
    Decimal("0.0003"),
    Decimal("0.0002"),
    Decimal("0.0008"),
    Decimal("0.0001"),
]


def fake_records(n: int = 20) -> list[Record]:
    rng = random.Random(3)
    records = []
    for i in range(n):
        right = rng.choice("ABCD")
        record = Record(f"q{i:05d}", right)
        for model, acc, price in zip(MODELS, ACCURACY, PRICE, strict=True):
            text = right if rng.random() < acc else rng.choice([x for x in "ABCD" if x != right])
            record.answers[model] = CandidateAnswer(
                model=model, text=f"The answer is {text}.", cost_usd=price
            )
        records.append(record)
    return records


def test_offline_comparison_runs_every_strategy_on_the_same_answers() -> None:
    cmp = compare(fake_records(), MODELS, 0.2)
    assert (cmp.n_calib, cmp.n_test) == (4, 16)
    by_name = {o.name: o for o in cmp.outcomes}
    assert list(by_name) == [
        "best single",
        "fixed-3 majority",
        "fixed-5 majority",
        "weighted-5 vote",
        "weighted-7 vote",
        "adaptive",
        "Beta adaptive, reliability order",
        "Beta adaptive, cheapest first",
    ]
    for outcome in cmp.outcomes:
        assert len(outcome.right) == 16
        assert 0.0 <= outcome.accuracy <= 1.0
    assert by_name["fixed-5 majority"].mean_calls == 5
    assert by_name["fixed-5 majority"].total_cost == by_name["weighted-5 vote"].total_cost
    assert 2 <= by_name["adaptive"].mean_calls <= 5
    assert by_name["adaptive"].total_cost <= by_name["fixed-5 majority"].total_cost
    assert cmp.failed_calls == 0
    (lo, hi), (rlo, rhi) = bootstrap(by_name["adaptive"], by_name["fixed-5 majority"], seed=1, samples=50)
    assert lo <= hi
    assert rlo <= rhi


def test_questions_are_deterministic_and_the_right_letter_is_not_always_first() -> None:
    first, again = make_questions(200, 7), make_questions(200, 7)
    assert first == again
    letters = Counter(q.answer for q in first if q.kind == "choice")
    assert set(letters) == {"A", "B", "C", "D"}
    assert max(letters.values()) < 0.4 * sum(letters.values())
    assert all(q.answer not in q.wrong for q in first)
