"""The audit log on the wire: `GET /v4/audit-events` (SPEC 10)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, field_validator

# The objects the log follows (store/audit.py AUDITED names them; a test keeps the two equal).
ObjectType = Literal[
    "account", "identity", "membership", "api_key", "model", "deployment", "model_group", "model_template", "secret"
]
ActorKind = Literal["key", "cli", "server"]
Action = Literal["create", "update", "delete"]


class ActorOut(BaseModel):
    # "key": an API request (its key, identity and role); "cli": a command at the
    # server's terminal (`name`: the user who ran it); "server": modelport itself.
    kind: ActorKind
    key_id: str | None = None
    identity_id: str | None = None
    role: str | None = None
    name: str | None = None


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor: ActorOut
    request_id: str | None = None
    account_id: str | None = None
    action: Action
    object_type: ObjectType
    object_id: str
    # Every column for a create or a delete, the changed ones for an update; a key's
    # hash and a secret's value never, credential-looking settings as "<redacted>".
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None

    @field_validator("at", mode="after")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        # SQLite hands back naive datetimes; every time modelport stores is UTC.
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class AuditEventPage(BaseModel):
    items: list[AuditEventOut]
    current_page: int
    items_per_page: int
    total_item_count: int
