"""Limits enforced inside one process. Correct for a single `modelport serve` process;
with more than one (workers or replicas) each would count alone, so those need Redis
(`MODELPORT_REDIS_URL`, see `redis.py`).

Check-and-take happens without an `await` in between, so on one event loop it is atomic.
"""

from __future__ import annotations

import math

from modelport.limits.base import WINDOW_SECONDS, Admission, Clock, Demand, SpendSource, wall_clock
from modelport.limits.counters import Counter, granted, plan, refusal, spent_before, window_retry_after


class MemoryLimiter:
    def __init__(
        self, *, spend_source: SpendSource | None = None, clock: Clock = wall_clock, parallel_lease_seconds: float = 600
    ) -> None:
        self._spend_source = spend_source
        self._clock = clock
        self._lease = parallel_lease_seconds
        self._windows: dict[str, dict[int, float]] = {}  # store key -> {second: amount}
        self._parallel: dict[str, dict[str, float]] = {}  # store key -> {request id: lease end}
        self._budgets: dict[str, tuple[float, float]] = {}  # store key -> (spent + reserved, window end)

    async def admit(self, demand: Demand) -> Admission:
        now = self._clock()
        counters, window_index = plan(demand, now)
        for counter in counters:
            if counter.kind == "budget" and counter.store_key not in self._budgets:
                self._forget_ended_budgets(now)  # a new window: the ended ones can go
                seed = await spent_before(self._spend_source, counter)
                self._budgets.setdefault(counter.store_key, (seed, counter.window_end))
        # No await from here on: checking and taking cannot interleave with another request.
        for counter in counters:
            self._check(counter, now)
        lefts = [self._take(counter, demand.request_id, now) for counter in counters]
        return granted(demand, now, counters, window_index, lefts)

    async def settle(self, admission: Admission, *, tokens: int, cost: float) -> None:
        if admission.settled:
            return
        admission.settled = True
        demand = admission.demand
        counters, _ = plan(demand, admission.now)
        second = math.floor(admission.now)
        for counter in counters:
            if counter.name not in admission.taken:
                continue
            if counter.kind == "parallel":
                self._parallel.get(counter.store_key, {}).pop(demand.request_id, None)
            elif counter.kind == "window" and counter.limit_name == "tpm_limit":
                buckets = self._windows.get(counter.store_key, {})
                if second in buckets:  # a bucket already out of the window needs no truing up
                    buckets[second] = max(0.0, buckets[second] + tokens - counter.amount)
            elif counter.kind == "budget" and counter.store_key in self._budgets:
                used, end = self._budgets[counter.store_key]
                self._budgets[counter.store_key] = (max(0.0, used + cost - counter.amount), end)

    async def aclose(self) -> None:
        return None

    async def problem(self) -> str | None:
        return None  # counted in this process: nothing to reach

    def _check(self, counter: Counter, now: float) -> None:
        if counter.kind == "window":
            buckets = self._live_buckets(counter.store_key, now)
            used = sum(buckets.values())
            if used >= counter.limit:
                raise refusal(counter, used, window_retry_after(list(buckets.items()), counter.limit, now))
        elif counter.kind == "parallel":
            slots = self._live_slots(counter.store_key, now)
            if len(slots) >= counter.limit:
                raise refusal(counter, len(slots), 1.0)
        else:
            used, end = self._budgets[counter.store_key]
            if used >= counter.limit:
                raise refusal(counter, used, end - now)

    def _take(self, counter: Counter, request_id: str, now: float) -> int | None:
        if counter.kind == "window":
            buckets = self._live_buckets(counter.store_key, now)
            second = math.floor(now)
            buckets[second] = buckets.get(second, 0.0) + counter.amount
            return max(0, math.floor(counter.limit - sum(buckets.values())))
        if counter.kind == "parallel":
            self._live_slots(counter.store_key, now)[request_id] = now + self._lease
            return None
        used, end = self._budgets[counter.store_key]
        self._budgets[counter.store_key] = (used + counter.amount, end)
        return None

    def _live_buckets(self, store_key: str, now: float) -> dict[int, float]:
        buckets = self._windows.setdefault(store_key, {})
        oldest = math.floor(now) - WINDOW_SECONDS
        for second in [second for second in buckets if second <= oldest]:
            del buckets[second]
        return buckets

    def _live_slots(self, store_key: str, now: float) -> dict[str, float]:
        slots = self._parallel.setdefault(store_key, {})
        for request_id in [request_id for request_id, end in slots.items() if end <= now]:
            del slots[request_id]
        return slots

    def _forget_ended_budgets(self, now: float) -> None:
        for store_key in [store_key for store_key, (_, end) in self._budgets.items() if end <= now]:
            del self._budgets[store_key]


__all__ = ["MemoryLimiter"]
