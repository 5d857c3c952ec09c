"""The catalogue's rows: models, deployments, model groups and templates.

The store's modules are the only place that speaks SQL (this one, `access`, `usage`,
`secrets`). Every read of an account's resource takes the account id, so a resource
of another account is simply not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Text, cast, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from modelport.principal import ModelAllowList
from modelport.schemas.catalogue import MULTI_TURN_MODEL_TYPE, DeploymentStatus
from modelport.store.tables import Deployment, Model, ModelGroup, ModelTemplate

OwnedT = TypeVar("OwnedT", ModelGroup, ModelTemplate)


# --- a key's allow-list (principal.ModelAllowList), as SQL ----------------------------------


def _model_listed(allow: ModelAllowList) -> ColumnElement[bool]:
    """The model is in the list by name or `vendor/name` (vendor lower-case, OTHER when unset)."""
    vendor_name = func.lower(func.coalesce(Model.model_vendor, literal("OTHER"))).concat("/").concat(Model.name)
    return or_(Model.name.in_(allow.models), vendor_name.in_(allow.models))


def allowed_models(allow: ModelAllowList) -> ColumnElement[bool]:
    """Models the key may call: listed ones, and those with a listed deployment."""
    with_listed_deployment = select(Deployment.model_id).where(Deployment.id.in_(allow.deployments))
    return or_(_model_listed(allow), Model.id.in_(with_listed_deployment))


def allowed_deployments(allow: ModelAllowList) -> ColumnElement[bool]:
    """Deployments the key may use: listed ones, and every deployment of a listed model."""
    of_listed_model = select(Model.id).where(_model_listed(allow))
    return or_(Deployment.id.in_(allow.deployments), Deployment.model_id.in_(of_listed_model))


async def create_model(session: AsyncSession, *, account_id: str, **fields: Any) -> Model:
    model = Model(account_id=account_id, **fields)
    session.add(model)
    await session.flush()
    return model


async def get_model(
    session: AsyncSession, *, account_id: str, model_id: str, allow: ModelAllowList | None = None
) -> Model | None:
    where = [Model.id == model_id, Model.account_id == account_id]
    if allow is not None:
        where.append(allowed_models(allow))
    model: Model | None = await session.scalar(select(Model).where(*where))
    return model


async def model_named(
    session: AsyncSession, *, account_id: str, name: str, allow: ModelAllowList | None = None
) -> Model | None:
    where = [Model.account_id == account_id, Model.name == name]
    if allow is not None:
        where.append(allowed_models(allow))
    model: Model | None = await session.scalar(select(Model).where(*where).limit(1))
    return model


async def deployment_counts(
    session: AsyncSession, *, model_ids: list[str], allow: ModelAllowList | None = None
) -> dict[str, int]:
    if not model_ids:
        return {}
    where: list[ColumnElement[bool]] = [Deployment.model_id.in_(model_ids)]
    if allow is not None:
        where.append(allowed_deployments(allow))
    rows = await session.execute(select(Deployment.model_id, func.count()).where(*where).group_by(Deployment.model_id))
    return {model_id: int(count) for model_id, count in rows.all()}


async def create_deployment(session: AsyncSession, *, account_id: str, model_id: str, **fields: Any) -> Deployment:
    deployment = Deployment(account_id=account_id, model_id=model_id, **fields)
    session.add(deployment)
    await session.flush()
    return deployment


async def get_deployment(
    session: AsyncSession, *, account_id: str, deployment_id: str, allow: ModelAllowList | None = None
) -> Deployment | None:
    where = [Deployment.id == deployment_id, Deployment.account_id == account_id]
    if allow is not None:
        where.append(allowed_deployments(allow))
    deployment: Deployment | None = await session.scalar(select(Deployment).where(*where))
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
    allow: ModelAllowList | None = None,
) -> tuple[list[Deployment], int]:
    where = [Deployment.account_id == account_id]
    if model_id is not None:
        where.append(Deployment.model_id == model_id)
    if allow is not None:
        where.append(allowed_deployments(allow))
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
    session: AsyncSession, statuses: tuple[DeploymentStatus, ...] = tuple(DeploymentStatus)
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
    session: AsyncSession, *, deployment_id: str, status: DeploymentStatus, reason: str | None = None
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
        # Sorted by their JSON text, by a count, by the group's name, by what they are derived from:
        "base_model_metadata", "model_creation_parameters", "request_schema", "deployment_count", "model_group",
        "supports_multi_turn",
        # Every model's is {} (modelport keeps no response schemas): accepted, a tie left to the id.
        "response_schema",
    }
)  # fmt: skip
# The SDK's `deployments:asc` is not here: a list of deployments has no order; the 422
# names `deployment_count`, which sorts by how many there are.
DEPLOYMENT_SORT_COLUMNS = frozenset(
    {
        "model_endpoint_id", "status", "id", "created_at", "account_id", "created_by_user_id",
        "created_by_identity_type", "name", "model_instance_id",
        "model_creation_parameters", "vendor_configuration", "deployment_metadata",
    }
)  # fmt: skip
_JSON_COLUMNS = frozenset({"base_model_metadata", "model_creation_parameters", "request_schema",
                           "vendor_configuration", "deployment_metadata"})  # fmt: skip


def _sort_key(table: Any, name: str) -> Any:
    """What `sort_by=name` orders by: a column, or what the wire field is made of."""
    if name in _JSON_COLUMNS:
        return cast(getattr(table, name), Text)  # JSON by its text: the same on SQLite and PostgreSQL
    if table is Model and name == "deployment_count":
        return select(func.count()).where(Deployment.model_id == Model.id).scalar_subquery()
    if table is Model and name == "model_group":
        return select(ModelGroup.name).where(ModelGroup.id == Model.model_group_id).scalar_subquery()
    if table is Model and name == "supports_multi_turn":
        return Model.model_type == MULTI_TURN_MODEL_TYPE
    if table is Deployment and name == "model_instance_id":
        return Deployment.model_id
    return getattr(table, name)


def _order(table: Any, sort_by: list[tuple[str, bool]]) -> list[Any]:
    """ORDER BY for (column, descending) pairs, always ending on the id for a stable order."""
    columns = [(_sort_key(table, name), descending) for name, descending in sort_by if name != "response_schema"]
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
    allow: ModelAllowList | None = None,
) -> tuple[list[Model], int]:
    where = [Model.account_id == account_id]
    if allow is not None:
        where.append(allowed_models(allow))
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


async def delete_row(session: AsyncSession, row: Model | Deployment | ModelGroup | ModelTemplate) -> None:
    await session.delete(row)
    await session.flush()


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
        .where(
            Deployment.account_id == account_id,
            Deployment.model_id == model_id,
            Deployment.status == DeploymentStatus.READY,
        )
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
    session: AsyncSession,
    *,
    account_id: str,
    model_name: str | None = None,
    model_group_id: str | None = None,
    allow: ModelAllowList | None = None,
) -> list[str]:
    """The deployments of the account's models with this name, or in this group (those a
    key's `allow` list lets it use, when given)."""
    where = [Model.account_id == account_id]
    if allow is not None:
        where.append(allowed_deployments(allow))
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
