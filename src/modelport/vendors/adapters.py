"""Vendor -> adapter. Built-in adapters register here like any plugin would."""

from __future__ import annotations

from modelport.errors import InvalidRequest
from modelport.vendors.base import Target, Vendor

# The adapter of LLM Engine deployments with a local GGUF file (see modelport.catalogue.deployment_settings).
EMBEDDED = "EMBEDDED"
# Any server that speaks OpenAI's API at a base_url the model names.
OPENAI_COMPATIBLE = "OPENAI_COMPATIBLE"
COHERE = "cohere"

# The adapter that serves each vendor the SDK names. A vendor missing here, or whose
# adapter is not registered on this server, is refused when a model is registered.
ADAPTER_OF_VENDOR: dict[str, str] = {
    "OPENAI": "OPENAI",
    "FIREWORKS_AI": OPENAI_COMPATIBLE,
    "OTHER": OPENAI_COMPATIBLE,
    "ANTHROPIC": "ANTHROPIC",
    "GOOGLE": "GOOGLE",
    "LLMENGINE": "LLMENGINE",
    # Scale Launch is LLM Engine's older name: its deployments speak LLM Engine's wire.
    "LAUNCH": "LLMENGINE",
    "COHERE": COHERE,
    "BEDROCK": "BEDROCK",
    "VERTEX_AI": "VERTEX_AI",
}


def adapter_for_vendor(model_vendor: str) -> str | None:
    return ADAPTER_OF_VENDOR.get(model_vendor)


class VendorRegistry:
    def __init__(self) -> None:
        self._vendors: dict[str, Vendor] = {}

    def register(self, key: str, vendor: Vendor) -> None:
        self._vendors[key] = vendor

    def has(self, key: str) -> bool:
        return key in self._vendors

    def for_target(self, target: Target) -> Vendor:
        vendor = self._vendors.get(target.adapter)
        if vendor is None:
            raise InvalidRequest(
                f"deployment {target.deployment_id} has vendor {target.model_vendor}, which this "
                "modelport server has no adapter for"
            )
        return vendor

    async def aclose(self) -> None:
        for vendor in self._vendors.values():
            await vendor.aclose()
