"""Live event streams keep seq order when parallel activities commit events out of order."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from core import events


async def _commit(sessions, redis: Redis, tenant: str, wid: str, seq: int, type_: str, announce: bool = True):
    async with sessions() as session, session.begin():
        event = await events.store(session, tenant_id=tenant, workflow_id=wid, type=type_, seq=seq)
    if announce:
        await events.announce(redis, wid, event)
    return event


async def test_out_of_order_commits_are_streamed_in_order(sessions, redis_port, tenant_id) -> None:
    redis = Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    wid = f"probe:{tenant_id}:{uuid.uuid4().hex}"
    await _commit(sessions, redis, tenant_id, wid, 1, "run.started")
    received: list[int] = []

    async def consume() -> None:
        async for event in events.follow(sessions, redis, tenant_id=tenant_id, workflow_id=wid, idle_s=10):
            received.append(event.seq)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)  # subscribed and replayed seq 1
    await _commit(sessions, redis, tenant_id, wid, 3, "probe.sample")  # 3 commits before 2
    await asyncio.sleep(0.1)
    await _commit(sessions, redis, tenant_id, wid, 2, "probe.sample")
    await _commit(sessions, redis, tenant_id, wid, 4, "run.completed")
    await asyncio.wait_for(task, timeout=5)  # well before the 10 s idle re-read
    assert received == [1, 2, 3, 4]
    await redis.aclose()
