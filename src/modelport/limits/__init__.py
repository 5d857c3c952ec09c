"""Rate limits, parallel-request limits and budgets (SPEC 7): `base.py` says how each
counts; `memory.py` enforces them in one process, `redis.py` across replicas."""

from __future__ import annotations

from modelport.limits.base import LIMIT_NAMES, Clock, Limiter, SpendSource, wall_clock
from modelport.limits.memory import MemoryLimiter


def build_limiter(
    *,
    redis_url: str | None,
    fail_closed: list[str],  # limit names that refuse requests while Redis is unreachable
    timeout: float,
    retry_seconds: float,
    parallel_lease_seconds: float,
    spend_source: SpendSource | None,
    clock: Clock = wall_clock,
) -> Limiter:
    """Redis when a URL is set (every worker and replica shares the counts), otherwise
    counts in this process only."""
    if redis_url:
        from modelport.limits.redis import RedisLimiter

        return RedisLimiter(
            redis_url,
            fail_closed=[name for name in fail_closed if name in LIMIT_NAMES],
            timeout=timeout,
            retry_seconds=retry_seconds,
            spend_source=spend_source,
            clock=clock,
            parallel_lease_seconds=parallel_lease_seconds,
        )
    return MemoryLimiter(spend_source=spend_source, clock=clock, parallel_lease_seconds=parallel_lease_seconds)


__all__ = ["Limiter", "MemoryLimiter", "build_limiter"]
