"""The counters one request touches, shared by the in-process and the Redis limiter so
that both enforce exactly the same rules (see `base.py` for what each limit counts)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from modelport.limits.base import WINDOW_SECONDS, Admission, Demand, LimitExceeded, LimitName, SpendSource

CounterKind = Literal["window", "parallel", "budget"]


@dataclass(frozen=True, slots=True)
class Counter:
    name: str  # "key:rpm_limit", "deployment:tpm_limit", ...: what settlement finds it by
    scope: Literal["key", "deployment"]
    limit_name: LimitName
    kind: CounterKind
    store_key: str  # where its count lives
    limit: float
    amount: float  # what admission adds
    window_end: float = math.inf  # budget windows only: when the count starts again


def plan(demand: Demand, now: float) -> tuple[list[Counter], int | None]:
    """The counters `demand` is checked against, and its budget window's index."""
    counters: list[Counter] = []
    key, key_id = demand.key, demand.key_id
    window_index: int | None = None
    if key_id is not None:
        if key.rpm_limit is not None:
            counters.append(Counter("key:rpm_limit", "key", "rpm_limit", "window", f"k:{key_id}:rpm", key.rpm_limit, 1))
        if key.tpm_limit is not None:
            counters.append(
                Counter("key:tpm_limit", "key", "tpm_limit", "window", f"k:{key_id}:tpm", key.tpm_limit, demand.tokens)
            )
        if key.max_parallel_requests is not None:
            counters.append(
                Counter(
                    "key:max_parallel_requests",
                    "key",
                    "max_parallel_requests",
                    "parallel",
                    f"k:{key_id}:par",
                    key.max_parallel_requests,
                    1,
                )
            )
        window = key.budget_window(now)
        if window is not None and key.max_budget is not None:
            window_index, _, end = window
            # The duration and anchor are part of the name: changing them starts afresh
            # (seeded from the usage records), never mixing two kinds of window.
            store_key = f"k:{key_id}:budget:{key.budget_duration or 'life'}:{key.budget_anchor:.0f}:{window_index}"
            counters.append(
                Counter("key:max_budget", "key", "max_budget", "budget", store_key, key.max_budget, demand.cost, end)
            )
    deployment = demand.deployment_id
    if demand.deployment_rpm is not None:
        rpm = demand.deployment_rpm
        counters.append(
            Counter("deployment:rpm_limit", "deployment", "rpm_limit", "window", f"d:{deployment}:rpm", rpm, 1)
        )
    if demand.deployment_tpm is not None:
        counters.append(
            Counter(
                "deployment:tpm_limit",
                "deployment",
                "tpm_limit",
                "window",
                f"d:{deployment}:tpm",
                demand.deployment_tpm,
                demand.tokens,
            )
        )
    return counters, window_index


def granted(
    demand: Demand, now: float, counters: list[Counter], budget_window: int | None, lefts: Iterable[int | None]
) -> Admission:
    """The admission of a request every counter let in. `lefts` is what each counter has
    left after the take (None where it reports nothing); where two counters share a
    limit (a key's and a deployment's rpm), the headers report the smaller."""
    remaining: dict[str, int] = {}
    for counter, left in zip(counters, lefts, strict=True):
        if left is not None:
            remaining[counter.limit_name] = min(remaining.get(counter.limit_name, left), left)
    return Admission(
        demand=demand,
        now=now,
        taken=frozenset(counter.name for counter in counters),
        budget_window=budget_window,
        remaining_requests=remaining.get("rpm_limit"),
        remaining_tokens=remaining.get("tpm_limit"),
    )


async def spent_before(spend_source: SpendSource | None, demand: Demand, now: float) -> float:
    """What the key spent in its current budget window before this limiter counted it
    (recorded usage): where a new budget count starts. 0 without a source or a budget."""
    window = demand.key.budget_window(now)
    if spend_source is None or demand.key_id is None or window is None:
        return 0.0
    return await spend_source(demand.key_id, window[1])


def refusal(counter: Counter, used: float, retry_after: float) -> LimitExceeded:
    scope = "API key" if counter.scope == "key" else "deployment"
    limit = counter.limit
    if counter.limit_name == "max_budget":
        detail = f"spent and reserved ${used:.6f} of ${limit:.6f}"
    elif counter.limit_name == "max_parallel_requests":
        detail = f"{used:.0f} of {limit:.0f} requests are in flight"
    elif counter.limit_name == "rpm_limit":
        detail = f"{used:.0f} of {limit:.0f} requests in the last {WINDOW_SECONDS} s"
    else:
        detail = f"{used:.0f} of {limit:.0f} tokens in the last {WINDOW_SECONDS} s"
    return LimitExceeded(counter.limit_name, scope, detail, retry_after)


def window_retry_after(buckets: list[tuple[int, float]], limit: float, now: float) -> float:
    """Seconds until enough of the oldest buckets leave the window for `used < limit`."""
    used = sum(amount for _, amount in buckets)
    for second, amount in sorted(buckets):
        used -= amount
        if used < limit:
            return second + WINDOW_SECONDS - now
    return 1.0


__all__ = ["Counter", "plan", "refusal", "window_retry_after"]
