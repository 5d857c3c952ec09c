"""Models and deployments as the API shows them (the SDK's `ModelInstance` and
`ModelDeployment`): stored settings redacted, a failed load's reason in the metadata."""

from __future__ import annotations

from typing import Any

from modelport.schemas.catalogue import MULTI_TURN_MODEL_TYPE, DeploymentOut, ModelInstanceOut, OwnedOut, redact
from modelport.store.tables import Deployment, Model


def model_out(
    model: Model,
    *,
    deployment_count: int,
    deployments: list[Deployment] | None = None,
    model_group: dict[str, Any] | None = None,
) -> ModelInstanceOut:
    return ModelInstanceOut(
        **_owned(model),
        deployment_count=deployment_count,
        model_type=model.model_type,
        name=model.name,
        request_schema=model.request_schema or {},
        response_schema={},
        supports_multi_turn=model.model_type == MULTI_TURN_MODEL_TYPE,
        base_model_id=model.base_model_id,
        base_model_metadata=model.base_model_metadata,
        description=model.description,
        display_name=model.display_name,
        model_card=model.model_card,
        model_creation_parameters=redact(model.model_creation_parameters),
        model_group_id=model.model_group_id,
        model_template_id=model.model_template_id,
        model_vendor=model.model_vendor,
        training_data_card=model.training_data_card,
        deployments=None if deployments is None else [deployment_out(row) for row in deployments],
        model_group=model_group,
    )


def deployment_out(deployment: Deployment) -> DeploymentOut:
    metadata = dict(deployment.deployment_metadata or {})
    if deployment.status_reason:
        metadata.setdefault("status_reason", deployment.status_reason)
    return DeploymentOut(
        **_owned(deployment),
        name=deployment.name,
        status=deployment.status,
        deployment_metadata=metadata or None,
        model_creation_parameters=redact(deployment.model_creation_parameters),
        model_endpoint_id=deployment.model_endpoint_id,
        model_instance_id=deployment.model_id,
        vendor_configuration=deployment.vendor_configuration,
    )


def _owned(row: Model | Deployment) -> dict[str, Any]:
    return {name: getattr(row, name) for name in OwnedOut.model_fields}
