"""The service against a scripted vendor: every way a request ends is admitted once,
settled once, and recorded once, with the status each surface reports.

The catalogue is real (SQLite, deployments created through the API); the vendor is a
script per upstream model name (answers, streams, errors, stalls), and the service is
built directly around it, with in-memory limits that allow one request at a time: a
request whose slot was not given back would make the next one a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.api.sse import data_event
from modelport.compat import anthropic, openai, sgp
from modelport.errors import InvalidRequest, RateLimited, UpstreamError
from modelport.generation import GenerationCall, GenerationChunk, UsageEvent
from modelport.inference.admission import LimitGate
from modelport.inference.routing import PassiveHealth, Router
from modelport.inference.service import InferenceService, TextRequest
from modelport.limits.memory import MemoryLimiter
from modelport.observability.shutdown import gate
from modelport.principal import Limits, Principal
from modelport.schemas import anthropic as anthropic_wire
from modelport.schemas import openai as openai_wire
from modelport.schemas.inference import ChatCompletionRequest, CompletionRequest
from modelport.schemas.retrieval import EmbeddingRequest
from modelport.store.cache import CatalogueCache
from modelport.vendors.adapters import OPENAI_COMPATIBLE, VendorRegistry
from modelport.vendors.base import Capabilities, Embeddings, Target
from tests.conftest import in_process, sqlite_settings


@dataclass
class Script:
    """What the vendor does for one upstream model."""

    chunks: list[GenerationChunk] = field(default_factory=list)
    error: Exception | None = None  # raised before the first chunk
    error_after: int | None = None  # raise `error` after this many chunks instead
    stall_after: int | None = None  # wait for ever after this many chunks
    stops_at_stop_sequences: bool = True


@dataclass
class ScriptedVendor:
    scripts: dict[str, Script] = field(default_factory=dict)
    calls: list[tuple[str, GenerationCall]] = field(default_factory=list)
    closed_streams: int = 0

    def _script(self, target: Target) -> Script:
        return self.scripts[str(target.settings.model)]

    def capabilities(self, target: Target) -> Capabilities:
        return Capabilities(
            vendor="SCRIPTED",
            parameters=frozenset({"stop_sequences", "logprobs"}),
            stops_at_stop_sequences=self._script(target).stops_at_stop_sequences,
        )

    async def complete(self, target: Target, call: GenerationCall) -> GenerationChunk:
        script = self._script(target)
        self.calls.append((target.deployment_id, call))
        if script.error is not None:
            raise script.error
        last = script.chunks[-1]
        return GenerationChunk(
            text="".join(chunk.text for chunk in script.chunks),
            finish_reason=last.finish_reason,
            prompt_tokens=last.prompt_tokens,
            response_tokens=last.response_tokens,
        )

    async def stream(self, target: Target, call: GenerationCall) -> AsyncIterator[GenerationChunk]:
        script = self._script(target)
        self.calls.append((target.deployment_id, call))
        if script.error is not None and script.error_after is None:
            raise script.error
        return self._chunks(script)

    async def _chunks(self, script: Script) -> AsyncIterator[GenerationChunk]:
        try:
            for sent, chunk in enumerate(script.chunks):
                if sent == script.error_after and script.error is not None:
                    raise script.error
                if sent == script.stall_after:
                    await asyncio.Event().wait()
                yield chunk
        finally:
            self.closed_streams += 1

    async def embed(self, target: Target, texts: list[str]) -> Embeddings:
        self.calls.append((target.deployment_id, GenerationCall(sampling=None, prompt="\n".join(texts))))  # type: ignore[arg-type]
        return Embeddings(vectors=[[1.0, 0.0] for _ in texts], tokens=len(texts))

    async def aclose(self) -> None:
        return None


HELLO = [
    GenerationChunk(text="Hel"),
    GenerationChunk(text="lo. Bye"),
    GenerationChunk(text="", finish_reason="stop", prompt_tokens=5, response_tokens=4),
]


@dataclass
class World:
    service: InferenceService
    vendor: ScriptedVendor
    limits: LimitGate
    usage: list[UsageEvent]
    principal: Principal
    deployments: dict[str, str]  # upstream model name -> deployment id


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with in_process(sqlite_settings(tmp_path)) as (app, client):
        deployments = {
            "hello": await _deploy(client, "hello"),
            "broken": await _deploy(client, "broken"),
            "embedder": await _deploy(client, "embedder", model_type="EMBEDDING"),
        }
        # A model named "pair" whose first deployment fails and whose fallback answers.
        deployments["pair-first"] = await _deploy(client, "pair-first", name="pair", fallback_models=["pair-backup"])
        deployments["pair-backup"] = await _deploy(client, "pair-backup", name="pair-backup")
        listed = (await client.get("/v4/model-deployments")).json()["items"]
        account = listed[0]["account_id"]
        vendor = ScriptedVendor()
        vendors = VendorRegistry()
        vendors.register(OPENAI_COMPATIBLE, vendor)
        limits = LimitGate(MemoryLimiter())
        usage: list[UsageEvent] = []
        cache = CatalogueCache(ttl_seconds=0)
        service = InferenceService(
            app.state.sessions,
            vendors,
            usage=usage.append,
            cache=cache,
            router=Router(app.state.sessions, cache, PassiveHealth()),
            limits=limits,
        )
        one_at_a_time = Limits(max_parallel_requests=1)
        principal = Principal("i", "user", account, "admin", key_id="k", key_limits=one_at_a_time)
        yield World(service, vendor, limits, usage, principal, deployments)


async def _deploy(
    client: httpx.AsyncClient,
    upstream: str,
    *,
    model_type: str = "CHAT_COMPLETION",
    name: str | None = None,
    **more: Any,
) -> str:
    parameters = {"model": upstream, "base_url": "http://127.0.0.1:9/v1", **more}
    created = await client.post(
        "/v4/models",
        json={"name": name or upstream, "model_type": model_type, "model_vendor": "OTHER",
              "model_creation_parameters": parameters},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": upstream})
    assert deployment.status_code == 200, deployment.text
    return str(deployment.json()["id"])


def _chat(**fields: Any) -> tuple[ChatCompletionRequest, tuple[dict[str, Any], ...] | None]:
    request = ChatCompletionRequest.model_validate({"chat_history": [], "prompt": "hi", **fields})
    return request, sgp.messages(request)


async def _slot_is_free(world: World) -> None:
    """Another request of the same key is admitted: the last one gave its slot back."""
    await world.limits.drain()
    world.vendor.scripts.setdefault("hello", Script(chunks=HELLO))
    request, messages = _chat()
    await world.service.generate_at(world.principal, world.deployments["hello"], TextRequest(request, messages))


async def test_an_answer_is_filtered_at_its_stop_sequence_and_recorded(world: World) -> None:
    world.vendor.scripts["hello"] = Script(chunks=HELLO)
    request, messages = _chat(stop_sequences=["."])
    answer = await world.service.generate_at(
        world.principal, world.deployments["hello"], TextRequest(request, messages)
    )
    assert (answer.text, answer.finish_reason, answer.stop_sequence) == ("Hello", "stop", ".")
    [event] = world.usage
    assert (event.status, event.prompt_tokens, event.response_tokens) == (200, 5, 4)
    assert event.deployment_id == world.deployments["hello"] and event.principal == world.principal
    # The vendor was sent the messages the SGP request makes and no max_tokens (this vendor
    # has no default of its own: its own applies); the limits reserved the server's
    # default, this model having no known window.
    [(_deployment, call)] = world.vendor.calls
    assert call.messages == ({"role": "user", "content": "hi"},)
    assert (call.sampling.max_tokens, call.response_token_bound) == (None, 4096)
    await _slot_is_free(world)


async def test_a_second_request_while_the_first_streams_is_refused_and_not_recorded(world: World) -> None:
    world.vendor.scripts["hello"] = Script(chunks=HELLO, stall_after=1)
    request, messages = _chat()
    pieces = await world.service.generate_stream_at(
        world.principal, world.deployments["hello"], TextRequest(request, messages)
    )
    assert (await anext(pieces)).text == "Hel"
    with pytest.raises(RateLimited):
        await world.service.generate_at(world.principal, world.deployments["hello"], TextRequest(request, messages))
    assert world.usage == []  # a refused request never reached a vendor
    await pieces.aclose()
    assert [event.status for event in world.usage] == [499]


async def test_a_vendor_error_is_raised_recorded_and_settled(world: World) -> None:
    world.vendor.scripts["broken"] = Script(error=UpstreamError("the vendor broke"))
    request, messages = _chat()
    with pytest.raises(UpstreamError):
        await world.service.generate_at(world.principal, world.deployments["broken"], TextRequest(request, messages))
    with pytest.raises(UpstreamError):
        await world.service.generate_stream_at(
            world.principal, world.deployments["broken"], TextRequest(request, messages)
        )
    assert [event.status for event in world.usage] == [502, 502]
    await _slot_is_free(world)


async def test_a_stream_ends_with_the_counts_and_stops_at_its_stop_sequence(world: World) -> None:
    world.vendor.scripts["hello"] = Script(chunks=HELLO, stops_at_stop_sequences=False)
    request, messages = _chat(stop_sequences=["."])
    pieces = await world.service.generate_stream_at(
        world.principal, world.deployments["hello"], TextRequest(request, messages)
    )
    received = [piece async for piece in pieces]
    assert "".join(piece.text for piece in received) == "Hello"
    assert (received[-1].finish_reason, received[-1].stop_sequence) == ("stop", ".")
    # This vendor does not stop by itself: the stream was cut at the stop sequence, and
    # so never saw the vendor's counts.
    assert world.vendor.closed_streams == 1
    assert [(event.status, event.response_tokens) for event in world.usage] == [(200, 0)]
    await _slot_is_free(world)


async def test_a_client_gone_mid_stream_is_499_billed_for_what_was_generated(world: World) -> None:
    world.vendor.scripts["hello"] = Script(chunks=HELLO)
    request, messages = _chat()
    pieces = await world.service.generate_stream_at(
        world.principal, world.deployments["hello"], TextRequest(request, messages)
    )
    events = sgp.completion_events(request, pieces)
    first = await anext(events)
    assert data_event(first) == b'data: {"completions":[["hi",["Hel"]]]}\n\n'
    await events.aclose()  # what the SSE response does when its client goes away
    [event] = world.usage
    assert (event.status, event.response_tokens) == (499, 1)
    assert event.prompt_tokens > 0  # a fair guess: the vendor never said
    assert world.vendor.closed_streams == 1
    await _slot_is_free(world)


@pytest.mark.parametrize(("shutting_down", "status"), [(False, 499), (True, 503)])
async def test_a_stalled_stream_cancelled_is_settled(
    world: World, monkeypatch: pytest.MonkeyPatch, shutting_down: bool, status: int
) -> None:
    """Cancelled: its client went away (499), or the shutdown's grace period ran out (503)."""
    world.vendor.scripts["hello"] = Script(chunks=HELLO, stall_after=1)
    request, messages = _chat()
    pieces = await world.service.generate_stream_at(
        world.principal, world.deployments["hello"], TextRequest(request, messages)
    )

    first = asyncio.Event()

    async def read() -> None:
        async with contextlib.aclosing(pieces):
            async for _piece in pieces:
                first.set()  # then straight back into the stalled vendor

    reader = asyncio.create_task(read())
    await first.wait()
    monkeypatch.setattr(gate, "expired", shutting_down)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    monkeypatch.setattr(gate, "expired", False)
    assert [event.status for event in world.usage] == [status]
    await _slot_is_free(world)


def _sgp_events(pieces: Any) -> Any:
    return sgp.completion_events(_chat()[0], pieces)


def _openai_events(pieces: Any) -> Any:
    body = openai_wire.ChatCompletionBody.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    return openai.chat_chunks(body, pieces)


def _anthropic_events(pieces: Any) -> Any:
    body = anthropic_wire.MessagesBody.model_validate(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    )
    return anthropic.message_events(body, pieces)


@pytest.mark.parametrize("surface", [_sgp_events, _openai_events, _anthropic_events])
async def test_each_surface_sees_the_vendors_error_after_its_first_events(world: World, surface: Any) -> None:
    """The surface's stream raises the service's error (its SSE framing turns it into the
    surface's own error event); what was generated before it is billed."""
    world.vendor.scripts["broken"] = Script(chunks=HELLO, error=UpstreamError("cut"), error_after=1)
    request, messages = _chat()
    pieces = await world.service.generate_stream_at(
        world.principal, world.deployments["broken"], TextRequest(request, messages)
    )
    events = surface(pieces)
    received = []
    with pytest.raises(UpstreamError):
        async for event in events:
            received.append(event)
    assert received  # the text before the error reached the caller
    assert [(event.status, event.response_tokens) for event in world.usage] == [(502, 1)]


async def test_a_model_falls_back_before_the_first_piece_unseen_by_the_caller(world: World) -> None:
    world.vendor.scripts["pair-first"] = Script(error=UpstreamError("down"))
    world.vendor.scripts["pair-backup"] = Script(chunks=HELLO)
    request, messages = _chat()
    pieces = await world.service.generate_stream(world.principal, "pair", TextRequest(request, messages))
    assert "".join([piece.text async for piece in pieces]) == "Hello. Bye"
    answer = await world.service.generate(world.principal, "pair", TextRequest(request, messages))
    assert answer.text == "Hello. Bye"
    first, backup = world.deployments["pair-first"], world.deployments["pair-backup"]
    assert [(event.deployment_id, event.status) for event in world.usage] == [
        (first, 502), (backup, 200), (first, 502), (backup, 200)
    ]  # fmt: skip


async def test_a_callers_mistake_is_not_retried_elsewhere(world: World) -> None:
    world.vendor.scripts["pair-first"] = Script(chunks=HELLO)
    request, messages = _chat(top_k=5)  # this vendor cannot honour top_k
    with pytest.raises(InvalidRequest, match="top_k"):
        await world.service.generate(world.principal, "pair", TextRequest(request, messages))
    assert world.vendor.calls == [] and world.usage == []


async def test_a_completion_request_sends_the_prompt_alone(world: World) -> None:
    world.vendor.scripts["hello"] = Script(chunks=HELLO)
    request = CompletionRequest.model_validate({"prompt": "raw text"})
    answer = await world.service.generate_at(world.principal, world.deployments["hello"], TextRequest(request))
    assert sgp.completion(request, answer).completions == [["raw text", ["Hello. Bye"]]]
    [(_deployment, call)] = world.vendor.calls
    assert (call.prompt, call.messages) == ("raw text", None)


async def test_embeddings_are_admitted_and_recorded_like_text(world: World) -> None:
    read = await world.service.embed(world.principal, world.deployments["embedder"], EmbeddingRequest(texts=["a", "b"]))
    answer = read.answer
    assert answer.embeddings == [[1.0, 0.0], [1.0, 0.0]]
    assert [(event.status, event.prompt_tokens) for event in world.usage] == [(200, 2)]
    with pytest.raises(InvalidRequest, match="does not generate text"):
        request, messages = _chat()
        await world.service.generate_at(world.principal, world.deployments["embedder"], TextRequest(request, messages))
    with pytest.raises(InvalidRequest, match="needs a EMBEDDING model"):
        await world.service.embed(world.principal, world.deployments["hello"], EmbeddingRequest(texts=["a"]))
    await _slot_is_free(world)
