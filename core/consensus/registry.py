"""The registry of consensus strategies: what each needs from the workflow that runs it.

The strategies have different inputs (embeddings, a judge or aggregator model call), so the
registry describes them rather than hiding them behind one signature; the workflow dispatches on
:attr:`StrategySpec.needs`. The names are the values of ``core.orchestration.contracts.Strategy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.errors import BadRequest

Need = Literal["nothing", "embeddings", "judge_model", "aggregator_model"]


@dataclass(frozen=True)
class StrategySpec:
    """How a strategy is run: its inputs, the answers it suits, and the functions to call."""

    name: str
    answer_type: Literal["short", "open", "any"]
    needs: Need
    uses_weights: bool
    incremental: bool
    functions: tuple[str, ...]
    description: str


STRATEGIES: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec(
            "majority", "short", "nothing", False, False, ("majority_vote",),
            "Normalised majority vote; one vote per model.",
        ),
        StrategySpec(
            "weighted", "short", "nothing", True, False, ("majority_vote",),
            "Normalised vote, each model weighted by the log-odds of its measured reliability.",
        ),
        StrategySpec(
            "semantic", "open", "embeddings", True, False, ("semantic_consensus",),
            "Cluster embedded answers; answer with the medoid of the largest cluster.",
        ),
        StrategySpec(
            "judge", "any", "judge_model", False, False, ("judge_messages", "parse_judge"),
            "A judge model picks the best candidate or merges them, with reasons.",
        ),
        StrategySpec(
            "moa", "open", "aggregator_model", False, False, ("moa_messages", "moa_outcome"),
            "An aggregator model synthesises one answer from all candidates (mixture of agents).",
        ),
        StrategySpec(
            "adaptive", "short", "nothing", True, True,
            ("sequential_step", "run_sequential_offline", "adaptive_step", "run_adaptive_offline"),
            "The pair most likely per dollar to agree, then whom the lookahead picks while they "
            "disagree, until the posterior target, panel size or budget (Beta rule: older runs).",
        ),
    )
}  # fmt: skip


def choose(strategy_name: str) -> StrategySpec:
    """The spec of a strategy by name; raises ``BadRequest`` for an unknown name."""
    try:
        return STRATEGIES[strategy_name.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise BadRequest(f"unknown consensus strategy {strategy_name!r} (known: {known})") from None
