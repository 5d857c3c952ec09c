"""OpenAI's Responses API passed through to an upstream that serves it (an OPENAI
deployment, or a compatible server whose settings say `serves_responses`), metered like
every other call: admitted against the limits before it is sent, settled and recorded
with the upstream's own counts however it ends.

The reservation is the body's bytes as prompt tokens (a token is at least a byte) and
`max_output_tokens`, or what the window leaves, for the answer. The usage comes from
the response object's `usage` (`input_tokens`, `output_tokens`, and
`input_tokens_details.cached_tokens`), whole or in the stream's closing event; what it
cost at the deployment's prices is added to that `usage` as `cost`, as on every surface.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from modelport.generation import GenerationCall, Sampling
from modelport.inference.metering import NOTHING, Generated, Meter, Metered, failure_status
from modelport.limits.pricing import prompt_token_guess
from modelport.vendors.base import RelayedEvents, ResponsesRelay

# The events that close a response with its usage, and those that say it failed.
_FINISHED = frozenset({"response.completed", "response.incomplete"})
_FAILED = frozenset({"response.failed", "error"})


@dataclass(frozen=True, slots=True)
class Relayed:
    """The upstream's answer: its response object, or its events as they come."""

    response: dict[str, Any] | None = None
    events: RelayedEvents | None = None
    cost: float = 0.0  # of a whole response (a stream's is in its closing event's usage)


def reservation(body: dict[str, Any], context_window: int | None, default_max_tokens: int) -> GenerationCall:
    """What the limits reserve for a passed-through body (see the module docstring)."""
    prompt = orjson.dumps({name: value for name, value in body.items() if name != "model"}).decode()
    requested = body.get("max_output_tokens")
    if isinstance(requested, int) and requested > 0:
        bound = requested
    elif context_window:
        bound = max(1, context_window - len(prompt.encode()))
    else:
        bound = default_max_tokens
    return GenerationCall(
        sampling=Sampling(temperature=0.0, max_tokens=bound), prompt=prompt, response_token_bound=bound
    )


def usage_of(response: dict[str, Any] | None) -> Generated:
    """A response object's counts, as the metered call settles them."""
    usage = (response or {}).get("usage") or {}
    details = usage.get("input_tokens_details") or {}
    return Generated(
        text="",
        prompt_tokens=_count(usage.get("input_tokens")),
        response_tokens=_count(usage.get("output_tokens")),
        cached_prompt_tokens=_count(details.get("cached_tokens")),
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _settle_priced(meter: Meter, metered: Metered, response: dict[str, Any] | None, status: int) -> float:
    """Settle with the response's counts, and write what it cost into its `usage`."""
    final = usage_of(response)
    meter.settle(metered, final, status)
    cost = meter.cost(metered, final)
    usage = (response or {}).get("usage")
    if isinstance(usage, dict):
        usage["cost"] = cost
    return cost


async def run(meter: Meter, metered: Metered, vendor: ResponsesRelay, body: dict[str, Any], *, stream: bool) -> Relayed:
    """Send the admitted body; from here on every way it ends is settled once."""
    if not stream:
        try:
            response = await vendor.relay_whole(metered.target, body)
        except BaseException as exc:  # the client gone (cancelled) included
            meter.settle(metered, NOTHING, failure_status(exc))
            raise
        cost = _settle_priced(meter, metered, response, 200)
        return Relayed(response=response, cost=cost)
    try:
        events = await vendor.relay_stream(metered.target, body)
        # Its first event before answering: an upstream that fails before it can still
        # be replaced by the model's next deployment (see `routing`).
        first = await anext(events)
    except BaseException as exc:
        meter.settle(metered, NOTHING, failure_status(exc))
        raise
    return Relayed(events=_settled(meter, metered, first, events))


async def _settled(
    meter: Meter, metered: Metered, first: tuple[str, dict[str, Any]], events: RelayedEvents
) -> RelayedEvents:
    status = 499  # the client went away before the end, unless we get there
    settled = False
    deltas = 0  # streamed pieces of the answer: what an answer cut short is billed for
    try:
        yield first
        async for name, payload in events:
            if name in _FINISHED:
                status = 200
                _settle_priced(meter, metered, payload.get("response"), status)
                settled = True
            elif name in _FAILED:
                status = 502
            elif name.endswith(".delta"):
                deltas += 1
            yield name, payload
    except (Exception, asyncio.CancelledError) as exc:  # not GeneratorExit: closed early is 499
        status = failure_status(exc)
        raise
    finally:
        if not settled:
            # Ended early: billed for what was relayed, the prompt at a fair guess.
            cut_short = Generated(text="", prompt_tokens=prompt_token_guess(metered.call), response_tokens=deltas)
            meter.settle(metered, cut_short, status)  # before anything is awaited (see Meter.settle)
        await events.aclose()
