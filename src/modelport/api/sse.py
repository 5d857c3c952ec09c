"""Server-sent events, as the SDK reads them: one `data:` line of JSON per event, no
`[DONE]` sentinel, and an `error` event if the stream fails after it has started."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import orjson
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Send

from modelport.errors import ModelportError

log = logging.getLogger(__name__)


class EventStream(StreamingResponse):
    """A `text/event-stream` answer whose event generator is always closed in the
    request's own task, even when that task is cancelled (its client gone, or the
    shutdown's grace period over). Otherwise the generator would be finalised later by
    the garbage collector, and what its `finally` records (the request's usage, its
    limits) could come after the shutdown's last usage flush, and be lost."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=STREAM_HEADERS)
        self._events = content

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                # Shielded from the cancellation, but not for ever: a close that hangs
                # must not hold the shutdown.
                with anyio.move_on_after(5, shield=True):
                    await aclose()


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
