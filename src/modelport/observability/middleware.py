"""The ASGI middleware that observes each HTTP request once: its record (request id,
route, status, first event), the metrics and the log line made from it at the end,
its trace span, and its end at shutdown when the grace period is over.

It also adds the headers that describe the request as a whole when the response
starts: `x-request-id`, `x-modelport-overhead-ms` (the gateway's own time, see
`modelport.observability.timing`) and the `x-ratelimit-remaining-*` headers that admission found
(SPEC 7; the service knows no HTTP, so it writes them into a per-request dict,
`limits.base.response_headers`). One middleware rather than one per header: every
layer wraps `send`, and a stream calls `send` once per event."""

from __future__ import annotations

import asyncio
import re
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.limits.base import response_headers
from modelport.observability import logs, metrics, tracing
from modelport.observability.ids import hex_id
from modelport.observability.requests import RequestRecord, current_request
from modelport.observability.shutdown import REASON as SHUTDOWN_REASON
from modelport.observability.shutdown import gate
from modelport.observability.timing import RequestClock, current_clock

REQUEST_ID_HEADER = b"x-request-id"
OVERHEAD_HEADER = b"x-modelport-overhead-ms"
# A caller's own request id is kept if it looks like one (so it can be logged safely).
_CALLER_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
_EVENT_STREAM = b"text/event-stream"
_ERROR_EVENT = b"event: error"


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and _CALLER_ID.fullmatch(value):
            return bytes(value).decode()
    return hex_id()


class RequestObserver:
    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(request_id=_request_id(scope), method=scope["method"], scope=scope)
        record.span = tracing.start_request(record)
        clock = RequestClock(started=record.started)
        limit_headers: dict[str, str] = {}
        tokens = (current_request.set(record), current_clock.set(clock), response_headers.set(limit_headers))
        started = False
        finished = False

        async def observing_send(message: Message) -> None:
            nonlocal started, finished
            kind = message["type"]
            if kind == "http.response.start":
                started = True
                record.status = record.status or message["status"]
                overhead_ms = clock.overhead_ms()
                metrics.gateway_overhead(record.route, overhead_ms / 1000)
                headers = [
                    *message.get("headers", ()),
                    (REQUEST_ID_HEADER, record.request_id.encode()),
                    (OVERHEAD_HEADER, f"{overhead_ms:.3f}".encode()),
                    *((name.encode(), value.encode()) for name, value in limit_headers.items()),
                ]
                for name, value in headers:
                    if name == b"content-type":
                        record.streaming = value.startswith(_EVENT_STREAM)
                        break
                message = {**message, "headers": headers}
            elif kind == "http.response.body":
                body = message.get("body", b"")
                if record.streaming and body:
                    if record.first_event_at is None:
                        record.first_event_at = time.perf_counter()
                    if body.startswith(_ERROR_EVENT):
                        record.reason = _event_detail(body)
                elif record.status is not None and record.status >= 400 and body and record.reason is None:
                    record.reason = _json_detail(body)
                if not message.get("more_body", False):
                    finished = True
            await send(message)

        task = gate.enter()
        try:
            await self.app(scope, receive, observing_send)
        except asyncio.CancelledError:
            if not gate.expired or task is None:
                raise
            # The shutdown's grace period is over: end this request cleanly here.
            task.uncancel()
            record.reason = SHUTDOWN_REASON
            await _end_at_shutdown(send, started=started, finished=finished)
            record.status = 503
        finally:
            gate.leave(task)
            current_request.reset(tokens[0])
            current_clock.reset(tokens[1])
            response_headers.reset(tokens[2])
            self._finish(record)

    def _finish(self, record: RequestRecord) -> None:
        seconds = time.perf_counter() - record.started
        status = record.status or 500
        if record.streaming and not record.finished_by_service and status < 400:
            status = record.status = 499  # a stream that ended before the service did
        if status == 499 and record.reason is None:
            record.reason = "the client went away before the end of the answer"
        if record.first_event_at is not None and record.deployment:
            metrics.first_token(record.deployment, record.model_name, record.first_event_at - record.started)
        metrics.request_answered(record.route, record.deployment, record.model_name, status)
        if record.span is not None:
            tracing.end_request(record)
        logs.request_finished(record, seconds, access_log=self.access_log)


async def _end_at_shutdown(send: Send, *, started: bool, finished: bool) -> None:
    """A plain request still in flight at the end of the grace period gets a 503. A
    stream writes its own last event, in its surface's shape (`api.sse`); one that
    could not is ended here without it."""
    if finished:
        return
    try:
        if not started:
            body = orjson.dumps({"detail": SHUTDOWN_REASON})
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.body", "body": b""})
    except OSError:
        return  # the client is gone already: nothing left to tell it


def _json_detail(body: bytes) -> str | None:
    """The reason an error answer gives, in any surface's shape: SGP's `{"detail"}`,
    OpenAI's and Anthropic's `{"error": {"message"}}`."""
    try:
        payload = orjson.loads(body)
        detail = payload.get("detail")
        if detail is None and isinstance(payload.get("error"), dict):
            detail = payload["error"].get("message")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if detail is None:
        return None
    return detail if isinstance(detail, str) else orjson.dumps(detail).decode()[:500]


def _event_detail(body: bytes) -> str | None:
    _, _, data = body.partition(b"data: ")
    return _json_detail(data.strip())
