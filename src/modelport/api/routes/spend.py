"""GET /v4/spend: the selected account's spend, in all, per key and per deployment."""

from __future__ import annotations

from fastapi import APIRouter

from modelport.api.deps import CatalogueDep, CurrentPrincipal
from modelport.schemas.catalogue import SpendReport

router = APIRouter(tags=["spend"])


@router.get("/v4/spend", response_model=SpendReport)
async def get_spend(principal: CurrentPrincipal, catalogue: CatalogueDep) -> SpendReport:
    return await catalogue.spend(principal)
