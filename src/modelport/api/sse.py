"""Server-sent events: one writer for every surface's streams, and the one place that
decides how a stream ends.

Each surface brings a `Framing`: how it writes an event, the error event that ends a
failed stream (in that surface's own error shape, which its SDK raises), and what ends
a complete one (OpenAI's `data: [DONE]`, or nothing). `EventStream` does the rest:

- done: the events ran out; the framing's `done` is the last write.
- failed: the events raised; a `ModelportError` becomes the framing's error event with
  its status and body, anything else a logged 500.
- abandoned: the client went away; nothing more is written.
- shutdown: the shutdown's grace period ended the request (`observability.shutdown`);
  the framing's error event with a 503 is the last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import anyio
import orjson
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from modelport.errors import ModelportError
from modelport.observability.shutdown import REASON as SHUTDOWN_REASON
from modelport.observability.shutdown import gate
from modelport.schemas.inference import EncodedEvent

log = logging.getLogger(__name__)

# The most one write carries when events come faster than they are written; past it the
# generator waits for the writer, as it waited for each write before.
MAX_WRITE_BYTES = 64 * 1024
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Seconds the last write of a stream ended by the shutdown, and the close of its events,
# may take: they are shielded from the cancellation, but must not hold the shutdown.
CLOSING_SECONDS = 5

Item = TypeVar("Item")
# A framing only takes events: one that writes any of a surface's events writes a
# narrower stream's too (several choices' models, where one stream also has templates).
Framed = TypeVar("Framed", contravariant=True)


def data_event(payload: BaseModel | EncodedEvent) -> bytes:
    """One `data:` line of JSON: an event of the SGP and OpenAI surfaces."""
    if isinstance(payload, EncodedEvent):
        return b"data: " + payload.json + b"\n\n"
    return b"data: " + payload.model_dump_json(exclude_none=True).encode() + b"\n\n"


def named_event(name: str, payload: dict[str, Any]) -> bytes:
    """An `event:` line naming the event, then its `data:` line of JSON."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """The event that ends a failed stream on every surface: named `error`, its data the
    surface's own error body."""
    return named_event("error", body)


@dataclass(frozen=True, slots=True)
class Framing(Generic[Framed]):
    """How one surface writes its streams."""

    event: Callable[[Framed], bytes]
    # The event that ends a failed stream, from modelport's own status and error body
    # (`{"detail": ...}`, SPEC 3.4).
    error: Callable[[int, dict[str, Any]], bytes]
    # What ends a complete stream.
    done: bytes = b""


class EventStream(StreamingResponse, Generic[Item]):
    """A `text/event-stream` answer, framed by its surface, that writes every event it
    already has in one write.

    An upstream's events arrive several to a network read when the worker is busy, and
    each one cost a `send()` system call of its own (25 writes for the benchmark's
    20-event stream; now 10). So the request's task reads the events and a writer task
    sends them: the writer runs whenever the reader has to wait, and sends everything
    that has come in since its last write. An event never waits for the upstream or for
    a later event; only for the generator's own work up to its next wait.

    The event generator runs in the request's own task (its cancel scopes, deadlines and
    context are the request's), and is always closed there, even when that task is
    cancelled (its client gone, or the shutdown's grace period over). Otherwise the
    generator would be finalised later by the garbage collector, and what its `finally`
    records (the request's usage, its limits) could come after the shutdown's last
    usage flush, and be lost.

    How the stream ends (done, failed, abandoned, shutdown) is decided here, and only
    here: see the module's docstring."""

    def __init__(
        self, events: AsyncIterator[Item], framing: Framing[Item], headers: dict[str, str] | None = None
    ) -> None:
        # Starlette's `body_iterator` goes unused: `stream_response` reads and frames the events.
        super().__init__(
            cast("AsyncIterator[bytes]", events),
            media_type="text/event-stream",
            headers={**STREAM_HEADERS, **(headers or {})},
        )
        self._events = events
        self._framing = framing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _spec_version(scope) < (2, 4):
            # A server of ASGI 2.3 (uvicorn) tells of a client gone only through
            # `receive`. Starlette would stream in a task of its own and listen here;
            # the listener is a task beside the writer's instead, and the events are
            # read in this task: one task and one task group less for each stream.
            await self._respond(send, receive)
            if self.background is not None:  # as Starlette runs them
                await self.background()
            return
        # ASGI 2.4: a client gone is an OSError from `send`; Starlette streams here.
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        await self._respond(send, None)

    async def _respond(self, send: Send, receive: Receive | None) -> None:
        """The stream, written; with `receive`, stopped as soon as it says the client is gone."""
        started = False
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            started = True
            if not await self._relay(send, receive):
                return  # the client went away: nothing more is written
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if started and gate.expired:
                # The shutdown's grace period is over (the middleware records the 503):
                # the surface's error event ends the stream, so its SDK raises instead
                # of reading what came as a complete answer.
                await _last_write(send, self._framing.error(503, {"detail": SHUTDOWN_REASON}))
            raise
        finally:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                with anyio.move_on_after(CLOSING_SECONDS, shield=True):
                    await aclose()

    async def _relay(self, send: Send, receive: Receive | None) -> bool:
        """Reads the events here and writes them from a task; False when `receive` said
        the client went away, which stops both wherever they wait.

        Plain asyncio tasks, not an anyio task group: a task group, its cancel scopes
        and its task handles were a seventh of the CPU of a stream answered from the
        response cache (issue 27). What the task group gave is kept: the writer and the
        listener never outlive the stream, and the reading is stopped (its task
        cancelled, wherever it waits) only by them and only while it reads; that
        cancellation ends here, any other (the shutdown's) goes on as itself."""
        unsent = _Unsent()
        failure: BaseException | None = None
        client_gone = False
        reader = asyncio.current_task()
        assert reader is not None
        reading = True
        stopped = False  # whether the writer or the listener cancelled the reading

        def stop_reading() -> None:
            nonlocal stopped
            if reading and not stopped:
                stopped = True
                reader.cancel()

        async def listen(receive: Receive) -> None:
            nonlocal client_gone
            await self.listen_for_disconnect(receive)
            client_gone = True
            stop_reading()

        async def write() -> None:
            nonlocal failure
            try:
                while (chunk := await unsent.take()) is not None:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except Exception as exc:
                # The client went away: the reading stops now, wherever it waits (a
                # stalled upstream must not hold the request), as it does when the
                # server reports the disconnect. The generator is cancelled in the
                # request's task, and the service records usage before it awaits.
                failure = exc
                stop_reading()

        helpers = [asyncio.create_task(write())]
        if receive is not None:
            helpers.append(asyncio.create_task(listen(receive)))
        try:
            try:
                if last := await self._read(unsent):  # empty: a surface with no `[DONE]`
                    await unsent.put(last)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                # Raised, as itself, once what came before it has been written.
                failure = exc
            finally:
                unsent.close()
            await helpers[0]  # everything written, or the writer failed
        except asyncio.CancelledError:
            # Ours ends here; the shutdown's (or anyone else's) goes on.
            if not stopped or reader.uncancel() > 0:
                raise
        finally:
            reading = False
            for helper in helpers:
                helper.cancel()
            # Neither outlives the stream (the writer may be in the middle of a write).
            await asyncio.wait(helpers)
        if failure is not None:
            raise failure
        return not client_gone

    async def _read(self, unsent: _Unsent) -> bytes:
        """Reads every event into `unsent`, and returns the stream's last write: the
        framing's end of a complete stream, or its error event for a failed one."""
        framing = self._framing
        encode = framing.event
        try:
            async for item in self._events:
                await unsent.put(encode(item))
        except ModelportError as exc:
            return framing.error(exc.status_code, exc.body())
        except Exception:
            log.exception("stream failed after it started")
            return framing.error(500, {"detail": "internal error while streaming"})
        return framing.done


def _spec_version(scope: Scope) -> tuple[int, ...]:
    return tuple(map(int, scope.get("asgi", {}).get("spec_version", "2.0").split(".")))


async def _last_write(send: Send, body: bytes) -> None:
    """The end of a stream whose request is cancelled: shielded from the cancellation,
    since nothing else will write it; not at all if the client is gone already."""
    with anyio.move_on_after(CLOSING_SECONDS, shield=True):
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": body, "more_body": False})


class _Unsent:
    """The events read and not yet written, and the two waits between reader and writer:
    the writer's for something to send, the reader's for room when a write is full."""

    def __init__(self) -> None:
        self._events: list[bytes] = []
        self._size = 0
        self._closed = False
        self._arrived = asyncio.Event()
        self._taken = asyncio.Event()

    async def put(self, event: bytes) -> None:
        self._events.append(event)
        self._size += len(event)
        self._arrived.set()
        while self._size >= MAX_WRITE_BYTES:
            self._taken.clear()
            await self._taken.wait()

    def close(self) -> None:
        self._closed = True
        self._arrived.set()

    async def take(self) -> bytes | None:
        """Everything not yet written, as one chunk; None once the reader is done."""
        while not self._events:
            if self._closed:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        chunk = b"".join(self._events)  # one event: CPython hands back that object itself
        self._events.clear()
        self._size = 0
        self._taken.set()
        return chunk
