"""NexusAI settings: one pydantic-settings root with a nested model per subsystem.

Every field is settable from the environment as ``NEXUS_<SECTION>__<FIELD>`` (for example
``NEXUS_DATABASE__URL``) or from a ``.env`` file. When a URL is left empty, the embedded
default (the servers ``nexus up`` starts under ``$NEXUS_HOME``) is used.

Outside ``dev`` mode the settings refuse to start without explicit secrets: there is no
default encryption key, signing key or key pepper in production.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.approvals.notify import NotificationSettings
from core.pipelines.settings import PipelineSettings
from core.providers.settings import ProvidersSettings
from core.rag.settings import RagSettings


class PortsSettings(BaseModel):
    """Ports of the embedded stack on 127.0.0.1; change them to run two stacks side by side."""

    api: int = Field(8000, description="API (uvicorn) port.")
    temporal: int = Field(7233, description="Temporal dev server gRPC port.")
    temporal_ui: int = Field(8233, description="Temporal web UI port.")
    postgres: int = Field(55432, description="Embedded PostgreSQL port.")
    redis: int = Field(56379, description="Embedded Valkey port.")
    worker_metrics: int = Field(9464, description="Prometheus port of the worker process.")
    simulator: int = Field(8100, description="Provider simulator port (sim-* models).")


class DatabaseSettings(BaseModel):
    """PostgreSQL (with pgvector)."""

    url: str = Field("", description="SQLAlchemy URL (postgresql+asyncpg://…); empty = embedded Postgres.")
    pool_size: int = Field(10, description="Connection pool size per process.")
    echo: bool = Field(False, description="Log every SQL statement (debugging only).")


class RedisSettings(BaseModel):
    """Redis / Valkey: key cache, rate limits, event pub/sub."""

    url: str = Field("", description="redis:// URL; empty = embedded Valkey.")
    key_cache_ttl_s: int = Field(60, description="Seconds an API key lookup stays cached.")


class TemporalSettings(BaseModel):
    """Temporal service connection (embedded dev server or a cluster / Temporal Cloud)."""

    address: str = Field("", description="host:port of the frontend; empty = embedded dev server.")
    namespace: str = Field("default", description="Temporal namespace.")
    task_queue: str = Field("nexus-default", description="Default task queue for workflows.")
    ui_url: str = Field("", description="Public URL of the Temporal web UI (for links).")
    tls: bool = Field(False, description="Use TLS to reach the frontend.")
    tls_ca_cert: Path | None = Field(None, description="CA certificate (PEM) to verify the server.")
    tls_client_cert: Path | None = Field(None, description="Client certificate (PEM) for mTLS.")
    tls_client_key: Path | None = Field(None, description="Client private key (PEM) for mTLS.")
    tls_server_name: str | None = Field(None, description="Override the TLS server name.")
    api_key: SecretStr | None = Field(None, description="API key (Temporal Cloud); implies TLS.")


class ApiSettings(BaseModel):
    """The FastAPI control plane."""

    host: str = Field("127.0.0.1", description="Bind address.")
    public_url: str = Field("", description="External base URL (links, CORS for the codec endpoint).")
    max_body_bytes: int = Field(1_048_576, description="Largest accepted request body (413 above).")
    rate_limit_per_minute: int = Field(600, description="Default requests per minute per API key.")
    admission_lease_max: int = Field(
        32,
        ge=0,
        description=(
            "Most gateway calls of one busy key admitted by one Redis round trip "
            "(core/gateway/leases.py; 0 = every call admitted on its own)."
        ),
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the codec endpoint (Temporal UI)."
    )


class WorkerSettings(BaseModel):
    """The worker process."""

    metrics_host: str = Field(
        "127.0.0.1",
        description="Bind address of the worker's Prometheus endpoint (0.0.0.0 to scrape from other hosts).",
    )


class OtelSettings(BaseModel):
    """OpenTelemetry tracing (API request -> workflow -> activity), exported over OTLP/HTTP."""

    enabled: bool = Field(False, description="Trace requests, workflows and activities (off = no-op tracer).")
    endpoint: str = Field(
        "", description="OTLP/HTTP collector base URL (e.g. http://127.0.0.1:4318); empty = nothing exported."
    )
    service_name: str = Field(
        "nexus", description="Service name prefix (spans come from nexus-api and nexus-worker)."
    )
    sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of new traces recorded (parent-based: callers' choice wins)."
    )


class EvalsSettings(BaseModel):
    """Eval runs and golden datasets (``NEXUS_EVALS__…``)."""

    batch_size: int = Field(20, gt=0, le=500, description="Cases per evaluate_cases activity.")
    batch_concurrency: int = Field(4, gt=0, le=64, description="Batches of one run in flight at once.")
    case_concurrency: int = Field(8, gt=0, le=256, description="Cases evaluated at once inside a batch.")
    max_dataset_bytes: int = Field(1_000_000, gt=0, description="Largest dataset upload (JSONL/CSV).")
    max_dataset_cases: int = Field(10_000, gt=0, description="Most cases in one dataset version.")
    judge_model: str = Field(
        "sim-openai/gpt-4o-mini", description="Default LLM-as-judge model when a metric names none."
    )
    embedding_model: str = Field(
        "sim-openai/text-embedding-3-small", description="Embedding model of semantic-similarity metrics."
    )
    alert_channels: list[str] = Field(
        default_factory=list,
        description="Notification channels (NEXUS_APPROVALS__CHANNELS) told of regressions.",
    )


class ConnectorsSettings(BaseModel):
    """Enterprise connectors: outbound host guard, sync paging and credential encryption."""

    allow_private_hosts: bool = Field(
        False, description="Let connections reach private, loopback and link-local hosts (on-prem only)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names, addresses or CIDR ranges a connection may reach although private.",
    )
    page_size: int = Field(200, gt=0, le=10_000, description="Default records per sync page.")
    pages_per_run: int = Field(
        100, gt=0, le=10_000, description="Sync pages per workflow run before it continues as new."
    )
    page_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="Start-to-close timeout of one sync page (read + sink write)."
    )
    credentials_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Connection credential keys: key id -> base64 of 32 bytes (AES-256-GCM); "
        "empty = derived from the payload codec keys.",
    )
    credentials_active_key: str = Field("", description="Key id that encrypts new credentials.")
    ca_bundle: str = Field(
        "", description="PEM file of extra CAs trusted for connector TLS (on-prem or test endpoints)."
    )


class SecuritySettings(BaseModel):
    """Secrets. In dev mode missing ones are generated once and kept in $NEXUS_HOME/secrets.json."""

    codec_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Payload encryption keys: key id -> base64 of 32 random bytes (AES-256-GCM).",
    )
    codec_active_key: str = Field("", description="Key id used to encrypt new payloads.")
    audit_signing_key: SecretStr | None = Field(
        None, description="Base64 Ed25519 private seed (32 bytes) that signs exported audit heads."
    )
    key_pepper: SecretStr | None = Field(None, description="Server secret mixed into API key hashes.")


class Settings(BaseSettings):
    """Root settings."""

    model_config = SettingsConfigDict(
        env_prefix="NEXUS_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    env: Literal["dev", "test", "prod"] = Field("dev", description="dev/test generate missing secrets.")
    home: Path = Field(Path(".nexus"), description="State directory of the embedded stack.")
    log_level: str = Field("INFO", description="Root log level.")
    log_json: bool = Field(True, description="Structured JSON logs.")
    ports: PortsSettings = Field(default_factory=PortsSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    pipelines: PipelineSettings = Field(default_factory=PipelineSettings)
    rag: RagSettings = Field(default_factory=RagSettings)
    connectors: ConnectorsSettings = Field(default_factory=ConnectorsSettings)
    evals: EvalsSettings = Field(default_factory=EvalsSettings)
    approvals: NotificationSettings = Field(
        default_factory=NotificationSettings, description="Approval notification channels and SMTP relay."
    )

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        if not self.database.url:
            self.database.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.ports.postgres}/nexus"
        if not self.redis.url:
            self.redis.url = f"redis://127.0.0.1:{self.ports.redis}/0"
        if not self.temporal.address:
            self.temporal.address = f"127.0.0.1:{self.ports.temporal}"
        if not self.temporal.ui_url:
            self.temporal.ui_url = f"http://127.0.0.1:{self.ports.temporal_ui}"
        if not self.providers.simulator_url:
            self.providers.simulator_url = f"http://127.0.0.1:{self.ports.simulator}"
        if not self.api.public_url:
            self.api.public_url = f"http://127.0.0.1:{self.ports.api}"
        sec = self.security
        missing = [
            name
            for name, value in (
                ("codec_keys", sec.codec_keys),
                ("audit_signing_key", sec.audit_signing_key),
                ("key_pepper", sec.key_pepper),
            )
            if not value
        ]
        if missing:
            if self.env == "prod":
                raise ValueError(
                    "refusing to start in prod without secrets: set "
                    + ", ".join(f"NEXUS_SECURITY__{m.upper()}" for m in missing)
                )
            self._fill_dev_secrets()
        if not sec.codec_active_key:
            sec.codec_active_key = sorted(sec.codec_keys)[-1]
        if sec.codec_active_key not in sec.codec_keys:
            raise ValueError(f"codec_active_key {sec.codec_active_key!r} is not in codec_keys")
        return self

    def _fill_dev_secrets(self) -> None:
        """Generate dev secrets once and persist them (0600) so restarts can decrypt old payloads."""
        path = self.home / "secrets.json"
        stored: dict[str, str] = {}
        if path.exists():
            stored = json.loads(path.read_text())
        else:
            self.home.mkdir(parents=True, exist_ok=True)
            stored = {
                "codec_key_id": "dev1",
                "codec_key": base64.b64encode(secrets.token_bytes(32)).decode(),
                "audit_signing_key": base64.b64encode(secrets.token_bytes(32)).decode(),
                "key_pepper": secrets.token_urlsafe(32),
            }
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(stored, fh)
        sec = self.security
        if not sec.codec_keys:
            sec.codec_keys = {stored["codec_key_id"]: SecretStr(stored["codec_key"])}
        if sec.audit_signing_key is None:
            sec.audit_signing_key = SecretStr(stored["audit_signing_key"])
        if sec.key_pepper is None:
            sec.key_pepper = SecretStr(stored["key_pepper"])


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def settings_reference() -> str:
    """A Markdown table of every setting, its environment variable, default and description."""
    lines = [
        "| environment variable | default | description |",
        "|---|---|---|",
    ]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            env = f"{prefix}{name.upper()}"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{env}__")
                continue
            default = field.get_default(call_default_factory=True)
            if isinstance(default, SecretStr):
                default = "(set)" if default.get_secret_value() else None
            shown = "" if default in (None, "", {}, []) else f"`{default}`"
            lines.append(f"| `{env}` | {shown} | {field.description or ''} |")

    walk(Settings, "NEXUS_")
    return "\n".join(lines) + "\n"
