"""The FastAPI application factory. Resources live in a typed lifespan state, never globals."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from opentelemetry.trace import TracerProvider
from redis.asyncio import Redis

from api import console, errors
from api.deps import AppState
from api.gateway import anthropic_routes
from api.gateway import routes as gateway_routes
from api.gateway.routes import build_gateway
from api.middleware import install_middleware
from api.routes import (
    approvals,
    audit,
    codec,
    connections,
    connector_jobs,
    connector_schedules,
    connectors,
    conversations,
    datasets,
    evals,
    gateway_admin,
    health,
    kb_documents,
    keys,
    knowledge_bases,
    nexus,
    pipelines,
    probes,
    runs,
    tenants,
    users,
)
from core.config import Settings, get_settings
from core.db.engine import make_engine, make_sessionmaker
from core.logging import configure_logging
from core.telemetry import configure_tracing, shutdown_tracing

log = logging.getLogger("nexus.api")


def create_app(settings: Settings | None = None, *, tracer_provider: TracerProvider | None = None) -> FastAPI:
    """Build the API for ``settings`` (read from the environment when omitted).

    ``tracer_provider`` defaults to the one ``NEXUS_OTEL__*`` configures (none when tracing is
    off), which the lifespan shuts down; a provider passed in stays the caller's to shut down.
    """
    settings = settings or get_settings()
    owned_tracing = configure_tracing(settings, "api") if tracer_provider is None else None
    tracer_provider = tracer_provider or owned_tracing

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database)
        redis = Redis.from_url(settings.redis.url, decode_responses=False)
        temporal = None
        try:
            from core.temporal.client import connect

            temporal = await connect(settings, tracer_provider=tracer_provider)
        except Exception:
            log.warning("Temporal not reachable at startup; will retry on first use")
        state = AppState(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            redis=redis,
            temporal=temporal,
            tracer_provider=tracer_provider,
        )
        state.gateway = build_gateway(state)
        app.state.nexus = state
        # Everything loaded so far lives as long as the process: keep it out of the collector's
        # full passes, which otherwise walk the whole heap and stall every request meanwhile.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await state.gateway.aclose()
            await redis.aclose()
            await engine.dispose()
            await shutdown_tracing(owned_tracing)

    configure_logging(settings)
    app = FastAPI(
        title="NexusAI",
        version="0.1.0",
        description="Self-hosted control plane for enterprise generative AI. "
        "Authenticate with `Authorization: Bearer <api key>`.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry hooks switch themselves on once any global provider is set
        # and would add a second server span per request, with the query string; ours
        # (api.middleware) records no query strings. Off, they also skip provider lookups per request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    errors.install(app)
    install_middleware(app, settings, tracer_provider)
    app.include_router(health.router)
    for module in (
        tenants,
        users,
        keys,
        audit,
        runs,
        probes,
        nexus,
        conversations,
        approvals,
        pipelines,
        knowledge_bases,
        kb_documents,
        connectors,
        connections,
        connector_jobs,
        connector_schedules,
        datasets,
        evals,
        gateway_routes,
        anthropic_routes,
        gateway_admin,
    ):
        app.include_router(module.router, prefix="/v1")
    app.include_router(codec.router)
    console.mount(app)
    return app
