"""A text answer, shown the same way on every surface: as a stream when the body asks
for one (the surface's events, in its SSE framing), else whole (the surface's JSON).
The surfaces differ only in their shapes, given as a `TextSurface`.

Every answer names what modelport left out of the call or changed, as the service
decided it (`Generated.dropped`, `GeneratedStream.dropped`), in the `x-modelport-dropped`
header: comma-separated names, a change as `name=how` (`reasoning_effort,
max_tokens=clamped:4000`); absent when nothing was. A whole answer also says what it
cost, in US dollars at the deployment's prices, in the `x-modelport-cost` header (a
stream's header is sent before its cost is known: its last usage event carries it where
the surface has one).

A request the response cache takes part in says what it did, as the service decided it
(`Generated.cache`, `GeneratedStream.cache`), in the `x-modelport-cache` header (`hit`,
`miss`, `bypass`); `cache-control: no-cache` on the request skips the lookup."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import partial
from typing import Generic, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from modelport.api import sse
from modelport.inference.metering import Generated, GeneratedStream
from modelport.inference.service import InferenceService, TextRequest
from modelport.principal import Principal


class _Streamable(Protocol):
    @property
    def stream(self) -> bool: ...


Body = TypeVar("Body", bound=_Streamable)
Item = TypeVar("Item")
Pieces = AsyncGenerator[Generated, None]


@dataclass(frozen=True, slots=True)
class TextSurface(Generic[Body, Item]):
    """One surface's translators (in `compat/`): its body to the service's request, and
    the answer to its whole body or to its stream's events."""

    request: Callable[[Body], TextRequest]
    whole: Callable[[Body, Generated], BaseModel]
    events: Callable[[Body, Pieces], AsyncIterator[Item]]
    # OpenAI's and SGP's bodies leave unset fields out; Anthropic's show them as null.
    exclude_none: bool = True

    async def by_model(
        self,
        service: InferenceService,
        principal: Principal,
        model: str,
        body: Body,
        framing: sse.Framing[Item],
        *,
        no_cache: bool = False,
    ) -> Response:
        """From one of the deployments `model` names (the compatible surfaces, see
        `routing`). `no_cache`: the request asked not to be answered from the cache."""
        text = self._text(body, no_cache)
        whole = partial(service.generate, principal, model, text)
        return await self._answer(body, framing, whole, partial(service.generate_stream, principal, model, text))

    async def at_deployment(
        self,
        service: InferenceService,
        principal: Principal,
        deployment_id: str,
        body: Body,
        framing: sse.Framing[Item],
        *,
        no_cache: bool = False,
    ) -> Response:
        """From the deployment the caller named (SGP v4)."""
        text = self._text(body, no_cache)
        whole = partial(service.generate_at, principal, deployment_id, text)
        return await self._answer(
            body, framing, whole, partial(service.generate_stream_at, principal, deployment_id, text)
        )

    def _text(self, body: Body, no_cache: bool) -> TextRequest:
        text = self.request(body)
        return replace(text, skip_cache_lookup=True) if no_cache else text

    async def _answer(
        self,
        body: Body,
        framing: sse.Framing[Item],
        whole: Callable[[], Awaitable[Generated]],
        streamed: Callable[[], Awaitable[Pieces]],
    ) -> Response:
        if body.stream:
            pieces = await streamed()
            dropped, cache = (pieces.dropped, pieces.cache) if isinstance(pieces, GeneratedStream) else ((), None)
            headers = dropped_header(dropped) | cache_header(cache)
            return sse.EventStream(self.events(body, pieces), framing, headers=headers)
        generated = await whole()
        payload = self.whole(body, generated)
        return Response(
            payload.model_dump_json(exclude_none=self.exclude_none),
            media_type="application/json",
            headers=dropped_header(generated.dropped)
            | cost_header(generated.cost or 0.0)
            | cache_header(generated.cache),
        )


DROPPED_HEADER = "x-modelport-dropped"


def dropped_header(dropped: tuple[str, ...]) -> dict[str, str]:
    """The x-modelport-dropped header for what was left out or changed; none if nothing was."""
    return {DROPPED_HEADER: ", ".join(dropped)} if dropped else {}


COST_HEADER = "x-modelport-cost"


def cost_header(cost: float) -> dict[str, str]:
    """The x-modelport-cost header: US dollars as a plain decimal (`0.000091`, never
    `9.1e-05`: a header read by shell scripts and dashboards), `0` for an unpriced model."""
    return {COST_HEADER: format(Decimal(repr(cost)).normalize(), "f")}


CACHE_HEADER = "x-modelport-cache"


def cache_header(state: str | None) -> dict[str, str]:
    """The x-modelport-cache header: what the response cache did; none when the request
    is not cached."""
    return {CACHE_HEADER: state} if state else {}


def asks_no_cache(request: Request) -> bool:
    """The request's `cache-control` holds `no-cache`: answer it afresh."""
    directives = request.headers.get("cache-control", "")
    return any(directive.strip().lower() == "no-cache" for directive in directives.split(","))
