"""The gateway's Redis Lua scripts and key names: admission and completion, one round trip each.

Every key of one request carries the tenant as a Redis Cluster hash tag (``{tenant}``), so the
rate-limit buckets, budget accounts and reservations a script touches live in one slot and the
scripts also run on a cluster. Amounts are integers of micro-USD; numbers that go back into
Redis commands are passed as the caller's strings, never formatted by Lua (Lua prints large
numbers in exponent notation, which INCRBY refuses).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

# Numbers travel packed in one comma-separated argument: encoding thirty separate arguments
# costs the Python client more than the script costs the server.
#
# KEYS: 2 per rate limit (current bucket, previous bucket), then 4 per budget scope
#       (limit, account hash {spent, reserved}, reservation amounts hash, reservation deadlines zset).
# ARGV[1]: "now_ms,window_ms,n_rate,n_scopes,(limit,cost,kind) per rate limit,
#           estimate,deadline_ms,account_ttl_s,reap_max" (kind 1 = requests, 2 = tokens)
# ARGV[2]: request id.
# Returns {0, duplicate, remaining requests, remaining tokens} when admitted (-1 = not limited);
# {1, i, cur, prev} when rate limit i refuses; {2, s, limit, spent, reserved} when budget scope
# s refuses; {3, s...} when the cached limits of scopes s... are missing (the caller loads them
# and calls again).
ADMIT = """
local a = {}
for v in string.gmatch(ARGV[1], '[^,]+') do
  a[#a + 1] = v
end
local rid = ARGV[2]
local now = tonumber(a[1])
local window = tonumber(a[2])
local n_rate = tonumber(a[3])
local n_scopes = tonumber(a[4])
local b = 4 + 3 * n_rate
local estimate = a[b + 1]
local deadline = a[b + 2]
local account_ttl = a[b + 3]
local reap_max = tonumber(a[b + 4])
local kb = 2 * n_rate

if n_scopes > 0 and redis.call('HEXISTS', KEYS[kb + 3], rid) == 1 then
  return {0, 1, -1, -1}
end

local weight = (window - now % window) / window
local seen = {}
for i = 1, n_rate do
  local limit = tonumber(a[2 + 3 * i])
  local cost = tonumber(a[3 + 3 * i])
  local cur = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  if prev * weight + cur + cost > limit then
    return {1, i, cur, prev}
  end
  seen[i] = prev * weight + cur + cost
end

local missing = {}
local need = tonumber(estimate)
for s = 1, n_scopes do
  local k = kb + 4 * (s - 1)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[k + 4], '-inf', now, 'LIMIT', 0, reap_max)
  for _, r in ipairs(expired) do
    local amount = redis.call('HGET', KEYS[k + 3], r)
    redis.call('HDEL', KEYS[k + 3], r)
    redis.call('ZREM', KEYS[k + 4], r)
    if amount and amount ~= '0' then
      redis.call('HINCRBY', KEYS[k + 2], 'reserved', '-' .. amount)
    end
  end
  local limit = redis.call('GET', KEYS[k + 1])
  if not limit then
    missing[#missing + 1] = s
  elseif #missing == 0 and tonumber(limit) >= 0 then
    local acct = redis.call('HMGET', KEYS[k + 2], 'spent', 'reserved')
    local spent = tonumber(acct[1] or '0')
    local reserved = tonumber(acct[2] or '0')
    if spent + reserved + need > tonumber(limit) then
      return {2, s, tonumber(limit), spent, reserved}
    end
  end
end
if #missing > 0 then
  return {3, unpack(missing)}
end

local remaining = {-1, -1}
for i = 1, n_rate do
  local cost = a[3 + 3 * i]
  if cost ~= '0' and redis.call('INCRBY', KEYS[2 * i - 1], cost) == tonumber(cost) then
    redis.call('PEXPIRE', KEYS[2 * i - 1], window * 2)  -- a new bucket
  end
  local kind = tonumber(a[4 + 3 * i])
  local left = math.max(0, math.floor(tonumber(a[2 + 3 * i]) - seen[i]))
  if remaining[kind] < 0 or left < remaining[kind] then
    remaining[kind] = left
  end
end
for s = 1, n_scopes do
  local k = kb + 4 * (s - 1)
  -- Expiries are set when a key is (re)created, not on every call: each call costs server time.
  if redis.call('HINCRBY', KEYS[k + 2], 'reserved', estimate) == need then
    redis.call('EXPIRE', KEYS[k + 2], account_ttl)
  end
  redis.call('ZADD', KEYS[k + 4], deadline, rid)
  redis.call('HSET', KEYS[k + 3], rid, estimate)
  if redis.call('HLEN', KEYS[k + 3]) == 1 then
    redis.call('EXPIRE', KEYS[k + 3], account_ttl)
    redis.call('EXPIRE', KEYS[k + 4], account_ttl)
  end
end
return {0, 0, remaining[1], remaining[2]}
"""

# KEYS: done marker, then 1 per token adjustment (the bucket charged at admission), then 3 per
#       budget scope (account hash, reservation amounts hash, reservation deadlines zset).
# ARGV[1]: "n_adjust,n_scopes,actual_micro,done_ttl_s,account_ttl_s,delta per adjustment"
# ARGV[2]: request id. ARGV[3]: marker stored in the done key ("settled" or "released").
# Returns 1 when applied, 0 when this request was already settled or released (idempotent).
COMPLETE = """
local a = {}
for v in string.gmatch(ARGV[1], '[^,]+') do
  a[#a + 1] = v
end
local n_adj = tonumber(a[1])
local n_scopes = tonumber(a[2])
local actual = a[3]
local rid = ARGV[2]
if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'EX', a[4]) then
  return 0
end
for i = 1, n_adj do
  local key = KEYS[1 + i]
  local delta = a[5 + i]
  if delta ~= '0' and redis.call('EXISTS', key) == 1 then
    if redis.call('INCRBY', key, delta) < 0 then
      redis.call('SET', key, '0', 'KEEPTTL')
    end
  end
end
local kb = 1 + n_adj
for s = 1, n_scopes do
  local k = kb + 3 * (s - 1)
  local amount = redis.call('HGET', KEYS[k + 2], rid)
  if amount then
    redis.call('HDEL', KEYS[k + 2], rid)
    redis.call('ZREM', KEYS[k + 3], rid)
    if amount ~= '0' then
      redis.call('HINCRBY', KEYS[k + 1], 'reserved', '-' .. amount)
    end
  end
  if actual ~= '0' then
    redis.call('HINCRBY', KEYS[k + 1], 'spent', actual)
  end
  redis.call('EXPIRE', KEYS[k + 1], a[5])
end
return 1
"""

# KEYS: account hash. ARGV: spent_micro, account_ttl_s, exact (1 = overwrite, 0 = raise only).
SET_SPENT = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
if ARGV[3] == '1' or tonumber(ARGV[1]) > cur then
  redis.call('HSET', KEYS[1], 'spent', ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class LuaScript:
    """A script run with EVALSHA (one round trip), loaded by EVAL on a server that lacks it."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, redis: Redis, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run the script; after a server restart the first call costs one extra round trip."""
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)

    async def run_many(
        self, redis: Redis, calls: Sequence[tuple[Sequence[str], Sequence[str | int]]]
    ) -> list[Any]:
        """Run the script once per ``(keys, args)`` in one pipelined round trip (not a transaction).

        Each call's result, or the exception it raised, in order. Only for idempotent calls: after
        a server restart the whole batch runs again once the script is loaded.
        """
        for attempt in range(2):
            async with redis.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    pipe.evalsha(self.sha, len(keys), *keys, *args)
                results: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt or not any(isinstance(r, NoScriptError) for r in results):
                return results
            await redis.script_load(self.source)
        raise AssertionError("unreachable")


ADMIT_SCRIPT = LuaScript(ADMIT)
COMPLETE_SCRIPT = LuaScript(COMPLETE)
SET_SPENT_SCRIPT = LuaScript(SET_SPENT)


def pack(numbers: Sequence[int]) -> str:
    """Integers as the comma-separated argument the scripts unpack."""
    return ",".join(map(str, numbers))


def tenant_tag(tenant_id: str) -> str:
    """Prefix of every gateway key of one tenant (a cluster hash tag)."""
    return f"nexus:gw:{{{tenant_id}}}"


def done_key(tenant_id: str, request_id: str) -> str:
    """Marker that makes settle/release idempotent per request."""
    return f"{tenant_tag(tenant_id)}:done:{request_id}"


def retry_after_s(window_ms: int, now_ms: int, cur: int, prev: int, cost: int, limit: int) -> int:
    """Seconds until a sliding window of ``limit`` admits ``cost`` more, if nothing else arrives."""
    window = window_ms / 1000
    left = (window_ms - now_ms % window_ms) / 1000
    room = limit - cost
    if room < 0:
        return max(1, math.ceil(window))
    if cur <= room:
        wait = left - window * (room - cur) / prev if prev > 0 else 0.0
    else:
        # The current bucket becomes the previous one and must decay enough.
        wait = left + window * (1 - room / cur)
    return max(1, math.ceil(wait))
