"""Model groups: models gathered under one name (a model's `model_group_id`), with
their usage summed per group. Knows no HTTP."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.access import require_admin
from modelport.catalogue.models import find_model
from modelport.catalogue.owned import OwnedRows
from modelport.catalogue.usage import UsageStatistics
from modelport.catalogue.views import model_out
from modelport.principal import Principal
from modelport.schemas.catalogue import ModelInstanceOut, ModelUsage
from modelport.schemas.groups import ModelGroupCreate, ModelGroupOut, ModelGroupUpdate
from modelport.store import repo
from modelport.store.tables import ModelGroup


class ModelGroups(OwnedRows[ModelGroup, ModelGroupOut]):
    table = ModelGroup
    shown_as = ModelGroupOut
    noun = "model group"
    link = "model_group_id"

    def __init__(self, sessions: async_sessionmaker[AsyncSession], statistics: UsageStatistics) -> None:
        super().__init__(sessions)
        self._statistics = statistics

    async def create(self, principal: Principal, body: ModelGroupCreate) -> ModelGroupOut:
        return await self._create(principal, body.account_id, name=body.name, description=body.description)

    async def update(self, principal: Principal, group_id: str, body: ModelGroupUpdate) -> ModelGroupOut:
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            group = await self._row(session, principal, group_id)
            for name, value in body.model_dump(exclude_unset=True).items():
                setattr(group, name, value)
            await session.flush()
            return ModelGroupOut.model_validate(group)

    async def add_model(self, principal: Principal, group_id: str, model_id: str) -> ModelInstanceOut:
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            await self._row(session, principal, group_id)
            model = await find_model(session, principal, model_id)
            model.model_group_id = group_id
            await session.flush()
            count = await repo.count_deployments(session, model_id=model_id)
            return model_out(model, deployment_count=count)

    async def usage(
        self, principal: Principal, group_id: str, *, start: datetime, end: datetime, chunks: int
    ) -> ModelUsage:
        """Token usage of every deployment of the group's models (of those the caller's
        key may use: the others' usage is not its to see, SPEC 10)."""
        async with self._sessions() as session:
            await self._row(session, principal, group_id)
            deployment_ids = await repo.deployment_ids_of_models(
                session, account_id=principal.account_id, model_group_id=group_id, allow=principal.model_allow
            )
        return await self._statistics.of(principal, deployment_ids, start=start, end=end, chunks=chunks)

    def _in_use(self, row_id: str, count: int) -> str:
        return f"model group {row_id} still has {count} model(s); move them out first"
