"""Connect to Temporal with the pydantic data converter, the encryption codec and TLS options."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from opentelemetry.trace import TracerProvider
from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from core.config import SecuritySettings, Settings, TemporalSettings
from core.temporal.codec import EncryptionCodec

if TYPE_CHECKING:
    from temporalio.contrib.opentelemetry import TracingInterceptor


def make_codec(security: SecuritySettings) -> EncryptionCodec:
    keys = {kid: secret.get_secret_value() for kid, secret in security.codec_keys.items()}
    return EncryptionCodec.from_b64(keys, security.codec_active_key)


def data_converter(security: SecuritySettings) -> DataConverter:
    """Pydantic-aware converter whose payloads are encrypted at rest in Temporal."""
    return dataclasses.replace(pydantic_data_converter, payload_codec=make_codec(security))


def tls_config(temporal: TemporalSettings) -> TLSConfig | bool:
    if not (temporal.tls or temporal.api_key or temporal.tls_client_cert):
        return False
    return TLSConfig(
        server_root_ca_cert=temporal.tls_ca_cert.read_bytes() if temporal.tls_ca_cert else None,
        client_cert=temporal.tls_client_cert.read_bytes() if temporal.tls_client_cert else None,
        client_private_key=temporal.tls_client_key.read_bytes() if temporal.tls_client_key else None,
        domain=temporal.tls_server_name,
    )


def tracing_interceptors(tracer_provider: TracerProvider | None) -> list[TracingInterceptor]:
    """temporalio's OpenTelemetry interceptor on ``tracer_provider`` (none when tracing is off).

    On the client it traces starts, signals, queries and updates and puts the trace context in
    the Temporal headers; workers built on that client inherit it and continue the trace in
    workflows (replay-safe, zero-duration spans) and activities.
    """
    if tracer_provider is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(tracer_provider.get_tracer("temporalio.contrib.opentelemetry"))]


async def connect(settings: Settings, *, tracer_provider: TracerProvider | None = None) -> Client:
    """A Temporal client for ``settings`` (one per process, built in a lifespan, never global).

    Pass the process's ``tracer_provider`` (see ``core.telemetry.configure_tracing``) to trace
    through Temporal; workers must then not add the interceptor again.
    """
    t = settings.temporal
    return await Client.connect(
        t.address,
        namespace=t.namespace,
        data_converter=data_converter(settings.security),
        tls=tls_config(t),
        api_key=t.api_key.get_secret_value() if t.api_key else None,
        interceptors=tracing_interceptors(tracer_provider),
    )
