"""LLM Engine's v1 completions API (`/v1/llm/completions-sync` and `-stream`).

It takes a raw prompt and returns no finish reason, and backends such as TGI leave
the stop string in the text. So modelport infers the finish reason (the token limit
reached means `length`) and the service enforces stop sequences itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from modelport.errors import InvalidRequest, UpstreamError
from modelport.generation import FinishReason, GenerationCall, GenerationChunk, TokenLogprob
from modelport.prompts.templates import render_chat_async
from modelport.vendors.base import Capabilities, Target
from modelport.vendors.settings import LLMEngineSettings
from modelport.vendors.upstream import (
    HttpVendor,
    api_key_for,
    configured_headers,
    join_url,
    json_request,
    read_json,
    sse_json,
)

CAPABILITIES = Capabilities(
    vendor="LLMENGINE",
    # Only the chosen token's logprob comes back: no top_logprobs.
    parameters=frozenset(
        {
            "top_p",
            "top_k",
            "frequency_penalty",
            "presence_penalty",
            "stop_sequences",
            "logprobs",
            "chat_template",
            "chat_template_kwargs",
        }
    ),
    max_temperature=1.0,  # v1 refuses more than 1 (422); SPEC clamps
    default_max_tokens=100,
    stops_at_stop_sequences=False,
)


class LLMEngineV1(HttpVendor):
    vendor = "LLMENGINE"

    def capabilities(self, target: Target) -> Capabilities:
        return CAPABILITIES

    async def _request(
        self, target: Target, call: GenerationCall, *, stream: bool
    ) -> tuple[httpx.Request, str | None, int]:
        base_url = target.settings.base_url
        endpoint = target.settings.model
        if not base_url or not endpoint:
            raise InvalidRequest(f"deployment {target.deployment_id} needs base_url and model (the endpoint name)")
        sampling = call.sampling
        for name, value in (
            ("frequency_penalty", sampling.frequency_penalty),
            ("presence_penalty", sampling.presence_penalty),
        ):
            if value is not None and value < 0:
                raise InvalidRequest(f"{name} must be between 0 and 2 for LLM Engine v1 (got {value})")
        max_new_tokens = sampling.max_tokens
        assert max_new_tokens is not None, "the service decides max_tokens (inference/calls.py)"
        body: dict[str, Any] = {
            "prompt": await _prompt(target, call),
            "max_new_tokens": max_new_tokens,
            "temperature": sampling.temperature,
        }
        # v1 refuses top_k/top_p with greedy decoding, where they change nothing anyway.
        if sampling.temperature > 0:
            body.update({k: v for k, v in (("top_k", sampling.top_k), ("top_p", sampling.top_p)) if v is not None})
        optional = {
            "frequency_penalty": sampling.frequency_penalty,
            "presence_penalty": sampling.presence_penalty,
            "stop_sequences": list(sampling.stop_sequences) or None,
            "return_token_log_probs": True if sampling.logprobs else None,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        body.update(target.settings.extra_body or {})
        api_key = api_key_for(target, "LLMENGINE")
        headers = configured_headers(target)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        path = "v1/llm/completions-stream" if stream else "v1/llm/completions-sync"
        request = json_request(
            self._client, join_url(str(base_url), path), body, headers=headers, params={"model_endpoint_name": endpoint}
        )
        return request, api_key, max_new_tokens

    async def complete(self, target: Target, call: GenerationCall) -> GenerationChunk:
        request, api_key, limit = await self._request(target, call, stream=False)
        response = await self._send(request, api_key)
        output = (await read_json(response, vendor=self.vendor)).get("output") or {}
        completion_tokens = output.get("num_completion_tokens")
        return GenerationChunk(
            text=output.get("text") or "",
            logprobs=[_logprob(token) for token in output.get("tokens") or []] if call.sampling.logprobs else None,
            finish_reason=_finish(completion_tokens, limit),
            prompt_tokens=output.get("num_prompt_tokens"),
            response_tokens=completion_tokens,
        )

    async def stream(self, target: Target, call: GenerationCall) -> AsyncIterator[GenerationChunk]:
        request, api_key, limit = await self._request(target, call, stream=True)
        response = await self._send(request, api_key)
        return self._chunks(response, limit, wants_logprobs=call.sampling.logprobs)

    async def _chunks(
        self, response: httpx.Response, limit: int, *, wants_logprobs: bool
    ) -> AsyncIterator[GenerationChunk]:
        prompt_tokens = completion_tokens = None
        async for _event, payload in sse_json(response, vendor=self.vendor):
            if payload.get("error"):
                raise UpstreamError(f"LLMENGINE failed mid-stream: {payload['error']}")
            output = payload.get("output") or {}
            token = output.get("token")
            logprobs = [_logprob(token)] if wants_logprobs and isinstance(token, dict) else None
            prompt_tokens = output.get("num_prompt_tokens") or prompt_tokens
            completion_tokens = output.get("num_completion_tokens") or completion_tokens
            if output.get("text") or logprobs:
                # The running count rides along: the service may cut the stream at a
                # stop sequence before the last frame arrives.
                yield GenerationChunk(
                    text=output.get("text") or "", logprobs=logprobs, response_tokens=completion_tokens
                )
            if output.get("finished"):
                break
        yield GenerationChunk(
            finish_reason=_finish(completion_tokens, limit),
            prompt_tokens=prompt_tokens,
            response_tokens=completion_tokens,
        )


def _finish(completion_tokens: int | None, limit: int) -> FinishReason:
    # v1 says nothing; reaching the token limit is the only thing that is not a stop.
    return "length" if completion_tokens is not None and completion_tokens >= limit else "stop"


async def _prompt(target: Target, call: GenerationCall) -> str:
    if call.messages is None:
        return call.prompt or ""
    settings = target.settings if isinstance(target.settings, LLMEngineSettings) else LLMEngineSettings()
    template = call.chat_template or settings.chat_template
    if not template:
        raise InvalidRequest(
            "LLM Engine v1 takes raw prompts: a chat model needs a chat_template, in the request or in the "
            "model's creation parameters"
        )
    return await render_chat_async(
        str(template),
        call.messages,
        bos_token=settings.bos_token or "",
        eos_token=settings.eos_token or "",
        extra=call.chat_template_kwargs,
    )


def _logprob(token: dict[str, Any]) -> TokenLogprob:
    text = str(token.get("token", ""))
    return TokenLogprob(token=text, logprob=float(token.get("log_prob", 0.0)), bytes=list(text.encode("utf-8")))
