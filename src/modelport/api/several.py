"""`n` > 1 on OpenAI's chat and text completions: n generations of one request, as
choices 0 … n-1 of one answer. Text completions may also carry several prompts (choices
indexed prompt-major: prompt i's choice j is choice i * n + j, as OpenAI does), `best_of`
(best_of generations a prompt, the n with the highest mean token log-probability kept,
in that order; the ranking asks each generation for its log-probabilities, shown only
where the caller asked for them) and `echo` (each choice's text starts with its prompt,
put there here; with `logprobs`, each generation asks the vendor to echo it, which alone
computes the prompt's log-probabilities: compat/openai.py).

Each choice is a request of its own through the inference service (admitted, limited,
metered and billed like any other, so the prompt is billed once per choice), made from
the body with `n` left out and, where the caller set a `seed`, seed + i: the same seed
would give the same text n times. Whole answers run their n generations at once (the
embedded engine batches them like any concurrent requests); streamed ones run them one
after another in the request's own task, choice 0's events first, so that every
generator is run and closed where the request's cancellation reaches it (`sse.EventStream`).
The answer's `usage` (and `x-modelport-cost`) is the sum of the calls', best_of's
generations not kept included: each was generated and billed."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from fastapi.responses import Response
from pydantic import BaseModel

from modelport.api import sse
from modelport.api.answers import TextSurface, cost_header, dropped_header
from modelport.errors import InvalidRequest
from modelport.inference.metering import Generated, GeneratedStream
from modelport.inference.service import InferenceService
from modelport.principal import Principal
from modelport.schemas import openai as wire

Body = TypeVar("Body", wire.ChatCompletionBody, wire.TextCompletionBody)


def several(body: wire.ChatCompletionBody | wire.TextCompletionBody) -> bool:
    """Whether the body asks for more than one plain choice (answered here)."""
    if (body.n or 1) > 1:
        return True
    if isinstance(body, wire.TextCompletionBody):
        return len(body.prompts()) > 1 or bool(body.echo) or (body.best_of or 1) > 1
    return False


@dataclass(frozen=True, slots=True)
class _Plan(Generic[Body]):
    """What one request generates: a body per generation (prompt-major), how many a
    prompt has (`each`), how many of those are kept (`kept`), each prompt's echo ("" for
    none), whether the caller asked to see the log-probabilities (best_of asks for
    them to rank by, whether or not the caller did), and whether the vendor echoes the
    prompts instead (echo with logprobs: only it computes the prompt's)."""

    bodies: list[Body]
    each: int
    kept: int
    echoes: list[str]
    logprobs_shown: bool = True
    vendor_echoes: bool = False


def _plan(body: Body) -> _Plan[Body]:
    n = body.n or 1
    if not isinstance(body, wire.TextCompletionBody):
        return _Plan([_one_of(body, index, {}) for index in range(n)], n, n, [""])
    prompts = body.prompts()
    # Echo with logprobs goes to the vendor, which alone can compute the prompt's (a 400
    # naming the deployments that can, elsewhere: compat/openai.py); echo alone is done here.
    vendor_echoes = bool(body.echo) and body.logprobs is not None
    if body.echo and not vendor_echoes and any(not isinstance(prompt, str) for prompt in prompts):
        raise InvalidRequest("echo needs the prompts as text, not token ids (or with logprobs)", param="echo")
    each = body.best_of or n
    ranked = each > n
    # The ranking needs every generation's token log-probabilities (at least the chosen token's).
    logprobs = body.logprobs if body.logprobs is not None or not ranked else 0
    echo = True if vendor_echoes else None
    bodies = [
        _one_of(body, index * each + draw, {"prompt": prompt, "best_of": None, "echo": echo, "logprobs": logprobs})
        for index, prompt in enumerate(prompts)
        for draw in range(each)
    ]
    echoes = [prompt if body.echo and not vendor_echoes and isinstance(prompt, str) else "" for prompt in prompts]
    shown = body.logprobs is not None
    return cast("_Plan[Body]", _Plan(bodies, each, n, echoes, logprobs_shown=shown, vendor_echoes=vendor_echoes))


def _one_of(body: Body, index: int, update: dict[str, Any]) -> Body:
    """The body of generation `index`: one choice, its own seed where one was set."""
    seed = None if body.seed is None else _wrapped(body.seed + index)
    return body.model_copy(update={"n": None, "seed": seed, **update})


def _unsupported(error: BaseException) -> list[str]:
    """The parameters a 400 says the vendor does not take (`params.check_supported`)."""
    return list(error.extra.get("unsupported_parameters") or []) if isinstance(error, InvalidRequest) else []


def _mean_logprob(piece: Generated, *, echoed: bool) -> float:
    """What best_of ranks by: the mean log-probability of the generated tokens (an empty
    answer last). An answer the vendor echoed has the prompt's entries first: the
    generated tokens are its last `response_tokens` (the vendor's count)."""
    entries = piece.logprobs[len(piece.logprobs) - (piece.response_tokens or 0) :] if echoed else piece.logprobs
    values = [entry.logprob for entry in entries if entry.logprob is not None]
    if not values:
        return -math.inf
    return sum(values) / len(values)


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
    plan = _plan(body)
    bodies = plan.bodies
    if body.stream:  # never ranked (the body's own check): every generation is a choice
        first = await service.generate_stream(principal, body.model, surface.request(bodies[0]))
        dropped = first.dropped if isinstance(first, GeneratedStream) else ()
        echoes = [plan.echoes[index // plan.each] for index in range(len(bodies))]
        events = _events(surface, service, principal, bodies, first, echoes)
        return sse.EventStream(events, framing, dropped_header(dropped))
    try:
        # One choice failing fails the answer, and cancels (and so settles) the others.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(service.generate(principal, body.model, surface.request(one))) for one in bodies]
    except BaseExceptionGroup as failed:
        cause = failed.exceptions[0]
        if plan.kept < plan.each and "logprobs" in _unsupported(cause) and not plan.logprobs_shown:
            raise InvalidRequest(
                "best_of larger than n ranks the generations by their log-probabilities, which this deployment's "
                "vendor does not return: ask for best_of equal to n, or call a deployment that returns them",
                param="best_of",
            ) from None
        raise cause from None
    generated = [task.result() for task in tasks]
    wholes: list[Any] = [surface.whole(one, piece) for one, piece in zip(bodies, generated, strict=True)]
    choices: list[Any] = []
    for start in range(0, len(bodies), plan.each):
        drawn = list(range(start, start + plan.each))
        if plan.kept < plan.each:  # best_of: the highest mean log-probability first (stable)
            drawn = sorted(drawn, key=lambda at: -_mean_logprob(generated[at], echoed=plan.vendor_echoes))[: plan.kept]
        for at in drawn:
            choice = wholes[at].choices[0]
            update: dict[str, Any] = {"index": len(choices)}
            if plan.echoes[start // plan.each]:
                update["text"] = plan.echoes[start // plan.each] + choice.text
            if not plan.logprobs_shown:
                update["logprobs"] = None
            choices.append(choice.model_copy(update=update))
    merged = wholes[0]
    merged.choices = choices
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
    echoes: list[str],
) -> AsyncIterator[BaseModel]:
    """The streams' events one after another, each choice under its own index and all
    under the first event's id (a text choice's first text led by its echo); the usage
    events (with `stream_options.include_usage`) summed into one at the end."""
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
                    if echoes[index] and isinstance(choice, wire.TextChoice):
                        choice.text, echoes[index] = echoes[index] + choice.text, ""
                yield item
    if last is not None:
        last.usage = _sum_usage(usages)
        yield last
