"""The run's budget ledger: reserve before a model call, settle the actual cost after it.

A pydantic model, so the ``Orchestration`` workflow keeps it in its state (and in
continue-as-new input) as is. Keys name one call each (for example ``"<subtask>:<model>"``);
reservations, settlements and releases are idempotent per key, so a replayed or repeated
step never counts twice. Amounts are exact ``Decimal`` USD.

Invariant: ``spent_usd + reserved_usd <= budget_usd`` as long as each actual cost stays within
its reservation plus what is left of the budget (estimates are pessimistic: list prices and the
full completion budget). A cost that exceeds even that is still recorded truthfully, shows up
as :attr:`BudgetLedger.overrun_usd`, and blocks every further reservation.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field, model_validator

ZERO = Decimal(0)


def _non_negative(amount: Decimal, what: str) -> Decimal:
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{what} must be a finite, non-negative amount, got {amount}")
    return amount


class BudgetLedger(BaseModel):
    """Reservations and settled spend against a USD budget (never overspends on reserve)."""

    budget_usd: Decimal = Field(ge=0)
    reserved_usd: Decimal = Field(ZERO, ge=0)
    spent_usd: Decimal = Field(ZERO, ge=0)
    reservations: dict[str, Decimal] = Field(default_factory=dict, description="Open reservations by key.")
    settled: dict[str, Decimal] = Field(default_factory=dict, description="Actual cost by settled key.")
    spent_by_model: dict[str, Decimal] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> BudgetLedger:
        # spent_usd may exceed the settled keys' sum (spend carried over, e.g. continue-as-new),
        # but reserved_usd is exactly the open reservations, or release() would drift.
        if self.reserved_usd != sum(self.reservations.values(), ZERO):
            raise ValueError("reserved_usd must equal the sum of open reservations")
        if set(self.reservations) & set(self.settled):
            raise ValueError("a key cannot be both reserved and settled")
        return self

    @property
    def remaining(self) -> Decimal:
        """What can still be reserved: budget minus reservations and spend (never negative)."""
        return max(self.budget_usd - self.reserved_usd - self.spent_usd, ZERO)

    @property
    def overrun_usd(self) -> Decimal:
        """How far spend plus reservations exceed the budget (zero unless an estimate was wrong)."""
        return max(self.spent_usd + self.reserved_usd - self.budget_usd, ZERO)

    @property
    def exhausted(self) -> bool:
        """Whether nothing is left to reserve."""
        return self.remaining <= 0

    def can_afford(self, amount: Decimal) -> bool:
        """Whether ``amount`` could be reserved now."""
        return _non_negative(amount, "amount") <= self.remaining

    def reserve(self, key: str, amount: Decimal) -> bool:
        """Reserve ``amount`` under ``key``; False (and nothing changes) when it does not fit.

        Reserving an open key again replaces its amount (if the new amount fits in place of the
        old one). A key that is already settled cannot be reserved again: False.
        """
        _non_negative(amount, "amount")
        if key in self.settled:
            return False
        previous = self.reservations.get(key, ZERO)
        if amount > self.remaining + previous:
            return False
        self.reservations[key] = amount
        self.reserved_usd += amount - previous
        return True

    def settle(self, key: str, actual: Decimal, *, model: str | None = None) -> None:
        """Replace the reservation under ``key`` (if any) by the ``actual`` cost and attribute it
        to ``model``. Idempotent: settling a key a second time changes nothing."""
        _non_negative(actual, "actual")
        if key in self.settled:
            return
        self.reserved_usd -= self.reservations.pop(key, ZERO)
        self.settled[key] = actual
        self.spent_usd += actual
        if model is not None:
            self.spent_by_model[model] = self.spent_by_model.get(model, ZERO) + actual

    def release(self, key: str) -> None:
        """Drop the open reservation under ``key`` (the call was not made or cost nothing).
        No effect on unknown or settled keys."""
        self.reserved_usd -= self.reservations.pop(key, ZERO)
