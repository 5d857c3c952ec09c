"""Model groups: models gathered under one name (a model's `model_group_id`), with
their usage summed per group. Knows no HTTP."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.catalogue import require_admin
from modelport.catalogue.usage import usage_statistics
from modelport.errors import Conflict, Forbidden, NotFound
from modelport.principal import Principal
from modelport.schemas.catalogue import ModelInstanceOut, ModelUsage, Page
from modelport.schemas.groups import ModelGroupCreate, ModelGroupOut, ModelGroupUpdate
from modelport.store import repo
from modelport.store.tables import ModelGroup


class ModelGroups:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, principal: Principal, body: ModelGroupCreate) -> ModelGroupOut:
        require_admin(principal)
        if body.account_id is not None and body.account_id != principal.account_id:
            raise Forbidden(f"account_id {body.account_id} is not the selected account {principal.account_id}")
        async with self._sessions() as session, session.begin():
            group = await repo.add_row(
                session,
                ModelGroup(
                    account_id=principal.account_id,
                    name=body.name,
                    description=body.description,
                    created_by_user_id=principal.identity_id,
                    created_by_identity_type=principal.identity_type,
                ),
            )
            return ModelGroupOut.of(group)

    async def get(self, principal: Principal, group_id: str) -> ModelGroupOut:
        async with self._sessions() as session:
            return ModelGroupOut.of(await self._group(session, principal, group_id))

    async def list(self, principal: Principal, *, page: int, limit: int) -> Page[ModelGroupOut]:
        async with self._sessions() as session:
            rows, total = await repo.list_owned(
                session, ModelGroup, account_id=principal.account_id, page=page, limit=limit
            )
        return Page(
            items=[ModelGroupOut.of(row) for row in rows],
            current_page=page,
            items_per_page=limit,
            total_item_count=total,
        )

    async def update(self, principal: Principal, group_id: str, body: ModelGroupUpdate) -> ModelGroupOut:
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            group = await self._group(session, principal, group_id)
            for name, value in body.model_dump(exclude_unset=True).items():
                setattr(group, name, value)
            await session.flush()
            return ModelGroupOut.of(group)

    async def delete(self, principal: Principal, group_id: str) -> None:
        """A group that still has models is kept (409): move them out first."""
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            group = await self._group(session, principal, group_id)
            count = await repo.count_models_with(session, account_id=principal.account_id, model_group_id=group_id)
            if count:
                raise Conflict(f"model group {group_id} still has {count} model(s); move them out first")
            await repo.delete_owned(session, group)

    async def add_model(self, principal: Principal, group_id: str, model_id: str) -> ModelInstanceOut:
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            await self._group(session, principal, group_id)
            model = await repo.get_model(session, account_id=principal.account_id, model_id=model_id)
            if model is None:
                raise NotFound(f"model {model_id} not found")
            model.model_group_id = group_id
            await session.flush()
            count = await repo.count_deployments(session, model_id=model_id)
            return ModelInstanceOut.of(model, deployment_count=count)

    async def usage(
        self, principal: Principal, group_id: str, *, start: datetime, end: datetime, chunks: int
    ) -> ModelUsage:
        """Token usage of every deployment of the group's models."""
        async with self._sessions() as session:
            await self._group(session, principal, group_id)
            deployment_ids = await repo.deployment_ids_of_models(
                session, account_id=principal.account_id, model_group_id=group_id
            )
        return await usage_statistics(
            self._sessions,
            account_id=principal.account_id,
            deployment_id=deployment_ids,
            start=start,
            end=end,
            chunks=chunks,
        )

    async def _group(self, session: AsyncSession, principal: Principal, group_id: str) -> ModelGroup:
        group = await repo.get_owned(session, ModelGroup, account_id=principal.account_id, row_id=group_id)
        if group is None:
            raise NotFound(f"model group {group_id} not found")
        return group


async def usage_of_model_name(
    sessions: async_sessionmaker[AsyncSession],
    principal: Principal,
    model_name: str,
    *,
    start: datetime,
    end: datetime,
    chunks: int,
) -> ModelUsage:
    """Token usage of every deployment of the account's model with this name (SDK
    `models.usage_statistics(model_name)`)."""
    async with sessions() as session:
        if await repo.model_named(session, account_id=principal.account_id, name=model_name) is None:
            raise NotFound(f"model {model_name!r} not found")
        deployment_ids = await repo.deployment_ids_of_models(
            session, account_id=principal.account_id, model_name=model_name
        )
    return await usage_statistics(
        sessions, account_id=principal.account_id, deployment_id=deployment_ids, start=start, end=end, chunks=chunks
    )
