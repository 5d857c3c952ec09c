"""GET /v4/audit-events: who changed what in the catalogue, and when (SPEC 10). Read
only: no route changes or deletes an event."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from modelport.api.deps import CatalogueDep, CurrentPrincipal, PageNumber, PageSize, storable_time
from modelport.schemas.audit import AuditEventPage, ObjectType
from modelport.store.audit import AuditFilter

router = APIRouter(tags=["audit"])


@router.get("/v4/audit-events", response_model=AuditEventPage)
async def list_audit_events(
    principal: CurrentPrincipal,
    catalogue: CatalogueDep,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    actor: Annotated[str | None, Query(max_length=36, description="a key id or an identity id")] = None,
    object_type: ObjectType | None = None,
    object_id: Annotated[str | None, Query(max_length=200)] = None,
    all_accounts: Annotated[bool, Query(description="every account's events (operators only)")] = False,
    page: PageNumber = 1,
    limit: PageSize = 100,
) -> AuditEventPage:
    """The selected account's events, newest first, in [start_date, end_date); an
    operator may ask for every account's. For admins (403 for a member)."""
    given = AuditFilter(
        since=storable_time("start_date", start_date),
        until=storable_time("end_date", end_date),
        actor=actor,
        object_type=object_type,
        object_id=object_id,
    )
    return await catalogue.audit.list(principal, given, every_account=all_accounts, page=page, limit=limit)
