"""Liveness, readiness (Postgres, Redis, Temporal) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _timed(coro: Any) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(coro, timeout=2.0)
        return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
    except Exception as exc:  # the class name is enough for an operator; no internals leak
        return {"ok": False, "error": type(exc).__name__}


@router.get("/readyz", summary="Readiness: Postgres, Redis and Temporal answer")
async def readyz(state: StateDep) -> JSONResponse:
    async def pg() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def temporal() -> None:
        from api.deps import get_temporal

        client = await get_temporal(state)
        await client.service_client.check_health()

    checks = dict(
        zip(
            ("postgres", "redis", "temporal"),
            await asyncio.gather(_timed(pg()), _timed(state.redis.ping()), _timed(temporal())),
            strict=True,
        )
    )
    ready = all(c["ok"] for c in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
