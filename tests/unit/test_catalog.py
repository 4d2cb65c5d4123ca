"""The model catalog: built-in file, validation errors, overlays, key gating, scopes, route groups."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.errors import NotFound
from core.providers.catalog import BUILTIN_CATALOG, Capability, Catalog, CatalogError, parse_catalog
from core.providers.settings import ProvidersSettings

SIM = ProvidersSettings(simulator_url="http://127.0.0.1:9999/")


def test_builtin_catalog_lists_sim_models_only_without_keys() -> None:
    catalog = Catalog.load(SIM)
    ids = {m.id for m in catalog.models}
    assert {"sim-openai/gpt-4o-mini", "sim-anthropic/claude-sonnet-4", "sim-gemini/gemini-2.5-flash"} <= ids
    assert all(m.simulated for m in catalog.models)
    emb = catalog.get("sim-openai/text-embedding-3-small")
    assert emb.embedding_dims == 384
    assert Capability.embeddings in emb.capabilities
    assert catalog.providers["sim-openai"].base_url == "http://127.0.0.1:9999/v1"
    assert catalog.providers["sim-anthropic"].base_url == "http://127.0.0.1:9999"
    assert catalog.providers["sim-gemini"].base_url == "http://127.0.0.1:9999/v1beta"
    assert "frontier" not in {r.id for r in catalog.route_groups}  # no real member is callable
    with pytest.raises(NotFound):
        catalog.get("openai/gpt-4o")


def test_real_models_appear_with_their_key() -> None:
    settings = ProvidersSettings(
        openai_api_key=SecretStr("sk-x"), deepseek_api_key=SecretStr("d"), include_simulated=False
    )
    catalog = Catalog.load(settings)
    providers = {m.provider for m in catalog.models}
    assert providers == {"openai", "deepseek"}
    assert catalog.get("deepseek/deepseek-reasoner").upstream == "deepseek-reasoner"
    assert [m.id for m in catalog.resolve("frontier")] == ["openai/gpt-4o"]
    empty_key = ProvidersSettings(openai_api_key=SecretStr(""), include_simulated=False)
    assert Catalog.load(empty_key).models == []


def test_scope_filtering() -> None:
    catalog = Catalog.load(SIM)
    everything = catalog.visible_to(None)
    assert len(everything) == len(catalog.models)
    sim_openai = catalog.visible_to(("models:sim-openai/*",))
    assert {m.provider for m in sim_openai} == {"sim-openai"}
    assert [m.id for m in catalog.visible_to(["models:sim-gemini/gemini-2.5-flash", "routes:x"])] == [
        "sim-gemini/gemini-2.5-flash"
    ]
    assert len(catalog.visible_to(("models:sim-*",))) == len(everything)
    assert catalog.visible_to(("runs:read",)) == []
    assert [r.id for r in catalog.routes_visible_to(("routes:default-*",))] == ["default-chat"]


def test_route_group_fallback_order_and_seeded_weights() -> None:
    catalog = Catalog.load(SIM)
    assert [m.id for m in catalog.resolve("default-chat")] == [
        "sim-openai/gpt-4o-mini",
        "sim-anthropic/claude-sonnet-4",
        "sim-gemini/gemini-2.5-flash",
    ]
    assert [m.id for m in catalog.resolve("sim-openai/gpt-4o")] == ["sim-openai/gpt-4o"]
    rng = random.Random(42)
    firsts = Counter(catalog.resolve("balanced-chat", rng)[0].id for _ in range(4000))
    share = firsts["sim-openai/gpt-4o-mini"] / 4000
    assert 0.72 < share < 0.78  # weights 3:1
    again = [catalog.resolve("balanced-chat", random.Random(7))[0].id for _ in range(3)]
    assert len(set(again)) == 1  # same seed, same pick
    orders = {tuple(m.id for m in catalog.resolve("balanced-chat", rng)) for _ in range(50)}
    assert all(len(o) == 2 for o in orders)  # every member stays as a fallback
    with pytest.raises(NotFound):
        catalog.resolve("no-such-group")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [unclosed", "invalid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("models:\n  - id: x/y\n    provider: x\n", "models.0.upstream: Field required"),
        (
            "models:\n  - {id: wrong/y, provider: x, upstream: y, capabilities: [chat], context_window: 1, prices: {input: 1, output: 1}}\n",
            "must be 'x/<name>'",
        ),
        (
            "models:\n  - {id: x/y, provider: x, upstream: y, capabilities: [telepathy], context_window: 1, prices: {input: 1, output: 1}}\n",
            "capabilities",
        ),
        (
            "models:\n  - {id: x/e, provider: x, upstream: e, capabilities: [embeddings], context_window: 1, prices: {input: 1, output: 0}}\n",
            "needs embedding_dims",
        ),
        ("route_groups:\n  - {id: g, members: []}\n", "route_groups.0.members"),
        ("providers:\n  x: {adapter: cobol, base_url: 'http://x'}\n", "providers.x.adapter"),
    ],
)
def test_bad_catalog_files_give_clear_errors(text: str, message: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "extra.yaml")
    assert str(info.value).startswith("extra.yaml: ")
    assert message in str(info.value)


def test_overlay_adds_replaces_and_disables(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        """
providers:
  ollama: {adapter: openai_compatible, base_url: "http://127.0.0.1:11434/v1"}
models:
  - {id: ollama/llama3.2, provider: ollama, upstream: "llama3.2", capabilities: [chat], context_window: 131072,
     prices: {input: 0, output: 0}, regions: [onprem]}
  - {id: sim-openai/gpt-4o, provider: sim-openai, upstream: gpt-4o, capabilities: [chat], context_window: 128000,
     prices: {input: 2.5, output: 10}, enabled: false}
route_groups:
  - {id: local, strategy: fallback, members: [{model: ollama/llama3.2}, {model: sim-openai/gpt-4o-mini}]}
"""
    )
    settings = ProvidersSettings(catalog_path=extra, base_urls={"sim-openai": "http://other:1/v1"})
    catalog = Catalog.load(settings)
    assert catalog.get("ollama/llama3.2").regions == ("onprem",)
    with pytest.raises(NotFound):
        catalog.get("sim-openai/gpt-4o")
    assert [m.id for m in catalog.resolve("local")] == ["ollama/llama3.2", "sim-openai/gpt-4o-mini"]
    assert catalog.providers["sim-openai"].base_url == "http://other:1/v1"


def test_overlay_reference_errors(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("route_groups:\n  - {id: g, members: [{model: nope/x}]}\n")
    with pytest.raises(CatalogError, match="unknown model 'nope/x'"):
        Catalog.load(ProvidersSettings(catalog_path=extra))
    extra.write_text("providers:\n  fake: {adapter: openai, base_url: 'http://x', simulated: true}\n")
    with pytest.raises(CatalogError, match="only 'sim-\\*' providers"):
        Catalog.load(ProvidersSettings(catalog_path=extra))
    with pytest.raises(CatalogError, match="cannot read"):
        Catalog.load(ProvidersSettings(catalog_path=tmp_path / "missing.yaml"))


def test_builtin_file_is_valid_on_its_own() -> None:
    parsed = parse_catalog(BUILTIN_CATALOG.read_text(), "builtin")
    assert len({m.id for m in parsed.models}) == len(parsed.models)
    assert all(m.prices.input >= 0 for m in parsed.models)
