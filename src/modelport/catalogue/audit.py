"""Reading the audit log (`store/audit.py` writes it): an account's admins read their
account's events, operators every account's; members none. Knows no HTTP."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.access import require_admin
from modelport.principal import Principal
from modelport.schemas.audit import ActorOut, AuditEventOut, AuditEventPage
from modelport.store import audit
from modelport.store.tables import AuditEvent


def shown(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut(
        id=event.id,
        at=event.at,
        actor=ActorOut(
            kind=event.actor_kind,
            key_id=event.actor_key_id,
            identity_id=event.actor_identity_id,
            role=event.actor_role,
            name=event.actor_name,
        ),
        request_id=event.request_id,
        account_id=event.account_id,
        action=event.action,
        object_type=event.object_type,
        object_id=event.object_id,
        before=event.before,
        after=event.after,
    )


class AuditLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, retention: timedelta) -> None:
        self._sessions = sessions
        self._retention = retention

    async def list(
        self, principal: Principal, given: audit.AuditFilter, *, every_account: bool, page: int, limit: int
    ) -> AuditEventPage:
        """The events the principal may read, newest first. An operator may ask for
        `every_account`; anyone else reads the selected account's."""
        require_admin(principal)
        if not (every_account and principal.is_operator):
            given = dataclasses.replace(given, account_id=principal.account_id)
        async with self._sessions() as session:
            rows, total = await audit.list_events(session, given, page=page, limit=limit)
        return AuditEventPage(
            items=[shown(row) for row in rows], current_page=page, items_per_page=limit, total_item_count=total
        )

    async def sweep(self) -> int:
        """Forget the events past the retention (MODELPORT_AUDIT_RETENTION_DAYS)."""
        async with self._sessions() as session, session.begin():
            return await audit.sweep(session, retention=self._retention)
