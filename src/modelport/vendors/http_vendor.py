"""The one template every HTTP adapter follows: build the request, send it, read the
answer, parse it.

An adapter says only what is its vendor's own (the hooks): how a call becomes a
request (`build_request`), how a whole answer becomes a chunk (`parse_answer`), how
each streamed event becomes chunks (`event_parser`), and how its credential is sent
(`auth_headers`). Sending with retries, the answer's bounds (vendors/bounded.py), the
credential lookup, the configured headers and closing a stream are done here, once,
the same way for every vendor.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from modelport.errors import InvalidRequest, ModelportError
from modelport.generation import FinishReason, GenerationCall, GenerationChunk
from modelport.vendors.base import Capabilities, ChunkStream, Target
from modelport.vendors.client import UpstreamClient
from modelport.vendors.upstream import (
    RetryPolicy,
    api_key_for,
    configured_headers,
    json_request,
    read_json,
    scrub,
    send,
    sse_json,
    without_credential,
)
from modelport.vendors.wire import Inbound, Outbound


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request ready to send, with what reading its answer needs."""

    request: Outbound
    # Scrubbed from every message the vendor's answer puts in front of a caller or a log.
    api_key: str | None
    # The token limit the vendor was sent: a vendor that reports no finish reason
    # (LLM Engine v1) is read by it.
    max_tokens: int | None = None


class EventParser(ABC):
    """Reads one streamed answer, event by event: a fresh one for each stream, holding
    what the events so far said (the finish reason, the counts)."""

    def __init__(self) -> None:
        # None: no event said why the answer ended (the service shows "stop", and the
        # response cache keeps no such answer: it may have been cut off upstream).
        self.finish: FinishReason | None = None
        self.prompt_tokens: int | None = None
        self.response_tokens: int | None = None
        # Of prompt_tokens: read from the vendor's prompt cache, and written to it.
        self.cached_prompt_tokens: int | None = None
        self.cache_creation_tokens: int | None = None
        # Set by a vendor whose stream says it is over before its connection ends.
        self.finished = False

    @abstractmethod
    def parse(self, name: str, payload: Any) -> Iterable[GenerationChunk]:
        """The chunks one event carries (often none); raises on an error event."""

    def last(self) -> GenerationChunk:
        """The closing chunk: the finish reason and the token counts."""
        return GenerationChunk(
            finish_reason=self.finish,
            prompt_tokens=self.prompt_tokens,
            response_tokens=self.response_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens,
            cache_creation_tokens=self.cache_creation_tokens,
        )


class HttpVendor(ABC):
    """An adapter that calls its vendor over HTTP: its pooled client (built at start-up,
    closed at shutdown), its retry policy, and the template that uses both."""

    vendor: str

    def __init__(self, client: UpstreamClient, policy: RetryPolicy) -> None:
        self._client = client
        self._policy = policy

    # --- the hooks -----------------------------------------------------------------------

    @abstractmethod
    def capabilities(self, target: Target) -> Capabilities: ...

    @abstractmethod
    async def build_request(self, target: Target, call: GenerationCall, *, stream: bool) -> Outgoing:
        """The vendor's request for a call (most build it with `post`)."""

    @abstractmethod
    def parse_answer(self, payload: Any, call: GenerationCall, sent: Outgoing) -> GenerationChunk:
        """A whole (not streamed) answer's JSON as one chunk with the finish reason and counts."""

    @abstractmethod
    def event_parser(self, call: GenerationCall, sent: Outgoing) -> EventParser:
        """What reads the events of one streamed answer."""

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """How the credential is sent; a bearer token unless the vendor says otherwise."""
        return {"Authorization": f"Bearer {api_key}"}

    # --- the template --------------------------------------------------------------------

    async def complete(self, target: Target, call: GenerationCall) -> GenerationChunk:
        sent = await self.build_request(target, call, stream=False)
        return self.parse_answer(await self.answer_of(sent), call, sent)

    async def stream(self, target: Target, call: GenerationCall) -> ChunkStream:
        sent = await self.build_request(target, call, stream=True)
        response = await self._send(sent)
        return self._chunks(response, self.event_parser(call, sent), api_key=sent.api_key)

    async def _chunks(self, response: Inbound, parser: EventParser, *, api_key: str | None) -> ChunkStream:
        # Closed however the stream ends (read to the end, failed, or abandoned by the
        # caller), which closes the upstream response at once.
        events = sse_json(response, vendor=self.vendor)
        async with contextlib.aclosing(events):
            try:
                async for name, payload in events:
                    for chunk in parser.parse(name, payload):
                        yield chunk
                    if parser.finished:
                        break
            except ModelportError as exc:
                # A parser quotes the vendor's mid-stream error event, where a vendor may
                # echo the credential it was sent, as it may in an error answer.
                exc.detail = scrub(exc.detail, [api_key])
                exc.args = (exc.detail,)
                raise
        yield parser.last()

    # --- the steps adapters build on -------------------------------------------------------

    def post(
        self,
        target: Target,
        url: str,
        body: dict[str, Any],
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        max_tokens: int | None = None,
    ) -> Outgoing:
        """A JSON POST to `url` with the vendor's fixed `headers`, then the deployment's
        configured ones, then the credential (which no configured header replaces)."""
        api_key = api_key_for(target, self.vendor)
        sent_headers = {**(headers or {}), **configured_headers(target)}
        if api_key:
            sent_headers.update(self.auth_headers(api_key))
        request = json_request(self._client, url, body, headers=sent_headers, params=params)
        return Outgoing(request, api_key, max_tokens)

    async def execute(self, target: Target, body: dict[str, Any]) -> Any:
        """A GENERIC model's call (SGP's `deployments.execute`): `body` POSTed as it is to
        the deployment's `base_url`, with its configured headers and credential, under the
        policy, retries and bounds of every other call; its JSON answer, the credential
        removed from it (an upstream may echo what it was sent)."""
        if target.settings.base_url is None:
            raise InvalidRequest(f"deployment {target.deployment_id} names no `base_url` to execute against")
        sent = self.post(target, str(target.settings.base_url), body)
        return without_credential(await self.answer_of(sent), sent.api_key)

    async def answer_of(self, sent: Outgoing) -> Any:
        """The parsed JSON answer to a request, read within its bounds."""
        return await read_json(await self._send(sent), vendor=self.vendor)

    async def _send(self, sent: Outgoing) -> Inbound:
        return await send(self._client, sent.request, vendor=self.vendor, policy=self._policy, secrets=[sent.api_key])

    async def aclose(self) -> None:
        await self._client.aclose()
