"""Settings of the provider layer (``NEXUS_PROVIDERS__*`` once mounted on ``core.config.Settings``).

API keys are ``SecretStr``: they never appear in reprs, logs or error messages. Upstream base
URLs come only from the catalog and these operator settings, never from a client request.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import BaseModel, Field, SecretStr

# Keys the built-in catalog refers to (``key: openai`` in catalog.yaml -> ``openai_api_key``).
BUILTIN_KEY_NAMES = ("openai", "anthropic", "gemini", "mistral", "deepseek", "meta", "simulator")


class ProviderTimeouts(BaseModel):
    """Timeouts of one upstream call; Temporal's activity timeouts bound the whole attempt."""

    connect_s: float = Field(5.0, gt=0, description="TCP/TLS connect timeout.")
    read_s: float = Field(60.0, gt=0, description="Longest silence between two bytes (also in streams).")
    write_s: float = Field(10.0, gt=0, description="Timeout sending the request body.")
    pool_s: float = Field(5.0, gt=0, description="Wait for a free connection in the shared pool.")
    request_s: float = Field(120.0, gt=0, description="Whole non-streaming call.")

    def httpx_timeout(self) -> httpx.Timeout:
        """These timeouts as an ``httpx.Timeout``."""
        return httpx.Timeout(connect=self.connect_s, read=self.read_s, write=self.write_s, pool=self.pool_s)


class ProvidersSettings(BaseModel):
    """LLM providers: catalog overrides, credentials, simulator location, timeouts."""

    simulator_url: str = Field(
        "", description="Base URL of the provider simulator (sim-* models); empty = the embedded one."
    )
    include_simulated: bool = Field(True, description="List the sim-* models of the catalog.")
    simulator_api_key: SecretStr = Field(
        SecretStr("sim-local-key"),
        description="Key sent to the simulator, which checks keys like the real APIs (not a secret).",
    )
    catalog_path: Path | None = Field(
        None, description="Extra catalog YAML merged over the built-in one (models, providers, routes)."
    )
    base_urls: dict[str, str] = Field(
        default_factory=dict, description="Operator override of a catalog provider's base URL, by name."
    )
    openai_api_key: SecretStr | None = Field(None, description="OpenAI API key; enables openai/* models.")
    anthropic_api_key: SecretStr | None = Field(None, description="Anthropic API key; enables anthropic/*.")
    gemini_api_key: SecretStr | None = Field(None, description="Google AI Studio key; enables gemini/*.")
    mistral_api_key: SecretStr | None = Field(None, description="Mistral API key; enables mistral/*.")
    deepseek_api_key: SecretStr | None = Field(None, description="DeepSeek API key; enables deepseek/*.")
    meta_api_key: SecretStr | None = Field(
        None, description="Key of the Llama host (Together by default); enables meta/*."
    )
    api_keys: dict[str, SecretStr] = Field(
        default_factory=dict, description="Keys of extra catalog providers, by the catalog's key name."
    )
    timeouts: ProviderTimeouts = Field(default_factory=ProviderTimeouts)
    default_completion_tokens: int = Field(
        1024, gt=0, description="Completion budget assumed for a cost estimate without max_tokens."
    )

    def api_key(self, name: str) -> SecretStr | None:
        """The configured key called ``name`` in the catalog, or None."""
        if name in BUILTIN_KEY_NAMES:
            value: SecretStr | None = getattr(self, f"{name}_api_key")
            if value is not None and value.get_secret_value():
                return value
        extra = self.api_keys.get(name)
        return extra if extra is not None and extra.get_secret_value() else None
