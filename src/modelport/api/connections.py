"""Connections that never send a whole request are closed.

uvicorn closes a kept-alive connection that stays idle, but not one that was opened and
never sent anything, nor one that sends its headers a byte at a time (slowloris), nor
one that sends its headers and then stalls in the body: each holds a socket, a file
descriptor and one of `MODELPORT_MAX_CONNECTIONS` slots for as long as the client likes
(200 such connections were all held in a test; at the cap every other client got 503).
This protocol gives every request two deadlines:

- its headers must arrive within `header_timeout_seconds`, from the connection's start
  or from the end of the previous response (closed without an answer: there is no
  request to answer yet);
- its whole body (with a Content-Length or chunked) within `body_timeout_seconds` after
  the headers. One that does not gets 408 with a JSON detail naming the setting, and the
  connection is closed (the rest of the body, if it ever comes, has nowhere to go).

Both deadlines cover only reading the request: once the body is in, the response (a
stream included) takes as long as it takes. The body deadline lives here rather than in
an ASGI middleware because here it also covers a request the app never reads (one
refused early, or queued behind the concurrency cap).
"""

from __future__ import annotations

import asyncio
import functools
import http
import os
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelport.api import error_shapes

HEADER_TIMEOUT_ENV = "MODELPORT_HEADER_TIMEOUT_SECONDS"
BODY_TIMEOUT_ENV = "MODELPORT_BODY_TIMEOUT_SECONDS"


@dataclass(frozen=True)
class ReadDeadlines:
    header_seconds: float
    body_seconds: float


@functools.cache
def read_deadlines() -> ReadDeadlines:
    # From the environment rather than passed in: uvicorn builds the protocol itself, in
    # each worker; `modelport serve` puts the settings there (a .env file included).
    return ReadDeadlines(
        header_seconds=float(os.environ.get(HEADER_TIMEOUT_ENV, "10")),
        body_seconds=float(os.environ.get(BODY_TIMEOUT_ENV, "30")),
    )


def body_timeout_response(path: str, seconds: float, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole 408 answer, as bytes for the transport (the app's `send` may be busy)."""
    detail = (
        f"the request body did not arrive within {seconds:g} seconds of its headers "
        f"(body_timeout_seconds, {BODY_TIMEOUT_ENV})"
    )
    status, body = error_shapes.reshape(path, 408, {"detail": detail})
    payload = orjson.dumps(body)
    head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode()]
    head += [name + b": " + value for name, value in default_headers]
    head += [
        b"content-type: application/json",
        b"content-length: " + str(len(payload)).encode(),
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + payload


class RequestDeadlineProtocol(HttpToolsProtocol):
    _header_deadline: asyncio.TimerHandle | None = None
    _body_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()
        # A request without a body completes in the same parse (on_message_complete
        # disarms at once). A pipelined request waits, unread, behind the response
        # before it: its body cannot arrive yet, so it gets no deadline to miss.
        if not self.pipeline:
            self._body_deadline = self.loop.call_later(read_deadlines().body_seconds, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._disarm_body_deadline()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        self._disarm_body_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(read_deadlines().header_seconds, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _disarm_body_deadline(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_too_slow(self) -> None:
        self._body_deadline = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        if cycle.response_started and not cycle.response_complete:
            # The app answers without waiting for the body (a refusal): let that answer
            # finish, then close rather than read on.
            cycle.keep_alive = False
            return
        if not cycle.response_started:
            # The app (waiting in `receive`) sees the client gone, and its `send` does
            # nothing from here on: the 408 below is the only answer on the wire.
            cycle.disconnected = True
            cycle.message_event.set()
            self.transport.write(
                body_timeout_response(
                    self.scope["path"], read_deadlines().body_seconds, self.server_state.default_headers
                )
            )
        self.transport.close()
