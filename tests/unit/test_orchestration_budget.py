"""Budget ledger: reserve/settle/release, idempotency per key, and the no-overspend invariant."""

from __future__ import annotations

import random
from decimal import ROUND_DOWN, Decimal

import pytest

from core.orchestration.budget import BudgetLedger

D = Decimal


def test_reserve_settle_release() -> None:
    ledger = BudgetLedger(budget_usd=D("1.00"))
    assert ledger.remaining == D("1.00")
    assert ledger.reserve("s1:a", D("0.40"))
    assert ledger.reserve("s1:b", D("0.50"))
    assert ledger.remaining == D("0.10")
    assert not ledger.can_afford(D("0.11"))
    assert not ledger.reserve("s1:c", D("0.11"))
    assert "s1:c" not in ledger.reservations
    assert ledger.remaining == D("0.10")

    ledger.settle("s1:a", D("0.25"), model="oa/mini")
    assert ledger.spent_usd == D("0.25")
    assert ledger.reserved_usd == D("0.50")
    assert ledger.remaining == D("0.25")
    ledger.release("s1:b")
    assert ledger.reserved_usd == 0
    assert ledger.remaining == D("0.75")
    assert ledger.spent_by_model == {"oa/mini": D("0.25")}


def test_settle_is_idempotent_per_key() -> None:
    ledger = BudgetLedger(budget_usd=D(1))
    ledger.reserve("k", D("0.3"))
    ledger.settle("k", D("0.2"), model="m")
    ledger.settle("k", D("0.2"), model="m")
    ledger.settle("k", D("0.9"), model="m")
    assert ledger.spent_usd == D("0.2")
    assert ledger.spent_by_model == {"m": D("0.2")}
    assert not ledger.reserve("k", D("0.1")), "a settled key cannot be reserved again"
    ledger.release("k")
    assert ledger.spent_usd == D("0.2")


def test_reserving_an_open_key_again_replaces_it() -> None:
    ledger = BudgetLedger(budget_usd=D(1))
    assert ledger.reserve("k", D("0.6"))
    assert ledger.reserve("k", D("0.9"))
    assert ledger.reserved_usd == D("0.9")
    assert not ledger.reserve("k", D("1.1"))
    assert ledger.reserved_usd == D("0.9")


def test_settle_without_reservation_and_actual_above_estimate() -> None:
    ledger = BudgetLedger(budget_usd=D(1))
    ledger.reserve("a", D("0.2"))
    ledger.settle("a", D("0.3"))  # drew 0.1 more from what was left
    ledger.settle("b", D("0.1"))  # e.g. a planner call settled directly
    assert ledger.spent_usd == D("0.4")
    assert ledger.remaining == D("0.6")
    assert ledger.overrun_usd == 0


def test_overrun_is_recorded_truthfully_and_blocks_reservations() -> None:
    ledger = BudgetLedger(budget_usd=D("0.1"))
    ledger.settle("a", D("0.15"))
    assert ledger.spent_usd == D("0.15")
    assert ledger.overrun_usd == D("0.05")
    assert ledger.remaining == 0
    assert ledger.exhausted
    assert not ledger.reserve("b", D("0.01"))
    assert ledger.reserved_usd == 0


def test_negative_amounts_are_rejected() -> None:
    ledger = BudgetLedger(budget_usd=D(1))
    with pytest.raises(ValueError, match="non-negative"):
        ledger.reserve("k", D("-0.1"))
    with pytest.raises(ValueError, match="non-negative"):
        ledger.settle("k", D("NaN"))


def test_round_trips_through_json() -> None:
    ledger = BudgetLedger(budget_usd=D("2.5"))
    ledger.reserve("a", D("0.000123"))
    ledger.reserve("b", D("1"))
    ledger.settle("b", D("0.75"), model="m")
    restored = BudgetLedger.model_validate_json(ledger.model_dump_json())
    assert restored == ledger
    assert restored.remaining == ledger.remaining


def test_inconsistent_state_is_rejected_but_spend_can_carry_over() -> None:
    with pytest.raises(ValueError, match="reserved_usd"):
        BudgetLedger(budget_usd=D(1), reserved_usd=D("0.5"))
    carried = BudgetLedger(budget_usd=D(1), spent_usd=D("0.4"))
    assert carried.remaining == D("0.6")
    assert not carried.reserve("k", D("0.7"))


@pytest.mark.parametrize("seed", range(25))
def test_invariant_under_random_sequences(seed: int) -> None:
    rng = random.Random(seed)
    budget = D(rng.randint(1, 500)) / 100
    ledger = BudgetLedger(budget_usd=budget)
    keys = [f"k{i}" for i in range(40)]
    for _ in range(400):
        key = rng.choice(keys)
        op = rng.random()
        before = ledger.model_copy(deep=True)
        if op < 0.45:
            amount = D(rng.randint(0, 200)) / 1000
            ok = ledger.reserve(key, amount)
            if ok:
                assert ledger.reservations[key] == amount
            else:
                assert ledger == before
        elif op < 0.8:
            # An actual cost within its reservation plus what is left (estimates are pessimistic).
            ceiling = ledger.reservations.get(key, D(0)) + ledger.remaining
            actual = (ceiling * D(rng.randint(0, 100)) / 100).quantize(D("0.000001"), ROUND_DOWN)
            already = key in ledger.settled
            ledger.settle(key, actual, model=rng.choice(["a", "b", "c"]))
            if already:
                assert ledger == before
        else:
            ledger.release(key)
        assert ledger.spent_usd + ledger.reserved_usd <= ledger.budget_usd
        assert ledger.remaining == ledger.budget_usd - ledger.spent_usd - ledger.reserved_usd
        assert ledger.reserved_usd == sum(ledger.reservations.values(), D(0))
        assert ledger.spent_usd == sum(ledger.settled.values(), D(0))
        assert sum(ledger.spent_by_model.values(), D(0)) == ledger.spent_usd
        assert not set(ledger.reservations) & set(ledger.settled)
        assert ledger.overrun_usd == 0
    BudgetLedger.model_validate(ledger.model_dump())  # the validator agrees
