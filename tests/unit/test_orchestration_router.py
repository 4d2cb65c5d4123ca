"""Router: capability, residency, ranking, provider diversity, budget degradation."""

from __future__ import annotations

import random
from collections.abc import Collection
from decimal import Decimal

import pytest

from core.orchestration.contracts import PanelPolicy, SubtaskCapability
from core.orchestration.router import (
    CAPABILITY_NEEDS,
    ModelInfo,
    RoutingError,
    choose_panel,
    diversify,
    estimate_call_usd,
)
from core.providers.catalog import BUILTIN_CATALOG, parse_catalog

CHAT = {"chat"}
CODE = {"chat", "code"}
REASON = {"chat", "reasoning", "code"}


def model(
    id: str,
    price: str,
    caps: set[str] = CODE,
    regions: tuple[str, ...] = ("us", "eu"),
    reliability: float = 0.7,
    latency: float = 1000,
) -> ModelInfo:
    """A model priced ``price`` per Mtok for input and output alike."""
    return ModelInfo(
        id=id,
        provider=id.split("/")[0],
        capabilities=caps,
        regions=list(regions),
        input_per_mtok=Decimal(price),
        output_per_mtok=Decimal(price),
        latency_hint_ms=latency,
        reliability=reliability,
    )


# With 500k prompt + 500k completion tokens a call costs exactly the per-Mtok price.
TOKENS = 500_000
RICH = Decimal(1000)

MODELS = [
    model("oa/big", "10", reliability=0.95, latency=900),
    model("oa/mini", "1", reliability=0.80, latency=300),
    model("an/opus", "15", REASON, reliability=0.97, latency=2000),
    model("an/haiku", "2", reliability=0.75, latency=400),
    model("gg/flash", "0.5", REASON, reliability=0.85, latency=200),
    model("eu/large", "3", regions=("eu",), reliability=0.90, latency=800),
    model("cn/chat", "0.2", regions=("cn",), reliability=0.99, latency=100),
    model("emb/small", "0.01", {"embeddings"}, reliability=0.99),
]


def panel(
    capability: SubtaskCapability = SubtaskCapability.general,
    policy: PanelPolicy | None = None,
    *,
    models: list[ModelInfo] = MODELS,
    regions: list[str] | None = None,
    budget: Decimal = RICH,
    fixed: list[str] | None = None,
    exclude: Collection[str] = (),
) -> list[str]:
    chosen = choose_panel(
        models,
        capability,
        policy or PanelPolicy(min_models=2, max_models=3),
        regions=regions,
        remaining_budget_usd=budget,
        prompt_tokens=TOKENS,
        completion_tokens=TOKENS,
        fixed=fixed,
        exclude=exclude,
    )
    return chosen.models


def test_estimate_call_usd() -> None:
    m = ModelInfo(
        id="x/y",
        provider="x",
        capabilities=CHAT,
        regions=["us"],
        input_per_mtok=Decimal("2.50"),
        output_per_mtok=Decimal("10.00"),
    )
    assert estimate_call_usd(m, 1000, 500) == Decimal("0.0075")
    assert estimate_call_usd(m, 0, 0) == 0
    with pytest.raises(ValueError, match="negative"):
        estimate_call_usd(m, -1, 0)


def test_from_catalog_entry() -> None:
    catalog = parse_catalog(BUILTIN_CATALOG.read_text())
    entry = next(m for m in catalog.models if m.id == "anthropic/claude-sonnet-4")
    info = ModelInfo.from_entry(entry, reliability=0.9)
    assert info.provider == "anthropic"
    assert {"chat", "reasoning", "code"} <= info.capabilities
    assert info.regions == ["us", "eu"]
    assert info.input_per_mtok == Decimal("3.00")
    assert info.output_per_mtok == Decimal("15.00")
    assert info.reliability == 0.9
    assert ModelInfo.model_validate_json(info.model_dump_json()) == info


def test_capability_needs_cover_every_capability() -> None:
    assert set(CAPABILITY_NEEDS) == set(SubtaskCapability)
    assert CAPABILITY_NEEDS[SubtaskCapability.code] == {"chat", "code"}
    assert CAPABILITY_NEEDS[SubtaskCapability.math] == {"chat", "reasoning"}
    assert CAPABILITY_NEEDS[SubtaskCapability.writing] == {"chat"}


def test_quality_ranks_by_reliability_with_provider_diversity() -> None:
    # cn/chat is the most reliable but we are pinned to us/eu; embeddings never chat.
    assert panel(regions=["us", "eu"]) == ["an/opus", "oa/big", "eu/large"]


def test_cost_and_latency_preferences() -> None:
    cheap = PanelPolicy(min_models=2, max_models=3, prefer="cost")
    assert panel(policy=cheap, regions=["us"]) == ["gg/flash", "oa/mini", "an/haiku"]
    fast = PanelPolicy(min_models=2, max_models=3, prefer="latency")
    assert panel(policy=fast, regions=["us"]) == ["gg/flash", "oa/mini", "an/haiku"]
    fast_all = PanelPolicy(min_models=1, max_models=2, prefer="latency")
    assert panel(policy=fast_all) == ["cn/chat", "gg/flash"]


def test_reasoning_and_math_prefer_reasoning_models() -> None:
    assert panel(SubtaskCapability.reasoning) == ["an/opus", "gg/flash"]
    assert panel(SubtaskCapability.math, PanelPolicy(prefer="cost")) == ["gg/flash", "an/opus"]


def test_reasoning_falls_back_to_chat_models() -> None:
    chat_only = [model("oa/mini", "1", CHAT), model("an/haiku", "2", CHAT)]
    chosen = choose_panel(
        chat_only,
        SubtaskCapability.math,
        PanelPolicy(),
        regions=None,
        remaining_budget_usd=RICH,
        prompt_tokens=TOKENS,
        completion_tokens=TOKENS,
    )
    assert chosen.models == ["oa/mini", "an/haiku"]
    assert "using chat models" in chosen.reason


def test_code_requires_code_models() -> None:
    models = [model("oa/mini", "1", CHAT), model("an/haiku", "2", CODE)]
    assert panel(SubtaskCapability.code, models=models) == ["an/haiku"]
    with pytest.raises(RoutingError, match="'code' capability"):
        panel(SubtaskCapability.code, models=[model("oa/mini", "1", CHAT)])


def test_region_is_never_violated() -> None:
    for regions in (["eu"], ["cn"], ["us"], ["us", "cn"]):
        chosen = panel(regions=regions, policy=PanelPolicy(min_models=1, max_models=9))
        by_id = {m.id: m for m in MODELS}
        assert chosen
        assert all(set(by_id[i].regions) & set(regions) for i in chosen)
    assert panel(regions=["cn"]) == ["cn/chat"]
    with pytest.raises(RoutingError, match="in regions \\['jp'\\]"):
        panel(regions=["jp"])


def test_diversity_across_providers() -> None:
    same = [
        model("oa/a", "1", reliability=0.99),
        model("oa/b", "1", reliability=0.98),
        model("oa/c", "1", reliability=0.97),
        model("an/a", "1", reliability=0.50),
        model("gg/a", "1", reliability=0.40),
    ]
    assert panel(models=same) == ["oa/a", "an/a", "gg/a"]
    assert panel(models=same, policy=PanelPolicy(max_models=5)) == ["oa/a", "an/a", "gg/a", "oa/b", "oa/c"]
    assert [m.id for m in diversify(same[:3])] == ["oa/a", "oa/b", "oa/c"]


def test_ties_break_by_id_and_input_order_does_not_matter() -> None:
    twins = [model(f"p{i}/m", "1") for i in (3, 1, 2)]
    expected = ["p1/m", "p2/m", "p3/m"]
    for seed in range(5):
        shuffled = twins[:]
        random.Random(seed).shuffle(shuffled)
        assert panel(models=shuffled) == expected


def test_exclude() -> None:
    assert panel(regions=["us", "eu"], exclude={"an/opus"}) == ["oa/big", "eu/large", "gg/flash"]
    chosen = choose_panel(
        MODELS[:2],
        SubtaskCapability.general,
        PanelPolicy(),
        regions=None,
        remaining_budget_usd=RICH,
        exclude={"oa/big", "oa/mini"},
        prompt_tokens=TOKENS,
        completion_tokens=TOKENS,
    )
    assert chosen.models == []
    assert not chosen.budget_exhausted
    assert "excluded" in chosen.reason


def test_budget_trims_optional_models_without_degrading() -> None:
    # opus 15 + big 10 fit 27; large (3) would not, so the next in rank order, flash (0.5), joins.
    chosen = choose_panel(
        MODELS,
        SubtaskCapability.general,
        PanelPolicy(min_models=2, max_models=3),
        regions=["us", "eu"],
        remaining_budget_usd=Decimal(27),
        prompt_tokens=TOKENS,
        completion_tokens=TOKENS,
    )
    assert chosen.models == ["an/opus", "oa/big", "gg/flash"]
    assert chosen.estimated_cost_usd == Decimal("25.5")
    assert not chosen.degraded


def test_degrades_to_cheaper_models() -> None:
    # opus + big (25) do not fit 14: swap in cheaper models, best-ranked first.
    chosen = choose_panel(
        MODELS,
        SubtaskCapability.general,
        PanelPolicy(min_models=2, max_models=3),
        regions=["us", "eu"],
        remaining_budget_usd=Decimal(14),
        prompt_tokens=TOKENS,
        completion_tokens=TOKENS,
    )
    assert chosen.models == ["oa/big", "eu/large"]
    assert chosen.estimated_cost_usd == Decimal(13)
    assert chosen.degraded
    assert "cannot afford 2 model(s)" in chosen.reason
    assert "swapped in" in chosen.reason


def test_degrades_to_fewer_models() -> None:
    chosen = choose_panel(
        MODELS,
        SubtaskCapability.reasoning,
        PanelPolicy(min_models=2, max_models=3),
        regions=None,
        remaining_budget_usd=Decimal("1"),
        prompt_tokens=TOKENS,
        completion_tokens=TOKENS,
    )
    assert chosen.models == ["gg/flash"]
    assert chosen.degraded
    assert chosen.estimated_cost_usd == Decimal("0.5")


def test_budget_exhausted() -> None:
    for budget in (Decimal("0.1"), Decimal(0), Decimal(-1)):
        chosen = choose_panel(
            MODELS,
            SubtaskCapability.reasoning,
            PanelPolicy(),
            regions=None,
            remaining_budget_usd=budget,
            prompt_tokens=TOKENS,
            completion_tokens=TOKENS,
        )
        assert chosen.models == []
        assert chosen.reason == "budget exhausted"
        assert chosen.budget_exhausted
        assert chosen.degraded
        assert chosen.estimated_cost_usd == 0


def test_panel_never_exceeds_the_budget() -> None:
    rng = random.Random(7)
    sizes = ((1, 1), (2, 3), (3, 5), (5, 3))
    prefs = ("quality", "cost", "latency")
    policies = [PanelPolicy(min_models=a, max_models=b, prefer=p) for a, b in sizes for p in prefs]
    for _ in range(500):
        budget = Decimal(rng.randint(0, 4000)) / 100
        policy = rng.choice(policies)
        capability = rng.choice(list(SubtaskCapability))
        chosen = choose_panel(
            MODELS,
            capability,
            policy,
            regions=None,
            remaining_budget_usd=budget,
            prompt_tokens=TOKENS,
            completion_tokens=TOKENS,
        )
        costs = {m.id: estimate_call_usd(m, TOKENS, TOKENS) for m in MODELS}
        assert sum((costs[i] for i in chosen.models), Decimal(0)) == chosen.estimated_cost_usd
        assert chosen.estimated_cost_usd <= budget
        assert len(chosen.models) <= policy.max_models
        assert len(set(chosen.models)) == len(chosen.models)
        assert bool(chosen.models) or chosen.reason == "budget exhausted"


def test_fixed_models_keep_the_callers_order() -> None:
    chosen = choose_panel(
        MODELS,
        SubtaskCapability.general,
        PanelPolicy(max_models=1),
        regions=["eu"],
        remaining_budget_usd=RICH,
        fixed=["eu/large", "oa/mini", "emb/small"],
        prompt_tokens=TOKENS,
        completion_tokens=TOKENS,
    )
    assert chosen.models == ["eu/large", "oa/mini", "emb/small"]
    assert not chosen.degraded


def test_fixed_model_outside_regions_is_an_error() -> None:
    with pytest.raises(RoutingError, match="'cn/chat' serves regions \\['cn'\\], outside the allowed"):
        panel(regions=["us", "eu"], fixed=["oa/mini", "cn/chat"])
    with pytest.raises(RoutingError, match="'nope/x' is not in the catalog"):
        panel(fixed=["nope/x"])


def test_fixed_models_drop_what_the_budget_cannot_afford() -> None:
    chosen = choose_panel(
        MODELS,
        SubtaskCapability.general,
        PanelPolicy(),
        regions=None,
        remaining_budget_usd=Decimal(4),
        fixed=["oa/big", "oa/mini", "an/haiku"],
        exclude={"an/haiku"},
        prompt_tokens=TOKENS,
        completion_tokens=TOKENS,
    )
    assert chosen.models == ["oa/mini"]
    assert chosen.degraded
    assert "'oa/big'" in chosen.reason
    broke = choose_panel(
        MODELS,
        SubtaskCapability.general,
        PanelPolicy(),
        regions=None,
        remaining_budget_usd=Decimal("0.5"),
        fixed=["oa/big"],
        prompt_tokens=TOKENS,
        completion_tokens=TOKENS,
    )
    assert broke.budget_exhausted


def test_fewer_eligible_models_than_the_policy_minimum() -> None:
    chosen = choose_panel(
        MODELS,
        SubtaskCapability.general,
        PanelPolicy(min_models=3, max_models=5),
        regions=["cn"],
        remaining_budget_usd=RICH,
        prompt_tokens=TOKENS,
        completion_tokens=TOKENS,
    )
    assert chosen.models == ["cn/chat"]
    assert chosen.degraded
    assert "only 1 eligible model" in chosen.reason
