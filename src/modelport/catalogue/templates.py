"""Model templates: the type, endpoint and parameter schemas that models made from
them are checked against (see `template_rules`). Knows no HTTP."""

from __future__ import annotations

from typing import Any

from modelport.catalogue.owned import OwnedRows
from modelport.principal import Principal
from modelport.schemas.groups import ModelTemplateCreate, ModelTemplateOut, ParameterSchema
from modelport.store.tables import ModelTemplate


class ModelTemplates(OwnedRows[ModelTemplate, ModelTemplateOut]):
    table = ModelTemplate
    shown_as = ModelTemplateOut
    noun = "model template"
    link = "model_template_id"

    async def create(self, principal: Principal, body: ModelTemplateCreate) -> ModelTemplateOut:
        return await self._create(
            principal,
            body.account_id,
            name=body.name,
            model_type=body.model_type,
            endpoint_type=body.endpoint_type,
            endpoint_protocol=body.endpoint_protocol,
            vendor_configuration=body.vendor_configuration.model_dump(exclude_none=True),
            model_creation_parameters_schema=_schema(body.model_creation_parameters_schema),
            model_request_parameters_schema=_schema(body.model_request_parameters_schema),
        )


def _schema(schema: ParameterSchema | None) -> dict[str, Any] | None:
    return None if schema is None else schema.model_dump()
