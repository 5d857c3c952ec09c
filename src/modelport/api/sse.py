"""Server-sent events, as the SDK reads them: one `data:` line of JSON per event, no
`[DONE]` sentinel, and an `error` event if the stream fails after it has started."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import anyio
import orjson
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Send

from modelport.errors import ModelportError

log = logging.getLogger(__name__)

# The most one write carries when events come faster than they are written; past it the
# generator waits for the writer, as it waited for each write before.
MAX_WRITE_BYTES = 64 * 1024


class EventStream(StreamingResponse):
    """A `text/event-stream` answer that writes every event it already has in one write.

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
    usage flush, and be lost."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=STREAM_HEADERS)
        self._events = content

    async def stream_response(self, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await self._relay(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                # Shielded from the cancellation, but not for ever: a close that hangs
                # must not hold the shutdown.
                with anyio.move_on_after(5, shield=True):
                    await aclose()

    async def _relay(self, send: Send) -> None:
        unsent = _Unsent()
        failure: BaseException | None = None
        async with anyio.create_task_group() as writers:

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
                    writers.cancel_scope.cancel()

            writers.start_soon(write)
            try:
                async for event in self._events:
                    await unsent.put(event)
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:
                # Raised, as itself, once what came before it has been written.
                failure = exc
            finally:
                unsent.close()
        if failure is not None:
            raise failure


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


STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(payload: BaseModel) -> bytes:
    return b"data: " + payload.model_dump_json(exclude_none=True).encode() + b"\n\n"


def error_event(detail: dict[str, object]) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(detail) + b"\n\n"


async def encode(events: AsyncIterator[BaseModel]) -> AsyncIterator[bytes]:
    try:
        async for item in events:
            yield event(item)
    except ModelportError as exc:
        yield error_event({"status_code": exc.status_code, **exc.body()})
    except Exception:
        log.exception("stream failed after it started")
        yield error_event({"status_code": 500, "detail": "internal error while streaming"})
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
