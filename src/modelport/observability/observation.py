"""One HTTP request observed, from before any of modelport's work to its end: its
record (request id, route, status, first event), the metrics and the log line made
from it at the end, its trace span, and its end at shutdown when the grace period is
over.

Its `send` also adds the headers that describe the request as a whole when the
response starts: `x-request-id`, `x-modelport-overhead-ms` (the gateway's own time, see
`modelport.observability.timing`) and the `x-ratelimit-remaining-*` headers that admission found
(SPEC 7; the service knows no HTTP, so it writes them into a per-request dict,
`limits.base.response_headers`). One wrapper of `send` for all of them, and the only one
the inference routes have (`api/front.py`): a stream calls `send` once per write."""

from __future__ import annotations

import re
import time

import orjson
from starlette.types import Message, Scope, Send

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


class Observation:
    """One HTTP request, observed from its creation to `close()`: its record, clock and
    rate-limit headers are the request's own (context variables) in between, and
    everything answered goes through `send`."""

    __slots__ = ("_clock", "_limit_headers", "_send", "_task", "_tokens", "finished", "record", "started")

    def __init__(self, scope: Scope, send: Send) -> None:
        record = RequestRecord(request_id=_request_id(scope), method=scope["method"], scope=scope)
        record.span = tracing.start_request(record)
        self.record = record
        self._clock = RequestClock(started=record.started)
        self._limit_headers: dict[str, str] = {}
        self._send = send
        self.started = False  # whether the answer has begun (its status and headers sent)
        self.finished = False  # whether its last byte has been sent
        self._tokens = (
            current_request.set(record),
            current_clock.set(self._clock),
            response_headers.set(self._limit_headers),
        )
        self._task = gate.enter()

    async def send(self, message: Message) -> None:
        record = self.record
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            record.status = record.status or message["status"]
            overhead_ms = self._clock.overhead_ms()
            metrics.gateway_overhead(record.route, overhead_ms / 1000)
            headers = [
                *message.get("headers", ()),
                (REQUEST_ID_HEADER, record.request_id.encode()),
                (OVERHEAD_HEADER, f"{overhead_ms:.3f}".encode()),
                *((name.encode(), value.encode()) for name, value in self._limit_headers.items()),
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
                self.finished = True
        await self._send(message)

    async def ended_by_shutdown(self) -> bool:
        """On the request's cancellation: whether it was the end of the shutdown's grace
        period, in which case the request is ended cleanly here; any other cancellation
        goes on."""
        task = self._task
        if not gate.expired or task is None:
            return False
        task.uncancel()
        self.record.reason = SHUTDOWN_REASON
        await _end_at_shutdown(self._send, started=self.started, finished=self.finished)
        self.record.status = 503
        return True

    def close(self, *, access_log: bool) -> None:
        """The request is over: its metrics, trace and log line."""
        gate.leave(self._task)
        current_request.reset(self._tokens[0])
        current_clock.reset(self._tokens[1])
        response_headers.reset(self._tokens[2])
        _finish(self.record, access_log)


def _finish(record: RequestRecord, access_log: bool) -> None:
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
    logs.request_finished(record, seconds, access_log=access_log)


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
