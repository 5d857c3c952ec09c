"""LLM Engine's v1 completions API (`/v1/llm/completions-sync` and `-stream`).

It takes a raw prompt and returns no finish reason, and backends such as TGI leave
the stop string in the text. So modelport infers the finish reason (the token limit
reached means `length`) and the service enforces stop sequences itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modelport.errors import InvalidRequest, UpstreamError
from modelport.generation import FinishReason, GenerationCall, GenerationChunk, TokenLogprob
from modelport.prompts.templates import render_chat_async
from modelport.vendors.base import Capabilities, Target
from modelport.vendors.http_vendor import EventParser, HttpVendor, Outgoing
from modelport.vendors.settings import LLMEngineSettings
from modelport.vendors.upstream import join_url

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

    async def build_request(self, target: Target, call: GenerationCall, *, stream: bool) -> Outgoing:
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
        path = "v1/llm/completions-stream" if stream else "v1/llm/completions-sync"
        url, params = join_url(str(base_url), path), {"model_endpoint_name": endpoint}
        return self.post(target, url, body, params=params, max_tokens=max_new_tokens)

    def parse_answer(self, payload: Any, call: GenerationCall, sent: Outgoing) -> GenerationChunk:
        output = payload.get("output") or {}
        completion_tokens = output.get("num_completion_tokens")
        return GenerationChunk(
            text=output.get("text") or "",
            logprobs=[_logprob(token) for token in output.get("tokens") or []] if call.sampling.logprobs else None,
            finish_reason=_finish(completion_tokens, sent.max_tokens),
            prompt_tokens=output.get("num_prompt_tokens"),
            response_tokens=completion_tokens,
        )

    def event_parser(self, call: GenerationCall, sent: Outgoing) -> EventParser:
        return _Events(sent.max_tokens, wants_logprobs=call.sampling.logprobs)


class _Events(EventParser):
    def __init__(self, limit: int | None, *, wants_logprobs: bool) -> None:
        super().__init__()
        self._limit = limit
        self._wants_logprobs = wants_logprobs

    def parse(self, name: str, payload: Any) -> Iterator[GenerationChunk]:
        if payload.get("error"):
            raise UpstreamError(f"LLMENGINE failed mid-stream: {payload['error']}")
        output = payload.get("output") or {}
        token = output.get("token")
        logprobs = [_logprob(token)] if self._wants_logprobs and isinstance(token, dict) else None
        self.prompt_tokens = output.get("num_prompt_tokens") or self.prompt_tokens
        self.response_tokens = output.get("num_completion_tokens") or self.response_tokens
        if output.get("text") or logprobs:
            # The running count rides along: the service may cut the stream at a
            # stop sequence before the last frame arrives.
            yield GenerationChunk(
                text=output.get("text") or "", logprobs=logprobs, response_tokens=self.response_tokens
            )
        self.finished = bool(output.get("finished"))

    def last(self) -> GenerationChunk:
        self.finish = _finish(self.response_tokens, self._limit)
        return super().last()


def _finish(completion_tokens: int | None, limit: int | None) -> FinishReason:
    # v1 says nothing; reaching the token limit is the only thing that is not a stop.
    return "length" if completion_tokens is not None and limit is not None and completion_tokens >= limit else "stop"


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
