"""The audit log: every change to accounts, identities (operators among them),
memberships, API keys, models, deployments, groups, templates and secrets is a row of
`audit_events`, written in the transaction that made the change.

Written in one place rather than at every write site (as the catalogue's generation
counter is, `store/db.py`), so that no route, command or future write can forget it:
after each flush, every new, changed and deleted row of those tables becomes an event,
with the columns it had before and has after (all of them for a create or a delete, the
changed ones for an update). Who made it is what the request's authentication set in
`acting` (its key, identity and role, and the request id), or the CLI's user, or the
server itself.

Nothing secret is kept: a key's hash and a secret's ciphertext are left out, and
settings are shown as the API shows them (`schemas.catalogue.redact`). A deployment's
status, which the server moves by itself as engines load and restart, is not an audit
event when the server moved it.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import Select, delete, event, func, insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction

from modelport.schemas.catalogue import redact
from modelport.store.tables import (
    Account,
    AccountSecret,
    ApiKey,
    AuditEvent,
    Base,
    Deployment,
    Identity,
    Membership,
    Model,
    ModelGroup,
    ModelTemplate,
    utcnow,
)


@dataclass(frozen=True, slots=True)
class Actor:
    kind: str  # "key", "cli" or "server"
    key_id: str | None = None
    identity_id: str | None = None
    role: str | None = None
    name: str | None = None
    request_id: str | None = None


SERVER = Actor(kind="server")
# Who is changing the catalogue in this task: set by the API's authentication for each
# request, by the CLI for its commands; the server itself otherwise.
acting: ContextVar[Actor] = ContextVar("modelport_audit_actor", default=SERVER)

# The audited tables, by the name their events carry.
AUDITED: dict[type[Base], str] = {
    Account: "account",
    Identity: "identity",
    Membership: "membership",
    ApiKey: "api_key",
    Model: "model",
    Deployment: "deployment",
    ModelGroup: "model_group",
    ModelTemplate: "model_template",
    AccountSecret: "secret",
}
# Columns never shown in an event.
_HIDDEN = {ApiKey: {"key_hash", "previous_key_hash"}, AccountSecret: {"ciphertext"}}
# Columns the server changes by itself (a deployment's engine loading, failing, back).
_OPERATIONAL = {Deployment: {"status", "status_reason"}}


# The most of one column's value an event keeps. A request body may be 4 MiB: without
# this, every PATCH of a large setting would write twice its size (before and after)
# into a log kept for a year, and an admin in a loop would fill the database with it.
MAX_VALUE_BYTES = 16 * 1024


def _shown(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        value = redact(value)
    if isinstance(value, (dict, list, str)):
        size = len(json.dumps(value, default=str).encode())
        if size > MAX_VALUE_BYTES:
            return {"omitted": f"{size} bytes, more than the {MAX_VALUE_BYTES} an audit event keeps of a value"}
    return value


def _columns(row: Base) -> list[str]:
    hidden = _HIDDEN.get(type(row), set())
    return [column.key for column in inspect(type(row)).column_attrs if column.key not in hidden]


def _whole(row: Base) -> dict[str, Any]:
    return {name: _shown(getattr(row, name)) for name in _columns(row)}


def _changes(row: Base) -> tuple[dict[str, Any], dict[str, Any]]:
    state = inspect(row)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name in _columns(row):
        history = state.attrs[name].history
        if not history.has_changes():
            continue
        old = history.deleted[0] if history.deleted else None
        new = history.added[0] if history.added else None
        if old == new:
            continue
        before[name], after[name] = _shown(old), _shown(new)
    return before, after


def _object_id(row: Base) -> str:
    if isinstance(row, Membership):
        return f"{row.identity_id}@{row.account_id}"
    if isinstance(row, AccountSecret):
        return row.name  # a secret is known by its name in its account
    return str(getattr(row, "id", ""))


def _account_of(session: Session, row: Base) -> str | None:
    if isinstance(row, Account):
        return row.id
    if isinstance(row, Identity):
        return row.default_account_id
    if isinstance(row, ApiKey):
        # A key's account is its identity's; the identity may be new in this flush.
        owner = session.identity_map.get(session.identity_key(Identity, row.identity_id))
        if isinstance(owner, Identity):
            return owner.default_account_id
        return session.connection().scalar(select(Identity.default_account_id).where(Identity.id == row.identity_id))
    account = getattr(row, "account_id", None)
    return str(account) if account is not None else None


@event.listens_for(Session, "after_flush")
def _record(session: Session, _flush: UOWTransaction) -> None:
    # In after_flush, new/dirty/deleted and each attribute's history still show what
    # this flush wrote (as in store/db.py's generation counter).
    actor = acting.get()
    events: list[dict[str, Any]] = []
    for action, rows in (("create", session.new), ("update", session.dirty), ("delete", session.deleted)):
        for row in rows:
            object_type = AUDITED.get(type(row))
            if object_type is None:
                continue
            if action == "create":
                before, after = None, _whole(row)
            elif action == "delete":
                before, after = _whole(row), None
            else:
                changed_before, changed_after = _changes(row)
                operational = _OPERATIONAL.get(type(row), set())
                if not changed_after or (actor.kind == "server" and set(changed_after) <= operational):
                    continue
                before, after = changed_before, changed_after
            events.append(
                {
                    "at": utcnow(),
                    "actor_kind": actor.kind,
                    "actor_key_id": actor.key_id,
                    "actor_identity_id": actor.identity_id,
                    "actor_role": actor.role,
                    "actor_name": actor.name,
                    "request_id": actor.request_id,
                    "account_id": _account_of(session, row),
                    "action": action,
                    "object_type": object_type,
                    "object_id": _object_id(row),
                    "before": before,
                    "after": after,
                }
            )
    if events:
        session.connection().execute(insert(AuditEvent), events)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    account_id: str | None = None  # None: every account's (operators)
    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None  # a key id or an identity id
    object_type: str | None = None
    object_id: str | None = None


def _filtered(statement: Select[Any], given: AuditFilter) -> Select[Any]:
    if given.account_id is not None:
        statement = statement.where(AuditEvent.account_id == given.account_id)
    if given.since is not None:
        statement = statement.where(AuditEvent.at >= given.since)
    if given.until is not None:
        statement = statement.where(AuditEvent.at < given.until)
    if given.actor is not None:
        statement = statement.where(
            (AuditEvent.actor_key_id == given.actor) | (AuditEvent.actor_identity_id == given.actor)
        )
    if given.object_type is not None:
        statement = statement.where(AuditEvent.object_type == given.object_type)
    if given.object_id is not None:
        statement = statement.where(AuditEvent.object_id == given.object_id)
    return statement


async def list_events(
    session: AsyncSession, given: AuditFilter, *, page: int, limit: int
) -> tuple[list[AuditEvent], int]:
    """The events that match, newest first, one page of them, and how many match."""
    total = await session.scalar(_filtered(select(func.count()).select_from(AuditEvent), given))
    rows = await session.scalars(
        _filtered(select(AuditEvent), given).order_by(AuditEvent.id.desc()).offset((page - 1) * limit).limit(limit)
    )
    return list(rows), int(total or 0)


async def sweep(session: AsyncSession, *, retention: timedelta) -> int:
    """Delete the events older than the retention; returns how many."""
    result = await session.execute(delete(AuditEvent).where(AuditEvent.at < utcnow() - retention))
    return int(getattr(result, "rowcount", 0) or 0)
