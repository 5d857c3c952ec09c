"""A model's links to its group and its template: checked when a model is created or
changed (both must be the account's; a model made from a template must fit it), and
its group shown with `view=ModelGroup`."""

from __future__ import annotations

from datetime import UTC
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from modelport.catalogue.template_rules import check_against_template
from modelport.errors import field_error
from modelport.principal import Principal
from modelport.store import repo
from modelport.store.tables import Model, ModelGroup, ModelTemplate


async def groups_of(session: AsyncSession, principal: Principal, models: list[Model]) -> dict[str, dict[str, Any]]:
    """The groups of these models, by id, as the SDK's `ModelGroup` (view=ModelGroup)."""
    ids = sorted({model.model_group_id for model in models if model.model_group_id})
    found = await repo.groups_by_id(session, account_id=principal.account_id, group_ids=ids)
    return {
        group_id: {
            "id": group.id,
            "account_id": group.account_id,
            "created_at": group.created_at if group.created_at.tzinfo else group.created_at.replace(tzinfo=UTC),
            "created_by_identity_type": group.created_by_identity_type,
            "created_by_user_id": group.created_by_user_id,
            "name": group.name,
            "description": group.description,
        }
        for group_id, group in found.items()
    }


class Linked(Protocol):
    """A model to be, or a changed one: what its links are checked on."""

    @property
    def model_type(self) -> str: ...
    @property
    def model_group_id(self) -> str | None: ...
    @property
    def model_template_id(self) -> str | None: ...
    @property
    def model_creation_parameters(self) -> dict[str, Any] | None: ...


async def check_links(
    session: AsyncSession, account_id: str, model: Linked, request_schema: dict[str, Any]
) -> dict[str, Any]:
    """A model's group and template must be the account's; a model made from a
    template must fit it. Returns the request schema the model is to have."""
    model_group_id, model_template_id = model.model_group_id, model.model_template_id
    if model_group_id is not None and (
        await repo.get_owned(session, ModelGroup, account_id=account_id, row_id=model_group_id) is None
    ):
        raise field_error(
            ["body", "model_group_id"], f"no model group {model_group_id} in account {account_id}", "not_found"
        )
    if model_template_id is None:
        return request_schema
    template = await repo.get_owned(session, ModelTemplate, account_id=account_id, row_id=model_template_id)
    if template is None:
        raise field_error(
            ["body", "model_template_id"], f"no model template {model_template_id} in account {account_id}", "not_found"
        )
    return check_against_template(
        template, model_type=model.model_type, parameters=model.model_creation_parameters, request_schema=request_schema
    )
