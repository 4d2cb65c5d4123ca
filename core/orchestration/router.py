"""Routing: choose each subtask's panel of models by capability, region, price and budget.

Pure and deterministic (every ordering ends on the model id), so a workflow can call
:func:`choose_panel` directly. Data residency is absolute: a model sharing no region with the
run's allowed regions is never chosen, not even when the caller names it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from core.orchestration.contracts import PanelPolicy, SubtaskCapability

if TYPE_CHECKING:  # keep the catalog (YAML, settings) out of workflow sandbox imports
    from core.providers.catalog import ModelEntry

MILLION = Decimal(1_000_000)
DEFAULT_RELIABILITY = 0.7
DEFAULT_LATENCY_MS = 1000.0
BUDGET_EXHAUSTED = "budget exhausted"


class RoutingError(ValueError):
    """No panel can be formed for a reason the budget cannot fix: a named model is unknown or
    outside the allowed regions, or no model offers the capability in those regions."""


class ModelInfo(BaseModel):
    """What the router needs to know about one model (serialisable into workflow state)."""

    model_config = ConfigDict(frozen=True)

    id: str
    provider: str
    capabilities: set[str]
    regions: list[str]
    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)
    latency_hint_ms: float = Field(DEFAULT_LATENCY_MS, ge=0)
    reliability: float = Field(DEFAULT_RELIABILITY, ge=0, le=1)

    @classmethod
    def from_entry(
        cls,
        entry: ModelEntry,
        reliability: float = DEFAULT_RELIABILITY,
        latency_hint_ms: float = DEFAULT_LATENCY_MS,
    ) -> ModelInfo:
        """Routing facts of a catalog entry; reliability and latency come from measurements."""
        return cls(
            id=entry.id,
            provider=entry.provider,
            capabilities={str(c) for c in entry.capabilities},
            regions=list(entry.regions),
            input_per_mtok=entry.prices.input,
            output_per_mtok=entry.prices.output,
            latency_hint_ms=latency_hint_ms,
            reliability=reliability,
        )


class Panel(BaseModel):
    """The models chosen for one subtask, best first (adaptive consensus takes the first two
    and extends in this order), with the estimated cost of calling all of them."""

    models: list[str]
    estimated_cost_usd: Decimal
    degraded: bool
    reason: str

    @property
    def budget_exhausted(self) -> bool:
        """Whether not even one model fits the remaining budget."""
        return not self.models and self.reason == BUDGET_EXHAUSTED


CAPABILITY_NEEDS: dict[SubtaskCapability, set[str]] = {
    SubtaskCapability.code: {"chat", "code"},
    SubtaskCapability.reasoning: {"chat", "reasoning"},
    SubtaskCapability.math: {"chat", "reasoning"},
    SubtaskCapability.writing: {"chat"},
    SubtaskCapability.retrieval: {"chat"},
    SubtaskCapability.extraction: {"chat"},
    SubtaskCapability.general: {"chat"},
}
# Capabilities whose needs are a preference: without such a model, any chat model will do.
SOFT_NEEDS: frozenset[SubtaskCapability] = frozenset({SubtaskCapability.reasoning, SubtaskCapability.math})


def estimate_call_usd(model: ModelInfo, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """The list-price cost of one call (no cache discount: estimates are pessimistic)."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts cannot be negative")
    total = Decimal(prompt_tokens) * model.input_per_mtok + Decimal(completion_tokens) * model.output_per_mtok
    return total / MILLION


def in_regions(model: ModelInfo, regions: Collection[str] | None) -> bool:
    """Whether ``model`` may serve a run pinned to ``regions`` (None = unrestricted)."""
    return regions is None or bool(set(model.regions) & set(regions))


def diversify(ranked: Sequence[ModelInfo]) -> list[ModelInfo]:
    """Reorder ``ranked`` so that no provider repeats while another one is still unused:
    the best model of each provider first (in rank order), then each provider's second, …"""
    rounds: list[list[ModelInfo]] = []
    seen: dict[str, int] = {}
    for model in ranked:
        n = seen.get(model.provider, 0)
        seen[model.provider] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(model)
    return [m for group in rounds for m in group]


def _rank_key(
    prefer: str, prompt_tokens: int, completion_tokens: int
) -> Callable[[ModelInfo], tuple[object, ...]]:
    def price(m: ModelInfo) -> tuple[Decimal, Decimal]:
        # The call estimate first; list prices break ties when token counts are zero.
        est = estimate_call_usd(m, prompt_tokens, completion_tokens)
        return est, m.input_per_mtok + m.output_per_mtok

    def key(m: ModelInfo) -> tuple[object, ...]:
        if prefer == "cost":
            return (*price(m), -m.reliability, m.id)
        if prefer == "latency":
            return (m.latency_hint_ms, *price(m), m.id)
        return (-m.reliability, *price(m), m.id)

    return key


def _usd(amount: Decimal) -> str:
    return f"${amount.quantize(Decimal('0.000001')).normalize():f}"


def _pick(
    order: Sequence[ModelInfo], k: int, budget: Decimal, cost: Callable[[ModelInfo], Decimal]
) -> list[ModelInfo]:
    """The first ``k`` models in ``order`` that fit ``budget`` together, skipping a model only
    when taking it would leave no affordable way to complete the set (cheaper ones swap in).
    The caller guarantees that the ``k`` cheapest models fit."""
    chosen: list[ModelInfo] = []
    spent = Decimal(0)
    for i, model in enumerate(order):
        if len(chosen) == k:
            break
        still_needed = k - len(chosen) - 1
        cheapest_rest = sorted(cost(m) for m in order[i + 1 :])[:still_needed]
        if spent + cost(model) + sum(cheapest_rest, Decimal(0)) <= budget:
            chosen.append(model)
            spent += cost(model)
    return chosen


def _fixed_panel(
    by_id: dict[str, ModelInfo],
    fixed: list[str],
    regions: list[str] | None,
    exclude: Collection[str],
    budget: Decimal,
    cost: Callable[[ModelInfo], Decimal],
) -> Panel:
    wanted: list[ModelInfo] = []
    for model_id in dict.fromkeys(fixed):
        model = by_id.get(model_id)
        if model is None:
            raise RoutingError(f"model {model_id!r} is not in the catalog")
        if not in_regions(model, regions):
            raise RoutingError(
                f"model {model_id!r} serves regions {model.regions}, outside the allowed regions {regions}"
            )
        if model_id not in exclude:
            wanted.append(model)
    if not wanted:
        return Panel(
            models=[], estimated_cost_usd=Decimal(0), degraded=True, reason="every named model is excluded"
        )
    chosen: list[ModelInfo] = []
    spent = Decimal(0)
    for model in wanted:  # the caller's order; models that do not fit are dropped, never swapped
        if spent + cost(model) <= budget:
            chosen.append(model)
            spent += cost(model)
    if not chosen:
        return Panel(models=[], estimated_cost_usd=Decimal(0), degraded=True, reason=BUDGET_EXHAUSTED)
    chosen_ids = {m.id for m in chosen}
    dropped = [m.id for m in wanted if m.id not in chosen_ids]
    reason = "named models"
    if dropped:
        reason = f"named models; {dropped} dropped: remaining budget {_usd(budget)} cannot afford them"
    return Panel(
        models=[m.id for m in chosen], estimated_cost_usd=spent, degraded=bool(dropped), reason=reason
    )


def choose_panel(
    models: Sequence[ModelInfo],
    capability: SubtaskCapability,
    policy: PanelPolicy,
    *,
    regions: list[str] | None,
    remaining_budget_usd: Decimal,
    prompt_tokens: int,
    completion_tokens: int,
    fixed: list[str] | None = None,
    exclude: Collection[str] = (),
) -> Panel:
    """Choose the panel of models for one subtask.

    Filters by region (data residency), capability (:data:`CAPABILITY_NEEDS`; reasoning and
    math fall back to any chat model) and ``exclude``; ranks by ``policy.prefer`` (quality:
    reliability desc then price asc; cost: price asc; latency: latency asc; ties by id); spreads
    the order across providers; takes up to ``policy.max_models`` that the budget affords.

    When the budget cannot afford ``policy.min_models`` of that ranked choice, the panel
    degrades: cheaper models swap in and then fewer models are taken (down to one), with
    ``degraded=True`` and a reason. When not even one model fits, the panel is empty with
    reason ``"budget exhausted"``. ``fixed`` names the models instead (in the caller's order,
    no capability check); models that do not fit the budget are dropped.

    Raises :class:`RoutingError` for a named model that is unknown or outside ``regions``, and
    when no model in ``regions`` offers the capability at all.
    """
    by_id: dict[str, ModelInfo] = {}
    for model in models:
        by_id.setdefault(model.id, model)

    def cost(m: ModelInfo) -> Decimal:
        return estimate_call_usd(m, prompt_tokens, completion_tokens)

    budget = max(remaining_budget_usd, Decimal(0))
    if fixed:
        return _fixed_panel(by_id, fixed, regions, exclude, budget, cost)

    resident = [m for m in by_id.values() if in_regions(m, regions)]
    needs = CAPABILITY_NEEDS[capability]
    able = [m for m in resident if needs <= m.capabilities]
    notes: list[str] = []
    if not able and capability in SOFT_NEEDS:
        able = [m for m in resident if "chat" in m.capabilities]
        if able:
            notes.append(f"no {sorted(needs - {'chat'})} model available, using chat models")
    if not able:
        where = f" in regions {regions}" if regions is not None else ""
        raise RoutingError(f"no model{where} offers the {capability.value!r} capability")
    pool = [m for m in able if m.id not in exclude]
    if not pool:
        return Panel(
            models=[], estimated_cost_usd=Decimal(0), degraded=True, reason="every eligible model is excluded"
        )

    order = diversify(sorted(pool, key=_rank_key(policy.prefer, prompt_tokens, completion_tokens)))
    max_k = min(policy.max_models, len(order))
    min_k = min(policy.min_models, max_k)
    providers = len({m.provider for m in order[:max_k]})
    head = order[:min_k]

    if sum((cost(m) for m in head), Decimal(0)) <= budget:
        chosen = list(head)
        spent = sum((cost(m) for m in chosen), Decimal(0))
        for model in order[min_k:]:  # extend towards max_models in rank order, skipping misfits
            if len(chosen) >= max_k:
                break
            if spent + cost(model) <= budget:
                chosen.append(model)
                spent += cost(model)
        degraded = len(chosen) < policy.min_models
        if len(order) < policy.min_models:
            notes.append(f"only {len(order)} eligible model(s), policy asks for {policy.min_models}")
        elif len(chosen) < max_k:
            notes.append(f"{len(chosen)} of {max_k} models fit the remaining budget {_usd(budget)}")
        reason = f"{policy.prefer}-ranked across {providers} provider(s)"
        return Panel(
            models=[m.id for m in chosen],
            estimated_cost_usd=spent,
            degraded=degraded,
            reason="; ".join([reason, *notes]),
        )

    # Degrade: the largest k <= min_k whose k cheapest models fit, then the best such set.
    cheapest = sorted(cost(m) for m in order)
    k = min_k
    while k > 0 and sum(cheapest[:k], Decimal(0)) > budget:
        k -= 1
    if k == 0:
        return Panel(models=[], estimated_cost_usd=Decimal(0), degraded=True, reason=BUDGET_EXHAUSTED)
    chosen = _pick(order, k, budget, cost)
    spent = sum((cost(m) for m in chosen), Decimal(0))
    needed = sum((cost(m) for m in head), Decimal(0))
    head_ids = {m.id for m in head}
    swapped = [m.id for m in chosen if m.id not in head_ids]
    detail = f"{len(chosen)} model(s)"
    if swapped:
        detail += f", cheaper {swapped} swapped in"
    reason = (
        f"degraded: remaining budget {_usd(budget)} cannot afford {min_k} model(s) of the "
        f"{policy.prefer}-ranked panel ({_usd(needed)}); using {detail}"
    )
    return Panel(
        models=[m.id for m in chosen],
        estimated_cost_usd=spent,
        degraded=True,
        reason="; ".join([reason, *notes]),
    )
