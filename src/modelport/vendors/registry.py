"""Vendor name -> adapter. Built-in adapters register here like any plugin would."""

from __future__ import annotations

from modelport.errors import InvalidRequest
from modelport.vendors.base import Target, Vendor

EMBEDDED = "EMBEDDED"


def vendor_key(target: Target) -> str:
    """Which adapter serves a target: an LLM Engine deployment with a local GGUF file
    runs in the embedded engine; everything else goes to its vendor's adapter."""
    if target.model_vendor == "LLMENGINE" and target.vendor_configuration.get("checkpoint_path"):
        return EMBEDDED
    return target.model_vendor


class VendorRegistry:
    def __init__(self) -> None:
        self._vendors: dict[str, Vendor] = {}

    def register(self, key: str, vendor: Vendor) -> None:
        self._vendors[key] = vendor

    def for_target(self, target: Target) -> Vendor:
        key = vendor_key(target)
        vendor = self._vendors.get(key)
        if vendor is None:
            raise InvalidRequest(
                f"deployment {target.deployment_id} has vendor {target.model_vendor}, which this "
                "modelport server has no adapter for"
            )
        return vendor

    async def aclose(self) -> None:
        for vendor in self._vendors.values():
            await vendor.aclose()
