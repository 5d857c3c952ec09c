"""Limits shared by every worker and replica through one Redis (`MODELPORT_REDIS_URL`).

Admission is one Lua script (one round trip): it checks every counter the request
touches, then takes them all, or takes none; Redis runs a script alone, so two
replicas can never both take the last slot. Settlement is a second script.

Redis trouble is bounded: every call has a deadline (`timeout`), and after a failure
Redis is not asked again for `retry_seconds`, so a Redis that is down or black-holed
costs a request at most one timeout, most requests nothing. Meanwhile each limit
fails open (the request goes on, uncounted) or closed (503), as configured. Nothing
has to be restarted: the first call after `retry_seconds` that reaches Redis resumes
enforcement (a budget count lost with Redis is seeded again from the usage records).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Collection
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from modelport.limits.base import (
    WINDOW_SECONDS,
    Admission,
    Clock,
    Demand,
    LimitStoreUnavailable,
    SpendSource,
    wall_clock,
)
from modelport.limits.counters import Counter, granted, plan, refusal, spent_before

log = logging.getLogger(__name__)

PREFIX = "modelport:limits:"
# Connections to Redis a process may hold. More calls than this at once wait for one
# (within the call's deadline) rather than fail: redis-py's default pool refuses the
# 101st concurrent call, which read as "Redis unreachable" and answered 503 for every
# fail-closed limit, second after second, at 64 concurrent requests (each request holds
# a connection for its admission and, later, one for its settlement).
MAX_CONNECTIONS = 256
_KINDS = {"window": "w", "parallel": "p", "budget": "b"}

# KEYS: one per counter. ARGV: now, request id, lease seconds, then five per counter:
# kind, limit, amount, ttl seconds (0: none), budget seed ('' if not known).
# Returns {1, remaining...} admitted; {0, i, used, retry} refused by counter i;
# {-1, i} counter i is a budget with no count yet (the caller seeds it and asks again).
ADMIT = """
local now = tonumber(ARGV[1])
local request_id = ARGV[2]
local lease = tonumber(ARGV[3])
local second = math.floor(now)
local window = tonumber(ARGV[4 + 5 * #KEYS] or 60)
local used = {}
for i = 1, #KEYS do
  local at = 3 + (i - 1) * 5
  local kind, limit, key = ARGV[at + 1], tonumber(ARGV[at + 2]), KEYS[i]
  if kind == 'w' then
    local fields = redis.call('HGETALL', key)
    local total, stale, live = 0, {}, {}
    for j = 1, #fields, 2 do
      local s, amount = tonumber(fields[j]), tonumber(fields[j + 1])
      if s <= second - window then
        stale[#stale + 1] = fields[j]
      else
        total = total + amount
        live[#live + 1] = {s, amount}
      end
    end
    if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
    if total >= limit then
      table.sort(live, function(a, b) return a[1] < b[1] end)
      local left, retry = total, 1
      for _, bucket in ipairs(live) do
        left = left - bucket[2]
        if left < limit then retry = bucket[1] + window - now break end
      end
      return {0, i, tostring(total), tostring(retry)}
    end
    used[i] = total
  elseif kind == 'p' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local count = redis.call('ZCARD', key)
    if count >= limit then return {0, i, tostring(count), '1'} end
    used[i] = count
  else
    local value = redis.call('GET', key)
    if not value then
      local seed = ARGV[at + 5]
      if seed == '' then return {-1, i} end
      local ttl = tonumber(ARGV[at + 4])
      if ttl > 0 then redis.call('SET', key, seed, 'EX', ttl) else redis.call('SET', key, seed) end
      value = seed
    end
    local total = tonumber(value)
    if total >= limit then return {0, i, tostring(total), '0'} end
    used[i] = total
  end
end
local result = {1}
for i = 1, #KEYS do
  local at = 3 + (i - 1) * 5
  local kind, limit, amount, key = ARGV[at + 1], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), KEYS[i]
  if kind == 'w' then
    redis.call('HINCRBYFLOAT', key, second, amount)
    redis.call('EXPIRE', key, window + 2)
  elseif kind == 'p' then
    redis.call('ZADD', key, now + lease, request_id)
    redis.call('EXPIRE', key, math.ceil(lease) + 2)
  else
    redis.call('INCRBYFLOAT', key, amount)
  end
  result[#result + 1] = tostring(limit - used[i] - amount)
end
return result
"""

# KEYS: the counters taken. ARGV: request id, the admission's second, then two per
# counter: kind and delta (real minus reserved). A bucket or budget gone meanwhile is
# left alone: there is nothing to true up.
SETTLE = """
local request_id, second = ARGV[1], ARGV[2]
for i = 1, #KEYS do
  local kind, delta, key = ARGV[1 + 2 * i], tonumber(ARGV[2 + 2 * i]), KEYS[i]
  if kind == 'p' then
    redis.call('ZREM', key, request_id)
  elseif kind == 'w' then
    if delta ~= 0 and redis.call('HEXISTS', key, second) == 1 then
      if tonumber(redis.call('HINCRBYFLOAT', key, second, delta)) < 0 then redis.call('HSET', key, second, 0) end
    end
  elseif delta ~= 0 and redis.call('EXISTS', key) == 1 then
    if tonumber(redis.call('INCRBYFLOAT', key, delta)) < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  end
end
return 1
"""


class RedisLimiter:
    def __init__(
        self,
        url: str,
        *,
        fail_closed: Collection[str] = ("max_budget",),
        timeout: float = 0.25,
        retry_seconds: float = 1.0,
        spend_source: SpendSource | None = None,
        clock: Clock = wall_clock,
        parallel_lease_seconds: float = 600,
    ) -> None:
        # The deadline is ours (`_call`), around each whole call: a socket_timeout would
        # make redis-py wrap every send in asyncio.wait_for, a task per command.
        pool = BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=None, socket_connect_timeout=timeout, retry_on_timeout=False
        )
        self._redis: Redis = Redis(connection_pool=pool)
        # Where it is, for the log and /health/ready: host and port, never the password.
        where = pool.connection_kwargs
        self._where = str(where.get("path") or f"{where.get('host', 'localhost')}:{where.get('port', 6379)}")
        self._admit_script = self._redis.register_script(ADMIT)
        self._settle_script = self._redis.register_script(SETTLE)
        self._fail_closed = frozenset(fail_closed)
        self._timeout = timeout
        self._retry_seconds = retry_seconds
        self._spend_source = spend_source
        self._clock = clock
        self._lease = parallel_lease_seconds
        self._down_until = 0.0  # monotonic time before which Redis is not asked

    async def admit(self, demand: Demand) -> Admission:
        now = self._clock()
        counters, window_index = plan(demand, now)
        if not counters:
            return Admission(demand=demand, now=now, budget_window=window_index)
        seeds: dict[int, str] = {}
        try:
            # Another pass only after seeding a budget count (a key's, then an account's).
            for _ in range(1 + sum(counter.kind == "budget" for counter in counters)):
                answer = await self._call(self._admit_script, counters, self._admit_args(demand, counters, now, seeds))
                if int(answer[0]) != -1:
                    break
                index = int(answer[1]) - 1
                seeds[index] = repr(await spent_before(self._spend_source, counters[index]))
        except (RedisError, OSError, TimeoutError) as exc:
            return self._unreachable(demand, counters, now, window_index, exc)
        if int(answer[0]) == 0:
            counter = counters[int(answer[1]) - 1]
            used, retry = float(answer[2]), float(answer[3])
            if counter.kind == "budget":
                retry = counter.window_end - now
            raise refusal(counter, used, retry)
        lefts = [
            max(0, math.floor(float(left))) if counter.kind == "window" else None
            for counter, left in zip(counters, answer[1:], strict=True)
        ]
        return granted(demand, now, counters, window_index, lefts)

    async def settle(self, admission: Admission, *, tokens: int, cost: float) -> None:
        if admission.settled:
            return
        admission.settled = True
        counters, _ = plan(admission.demand, admission.now)
        work: list[Counter] = []
        args: list[Any] = [admission.demand.request_id, math.floor(admission.now)]
        for counter in counters:
            if counter.name not in admission.taken or counter.limit_name == "rpm_limit":
                continue  # a request counted for rpm stays counted: nothing to give back
            real = tokens if counter.limit_name == "tpm_limit" else cost if counter.kind == "budget" else counter.amount
            work.append(counter)
            args += [_KINDS[counter.kind], repr(float(real - counter.amount))]
        if not work:
            return
        try:
            await self._call(self._settle_script, work, args)
        except (RedisError, OSError, TimeoutError) as exc:
            # The reservations stay (a budget keeps its larger reserved amount until its
            # window ends) and the slot is freed when its lease runs out.
            log.debug("limits: settling request %s in Redis failed: %r", admission.demand.request_id, exc)

    async def aclose(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    async def problem(self) -> str | None:
        try:
            async with asyncio.timeout(max(self._timeout, 1.0)):
                await self._redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            closed = ", ".join(sorted(self._fail_closed)) or "none"
            return (
                f"the limits' Redis at {self._where} cannot be reached ({type(exc).__name__}): requests under "
                f"limits that fail closed ({closed}) get 503, the others pass uncounted"
            )
        return None

    async def _call(self, script: Any, counters: list[Counter], args: list[Any]) -> Any:
        if time.monotonic() < self._down_until:
            raise ConnectionError("Redis was unreachable moments ago")
        try:
            async with asyncio.timeout(self._timeout):  # no extra task, unlike wait_for
                return await script(keys=[PREFIX + counter.store_key for counter in counters], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            if time.monotonic() >= self._down_until:  # once per outage, not once per request
                again = self._retry_seconds
                log.warning("limits: Redis at %s unreachable (%r); asking again in %.1f s", self._where, exc, again)
            self._down_until = time.monotonic() + self._retry_seconds
            raise

    def _admit_args(self, demand: Demand, counters: list[Counter], now: float, seeds: dict[int, str]) -> list[Any]:
        args: list[Any] = [repr(now), demand.request_id, repr(self._lease)]
        for index, counter in enumerate(counters):
            ttl = 0 if math.isinf(counter.window_end) else math.ceil(counter.window_end - now) + WINDOW_SECONDS
            args += [_KINDS[counter.kind], repr(float(counter.limit)), repr(float(counter.amount)), ttl]
            args.append(seeds.get(index, ""))
        args.append(WINDOW_SECONDS)
        return args

    def _unreachable(
        self, demand: Demand, counters: list[Counter], now: float, window_index: int | None, exc: BaseException
    ) -> Admission:
        closed = sorted({counter.limit_name for counter in counters} & self._fail_closed)
        if closed:
            raise LimitStoreUnavailable(
                f"the limit store (Redis) cannot be reached, and {', '.join(closed)} is set to fail closed; "
                "try again shortly"
            ) from exc
        return Admission(demand=demand, now=now, budget_window=window_index)


__all__ = ["ADMIT", "SETTLE", "RedisLimiter"]
