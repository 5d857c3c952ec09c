"""Server-sent events, as the SDK reads them: one `data:` line of JSON per event, no
`[DONE]` sentinel, and an `error` event if the stream fails after it has started."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson
from pydantic import BaseModel

from modelport.errors import ModelportError

log = logging.getLogger(__name__)


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
