"""Atomic rate limiting in Redis: a sliding-window counter in one Lua script.

The window is split into the current and previous fixed minute; the previous one is weighted
by how much of it still overlaps the sliding window (the approach Cloudflare describes). One
EVALSHA per request, atomic across API replicas.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis

_SCRIPT = """
local cur_key = KEYS[1]
local prev_key = KEYS[2]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local elapsed = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local prev = tonumber(redis.call('GET', prev_key) or '0')
local cur = tonumber(redis.call('GET', cur_key) or '0')
local weighted = prev * ((window - elapsed) / window) + cur
if weighted + cost > limit then
  return {0, cur, prev}
end
cur = redis.call('INCRBY', cur_key, cost)
redis.call('EXPIRE', cur_key, window * 2)
return {1, cur, prev}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int
    remaining: int


class RateLimiter:
    """Sliding-window limiter: ``limit`` units per ``window_s`` seconds per key."""

    def __init__(self, redis: Redis, window_s: int = 60) -> None:
        self._redis = redis
        self._window = window_s
        self._script = redis.register_script(_SCRIPT)

    async def hit(self, key: str, limit: int, cost: int = 1, now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        bucket = int(now // self._window)
        elapsed = now - bucket * self._window
        keys = [f"nexus:rl:{key}:{bucket}", f"nexus:rl:{key}:{bucket - 1}"]
        allowed, cur, prev = await self._script(keys=keys, args=[limit, self._window, elapsed, cost])
        weighted = int(prev) * ((self._window - elapsed) / self._window) + int(cur)
        if allowed:
            return Decision(True, 0, max(0, int(limit - weighted)))
        # Earliest time at which the weighted count drops enough: at the next window at most.
        retry = max(1, math.ceil(self._window - elapsed))
        if int(prev) > 0:
            needed = weighted + cost - limit
            retry = max(1, min(retry, math.ceil(needed / int(prev) * self._window)))
        return Decision(False, retry, 0)
