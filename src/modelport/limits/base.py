"""Limits, budgets and their one small seam: the `Limiter` Protocol.

A request meets the limiter twice: `admit` before the vendor is called (it counts the
request, reserves its most likely-to-be-exceeded amounts, or refuses with 429), and
`settle` when the request ends, however it ends (it replaces the reservations with what
was really used and frees the parallel slot). `memory.py` enforces in one process;
`redis.py` enforces across every worker and replica that share one Redis.

How each limit counts (SPEC 7):
- `rpm_limit`: requests admitted in the last 60 s (1 s buckets); exact: the request that
  would be number `limit + 1` within 60 s is refused.
- `tpm_limit`: tokens in the last 60 s. Admission reserves an upper bound of the request's
  tokens (prompt bytes + per-message overhead + max_tokens) and is allowed while the
  window holds fewer than `limit` tokens; settlement replaces the reservation with the
  real count in the same bucket. The window can end above the limit by at most what the
  requests admitted while it was below had reserved.
- `max_parallel_requests`: requests admitted and not yet settled (a stream counts until it
  ends, also when its client went away). Each slot is a lease that expires after
  `parallel_lease_seconds`, so a process that dies mid-request cannot hold slots forever.
- `max_budget` (US dollars) per `budget_duration` window: admission reserves the most the
  request can cost and is allowed while spend + reservations are below the budget;
  settlement replaces the reservation with the real cost. The prompt reserved is
  everything that becomes prompt (`pricing.prompt_token_bound`); where the gateway
  renders the chat template, the rendered prompt is reserved again before it is sent
  (a top-up, admitted by the same rule), so a template cannot make a request cost more
  than it reserved. **Overspend bound**: as long
  as a request really costs no more than it reserved, a key's spend in a window ends
  below `max_budget + the largest single reservation`, whatever the number of replicas
  and parallel requests (every request admitted saw spend + reservations < budget, and
  reservations only shrink at settlement).

An account may carry the same limits (SPEC 10), counted for all its keys together in
addition to each key's own: a request is admitted only when the key's, the account's
and the deployment's counters all have room, and takes from all of them. The account's
budget has the same overshoot bound: one request's reservation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, Protocol

from modelport.errors import ModelportError, RateLimited
from modelport.principal import Limits

LimitName = Literal["rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget"]
# Who a counter counts for: an API key, an account (all its keys), a deployment.
Scope = Literal["key", "account", "deployment"]
LIMIT_NAMES: tuple[LimitName, ...] = ("rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget")
WINDOW_SECONDS = 60
# A budget for a key's whole life never resets: Retry-After then says "a year".
MAX_RETRY_AFTER = 366 * 86400

# Set by the HTTP layer for each request (observability/observation.py): admission writes
# the x-ratelimit-remaining-* headers of the answer here.
response_headers: ContextVar[dict[str, str] | None] = ContextVar("modelport_ratelimit_headers", default=None)

Clock = Callable[[], float]
# Spend of a key or an account (scope, id) since a moment (epoch seconds), from the usage
# records: seeds a budget window the limiter has no count for (first use, a restarted
# process, an emptied Redis).
SpendSource = Callable[[Scope, str, float], Awaitable[float]]
NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Demand:
    """What one request asks of the limits at admission."""

    request_id: str
    key_id: str | None
    key: Limits
    deployment_id: str
    deployment_rpm: int | None
    deployment_tpm: int | None
    tokens: int  # reserved: an upper bound of prompt + response tokens
    cost: float  # reserved: the most the request can cost, US dollars
    prompt_tokens: int = 0  # of `tokens`, those reserved for the prompt
    account_id: str | None = None
    account: Limits = NO_LIMITS  # the account's own limits, shared by its keys

    @property
    def limited(self) -> bool:
        return (
            (self.key_id is not None and self.key.any)
            or (self.account_id is not None and self.account.any)
            or self.deployment_rpm is not None
            or self.deployment_tpm is not None
        )


@dataclass(slots=True)
class Admission:
    """A request let in: what it took, so that settlement can give back the difference."""

    demand: Demand
    now: float
    # Counter names taken at admission ("key:rpm_limit", "account:max_budget", ...);
    # none when the store was unreachable and the limits failed open.
    taken: frozenset[str] = frozenset()
    budget_window: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    settled: bool = field(default=False)
    # More reserved once the gateway rendered the prompt and found it larger than the
    # first reservation (`LimitGate.reserve_rendered`): settled with this admission.
    top_ups: list[Admission] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        """x-ratelimit-remaining-* for the limits that apply (SPEC 7)."""
        found = {}
        if self.remaining_requests is not None:
            found["x-ratelimit-remaining-requests"] = str(self.remaining_requests)
        if self.remaining_tokens is not None:
            found["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens)
        return found


class LimitExceeded(RateLimited):
    """429 naming the limit, with Retry-After in whole seconds."""

    def __init__(self, limit: str, scope: str, detail: str, retry_after: float) -> None:
        super().__init__(
            f"{scope} {limit} exceeded: {detail}",
            retry_after=str(max(1, math.ceil(min(retry_after, MAX_RETRY_AFTER)))),
        )
        self.limit = limit
        self.scope = scope

    @property
    def holds_everywhere(self) -> bool:
        """Whether another deployment would refuse the request too: the key's and the
        account's limits hold across all of them, a deployment's own only for it."""
        return self.scope != "deployment"


class LimitStoreUnavailable(ModelportError):
    """The shared counters cannot be reached and a limit that applies fails closed."""

    status_code = 503

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class Limiter(Protocol):
    async def admit(self, demand: Demand) -> Admission:
        """Count and reserve, or raise LimitExceeded / LimitStoreUnavailable."""
        ...

    async def settle(self, admission: Admission, *, tokens: int, cost: float) -> None:
        """The request ended having used `tokens` and cost `cost`: true up, free its slot."""
        ...

    async def aclose(self) -> None: ...

    async def problem(self) -> str | None:
        """Why the shared counts cannot be reached now (for /health/ready), or None."""
        ...


def wall_clock() -> float:
    return time.time()


__all__ = [
    "LIMIT_NAMES",
    "NO_LIMITS",
    "WINDOW_SECONDS",
    "Admission",
    "Clock",
    "Demand",
    "LimitExceeded",
    "LimitName",
    "LimitStoreUnavailable",
    "Limiter",
    "Scope",
    "SpendSource",
    "wall_clock",
]
