"""What a deployment is, decided once.

A deployment is served by one adapter, chosen from its model's vendor and, for LLM
Engine, from whether its `vendor_configuration` names a local GGUF file (then the
engine embedded in modelport serves it). Its settings are the model's
`model_creation_parameters` with the deployment's override applied; each vendor has a
typed settings model here (pydantic, unknown keys refused), checked when a model or a
deployment is created or changed, so a typo (`baseurl`) is a 422 naming the key at
registration instead of a silent fallback at the first call. The `Target` a request
carries is built from the checked settings in one place, `target_of`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from modelport.errors import field_errors
from modelport.schemas.json_value import JsonObject
from modelport.store.tables import Deployment, Model
from modelport.vendors.base import Target
from modelport.vendors.registry import EMBEDDED, adapter_for_vendor

# --- settings values ----------------------------------------------------------------------


def _templated(value: str) -> bool:
    # `{{ binding }}` placeholders are filled per request (SPEC 2, request parameters).
    return "{{" in value or "{%" in value


def _http_url(value: str) -> str:
    """An upstream address: http(s) with a host, so `localhost:8000/v1` (no scheme) is
    refused rather than read as a path. A placeholder may stand for the whole host."""
    if value.startswith("{{"):
        return value
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not (parts.netloc or _templated(value)):
        raise PydanticCustomError(
            "http_url", "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000/v1"
        )
    return value


BaseUrl = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_http_url)]
ModelName = Annotated[str, Field(min_length=1, max_length=500)]
Cost = Annotated[float, Field(ge=0)]


class _Settings(BaseModel):
    # Strict: "100" is not a number of tokens; a wrong type is refused, never coerced.
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=(), allow_inf_nan=False)


class CommonSettings(_Settings):
    """Keys every vendor understands."""

    # The vendor's own name for the model.
    model: ModelName | None = None
    base_url: BaseUrl | None = None
    # A credential: the name of an account secret (PUT /v4/secrets/{name}), or of a
    # server environment variable the operator allows.
    api_key_secret: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    api_key_env: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    headers: dict[str, str] | None = None
    extra_body: JsonObject | None = None
    drop_unsupported_params: bool | None = None
    input_cost_per_token: Cost | None = None
    output_cost_per_token: Cost | None = None
    # Names of other models of the same account, tried in order when this one fails.
    fallback_models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None

    # The keys this vendor cannot work without (checked on the merged settings).
    required: ClassVar[tuple[str, ...]] = ()

    def missing(self) -> list[str]:
        return [name for name in self.required if getattr(self, name) in (None, "")]


class OpenAISettings(CommonSettings):
    # Reasoning models (o1, o3, gpt-5...) take max_completion_tokens and no temperature;
    # known by name, or said here for a name modelport does not know.
    reasoning_model: bool | None = None
    required: ClassVar[tuple[str, ...]] = ("model",)


class OpenAICompatibleSettings(CommonSettings):
    """FIREWORKS_AI and OTHER: any server that speaks OpenAI's API, at its base_url."""

    required: ClassVar[tuple[str, ...]] = ("model", "base_url")


class AnthropicSettings(CommonSettings):
    # The model's own output limit: the default max_tokens (10,000) is capped at it.
    max_output_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    required: ClassVar[tuple[str, ...]] = ("model",)


class GoogleSettings(CommonSettings):
    required: ClassVar[tuple[str, ...]] = ("model",)


class CohereSettings(CommonSettings):
    base_url: BaseUrl | None = "https://api.cohere.com"
    required: ClassVar[tuple[str, ...]] = ("model",)


class LLMEngineSettings(CommonSettings):
    """An LLM Engine / vLLM server at base_url, or (with a checkpoint_path in the
    deployment's vendor_configuration) the engine embedded in modelport."""

    protocol: Literal["openai", "llmengine-v1"] = "openai"
    chat_template: Annotated[str, Field(max_length=100_000)] | None = None
    bos_token: Annotated[str, Field(max_length=100)] | None = None
    eos_token: Annotated[str, Field(max_length=100)] | None = None
    required: ClassVar[tuple[str, ...]] = ("model", "base_url")


SETTINGS_BY_VENDOR: dict[str, type[CommonSettings]] = {
    "OPENAI": OpenAISettings,
    "FIREWORKS_AI": OpenAICompatibleSettings,
    "OTHER": OpenAICompatibleSettings,
    "ANTHROPIC": AnthropicSettings,
    "GOOGLE": GoogleSettings,
    "COHERE": CohereSettings,
    "LLMENGINE": LLMEngineSettings,
}


# --- vendor_configuration ------------------------------------------------------------------

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


class LaunchConfiguration(_Settings):
    """The SDK's `LaunchDeploymentVendorConfiguration` (worker scaling; descriptive here)."""

    vendor: Literal["LAUNCH"]
    max_workers: Count | None = None
    min_workers: Count | None = None
    per_worker: Count | None = None


class LLMEngineConfiguration(_Settings):
    """The SDK's `LlmEngineDeploymentVendorConfiguration`. modelport acts on
    `checkpoint_path` (a GGUF file served by the embedded engine); the rest describe
    the deployment as LLM Engine would run it."""

    vendor: Literal["LLMENGINE"] = "LLMENGINE"
    checkpoint_path: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    base_model_name: Text | None = None
    model_name: Text | None = None
    cpus: Count | None = None
    gpu_type: GpuType | None = None
    gpus: Count | None = None
    high_priority: bool | None = None
    inference_framework_image_tag: Text | None = None
    max_workers: Count | None = None
    min_workers: Count | None = None
    memory: Text | None = None
    num_shards: Count | None = None
    per_worker: Count | None = None
    storage: Text | None = None


class _VendorConfiguration(BaseModel):
    configuration: Annotated[LaunchConfiguration | LLMEngineConfiguration, Field(discriminator="vendor")]

    @model_validator(mode="before")
    @classmethod
    def _default_vendor(cls, data: Any) -> Any:
        # The SDK reads a configuration without `vendor` as either shape; stored ones
        # always say which (LLM Engine, the one modelport serves, when left out).
        inner = data.get("configuration") if isinstance(data, dict) else None
        if isinstance(inner, dict) and "vendor" not in inner:
            return {"configuration": {**inner, "vendor": "LLMENGINE"}}
        return data


# --- checking ------------------------------------------------------------------------------


def _pydantic_errors(exc: ValidationError, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        location = [part for part in error["loc"] if part not in {"configuration", "LAUNCH", "LLMENGINE"}]
        message = "unknown key (not a setting of this vendor)" if error["type"] == "extra_forbidden" else error["msg"]
        if error["type"] == "union_tag_invalid":  # the discriminator itself is wrong
            location.append("vendor")
            message = "must be LAUNCH or LLMENGINE, the two vendor configurations the SDK reads"
        errors.append({"loc": [*prefix, *map(str, location)], "msg": message, "type": error["type"]})
    return errors


def served_vendors(has_adapter: Callable[[str], bool]) -> list[str]:
    return sorted(vendor for vendor in SETTINGS_BY_VENDOR if has_adapter(adapter_for_vendor(vendor) or ""))


def check_vendor(model_vendor: str | None, has_adapter: Callable[[str], bool], *, field: str = "model_vendor") -> None:
    """A vendor modelport cannot serve is refused when the model is registered, not
    stored to fail at every call. Registering an adapter for it lifts the refusal."""
    if model_vendor is None:
        return
    adapter = adapter_for_vendor(model_vendor)
    if model_vendor not in SETTINGS_BY_VENDOR or adapter is None or not has_adapter(adapter):
        served = ", ".join(served_vendors(has_adapter))
        raise field_errors(
            [
                {
                    "loc": ["body", field],
                    "msg": f"modelport has no adapter for vendor {model_vendor}; it serves {served}",
                    "type": "vendor_not_served",
                }
            ]
        )


def vendor_settings(
    model_vendor: str | None,
    parameters: Mapping[str, Any] | None,
    *,
    location: tuple[str, ...] = ("body", "model_creation_parameters"),
) -> CommonSettings:
    """The typed settings of `parameters` for this vendor (422 naming each bad key)."""
    schema = SETTINGS_BY_VENDOR.get(model_vendor or "", CommonSettings)
    try:
        return schema.model_validate(dict(parameters or {}))
    except ValidationError as exc:
        raise field_errors(_pydantic_errors(exc, location)) from None


def check_configuration(model_vendor: str | None, configuration: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A deployment's `vendor_configuration` in one of the two shapes the SDK can read
    back (`vendor` LAUNCH or LLMENGINE), as it is to be stored; 422 otherwise."""
    if configuration is None:
        return None
    location = ("body", "vendor_configuration")
    try:
        checked = _VendorConfiguration.model_validate({"configuration": dict(configuration)}).configuration
    except ValidationError as exc:
        raise field_errors(_pydantic_errors(exc, location)) from None
    if isinstance(checked, LLMEngineConfiguration) and checked.checkpoint_path and model_vendor != "LLMENGINE":
        raise field_errors(
            [
                {
                    "loc": [*location, "checkpoint_path"],
                    "msg": f"a local checkpoint is served by the embedded LLM Engine; this model's vendor is "
                    f"{model_vendor}",
                    "type": "checkpoint_for_llmengine_only",
                }
            ]
        )
    return checked.model_dump(exclude_none=True)


def embedded_checkpoint(model_vendor: str | None, configuration: Mapping[str, Any] | None) -> str | None:
    """The one rule for "served by the embedded engine": an LLM Engine model whose
    deployment names a local GGUF file. Returns that file, else None."""
    checkpoint = (configuration or {}).get("checkpoint_path")
    return str(checkpoint) if model_vendor == "LLMENGINE" and checkpoint else None


def merged_parameters(model: Model, deployment_parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The model's settings with a deployment's override applied (key by key)."""
    return {**(model.model_creation_parameters or {}), **(deployment_parameters or {})}


def check_deployment(
    model: Model,
    *,
    parameters: Mapping[str, Any] | None,
    configuration: Mapping[str, Any] | None,
) -> CommonSettings:
    """Everything a deployment must satisfy to be stored: its override's keys, the
    merged settings complete for its vendor (a self-hosted server needs its base_url;
    the embedded engine needs nothing)."""
    vendor_settings(model.model_vendor, parameters)
    settings = vendor_settings(model.model_vendor, merged_parameters(model, parameters))
    missing = [] if embedded_checkpoint(model.model_vendor, configuration) else settings.missing()
    if missing:
        raise field_errors(
            [
                {
                    "loc": ["body", "model_creation_parameters", name],
                    "msg": f"required by vendor {model.model_vendor} (in the model's or this deployment's settings)",
                    "type": "missing",
                }
                for name in missing
            ]
        )
    return settings


def check_model(model_vendor: str | None, parameters: Mapping[str, Any] | None) -> CommonSettings:
    """A model's own settings: known keys of its vendor, of the right types. Whether
    they are complete is checked where it is known, on each deployment (which may
    override keys, and for LLM Engine decides whether a server is needed at all)."""
    return vendor_settings(model_vendor, parameters)


# --- the request's target ------------------------------------------------------------------


def adapter_of(model_vendor: str | None, configuration: Mapping[str, Any] | None) -> str:
    if embedded_checkpoint(model_vendor, configuration):
        return EMBEDDED
    return adapter_for_vendor(model_vendor or "OTHER") or (model_vendor or "OTHER")


def target_of(deployment: Deployment, model: Model) -> Target:
    """Where a deployment's requests go. Settings stored before they were checked are
    read leniently (dropped keys would change behaviour); new ones are all checked."""
    parameters = merged_parameters(model, deployment.model_creation_parameters)
    try:
        settings = SETTINGS_BY_VENDOR.get(model.model_vendor or "", CommonSettings).model_validate(parameters)
        parameters = {**parameters, **settings.model_dump(exclude_none=True)}
    except ValidationError:
        pass
    details = (model.base_model_metadata or {}).get("modelDetails") or {}
    window = details.get("token_context_window")
    configuration = dict(deployment.vendor_configuration or {})
    return Target(
        deployment_id=deployment.id,
        model_type=model.model_type,
        model_vendor=model.model_vendor or "OTHER",
        parameters=parameters,
        vendor_configuration=configuration,
        context_window=int(window) if window else None,
        adapter=adapter_of(model.model_vendor, configuration),
    )


__all__ = [
    "CommonSettings",
    "LLMEngineConfiguration",
    "LaunchConfiguration",
    "adapter_of",
    "check_configuration",
    "check_deployment",
    "check_model",
    "check_vendor",
    "embedded_checkpoint",
    "target_of",
    "vendor_settings",
]
