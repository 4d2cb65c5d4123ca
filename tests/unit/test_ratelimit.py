"""The Redis sliding-window limiter against real Valkey, including under concurrency."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from core.ratelimit import RateLimiter


async def test_limit_is_exact_under_concurrency(redis_port: int) -> None:
    redis = Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    limiter = RateLimiter(redis)
    key = uuid.uuid4().hex
    decisions = await asyncio.gather(*(limiter.hit(key, 25, now=1000.0) for _ in range(100)))
    assert sum(d.allowed for d in decisions) == 25
    assert all(d.retry_after_s >= 1 for d in decisions if not d.allowed)
    await redis.aclose()


async def test_window_slides(redis_port: int) -> None:
    redis = Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    limiter = RateLimiter(redis, window_s=60)
    key = uuid.uuid4().hex
    for _ in range(10):
        assert (await limiter.hit(key, 10, now=6000.0)).allowed
    assert not (await limiter.hit(key, 10, now=6030.0)).allowed
    # 90 s later the previous window only counts for 1/2: 5 more fit.
    allowed = [(await limiter.hit(key, 10, now=6090.0)).allowed for _ in range(6)]
    assert allowed == [True] * 5 + [False]
    await redis.aclose()
