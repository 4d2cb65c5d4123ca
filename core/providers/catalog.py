"""The model catalog: providers, models, prices, capabilities and route groups.

The built-in ``catalog.yaml`` is merged with an operator file (``ProvidersSettings.catalog_path``):
providers and route groups are replaced by name/id, models by id (``enabled: false`` removes
one). A loaded :class:`Catalog` only contains what can actually be called: real providers
appear when their API key is configured, ``sim-*`` ones when simulated models are enabled.
"""

from __future__ import annotations

import random
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import NotFound
from core.providers.settings import ProvidersSettings

BUILTIN_CATALOG = Path(__file__).with_name("catalog.yaml")
AdapterName = Literal["openai", "anthropic", "gemini", "mistral", "deepseek", "openai_compatible"]


class CatalogError(ValueError):
    """A catalog file is unreadable or inconsistent; the message names the file and the field."""


class Capability(StrEnum):
    chat = "chat"
    tools = "tools"
    vision = "vision"
    json = "json"
    reasoning = "reasoning"
    code = "code"
    embeddings = "embeddings"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderEntry(_Strict):
    """An upstream endpoint: which adapter speaks to it, where, with which key."""

    adapter: AdapterName
    base_url: str
    key: str | None = Field(None, description="Name of the API key setting; None = no key needed.")
    simulated: bool = False


class Prices(_Strict):
    """USD per million tokens; ``cached`` defaults to the input price."""

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached: Decimal | None = Field(None, ge=0)


class ModelLimits(_Strict):
    """Default limits the gateway applies to this model unless a key or tenant says otherwise."""

    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)


class ModelEntry(_Strict):
    """One callable model."""

    id: str
    provider: str
    upstream: str
    capabilities: frozenset[Capability]
    context_window: int = Field(gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    embedding_dims: int | None = Field(None, gt=0)
    prices: Prices
    regions: tuple[str, ...] = ()
    limits: ModelLimits = Field(default_factory=ModelLimits)
    description: str = ""
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> ModelEntry:
        if not self.id.startswith(self.provider + "/") or self.id == self.provider + "/":
            raise ValueError(f"model id {self.id!r} must be '{self.provider}/<name>'")
        if Capability.embeddings in self.capabilities and self.embedding_dims is None:
            raise ValueError(f"embedding model {self.id!r} needs embedding_dims")
        return self

    @property
    def simulated(self) -> bool:
        """Whether the model is served by the provider simulator."""
        return self.provider.startswith("sim-")


class RouteMember(_Strict):
    model: str
    weight: float = Field(1.0, gt=0)


class RouteGroup(_Strict):
    """Models tried in order (``fallback``) or with the first drawn by weight (``weighted``)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    strategy: Literal["fallback", "weighted"] = "fallback"
    members: tuple[RouteMember, ...] = Field(min_length=1)

    def order(self, rng: random.Random | None = None) -> list[str]:
        """Model ids in the order to try them. ``weighted`` draws without replacement by weight
        (Efraimidis-Spirakis), so the first pick follows the weights and the rest are fallbacks."""
        if self.strategy == "fallback":
            return [m.model for m in self.members]
        rng = rng or random.Random()
        keyed = [(rng.random() ** (1.0 / m.weight), m.model) for m in self.members]
        return [model for _, model in sorted(keyed, key=lambda kv: kv[0], reverse=True)]


class CatalogFile(_Strict):
    """The shape of one catalog YAML file."""

    version: int = 1
    providers: dict[str, ProviderEntry] = Field(default_factory=dict)
    models: tuple[ModelEntry, ...] = ()
    route_groups: tuple[RouteGroup, ...] = ()


def parse_catalog(text: str, source: str = "<catalog>") -> CatalogFile:
    """Parse and validate one catalog YAML document; raise :class:`CatalogError` naming the field."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        parsed = CatalogFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise CatalogError(f"{source}: {problems}") from None
    ids = [m.id for m in parsed.models]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CatalogError(f"{source}: duplicate model ids {duplicates}")
    return parsed


def merge_catalogs(base: CatalogFile, overlay: CatalogFile) -> CatalogFile:
    """``overlay`` replaces providers by name, models and route groups by id."""
    models = {m.id: m for m in base.models}
    models.update({m.id: m for m in overlay.models})
    routes = {r.id: r for r in base.route_groups}
    routes.update({r.id: r for r in overlay.route_groups})
    return CatalogFile(
        version=max(base.version, overlay.version),
        providers={**base.providers, **overlay.providers},
        models=tuple(models.values()),
        route_groups=tuple(routes.values()),
    )


def check_references(catalog: CatalogFile, source: str = "<catalog>") -> None:
    """Every model names a known provider, every route member a known model; sim-* is simulated."""
    for name, provider in catalog.providers.items():
        if provider.simulated != name.startswith("sim-"):
            raise CatalogError(f"{source}: provider {name!r}: only 'sim-*' providers are simulated")
        if not provider.base_url.startswith(("http://", "https://", "{simulator_url}")):
            raise CatalogError(f"{source}: provider {name!r}: base_url must be an http(s) URL")
    known = {m.id for m in catalog.models}
    for model in catalog.models:
        if model.provider not in catalog.providers:
            raise CatalogError(f"{source}: model {model.id!r}: unknown provider {model.provider!r}")
    for group in catalog.route_groups:
        if group.id in known or "/" in group.id:
            raise CatalogError(f"{source}: route group {group.id!r} clashes with a model id")
        for member in group.members:
            if member.model not in known:
                raise CatalogError(f"{source}: route group {group.id!r}: unknown model {member.model!r}")


def scope_allows(scopes: tuple[str, ...] | list[str] | None, scope: str) -> bool:
    """Whether key scopes allow ``scope`` (None = unrestricted; ``*`` suffix = prefix match)."""
    if scopes is None:
        return True
    return any(scope.startswith(s[:-1]) if s.endswith("*") else s == scope for s in scopes)


class Catalog:
    """The callable models, their providers and route groups."""

    def __init__(
        self,
        providers: dict[str, ProviderEntry],
        models: list[ModelEntry],
        route_groups: list[RouteGroup],
    ) -> None:
        self.providers = providers
        self._models = {m.id: m for m in models}
        self._routes = {r.id: r for r in route_groups}

    @classmethod
    def load(cls, settings: ProvidersSettings, builtin: Path = BUILTIN_CATALOG) -> Catalog:
        """Built-in catalog + the operator's file, filtered to what the settings make callable."""
        merged = _read(builtin)
        check_references(merged, str(builtin))
        if settings.catalog_path is not None:
            overlay = _read(settings.catalog_path)
            merged = merge_catalogs(merged, overlay)
            check_references(merged, f"{builtin} + {settings.catalog_path}")
        return cls.from_file(merged, settings)

    @classmethod
    def from_file(cls, catalog: CatalogFile, settings: ProvidersSettings) -> Catalog:
        """Resolve URLs and keep only callable providers, enabled models and non-empty groups."""
        providers: dict[str, ProviderEntry] = {}
        for name, entry in catalog.providers.items():
            if entry.simulated and not settings.include_simulated:
                continue
            if entry.key is not None and settings.api_key(entry.key) is None:
                continue
            url = settings.base_urls.get(name, entry.base_url)
            url = url.replace("{simulator_url}", settings.simulator_url.rstrip("/")).rstrip("/")
            providers[name] = entry.model_copy(update={"base_url": url})
        models = [m for m in catalog.models if m.enabled and m.provider in providers]
        callable_ids = {m.id for m in models}
        groups: list[RouteGroup] = []
        for group in catalog.route_groups:
            members = tuple(m for m in group.members if m.model in callable_ids)
            if members:
                groups.append(group.model_copy(update={"members": members}))
        return cls(providers, models, groups)

    @property
    def models(self) -> list[ModelEntry]:
        """Every callable model, in catalog order."""
        return list(self._models.values())

    def has_model(self, model_id: str) -> bool:
        """Whether ``model_id`` is a callable model (not a route group); O(1) on the hot path."""
        return model_id in self._models

    @property
    def route_groups(self) -> list[RouteGroup]:
        """Every route group with at least one callable member."""
        return list(self._routes.values())

    def get(self, model_id: str) -> ModelEntry:
        """The model called ``model_id``; :class:`NotFound` if it is unknown or not callable."""
        try:
            return self._models[model_id]
        except KeyError:
            raise NotFound(f"model {model_id!r} does not exist or is not available") from None

    def provider_of(self, model_id: str) -> ProviderEntry:
        """The provider entry serving ``model_id``."""
        return self.providers[self.get(model_id).provider]

    def visible_to(self, scopes: tuple[str, ...] | list[str] | None) -> list[ModelEntry]:
        """Models a key with these scopes may use (``models:<id>`` patterns, e.g. ``models:sim-*``)."""
        return [m for m in self._models.values() if scope_allows(scopes, f"models:{m.id}")]

    def routes_visible_to(self, scopes: tuple[str, ...] | list[str] | None) -> list[RouteGroup]:
        """Route groups a key may use (``routes:<id>`` patterns)."""
        return [r for r in self._routes.values() if scope_allows(scopes, f"routes:{r.id}")]

    def resolve(self, name: str, rng: random.Random | None = None) -> list[ModelEntry]:
        """The models to try, in order, for a model id or a route group id."""
        if name in self._models:
            return [self._models[name]]
        group = self._routes.get(name)
        if group is None:
            raise NotFound(f"model {name!r} does not exist or is not available")
        return [self._models[model_id] for model_id in group.order(rng)]


def _read(path: Path) -> CatalogFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog: {exc.strerror}") from None
    return parse_catalog(text, str(path))
