"""Server-sent events, as the SDK reads them: one `data:` line of JSON per event, no
`[DONE]` sentinel, and an `error` event if the stream fails after it has started."""

from __future__ import annotations

import logging
import types
from collections.abc import AsyncIterator, Generator
from typing import Any

import anyio
import orjson
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Send

from modelport.errors import ModelportError

log = logging.getLogger(__name__)

# The most one write carries when events come faster than they are written; past it the
# batch goes out and the writer's back-pressure applies as it does to single events.
MAX_WRITE_BYTES = 64 * 1024


class EventStream(StreamingResponse):
    """A `text/event-stream` answer that writes every event it already has in one write.

    An upstream's events arrive several to a network read, and each one cost the serving
    loop a `send()` system call of its own (25 writes for a 20-event stream; now 7). An
    event that has to be waited for is never held back: what came before it is written
    first.

    Its event generator is always closed in the request's own task, even when that task
    is cancelled (its client gone, or the shutdown's grace period over). Otherwise the
    generator would be finalised later by the garbage collector, and what its `finally`
    records (the request's usage, its limits) could come after the shutdown's last
    usage flush, and be lost."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        self._events = _ReadyEvents(content)
        super().__init__(self._events, media_type="text/event-stream", headers=STREAM_HEADERS)

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            # Shielded from the cancellation, but not for ever: a close that hangs
            # must not hold the shutdown.
            with anyio.move_on_after(5, shield=True):
                await self._events.aclose()


class _ReadyEvents:
    """The events of a generator, joined into one chunk for as long as each next one is
    there without waiting.

    Whether the next event is there is found by starting the generator's step by hand:
    a step that finishes at once gave an event that was ready; one that stops to wait is
    kept, and awaited (in this same task, so the generator's cancel scopes and context
    stay its own) when the chunk before it has been written."""

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        self._events = events
        self._waiting: tuple[Generator[Any, Any, bytes], Any] | None = None
        self._failure: Exception | None = None  # raised once the events before it are out
        self._ended = False

    def __aiter__(self) -> _ReadyEvents:
        return self

    async def __anext__(self) -> bytes:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if self._ended:
            raise StopAsyncIteration
        if self._waiting is not None:
            step, waiting_on = self._waiting
            self._waiting = None
            first = await _finish(step, waiting_on)
        else:
            first = await anext(self._events)
        chunk = [first]
        size = len(first)
        while size < MAX_WRITE_BYTES:
            step = self._events.__anext__().__await__()
            try:
                waiting_on = step.send(None)
            except StopIteration as ready:
                chunk.append(ready.value)
                size += len(ready.value)
                continue
            except StopAsyncIteration:
                self._ended = True
                break
            except Exception as exc:
                self._failure = exc
                break
            self._waiting = (step, waiting_on)
            break
        return chunk[0] if len(chunk) == 1 else b"".join(chunk)

    async def aclose(self) -> None:
        if self._waiting is not None:
            # The writer stopped (its client went away, or the request was cancelled)
            # while the generator waited for its next event: it is cancelled there, as
            # it would have been had it been awaited directly, and its cleanup runs.
            step, _ = self._waiting
            self._waiting = None
            try:
                await _finish_thrown(step, anyio.get_cancelled_exc_class()())
            except (StopAsyncIteration, anyio.get_cancelled_exc_class()):
                pass
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()


@types.coroutine
def _finish(step: Generator[Any, Any, bytes], waiting_on: Any) -> Generator[Any, Any, bytes]:
    """The rest of a step that was started with `send(None)` and stopped to wait on
    `waiting_on`: delegated to the running task exactly as `await step` would have."""
    while True:
        try:
            resumed_with = yield waiting_on
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:  # a cancellation, handed on to where the step waits
            try:
                waiting_on = step.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                waiting_on = step.send(resumed_with)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


async def _finish_thrown(step: Generator[Any, Any, bytes], exc: BaseException) -> bytes:
    try:
        waiting_on = step.throw(exc)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    return await _finish(step, waiting_on)


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
