"""Wire models of model groups, model templates and `/user-info`, shaped as the SDK's
types (`ModelGroup`, `ModelTemplate`, `UserInfo`) expect."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from modelport.principal import IdentityType, Role
from modelport.schemas.catalogue import ModelType, Name, OwnedOut, ShortText, _In, _no_default, _not_null, _Out

EndpointType = Literal["SYNC", "ASYNC", "STREAMING", "BATCH"]
GpuType = Literal[
    "nvidia-tesla-t4",
    "nvidia-ampere-a10",
    "nvidia-ampere-a100",
    "nvidia-ampere-a100e",
    "nvidia-hopper-h100",
    "nvidia-hopper-h100-1g20gb",
    "nvidia-hopper-h100-3g40gb",
]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
Text = Annotated[str, Field(max_length=2000)]

# --- model groups ----------------------------------------------------------------------------


class ModelGroupCreate(_In):
    name: Name
    description: str | None = None
    account_id: str | None = None


class ModelGroupUpdate(_In):
    name: Name | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)
    description: str | None = None

    _refuse_null = field_validator("name")(_not_null)


class ModelGroupOut(OwnedOut):
    model_config = ConfigDict(from_attributes=True)  # read from its row

    name: str
    description: str | None = None


# --- model templates -------------------------------------------------------------------------


class ParameterField(_In):
    """One field of a template's parameter schema (SDK `ParameterSchemaField`)."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: Literal["str", "int", "float", "bool"]
    description: str = ""
    required: bool = False


class ParameterSchema(_In):
    parameters: list[ParameterField] = Field(default_factory=list, max_length=200)


class _Bundle(_In):
    """An image to run and how (the SDK's bundle configs share these)."""

    image: Text
    registry: Text
    tag: Text
    command: list[Text] | None = None
    env: dict[str, Text] | None = None


class BundleConfig(_Bundle):
    healthcheck_route: Text | None = None
    predict_route: Text | None = None
    readiness_initial_delay_seconds: Count | None = None
    streaming_command: list[Text] | None = None
    streaming_predict_route: Text | None = None


class EndpointConfig(_In):
    cpus: Count | None = None
    endpoint_type: EndpointType | None = None
    gpu_type: GpuType | None = None
    gpus: Count | None = None
    high_priority: bool | None = None
    max_workers: Count | None = None
    memory: Text | None = None
    min_workers: Count | None = None
    per_worker: Count | None = None
    storage: Text | None = None


class FineTuningResources(_In):
    cpus: Count | None = None
    gpu_type: GpuType | None = None
    gpus: Count | None = None
    memory: Text | None = None
    storage: Text | None = None


class FineTuningJobBundleConfig(_Bundle):
    mount_location: Text | None = None
    resources: FineTuningResources | None = None
    training_dataset_schema_type: Literal["GENERATION", "RERANKING_QUESTIONS"] | None = None


class TemplateVendorConfiguration(_In):
    """How Launch would run the template's models (the SDK's shape, stored as given)."""

    bundle_config: BundleConfig
    endpoint_config: EndpointConfig | None = None
    fine_tuning_job_bundle_config: FineTuningJobBundleConfig | None = None
    vendor: Literal["LAUNCH"] = "LAUNCH"


class ModelTemplateCreate(_In):
    name: Name
    model_type: ModelType
    endpoint_type: EndpointType
    vendor_configuration: TemplateVendorConfiguration
    endpoint_protocol: Literal["SGP", "COHERE", "VLLM"] | None = None
    model_creation_parameters_schema: ParameterSchema | None = None
    model_request_parameters_schema: ParameterSchema | None = None
    account_id: ShortText | None = None


class ModelTemplateOut(OwnedOut):
    model_config = ConfigDict(from_attributes=True)  # read from its row

    endpoint_type: str
    model_type: str
    name: str
    vendor_configuration: dict[str, object]
    endpoint_protocol: str | None = None
    model_creation_parameters_schema: dict[str, object] | None = None
    model_request_parameters_schema: dict[str, object] | None = None


# --- /user-info -----------------------------------------------------------------------------


class AccessProfileAccount(_Out):
    id: str
    name: str
    status: str = "active"


class AccessProfileIdentity(_Out):
    id: str
    type: IdentityType
    object: Literal["identity"] = "identity"


class AccessProfile(_Out):
    id: str
    account: AccessProfileAccount
    identity: AccessProfileIdentity
    role: Role


class UserInfo(_Out):
    id: str
    email: str
    access_profiles: list[AccessProfile]
    first_name: str | None = None
    is_deployment_admin: bool | None = None
    is_organization_admin: bool | None = None
