"""The counters one request touches, shared by the in-process and the Redis limiter so
that both enforce exactly the same rules (see `base.py` for what each limit counts)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from modelport.limits.base import WINDOW_SECONDS, Admission, Demand, LimitExceeded, LimitName, Scope, SpendSource
from modelport.principal import Limits

CounterKind = Literal["window", "parallel", "budget"]


@dataclass(frozen=True, slots=True)
class Counter:
    name: str  # "key:rpm_limit", "account:max_budget", ...: what settlement finds it by
    scope: Scope
    limit_name: LimitName
    kind: CounterKind
    store_key: str  # where its count lives
    limit: float
    amount: float  # what admission adds
    window_end: float = math.inf  # budget windows only: when the count starts again
    # Budgets only: whose spend since when seeds a count the limiter does not have yet.
    owner_id: str = ""
    window_start: float = 0.0


def plan(demand: Demand, now: float) -> tuple[list[Counter], int | None]:
    """The counters `demand` is checked against (the key's, the account's, the
    deployment's), and the key's budget window's index."""
    counters: list[Counter] = []
    window_index: int | None = None
    if demand.key_id is not None:
        window_index = _owner_counters(counters, "key", "k", demand.key_id, demand.key, demand, now)
    if demand.account_id is not None:
        _owner_counters(counters, "account", "a", demand.account_id, demand.account, demand, now)
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


def _owner_counters(
    counters: list[Counter],
    scope: Scope,
    prefix: str,
    owner_id: str,
    limits: Limits,
    demand: Demand,
    now: float,
) -> int | None:
    """Append the counters of a key's or an account's limits; the budget window's index."""
    if limits.rpm_limit is not None:
        counters.append(
            Counter(f"{scope}:rpm_limit", scope, "rpm_limit", "window", f"{prefix}:{owner_id}:rpm", limits.rpm_limit, 1)
        )
    if limits.tpm_limit is not None:
        counters.append(
            Counter(
                f"{scope}:tpm_limit",
                scope,
                "tpm_limit",
                "window",
                f"{prefix}:{owner_id}:tpm",
                limits.tpm_limit,
                demand.tokens,
            )
        )
    if limits.max_parallel_requests is not None:
        counters.append(
            Counter(
                f"{scope}:max_parallel_requests",
                scope,
                "max_parallel_requests",
                "parallel",
                f"{prefix}:{owner_id}:par",
                limits.max_parallel_requests,
                1,
            )
        )
    window = limits.budget_window(now)
    if window is None or limits.max_budget is None:
        return None
    index, start, end = window
    # The duration and anchor are part of the name: changing them starts afresh (seeded
    # from the usage records), never mixing two kinds of window.
    store_key = f"{prefix}:{owner_id}:budget:{limits.budget_duration or 'life'}:{limits.budget_anchor:.0f}:{index}"
    counters.append(
        Counter(
            f"{scope}:max_budget",
            scope,
            "max_budget",
            "budget",
            store_key,
            limits.max_budget,
            demand.cost,
            end,
            owner_id=owner_id,
            window_start=start,
        )
    )
    return index


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


async def spent_before(spend_source: SpendSource | None, counter: Counter) -> float:
    """What the budget's key or account spent in its current window before this limiter
    counted it (recorded usage): where a new budget count starts. 0 without a source."""
    if spend_source is None or counter.kind != "budget":
        return 0.0
    return await spend_source(counter.scope, counter.owner_id, counter.window_start)


def refusal(counter: Counter, used: float, retry_after: float) -> LimitExceeded:
    scope = {"key": "API key", "account": "account", "deployment": "deployment"}[counter.scope]
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
