"""Budgets as people read them: a key's or an account's current budget window and what
was spent in it (`/v4/spend`, `/v4/accounts/{id}/limits`). The limiters enforce the
same windows (`Limits.budget_window`); this reads what the usage records say."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from modelport.limits.base import Scope
from modelport.principal import Limits
from modelport.schemas.limits import BudgetStatus
from modelport.store import usage


def _moment(epoch: float) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if math.isfinite(epoch) and epoch > 0 else None


async def budget_status(
    session: AsyncSession, *, scope: Scope, owner_id: str, limits: Limits | None, now: float | None = None
) -> BudgetStatus | None:
    """The budget's window holding `now` and the spend recorded in it; None without a budget."""
    if limits is None or limits.max_budget is None:
        return None
    window = limits.budget_window(time.time() if now is None else now)
    if window is None:
        return None
    _, start, end = window
    spent = await usage.spend_since(session, scope=scope, owner_id=owner_id, since=datetime.fromtimestamp(start, UTC))
    return BudgetStatus(
        max_budget=limits.max_budget,
        budget_duration=limits.budget_duration,
        window_start=_moment(start),
        window_end=_moment(end),
        spent=spent,
        remaining=max(0.0, limits.max_budget - spent),
    )


__all__ = ["budget_status"]
