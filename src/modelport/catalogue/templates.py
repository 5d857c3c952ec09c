"""Model templates: the type, endpoint and parameter schemas that models made from
them are checked against (see `template_rules`). Knows no HTTP."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.catalogue import require_admin
from modelport.errors import Conflict, Forbidden, NotFound
from modelport.principal import Principal
from modelport.schemas.catalogue import Page
from modelport.schemas.groups import ModelTemplateCreate, ModelTemplateOut, ParameterSchema
from modelport.store import repo
from modelport.store.tables import ModelTemplate


class ModelTemplates:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, principal: Principal, body: ModelTemplateCreate) -> ModelTemplateOut:
        require_admin(principal)
        if body.account_id is not None and body.account_id != principal.account_id:
            raise Forbidden(f"account_id {body.account_id} is not the selected account {principal.account_id}")
        async with self._sessions() as session, session.begin():
            template = await repo.add_row(
                session,
                ModelTemplate(
                    account_id=principal.account_id,
                    name=body.name,
                    model_type=body.model_type,
                    endpoint_type=body.endpoint_type,
                    endpoint_protocol=body.endpoint_protocol,
                    vendor_configuration=body.vendor_configuration.model_dump(exclude_none=True),
                    model_creation_parameters_schema=_schema(body.model_creation_parameters_schema),
                    model_request_parameters_schema=_schema(body.model_request_parameters_schema),
                    created_by_user_id=principal.identity_id,
                    created_by_identity_type=principal.identity_type,
                ),
            )
            return ModelTemplateOut.of(template)

    async def get(self, principal: Principal, template_id: str) -> ModelTemplateOut:
        async with self._sessions() as session:
            return ModelTemplateOut.of(await self._template(session, principal, template_id))

    async def list(self, principal: Principal, *, page: int, limit: int) -> Page[ModelTemplateOut]:
        async with self._sessions() as session:
            rows, total = await repo.list_owned(
                session, ModelTemplate, account_id=principal.account_id, page=page, limit=limit
            )
        return Page(
            items=[ModelTemplateOut.of(row) for row in rows],
            current_page=page,
            items_per_page=limit,
            total_item_count=total,
        )

    async def delete(self, principal: Principal, template_id: str) -> None:
        """A template that models were made from is kept (409)."""
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            template = await self._template(session, principal, template_id)
            count = await repo.count_models_with(
                session, account_id=principal.account_id, model_template_id=template_id
            )
            if count:
                raise Conflict(f"model template {template_id} is used by {count} model(s)")
            await repo.delete_owned(session, template)

    async def _template(self, session: AsyncSession, principal: Principal, template_id: str) -> ModelTemplate:
        template = await repo.get_owned(session, ModelTemplate, account_id=principal.account_id, row_id=template_id)
        if template is None:
            raise NotFound(f"model template {template_id} not found")
        return template


def _schema(schema: ParameterSchema | None) -> dict[str, Any] | None:
    return None if schema is None else schema.model_dump()
