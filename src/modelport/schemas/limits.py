"""Limits as the API reads and shows them: the five limits a key or an account carries
(SPEC 7, LiteLLM's names), an account's own (SPEC 10), and a budget's current window."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from modelport.principal import parse_duration

# Integer columns are 32-bit in PostgreSQL.
_Count = Annotated[int, Field(ge=0, le=2_000_000_000)]


class LimitFields(BaseModel):
    """A key's or an account's limits; null or left out: no limit."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    rpm_limit: _Count | None = None
    tpm_limit: _Count | None = None
    max_parallel_requests: _Count | None = None
    max_budget: Annotated[float, Field(ge=0, le=1e12)] | None = None  # US dollars
    budget_duration: str | None = Field(default=None, max_length=20)  # "30s", "15m", "1h", "30d"; none: lifetime

    @field_validator("budget_duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_duration(value)
            except ValueError as exc:
                raise PydanticCustomError("duration", str(exc)) from None
        return value


class BudgetStatus(BaseModel):
    """A budget's current window and what was spent in it (US dollars, from the usage
    records; requests still running are not in it yet)."""

    max_budget: float
    budget_duration: str | None = None  # none: one window for the holder's whole life
    window_start: datetime | None = None  # none: the holder's whole life
    window_end: datetime | None = None  # when the budget starts again; none: never
    spent: float
    remaining: float


class AccountLimitsUpdate(LimitFields):
    """`PATCH /v4/accounts/{account_id}/limits` (operators): the fields sent change; null
    clears a limit; the others stay."""


class AccountLimitsOut(BaseModel):
    """An account's own limits, shared by all its keys (each key's own apply as well)."""

    account_id: str
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    budget: BudgetStatus | None = None  # the budget's current window, when there is a budget
