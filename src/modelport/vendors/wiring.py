"""The vendors modelport calls over HTTP, registered with one pooled client each."""

from __future__ import annotations

import httpx

from modelport.config import Settings
from modelport.vendors import openai
from modelport.vendors.adapters import COHERE, OPENAI_COMPATIBLE, VendorRegistry
from modelport.vendors.anthropic import AnthropicVendor
from modelport.vendors.bedrock import BedrockVendor
from modelport.vendors.bounded import AnswerBounds
from modelport.vendors.client import UpstreamClient
from modelport.vendors.cohere import CohereVendor
from modelport.vendors.google import GoogleVendor
from modelport.vendors.llmengine import LLMEngineVendor
from modelport.vendors.llmengine_v1 import LLMEngineV1
from modelport.vendors.openai import OpenAICompatible
from modelport.vendors.transport import AiohttpTransport
from modelport.vendors.upstream import RetryPolicy
from modelport.vendors.vertex import VertexVendor
from modelport.vendors.wire import Timeouts, Transport


def register_upstream_vendors(
    vendors: VendorRegistry, settings: Settings, transport: Transport | httpx.AsyncBaseTransport | None
) -> None:
    """One pooled HTTP client per vendor, created here and closed at shutdown.
    `transport` replaces the network (tests inject recorded vendor answers)."""
    policy = RetryPolicy(
        attempts=settings.upstream_attempts,
        backoff=settings.upstream_backoff,
        answers=AnswerBounds.from_settings(settings),
    )

    def pooled_client() -> UpstreamClient:
        return UpstreamClient(
            transport or AiohttpTransport(policy=settings.policy, max_connections=512),
            Timeouts(connect=settings.upstream_connect_timeout, read=settings.upstream_read_timeout),
        )

    vendors.register("OPENAI", OpenAICompatible(pooled_client(), openai.OPENAI, policy))
    vendors.register(
        "LLMENGINE",
        LLMEngineVendor(
            {
                "openai": OpenAICompatible(pooled_client(), openai.LLMENGINE, policy),
                "llmengine-v1": LLMEngineV1(pooled_client(), policy),
            }
        ),
    )
    vendors.register(OPENAI_COMPATIBLE, OpenAICompatible(pooled_client(), openai.COMPATIBLE, policy))
    vendors.register("ANTHROPIC", AnthropicVendor(pooled_client(), policy))
    vendors.register("GOOGLE", GoogleVendor(pooled_client(), policy))
    vendors.register(COHERE, CohereVendor(pooled_client(), policy))
    vendors.register("BEDROCK", BedrockVendor(pooled_client(), policy, settings.policy))
    vendors.register("VERTEX_AI", VertexVendor(pooled_client(), policy, settings.policy))
