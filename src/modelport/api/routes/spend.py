"""GET /v4/spend: the selected account's spend, in all, per key and per deployment; and
GET /v4/usage-summary: its requests, failures, tokens, spend and latency in a period."""

from __future__ import annotations

from fastapi import APIRouter

from modelport.api.deps import CatalogueDep, CurrentPrincipal, UsagePeriodDep
from modelport.schemas.catalogue import SpendReport, UsageSummary

router = APIRouter(tags=["spend"])


@router.get("/v4/spend", response_model=SpendReport)
async def get_spend(principal: CurrentPrincipal, catalogue: CatalogueDep) -> SpendReport:
    return await catalogue.spend(principal)


@router.get("/v4/usage-summary", response_model=UsageSummary, tags=["usage"])
async def get_usage_summary(
    principal: CurrentPrincipal, catalogue: CatalogueDep, period: UsagePeriodDep
) -> UsageSummary:
    """Per deployment and per API key, the requests in [start_date, end_date): how many,
    how many failed, their tokens and spend, and the p50/p95/p99 latency of those that
    succeeded. For the account's admins (403 for a member), like `/v4/spend`."""
    return await catalogue.usage_summary(principal, start=period.start, end=period.end)
