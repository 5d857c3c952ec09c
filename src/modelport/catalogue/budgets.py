"""Budgets as people read them: a key's or an account's current budget window and what
was spent in it (`/v4/spend`, `/v4/accounts/{id}/limits`). The limiters enforce the
same windows (`Limits.budget_window`); this reads what the usage records say."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from modelport.limits.base import Scope
from modelport.principal import Limits
from modelport.schemas.limits import BudgetStatus
from modelport.store import usage


def _moment(epoch: float) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if math.isfinite(epoch) and epoch > 0 else None


async def budget_statuses(
    session: AsyncSession, *, scope: Scope, owners: Mapping[str, Limits | None], now: float | None = None
) -> dict[str, BudgetStatus]:
    """Each owner's budget window holding `now` and the spend recorded in it, for the
    owners with a budget (the others are left out), summed in one query per
    `usage.WINDOWS_PER_QUERY` owners rather than one each."""
    moment = time.time() if now is None else now
    windows: dict[str, tuple[float, str | None, float, float]] = {}  # max_budget, duration, start, end
    for owner_id, limits in owners.items():
        if limits is None or limits.max_budget is None or (window := limits.budget_window(moment)) is None:
            continue
        windows[owner_id] = (limits.max_budget, limits.budget_duration, window[1], window[2])
    spent = await usage.spend_in_windows(
        session,
        scope=scope,
        since={owner_id: datetime.fromtimestamp(window[2], UTC) for owner_id, window in windows.items()},
    )
    return {
        owner_id: BudgetStatus(
            max_budget=max_budget,
            budget_duration=duration,
            window_start=_moment(start),
            window_end=_moment(end),
            spent=spent[owner_id],
            remaining=max(0.0, max_budget - spent[owner_id]),
        )
        for owner_id, (max_budget, duration, start, end) in windows.items()
    }


async def budget_status(
    session: AsyncSession, *, scope: Scope, owner_id: str, limits: Limits | None, now: float | None = None
) -> BudgetStatus | None:
    """The budget's window holding `now` and the spend recorded in it; None without a budget."""
    statuses = await budget_statuses(session, scope=scope, owners={owner_id: limits}, now=now)
    return statuses.get(owner_id)


__all__ = ["budget_status", "budget_statuses"]
