"""Repository functions: the only place that speaks SQL.

Every read of an account's resource takes the account id, so a resource of another
account is simply not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Float, func, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.ext.asyncio import AsyncSession

from modelport.principal import KeyLimits
from modelport.store.tables import (
    Account,
    AccountSecret,
    ApiKey,
    Deployment,
    Identity,
    Membership,
    Model,
    ModelGroup,
    ModelTemplate,
    UsageRecord,
    utcnow,
)

OwnedT = TypeVar("OwnedT", ModelGroup, ModelTemplate)


@dataclass(frozen=True, slots=True)
class KeyOwner:
    key_id: str
    identity_id: str
    identity_type: str
    default_account_id: str
    is_operator: bool = False
    limits: KeyLimits | None = None


async def count_accounts(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Account)) or 0)


async def create_account(session: AsyncSession, *, name: str) -> Account:
    account = Account(name=name)
    session.add(account)
    await session.flush()
    return account


async def create_identity(
    session: AsyncSession, *, name: str, identity_type: str, default_account_id: str, is_operator: bool = False
) -> Identity:
    identity = Identity(
        name=name, identity_type=identity_type, default_account_id=default_account_id, is_operator=is_operator
    )
    session.add(identity)
    await session.flush()
    return identity


async def add_membership(session: AsyncSession, *, identity_id: str, account_id: str, role: str) -> None:
    session.add(Membership(identity_id=identity_id, account_id=account_id, role=role))
    await session.flush()


async def create_api_key(
    session: AsyncSession,
    *,
    identity_id: str,
    key_hash: str,
    display_prefix: str,
    name: str = "",
    limits: dict[str, Any] | None = None,
) -> ApiKey:
    key = ApiKey(identity_id=identity_id, key_hash=key_hash, display_prefix=display_prefix, name=name, **(limits or {}))
    session.add(key)
    await session.flush()
    return key


async def find_key_owner(session: AsyncSession, *, key_hash: str) -> KeyOwner | None:
    row = (
        await session.execute(
            select(ApiKey, Identity.id, Identity.identity_type, Identity.default_account_id, Identity.is_operator)
            .join(Identity, Identity.id == ApiKey.identity_id)
            .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    key: ApiKey = row[0]
    return KeyOwner(
        key_id=key.id,
        identity_id=row[1],
        identity_type=row[2],
        default_account_id=row[3],
        is_operator=bool(row[4]),
        limits=key_limits(key),
    )


def key_limits(key: ApiKey) -> KeyLimits | None:
    """The key's limits, or None when it has none (the common case: nothing to count)."""
    if (key.rpm_limit, key.tpm_limit, key.max_parallel_requests, key.max_budget) == (None, None, None, None):
        return None
    anchor = key.budget_started_at or key.created_at
    if anchor is not None and anchor.tzinfo is None:  # SQLite gives back naive UTC
        anchor = anchor.replace(tzinfo=UTC)
    return KeyLimits(
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        max_parallel_requests=key.max_parallel_requests,
        max_budget=key.max_budget,
        budget_duration=key.budget_duration,
        budget_anchor=anchor.timestamp() if anchor is not None else 0.0,
    )


async def membership_role(session: AsyncSession, *, identity_id: str, account_id: str) -> str | None:
    role: str | None = await session.scalar(
        select(Membership.role).where(Membership.identity_id == identity_id, Membership.account_id == account_id)
    )
    return role


async def create_model(session: AsyncSession, *, account_id: str, **fields: Any) -> Model:
    model = Model(account_id=account_id, **fields)
    session.add(model)
    await session.flush()
    return model


async def get_model(session: AsyncSession, *, account_id: str, model_id: str) -> Model | None:
    model: Model | None = await session.scalar(
        select(Model).where(Model.id == model_id, Model.account_id == account_id)
    )
    return model


async def model_named(session: AsyncSession, *, account_id: str, name: str) -> Model | None:
    model: Model | None = await session.scalar(
        select(Model).where(Model.account_id == account_id, Model.name == name).limit(1)
    )
    return model


async def deployment_counts(session: AsyncSession, *, model_ids: list[str]) -> dict[str, int]:
    if not model_ids:
        return {}
    rows = await session.execute(
        select(Deployment.model_id, func.count())
        .where(Deployment.model_id.in_(model_ids))
        .group_by(Deployment.model_id)
    )
    return {model_id: int(count) for model_id, count in rows.all()}


async def create_deployment(session: AsyncSession, *, account_id: str, model_id: str, **fields: Any) -> Deployment:
    deployment = Deployment(account_id=account_id, model_id=model_id, **fields)
    session.add(deployment)
    await session.flush()
    return deployment


async def get_deployment(session: AsyncSession, *, account_id: str, deployment_id: str) -> Deployment | None:
    deployment: Deployment | None = await session.scalar(
        select(Deployment).where(Deployment.id == deployment_id, Deployment.account_id == account_id)
    )
    return deployment


async def get_deployment_with_model(
    session: AsyncSession, *, account_id: str, deployment_id: str
) -> tuple[Deployment, Model] | None:
    row = (
        await session.execute(
            select(Deployment, Model)
            .join(Model, Model.id == Deployment.model_id)
            .where(Deployment.id == deployment_id, Deployment.account_id == account_id)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def list_deployments(
    session: AsyncSession,
    *,
    account_id: str,
    page: int,
    limit: int,
    model_id: str | None = None,
    sort_by: Sequence[tuple[str, bool]] = (),
) -> tuple[list[Deployment], int]:
    where = [Deployment.account_id == account_id]
    if model_id is not None:
        where.append(Deployment.model_id == model_id)
    total = int(await session.scalar(select(func.count()).select_from(Deployment).where(*where)) or 0)
    rows = await session.scalars(
        select(Deployment)
        .where(*where)
        .order_by(*_order(Deployment, list(sort_by)))
        .offset((page - 1) * limit)
        .limit(limit)
    )
    return list(rows), total


async def live_deployments(
    session: AsyncSession, statuses: tuple[str, ...] = ("READY", "PENDING", "FAILED")
) -> list[tuple[Deployment, str | None]]:
    """Deployments of every account in one of `statuses`, each with its model's vendor
    (which of them the embedded engine serves is decided in modelport.catalogue.deployment_settings).
    FAILED ones by default: a start-up tries them again, as a crash one request caused
    must not keep a model down for good."""
    rows = await session.execute(
        select(Deployment, Model.model_vendor)
        .join(Model, Model.id == Deployment.model_id)
        .where(Deployment.status.in_(statuses))
    )
    return [(deployment, vendor) for deployment, vendor in rows.all()]


async def set_deployment_status(
    session: AsyncSession, *, deployment_id: str, status: str, reason: str | None = None
) -> None:
    deployment = await session.get(Deployment, deployment_id)
    if deployment is not None:
        deployment.status = status
        deployment.status_reason = reason


# --- models -------------------------------------------------------------------------

MODEL_SORT_COLUMNS = frozenset(
    {
        "display_name", "model_vendor", "base_model_id", "model_card", "training_data_card", "description",
        "model_template_id", "model_group_id", "id", "created_at", "account_id", "created_by_user_id",
        "created_by_identity_type", "name", "model_type",
    }
)  # fmt: skip
DEPLOYMENT_SORT_COLUMNS = frozenset(
    {
        "model_endpoint_id", "status", "id", "created_at", "account_id", "created_by_user_id",
        "created_by_identity_type", "name", "model_instance_id",
    }
)  # fmt: skip
# Wire names of columns stored under another name.
_COLUMN_OF = {"model_instance_id": "model_id"}


def _order(table: Any, sort_by: list[tuple[str, bool]]) -> list[Any]:
    """ORDER BY for (column, descending) pairs, always ending on the id for a stable order."""
    columns = [(getattr(table, _COLUMN_OF.get(name, name)), descending) for name, descending in sort_by]
    order = [column.desc() if descending else column.asc() for column, descending in columns]
    return [*order, table.created_at.asc(), table.id.asc()]


async def list_models(
    session: AsyncSession,
    *,
    account_id: str,
    page: int,
    limit: int,
    model_type: str | None = None,
    model_group_id: str | None = None,
    sort_by: Sequence[tuple[str, bool]] = (),
) -> tuple[list[Model], int]:
    where = [Model.account_id == account_id]
    if model_type is not None:
        where.append(Model.model_type == model_type)
    if model_group_id is not None:
        where.append(Model.model_group_id == model_group_id)
    total = int(await session.scalar(select(func.count()).select_from(Model).where(*where)) or 0)
    rows = await session.scalars(
        select(Model).where(*where).order_by(*_order(Model, list(sort_by))).offset((page - 1) * limit).limit(limit)
    )
    return list(rows), total


async def count_deployments(session: AsyncSession, *, model_id: str) -> int:
    return int(
        await session.scalar(select(func.count()).select_from(Deployment).where(Deployment.model_id == model_id)) or 0
    )


async def delete_row(session: AsyncSession, row: Model | Deployment) -> None:
    await session.delete(row)
    await session.flush()


# --- keys ---------------------------------------------------------------------------


def _keys_managed_in(account_id: str, identity_id: str, *, everyone: bool) -> Any:
    """Keys an admin of `account_id` manages: those of the account's own service
    accounts, and the admin's own; with `everyone` (an operator), every member's."""
    if everyone:
        return Membership.account_id == account_id
    own_service_account = (Identity.identity_type == "service_account") & (Identity.default_account_id == account_id)
    return (Membership.account_id == account_id) & (own_service_account | (Identity.id == identity_id))


async def list_keys(
    session: AsyncSession, *, account_id: str, identity_id: str, everyone: bool = False
) -> list[tuple[ApiKey, str]]:
    """Keys an admin of the account may see, with their identity's role there."""
    rows = await session.execute(
        select(ApiKey, Membership.role)
        .join(Membership, Membership.identity_id == ApiKey.identity_id)
        .join(Identity, Identity.id == ApiKey.identity_id)
        .where(_keys_managed_in(account_id, identity_id, everyone=everyone))
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    return [(key, role) for key, role in rows.all()]


async def get_key_in_account(
    session: AsyncSession, *, account_id: str, key_id: str, identity_id: str, everyone: bool = False
) -> tuple[ApiKey, str] | None:
    row = (
        await session.execute(
            select(ApiKey, Membership.role)
            .join(Membership, Membership.identity_id == ApiKey.identity_id)
            .join(Identity, Identity.id == ApiKey.identity_id)
            .where(ApiKey.id == key_id, _keys_managed_in(account_id, identity_id, everyone=everyone))
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def get_account(session: AsyncSession, *, account_id: str) -> Account | None:
    return await session.get(Account, account_id)


# --- usage --------------------------------------------------------------------------


async def insert_usage(session: AsyncSession, records: list[dict[str, Any]]) -> None:
    """Insert usage records (all with the same fields); one whose request_id is already
    stored is skipped, so a batch written again after an unclear failure (a lost commit
    reply) counts once."""
    if not records:
        return
    dialect = session.bind.dialect.name if session.bind is not None else ""
    if dialect == "sqlite":
        await _insert_usage_sqlite(session, records)
        return
    if dialect == "postgresql":
        statement: Any = postgresql_insert(UsageRecord).on_conflict_do_nothing(index_elements=["request_id"])
    else:
        statement = insert(UsageRecord)
    await session.execute(statement, records)


# Rows per INSERT statement: 11 fields each, 5,500 parameters, within SQLite's 32,766.
_SQLITE_ROWS_PER_INSERT = 500


async def _insert_usage_sqlite(session: AsyncSession, records: list[dict[str, Any]]) -> None:
    """Many rows per statement, not one statement run once per row (executemany).

    aiosqlite runs SQLite in its own thread, and Python's sqlite3 lets go of the GIL
    for every row it steps through; each time it must win the GIL back from the serving
    loop, which under load holds it for up to the 5 ms switch interval. A batch of
    1,000 records took about a second to write at 1,150 requests/s, less than the rate
    they came in, so records (and memory) piled up as long as the load lasted. One
    statement per 500 rows lets go of the GIL once per statement. The values are
    encoded by the columns' own SQLAlchemy types, as an ORM insert would store them.
    """
    table = UsageRecord.__table__
    fields = list(records[0])
    dialect = session.get_bind().dialect
    encoders = [table.c[name].type.bind_processor(dialect) for name in fields]
    row = "(" + ", ".join("?" * len(fields)) + ")"
    connection = await session.connection()
    for start in range(0, len(records), _SQLITE_ROWS_PER_INSERT):
        chunk = records[start : start + _SQLITE_ROWS_PER_INSERT]
        values: list[Any] = []
        for record in chunk:
            for name, encode in zip(fields, encoders, strict=True):
                value = record[name]
                values.append(encode(value) if encode is not None and value is not None else value)
        sql = (
            f"INSERT INTO {UsageRecord.__tablename__} ({', '.join(fields)}) VALUES {', '.join([row] * len(chunk))} "
            "ON CONFLICT (request_id) DO NOTHING"
        )
        await connection.exec_driver_sql(sql, tuple(values))


async def key_spend_since(session: AsyncSession, *, key_id: str, since: datetime) -> float:
    total = await session.scalar(
        select(func.coalesce(func.sum(UsageRecord.cost), 0.0)).where(
            UsageRecord.key_id == key_id, UsageRecord.created_at >= since
        )
    )
    return float(total or 0.0)


async def spend_by_key(session: AsyncSession, *, key_ids: Sequence[str]) -> dict[str, float]:
    """Each key's spend: the sum of its usage records' costs, in every account."""
    if not key_ids:
        return {}
    rows = await session.execute(
        select(UsageRecord.key_id, func.sum(UsageRecord.cost))
        .where(UsageRecord.key_id.in_(key_ids))
        .group_by(UsageRecord.key_id)
    )
    return {str(key_id): float(total or 0.0) for key_id, total in rows.all()}


async def account_spend(session: AsyncSession, *, account_id: str, by: str) -> dict[str, float]:
    """The account's spend grouped by "key_id" or "deployment_id" (a key-less record, from
    before spend was kept, groups under "")."""
    column = UsageRecord.key_id if by == "key_id" else UsageRecord.deployment_id
    rows = await session.execute(
        select(column, func.sum(UsageRecord.cost)).where(UsageRecord.account_id == account_id).group_by(column)
    )
    return {str(group or ""): float(total or 0.0) for group, total in rows.all()}


def _epoch_seconds(session: AsyncSession, column: Any) -> Any:
    # The one place where the SQL differs between SQLite and PostgreSQL.
    if session.bind is not None and session.bind.dialect.name == "sqlite":
        return func.cast(func.strftime("%s", column), Float) + (
            func.cast(func.strftime("%f", column), Float) - func.cast(func.strftime("%S", column), Float)
        )
    return func.extract("epoch", column)


async def usage_by_chunk(
    session: AsyncSession,
    *,
    account_id: str,
    deployment_id: str | Sequence[str],
    start: datetime,
    end: datetime,
    chunks: int,
) -> dict[int, tuple[int, int]]:
    """Sums of prompt and response tokens of one or several deployments per chunk of
    [start, end), by chunk index."""
    deployment_ids = [deployment_id] if isinstance(deployment_id, str) else list(deployment_id)
    width = (end - start).total_seconds() / chunks
    bucket = func.floor((_epoch_seconds(session, UsageRecord.created_at) - start.timestamp()) / width)
    rows = await session.execute(
        select(bucket, func.sum(UsageRecord.prompt_tokens), func.sum(UsageRecord.response_tokens))
        .where(
            UsageRecord.account_id == account_id,
            UsageRecord.deployment_id.in_(deployment_ids),
            UsageRecord.created_at >= start,
            UsageRecord.created_at < end,
        )
        .group_by(bucket)
    )
    sums: dict[int, tuple[int, int]] = {}
    for index, prompt, response in rows.all():
        position = min(max(int(index), 0), chunks - 1)
        before = sums.get(position, (0, 0))
        sums[position] = (before[0] + int(prompt or 0), before[1] + int(response or 0))
    return sums


# --- secrets ------------------------------------------------------------------------


async def get_secret(session: AsyncSession, *, account_id: str, name: str) -> AccountSecret | None:
    secret: AccountSecret | None = await session.scalar(
        select(AccountSecret).where(AccountSecret.account_id == account_id, AccountSecret.name == name)
    )
    return secret


async def put_secret(session: AsyncSession, *, account_id: str, name: str, ciphertext: bytes) -> AccountSecret:
    secret = await get_secret(session, account_id=account_id, name=name)
    if secret is None:
        secret = AccountSecret(account_id=account_id, name=name, ciphertext=ciphertext)
        session.add(secret)
    else:
        secret.ciphertext = ciphertext
        secret.updated_at = utcnow()
    await session.flush()
    return secret


async def list_secrets(session: AsyncSession, *, account_id: str) -> list[AccountSecret]:
    rows = await session.scalars(
        select(AccountSecret).where(AccountSecret.account_id == account_id).order_by(AccountSecret.name)
    )
    return list(rows)


async def delete_secret(session: AsyncSession, *, account_id: str, name: str) -> bool:
    secret = await get_secret(session, account_id=account_id, name=name)
    if secret is None:
        return False
    await session.delete(secret)
    return True


# --- routing (compatible surfaces: `model` by name) ----------------------------------


async def models_for_routing(session: AsyncSession, *, account_id: str, name: str) -> list[Model]:
    """The account's models called `name`, oldest first (a name is not unique)."""
    rows = await session.scalars(
        select(Model).where(Model.account_id == account_id, Model.name == name).order_by(Model.created_at, Model.id)
    )
    return list(rows)


async def ready_deployments_of(session: AsyncSession, *, account_id: str, model_id: str) -> list[str]:
    """Ids of a model's READY deployments, oldest first."""
    rows = await session.scalars(
        select(Deployment.id)
        .where(Deployment.account_id == account_id, Deployment.model_id == model_id, Deployment.status == "READY")
        .order_by(Deployment.created_at, Deployment.id)
    )
    return list(rows)


# --- model groups and templates -----------------------------------------------------


async def add_row(session: AsyncSession, row: OwnedT) -> OwnedT:
    session.add(row)
    await session.flush()
    return row


async def get_owned(session: AsyncSession, table: type[OwnedT], *, account_id: str, row_id: str) -> OwnedT | None:
    row: OwnedT | None = await session.scalar(select(table).where(table.id == row_id, table.account_id == account_id))
    return row


async def list_owned(
    session: AsyncSession, table: type[OwnedT], *, account_id: str, page: int, limit: int
) -> tuple[list[OwnedT], int]:
    where = table.account_id == account_id
    total = int(await session.scalar(select(func.count()).select_from(table).where(where)) or 0)
    rows = await session.scalars(
        select(table).where(where).order_by(table.created_at, table.id).offset((page - 1) * limit).limit(limit)
    )
    return list(rows), total


async def delete_owned(session: AsyncSession, row: ModelGroup | ModelTemplate) -> None:
    await session.delete(row)
    await session.flush()


async def count_models_with(
    session: AsyncSession, *, account_id: str, model_group_id: str | None = None, model_template_id: str | None = None
) -> int:
    where = [Model.account_id == account_id]
    if model_group_id is not None:
        where.append(Model.model_group_id == model_group_id)
    if model_template_id is not None:
        where.append(Model.model_template_id == model_template_id)
    return int(await session.scalar(select(func.count()).select_from(Model).where(*where)) or 0)


async def deployment_ids_of_models(
    session: AsyncSession, *, account_id: str, model_name: str | None = None, model_group_id: str | None = None
) -> list[str]:
    """The deployments of the account's models with this name, or in this group."""
    where = [Model.account_id == account_id]
    if model_name is not None:
        where.append(Model.name == model_name)
    if model_group_id is not None:
        where.append(Model.model_group_id == model_group_id)
    rows = await session.scalars(select(Deployment.id).join(Model, Model.id == Deployment.model_id).where(*where))
    return list(rows)


async def groups_by_id(session: AsyncSession, *, account_id: str, group_ids: list[str]) -> dict[str, ModelGroup]:
    if not group_ids:
        return {}
    rows = await session.scalars(
        select(ModelGroup).where(ModelGroup.account_id == account_id, ModelGroup.id.in_(group_ids))
    )
    return {group.id: group for group in rows}


# --- identities ---------------------------------------------------------------------


async def get_identity(session: AsyncSession, *, identity_id: str) -> Identity | None:
    return await session.get(Identity, identity_id)


async def memberships_of(session: AsyncSession, *, identity_id: str) -> list[tuple[Account, str]]:
    """Every account the identity belongs to, with its role there."""
    rows = await session.execute(
        select(Account, Membership.role)
        .join(Membership, Membership.account_id == Account.id)
        .where(Membership.identity_id == identity_id)
        .order_by(Account.created_at, Account.id)
    )
    return [(account, role) for account, role in rows.all()]
