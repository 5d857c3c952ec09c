"""`n` > 1 on OpenAI's chat and text completions: n generations of one request, as
choices 0 … n-1 of one answer.

Each choice is a request of its own through the inference service (admitted, limited,
metered and billed like any other, so the prompt is billed once per choice), made from
the body with `n` left out and, where the caller set a `seed`, seed + i: the same seed
would give the same text n times. Whole answers run their n generations at once (the
embedded engine batches them like any concurrent requests); streamed ones run them one
after another in the request's own task, choice 0's events first, so that every
generator is run and closed where the request's cancellation reaches it (`sse.EventStream`).
The answer's `usage` (and `x-modelport-cost`) is the sum of the n calls'."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar, cast

from fastapi.responses import Response
from pydantic import BaseModel

from modelport.api import sse
from modelport.api.answers import TextSurface, cost_header, dropped_header
from modelport.inference.metering import Generated, GeneratedStream
from modelport.inference.service import InferenceService
from modelport.principal import Principal
from modelport.schemas import openai as wire

Body = TypeVar("Body", wire.ChatCompletionBody, wire.TextCompletionBody)


def _one_of(body: Body, index: int) -> Body:
    """The body of choice `index`: one choice, its own seed where one was set."""
    seed = None if body.seed is None else _wrapped(body.seed + index)
    return body.model_copy(update={"n": None, "seed": seed})


def _wrapped(seed: int) -> int:
    """seed + i kept a 64-bit integer, as the body's own seed is."""
    return (seed + 2**63) % 2**64 - 2**63


def _sum_usage(usages: list[wire.Usage | None]) -> wire.Usage | None:
    present = [usage for usage in usages if usage is not None]
    if not present:
        return None
    costs = [usage.cost for usage in present if usage.cost is not None]
    return wire.Usage(
        prompt_tokens=sum(usage.prompt_tokens for usage in present),
        completion_tokens=sum(usage.completion_tokens for usage in present),
        total_tokens=sum(usage.total_tokens for usage in present),
        cost=sum(costs) if costs else None,
    )


async def answer(
    surface: TextSurface[Body, BaseModel],
    service: InferenceService,
    principal: Principal,
    body: Body,
    framing: sse.Framing[BaseModel],
) -> Response:
    n = body.n or 1
    bodies = [_one_of(body, index) for index in range(n)]
    if body.stream:
        first = await service.generate_stream(principal, body.model, surface.request(bodies[0]))
        dropped = first.dropped if isinstance(first, GeneratedStream) else ()
        return sse.EventStream(_events(surface, service, principal, bodies, first), framing, dropped_header(dropped))
    try:
        # One choice failing fails the answer, and cancels (and so settles) the others.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(service.generate(principal, body.model, surface.request(one))) for one in bodies]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    generated = [task.result() for task in tasks]
    wholes: list[Any] = [surface.whole(one, piece) for one, piece in zip(bodies, generated, strict=True)]
    merged = wholes[0]
    merged.choices = [whole.choices[0].model_copy(update={"index": index}) for index, whole in enumerate(wholes)]
    merged.usage = _sum_usage([whole.usage for whole in wholes])
    cost = sum(piece.cost or 0.0 for piece in generated)
    return Response(
        merged.model_dump_json(exclude_none=True),
        media_type="application/json",
        headers=dropped_header(generated[0].dropped) | cost_header(cost),
    )


async def _events(
    surface: TextSurface[Body, BaseModel],
    service: InferenceService,
    principal: Principal,
    bodies: list[Body],
    first: AsyncGenerator[Generated, None],
) -> AsyncIterator[BaseModel]:
    """The n streams' events one after another, each choice under its own index and all
    under the first event's id; the usage events (with `stream_options.include_usage`)
    summed into one at the end."""
    identity: str | None = None
    usages: list[wire.Usage | None] = []
    last: Any = None
    for index, one in enumerate(bodies):
        pieces = first if index == 0 else await service.generate_stream(principal, one.model, surface.request(one))
        events = cast("AsyncGenerator[BaseModel, None]", surface.events(one, pieces))  # the surfaces' are generators
        # Closed here, however this ends: a stream cut off settles its usage in this task.
        async with contextlib.aclosing(pieces), contextlib.aclosing(events):
            async for event in events:
                item: Any = event
                identity = identity or item.id
                item.id = identity
                if not item.choices and item.usage is not None:
                    usages.append(item.usage)
                    last = item
                    continue
                for choice in item.choices:
                    choice.index = index
                yield item
    if last is not None:
        last.usage = _sum_usage(usages)
        yield last
