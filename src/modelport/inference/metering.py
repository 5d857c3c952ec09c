"""The metered call: admit -> call -> filter -> settle -> record, for every request the
service sends to a vendor, on every way it can end (answered, the vendor failed, the
client went away, the shutdown's grace period ran out).

`Meter.admit` counts the request against its limits; from then on exactly one `settle`
gives the limits back what was really used and hands the usage sink one `UsageEvent`.
`answer` and `stream` call a text vendor and remove stop sequences from what comes back
(streamed or not, by the same filter, so both give the same text); `retrieve` calls an
embeddings or rerankings vendor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import Any, Generic, TypeVar

from modelport.errors import ModelportError
from modelport.generation import (
    FinishReason,
    GenerationCall,
    GenerationChunk,
    PromptCounts,
    Sampling,
    TokenLogprob,
    UsageEvent,
    UsageSink,
    join_reasoning,
    join_tool_calls,
)
from modelport.inference.admission import LimitGate, admit
from modelport.limits.base import Admission
from modelport.limits.pricing import cost_of, prompt_token_guess
from modelport.observability.ids import uuid_text
from modelport.observability.requests import calling_vendor
from modelport.observability.shutdown import cut_off_status
from modelport.observability.timing import waiting_for_vendor
from modelport.principal import Principal
from modelport.stops import OutputFilter
from modelport.vendors.base import Capabilities, Target, Vendor

T = TypeVar("T")


@dataclass(slots=True)
class Generated:
    """What the service answers, before a surface shapes it (`compat/`): text, logprobs
    and tool-call deltas; on the last piece of a stream, or on a whole answer, the finish
    reason, the token counts and the stop sequence that ended it, if one did."""

    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    response_tokens: int | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI deltas, passed on as they come
    stop_sequence: str | None = None
    estimated: bool = False
    # The model's reasoning blocks, for the surfaces that show them (GenerationChunk.reasoning).
    reasoning: list[dict[str, Any]] | None = None
    # What modelport left out of the call or changed (x-modelport-dropped), on a whole
    # answer; a stream carries it as `GeneratedStream.dropped`.
    dropped: tuple[str, ...] = ()
    # Of prompt_tokens: read from the vendor's prompt cache, and written to it.
    cached_prompt_tokens: int | None = None
    cache_creation_tokens: int | None = None
    # What the call cost in US dollars at the deployment's prices, on a whole answer and
    # on a stream's last piece (the x-modelport-cost header, `usage.cost`).
    cost: float | None = None
    # False when the vendor's answer ended without a finish reason of its own (the one
    # shown is modelport's "stop"): the response cache keeps no such answer.
    vendor_finished: bool = True
    # On a stream's first piece: the prompt's counts where the vendor reported them
    # before the end (a surface that shows them at the start reads them; the last piece's
    # `prompt_tokens` remains what is billed).
    prompt_counts: PromptCounts | None = None
    # What the response cache did for a whole answer (`response_cache.CacheState`, the
    # x-modelport-cache header); a stream carries it as `GeneratedStream.cache`. None:
    # the request is not cached.
    cache: str | None = None


NOTHING = Generated(text="")


# A stream has a piece per token or two: its pieces are joined with these, in C, rather
# than by a generator over them.
_TEXT = attrgetter("text")
_LOGPROBS = attrgetter("logprobs")


def joined(pieces: Sequence[Generated]) -> Generated:
    """Pieces (of one answer, in order) as one whole answer: their texts, logprobs, tool
    calls and reasoning joined, with the last piece's finish reason, counts and cost."""
    final = pieces[-1]
    tool_calls: list[dict[str, Any]] = []
    reasoning: list[dict[str, Any]] = []
    for piece in pieces:  # most pieces carry neither: each join would index the blocks again
        if piece.tool_calls:
            join_tool_calls(tool_calls, piece.tool_calls)
        if piece.reasoning:
            join_reasoning(reasoning, piece.reasoning)
    # Built whole rather than by `dataclasses.replace` of the last piece, which copied it
    # first (about 3 µs, on every stream the response cache keeps).
    return Generated(
        text="".join(map(_TEXT, pieces)),
        logprobs=list(chain.from_iterable(map(_LOGPROBS, pieces))),
        tool_calls=tool_calls or None,
        finish_reason=final.finish_reason,
        prompt_tokens=final.prompt_tokens,
        response_tokens=final.response_tokens,
        stop_sequence=final.stop_sequence,
        estimated=final.estimated,
        reasoning=reasoning or None,
        cached_prompt_tokens=final.cached_prompt_tokens,
        cache_creation_tokens=final.cache_creation_tokens,
        cost=final.cost,
        vendor_finished=final.vendor_finished,
    )


@dataclass(frozen=True, slots=True)
class Priced(Generic[T]):
    """An embeddings or rerankings answer with what it cost (US dollars)."""

    answer: T
    cost: float


@dataclass(slots=True)
class Metered:
    """One admitted request on its way to a vendor: what its settlement needs."""

    principal: Principal
    deployment_id: str
    target: Target
    call: GenerationCall
    started: float  # when the request reached the service: latency counts from here
    request_id: str
    admission: Admission | None
    text_deltas: int = 0  # streamed text pieces so far: what an abandoned stream is billed for


def failure_status(exc: BaseException) -> int:
    """The status a request that ended with `exc` is recorded with."""
    if isinstance(exc, ModelportError):
        return exc.status_code
    # Cancelled: 503 when the shutdown's grace period ended it, 499 when its client left.
    return cut_off_status() if isinstance(exc, asyncio.CancelledError) else 500


class Meter:
    def __init__(self, limits: LimitGate | None, usage: UsageSink | None) -> None:
        self._limits = limits
        self._usage = usage

    async def admit(
        self, principal: Principal, deployment_id: str, target: Target, call: GenerationCall, started: float
    ) -> Metered:
        """Count the request (429 when a limit has no room); from here on every way it
        can end must go through `settle`."""
        request_id = uuid_text()
        admission = await admit(self._limits, principal, target, call, request_id)
        calling_vendor(target)
        return Metered(principal, deployment_id, target, call, started, request_id, admission)

    async def cache_hit(
        self, principal: Principal, deployment_id: str, target: Target, cost: float, started: float
    ) -> None:
        """A request the response cache answers: admitted as a request at the hit's
        price `cost` and no tokens (429 when a limit has no room), and settled and
        recorded at once: nothing more is called."""
        request_id = uuid_text()
        admission = None
        if self._limits is not None:
            admission = await self._limits.admit_cached(principal, target, request_id, cost)
        call = GenerationCall(sampling=Sampling(temperature=0.0, max_tokens=0))
        metered = Metered(principal, deployment_id, target, call, started, request_id, admission)
        self.settle(metered, Generated(text="", prompt_tokens=0, response_tokens=0), 200, cost=cost)

    @staticmethod
    def cost(metered: Metered, final: Generated) -> float:
        """What the call cost at the deployment's prices: what `settle` bills, and what
        the answer says it cost."""
        return cost_of(
            metered.target.parameters,
            final.prompt_tokens or 0,
            final.response_tokens or 0,
            cached_prompt_tokens=final.cached_prompt_tokens or 0,
            cache_creation_tokens=final.cache_creation_tokens or 0,
        )

    def settle(self, metered: Metered, final: Generated, status: int, *, cost: float | None = None) -> None:
        """Give the limits back what was not used and record the request's usage, at
        `cost` or else what `final`'s tokens cost. Nothing here awaits: in a cancelled
        task every await raises again, and what came after one would be lost."""
        prompt_tokens, response_tokens = final.prompt_tokens or 0, final.response_tokens or 0
        cached, created = final.cached_prompt_tokens or 0, final.cache_creation_tokens or 0
        cost = self.cost(metered, final) if cost is None else cost
        if self._limits is not None:
            self._limits.settle(metered.admission, tokens=prompt_tokens + response_tokens, cost=cost)
        if self._usage is not None:
            self._usage(
                UsageEvent(
                    principal=metered.principal,
                    deployment_id=metered.deployment_id,
                    prompt_tokens=prompt_tokens,
                    response_tokens=response_tokens,
                    status=status,
                    latency_ms=(time.perf_counter() - metered.started) * 1000,
                    estimated=final.estimated,
                    cost=cost,
                    request_id=metered.request_id,
                    cached_prompt_tokens=cached,
                    cache_creation_tokens=created,
                )
            )

    async def answer(self, metered: Metered, vendor: Vendor, capabilities: Capabilities) -> Generated:
        """The whole answer, stop sequences removed, tool calls joined."""
        try:
            with waiting_for_vendor():
                result = await vendor.complete(metered.target, metered.call)
            window = _Window(metered, capabilities)
            first = window.take(result)
            pieces = [first, window.last()] if first is not None else [window.last()]
        except BaseException as exc:  # the client gone (cancelled) included: its limits are settled
            self.settle(metered, NOTHING, failure_status(exc))
            raise
        final = pieces[-1]
        final.cost = self.cost(metered, final)
        self.settle(metered, final, 200, cost=final.cost)
        return joined(pieces)

    async def stream(
        self,
        metered: Metered,
        vendor: Vendor,
        capabilities: Capabilities,
        *,
        complete: Callable[[list[Generated]], Awaitable[None]] | None = None,
    ) -> AsyncGenerator[Generated, None]:
        """Start the vendor's stream (errors known before its first chunk are raised
        here); the pieces it returns are settled when they end, however they end.
        `complete` is given every piece of a stream that ended complete, once its reader
        has read past the last one (the response cache keeps it); never one cut off."""
        try:
            with waiting_for_vendor():
                chunks = await vendor.stream(metered.target, metered.call)
        except BaseException as exc:
            self.settle(metered, NOTHING, failure_status(exc))
            raise
        return self._settled(metered, _Window(metered, capabilities), chunks, complete)

    async def retrieve(
        self, metered: Metered, call: Callable[[], Awaitable[T]], tokens: Callable[[T], int | None]
    ) -> Priced[T]:
        """An embeddings or rerankings call: it generates nothing, so the input it read
        (`tokens` of its answer) is all it costs."""
        try:
            with waiting_for_vendor():
                result = await call()
        except BaseException as exc:  # the client gone (cancelled) included: its limits are settled
            self.settle(metered, NOTHING, failure_status(exc))
            raise
        read = Generated(text="", prompt_tokens=tokens(result))
        self.settle(metered, read, 200)
        return Priced(result, self.cost(metered, read))

    async def _settled(
        self,
        metered: Metered,
        window: _Window,
        chunks: AsyncIterator[GenerationChunk],
        complete: Callable[[list[Generated]], Awaitable[None]] | None,
    ) -> AsyncGenerator[Generated, None]:
        """The vendor's chunks as pieces, stop sequences removed (`_Window`), the last one
        with the finish reason and the counts; settled when the stream ends, however it
        ends, and the vendor's stream closed then.

        One generator filters and settles: every piece of a stream is passed on by each
        generator it goes through, so the two jobs share one (and the pieces `complete`
        is given are gathered here, for the same reason)."""
        status = 499  # the client went away before the end, unless we get there
        final: Generated | None = None
        seen: list[Generated] | None = [] if complete is not None else None
        # A vendor's stream is an async generator; a test's may be any async iterator.
        close = getattr(chunks, "aclose", None)
        try:
            async for chunk in chunks:
                piece = window.take(chunk)
                if piece is not None:
                    if seen is not None:
                        seen.append(piece)
                    yield piece
                if window.cut_off:
                    break
            if close is not None:
                await close()  # the upstream is let go before the last piece is passed on
            final = window.last()
            final.cost = self.cost(metered, final)
            status = 200
            yield final
        except (Exception, asyncio.CancelledError) as exc:  # not GeneratorExit: closed early is 499
            status = failure_status(exc)
            raise
        finally:
            if final is None and (status == 499 or metered.text_deltas):
                # Ended early (the client went away, or the vendor failed mid-stream):
                # billed for what was generated, the prompt at a fair guess.
                final = Generated(
                    text="", prompt_tokens=prompt_token_guess(metered.call), response_tokens=metered.text_deltas
                )
            # Settled before anything is awaited (see `settle`).
            self.settle(metered, final or NOTHING, status, cost=final.cost if final is not None else None)
            if close is not None:
                await close()
        # Only here when the stream ended complete and its reader asked past the last piece.
        if complete is not None and seen is not None and final is not None:
            await complete([*seen, final])


class _Window:
    """Stop sequences removed from a vendor's chunks, one chunk at a time, and what the
    chunks said so far: the finish reason and the counts, for the last piece.

    Not a generator: a whole answer is one chunk through `take` and then `last`, and a
    stream's generator (`Meter._settled`) calls it for each chunk, so neither pays a
    generator of its own per piece."""

    __slots__ = (
        "_metered",
        "_output",
        "_stops_itself",
        "announced",
        "cache_creation_tokens",
        "cached_prompt_tokens",
        "estimated",
        "finish_reason",
        "prompt_tokens",
        "response_tokens",
    )

    def __init__(self, metered: Metered, capabilities: Capabilities) -> None:
        self._metered = metered
        self._output = OutputFilter(metered.call.sampling.stop_sequences)
        self._stops_itself = capabilities.stops_at_stop_sequences
        self.finish_reason: FinishReason | None = None
        self.prompt_tokens: int | None = None
        self.response_tokens: int | None = None
        self.cached_prompt_tokens: int | None = None
        self.cache_creation_tokens: int | None = None
        self.estimated = False
        self.announced = False  # whether a piece carried the prompt's counts (`prompt_counts`)

    def take(self, chunk: GenerationChunk) -> Generated | None:
        """The piece a chunk gives the caller, if any: text, logprobs, tool calls or reasoning."""
        if chunk.text:
            self._metered.text_deltas += 1
        if chunk.prompt_tokens is not None:
            self.prompt_tokens = chunk.prompt_tokens
        if chunk.cached_prompt_tokens is not None:
            self.cached_prompt_tokens = chunk.cached_prompt_tokens
        if chunk.cache_creation_tokens is not None:
            self.cache_creation_tokens = chunk.cache_creation_tokens
        piece = None
        if not self._output.stopped:
            text, entries = self._output.take(chunk)
            if text or entries or chunk.tool_calls or chunk.reasoning:
                piece = Generated(text=text, logprobs=entries, tool_calls=chunk.tool_calls, reasoning=chunk.reasoning)
                if not self.announced and self.prompt_tokens is not None:
                    self.announced = True
                    piece.prompt_counts = PromptCounts(
                        self.prompt_tokens, self.cached_prompt_tokens or 0, self.cache_creation_tokens or 0
                    )
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.response_tokens is not None:
            self.response_tokens = chunk.response_tokens
        self.estimated = self.estimated or chunk.estimated
        return piece

    @property
    def cut_off(self) -> bool:
        """Whether the stream must end here: a vendor that stops by itself ends right
        after the stop sequence and reports its counts; one that does not is cut off."""
        return self._output.stopped and not self._stops_itself

    def last(self) -> Generated:
        """The last piece: what the filter held back, the finish reason and the counts."""
        output = self._output
        text, entries = output.finish()
        return Generated(
            text=text,
            logprobs=entries,
            finish_reason="stop" if output.stopped else (self.finish_reason or "stop"),
            prompt_tokens=self.prompt_tokens,
            response_tokens=self.response_tokens,
            stop_sequence=output.matched,
            estimated=self.estimated,
            cached_prompt_tokens=self.cached_prompt_tokens,
            cache_creation_tokens=self.cache_creation_tokens,
            vendor_finished=self.finish_reason is not None or output.stopped,
        )


async def first_then_rest(pieces: AsyncGenerator[Generated, None]) -> AsyncGenerator[Generated, None]:
    """Wait for a stream's first piece, then return the whole stream: a deployment that
    fails before its first piece can still be replaced (see `routing`)."""
    try:
        first = await anext(pieces)
    except BaseException:
        await pieces.aclose()
        raise
    return _prepend(first, pieces)


async def _prepend(first: Generated, rest: AsyncGenerator[Generated, None]) -> AsyncGenerator[Generated, None]:
    async with contextlib.aclosing(rest):
        yield first
        async for piece in rest:
            yield piece


class GeneratedStream(AsyncGenerator[Generated, None]):
    """A stream of pieces that knows, before its first piece, what modelport left out of
    the call or changed (`dropped`, for the x-modelport-dropped header, which is sent
    before the first byte). It is the stream it wraps in every other way: closing it
    closes that one."""

    def __init__(
        self, pieces: AsyncGenerator[Generated, None], dropped: tuple[str, ...] = (), cache: str | None = None
    ) -> None:
        self._pieces = pieces
        self.dropped = dropped
        # What the response cache did (`Generated.cache`), for the x-modelport-cache header.
        self.cache = cache

    # Each piece of a stream is asked for here: the wrapped stream's own awaitable is
    # handed back rather than awaited in a coroutine of this class, which would cost a
    # coroutine per piece (and `AsyncGenerator.__anext__` another, through `asend`).

    def __anext__(self) -> Coroutine[Any, Any, Generated]:
        return self._pieces.__anext__()

    def asend(self, value: None) -> Coroutine[Any, Any, Generated]:
        return self._pieces.asend(value)

    def athrow(self, *args: Any) -> Coroutine[Any, Any, Generated]:
        return self._pieces.athrow(*args)

    def aclose(self) -> Coroutine[Any, Any, None]:
        return self._pieces.aclose()
