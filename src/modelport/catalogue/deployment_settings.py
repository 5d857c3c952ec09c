"""What a deployment is, decided once.

A deployment is served by one adapter, chosen from its model's vendor and, for LLM
Engine, from whether its `vendor_configuration` names a local GGUF file (then the
engine embedded in modelport serves it). Its settings are the model's
`model_creation_parameters` with the deployment's override applied; each vendor has a
typed settings model (`vendors/settings.py`, unknown keys refused), checked here when a
model or a deployment is created or changed, so a typo (`baseurl`) is a 422 naming the key at
registration instead of a silent fallback at the first call. The `Target` a request
carries is built from the checked settings in one place, `target_of`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from modelport.errors import InvalidRequest, field_errors
from modelport.store.tables import Deployment, Model
from modelport.vendors.adapters import EMBEDDED, adapter_for_vendor
from modelport.vendors.base import Target
from modelport.vendors.settings import (
    SETTINGS_BY_VENDOR,
    CommonSettings,
    LaunchConfiguration,
    LLMEngineConfiguration,
)


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
    """Where a deployment's requests go, from its checked settings."""
    configuration = dict(deployment.vendor_configuration or {})
    details = (model.base_model_metadata or {}).get("modelDetails") or {}
    window = details.get("token_context_window")
    settings = _stored_settings(
        deployment.id, model.model_vendor, merged_parameters(model, deployment.model_creation_parameters)
    )
    return Target(
        deployment_id=deployment.id,
        account_id=deployment.account_id,
        model_type=model.model_type,
        model_name=model.name,
        model_vendor=model.model_vendor or "OTHER",
        parameters=settings.model_dump(exclude_none=True),
        vendor_configuration=configuration,
        context_window=int(window) if window else None,
        adapter=adapter_of(model.model_vendor, configuration),
        checkpoint=embedded_checkpoint(model.model_vendor, configuration),
        settings=settings,
    )


def with_parameters(target: Target, parameters: Mapping[str, Any]) -> Target:
    """The target with its settings re-read after request bindings filled placeholders."""
    settings = _stored_settings(target.deployment_id, target.model_vendor, parameters)
    return replace(target, parameters=settings.model_dump(exclude_none=True), settings=settings)


def _stored_settings(deployment_id: str, model_vendor: str | None, parameters: Mapping[str, Any]) -> CommonSettings:
    """Stored settings, read for a call. Keys stored before settings were checked and
    that no vendor reads are left out (they never did anything); a value of the wrong
    type is a 400 asking for the settings to be corrected."""
    schema = SETTINGS_BY_VENDOR.get(model_vendor or "", CommonSettings)
    try:
        return schema.model_validate({name: value for name, value in parameters.items() if name in schema.model_fields})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise InvalidRequest(
            f"deployment {deployment_id} has settings that are no longer valid ({problems}); "
            "correct them with PATCH on the model or the deployment"
        ) from None


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
    "with_parameters",
]
