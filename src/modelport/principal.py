"""Who is calling, in which account, and what their key may spend."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

_DURATION = re.compile(r"^\s*(\d{1,12})\s*([smhd])\s*$")
MAX_DURATION_SECONDS = 3650 * 86400
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """`"30d"`, `"1h"`, `"15m"`, `"90s"` -> seconds (at most ten years); ValueError otherwise."""
    match = _DURATION.match(text)
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match is not None else 0
    if not 0 < seconds <= MAX_DURATION_SECONDS:
        raise ValueError(
            f"budget_duration {text!r} is not a duration such as '30s', '15m', '1h' or '30d' (at most 3650d)"
        )
    return seconds


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits an API key or an account carries (None: no limit). An account's hold
    for all its keys together, in addition to each key's own (SPEC 7, 10)."""

    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    # When the budget windows start counting (epoch seconds): the key's or account's
    # creation, or the moment its budget_duration last changed.
    budget_anchor: float = 0.0

    @property
    def any(self) -> bool:
        """Whether any limit is set (then requests are counted)."""
        return (self.rpm_limit, self.tpm_limit, self.max_parallel_requests, self.max_budget) != (None,) * 4

    def budget_window(self, now: float) -> tuple[int, float, float] | None:
        """(index, start, end) of the budget window holding `now`; None without a budget
        or without a duration (then the budget is for the holder's whole life: window 0)."""
        if self.max_budget is None:
            return None
        if not self.budget_duration:
            return 0, 0.0, math.inf
        length = parse_duration(self.budget_duration)
        index = max(0, math.floor((now - self.budget_anchor) / length))
        start = self.budget_anchor + index * length
        return index, start, start + length


@dataclass(frozen=True, slots=True)
class ModelAllowList:
    """The models and deployments a key is limited to (SPEC 10). A deployment is allowed
    when its id is listed, or its model is, by name or `vendor/name` (vendor lower-case,
    as `/v1/models` shows it). Anything else is, for this key, as absent as a missing one."""

    models: frozenset[str] = frozenset()
    deployments: frozenset[str] = frozenset()

    def allows_model(self, name: str, vendor: str | None) -> bool:
        """Every deployment of this model is allowed (the model is listed)."""
        return name in self.models or (vendor is not None and f"{vendor.lower()}/{name}" in self.models)

    def allows(self, deployment_id: str, model_name: str, model_vendor: str | None) -> bool:
        return deployment_id in self.deployments or self.allows_model(model_name, model_vendor)


class Role(StrEnum):
    """An identity's role in an account (stored and sent as its value)."""

    ADMIN = "admin"  # changes the account's catalogue, keys and secrets
    MEMBER = "member"  # reads the catalogue and calls its models


class IdentityType(StrEnum):
    USER = "user"  # a person (the first-start admin)
    SERVICE_ACCOUNT = "service_account"  # made for each key an admin creates


@dataclass(frozen=True, slots=True)
class Principal:
    identity_id: str
    identity_type: IdentityType
    account_id: str  # the selected account
    role: Role  # the identity's role in that account
    is_operator: bool = False  # runs the server: may create accounts and manage any key
    key_id: str | None = None  # the API key the request came with: its limits and spend
    key_limits: Limits | None = None  # None: the key has no limits
    account_limits: Limits | None = None  # the selected account's, shared by its keys; None: none
    model_allow: ModelAllowList | None = None  # None: every model of the account
    # Seconds the response cache keeps this key's cacheable answers; None: the model's
    # setting decides (inference/response_cache.py).
    cache_ttl_seconds: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN
