"""Operator settings of pipelines (``NEXUS_PIPELINES__*``): the outbound-call guard and HMAC secrets.

Mounted on the root settings as ``pipelines: PipelineSettings`` in :mod:`core.config`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr


class PipelineSettings(BaseModel):
    """Pipelines: which private destinations ``http`` steps may reach, and signing secrets."""

    allow_private_hosts: list[str] = Field(
        default_factory=list,
        description="Operator allowlist for http steps: host names, IP addresses or CIDR ranges that "
        "may be reached although they are private/loopback/link-local (e.g. an internal webhook "
        "receiver). Empty = only public addresses.",
    )
    signing_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Named HMAC-SHA256 secrets an http step may sign its body with (`sign_with`).",
    )
    http_timeout_s: float = Field(30.0, gt=0, le=600, description="Upper bound of one http step call.")
    max_response_bytes: int = Field(
        1_048_576, gt=0, description="Largest http step response body kept as the step output."
    )
    inline_output_bytes: int = Field(
        2048,
        gt=0,
        description="Step outputs larger than this (JSON bytes) go to the payload store; the "
        "workflow history keeps a reference.",
    )


def pipeline_settings(settings: Any) -> PipelineSettings:
    """The ``pipelines`` section of the root settings (defaults when the section is absent)."""
    section = getattr(settings, "pipelines", None)
    return section if isinstance(section, PipelineSettings) else PipelineSettings()
