"""Connections that never send a whole request are closed.

uvicorn closes a kept-alive connection that stays idle, but not one that was opened and
never sent anything, nor one that sends its headers a byte at a time (slowloris): each
holds a socket and a file descriptor for as long as the client likes (200 such
connections were all held in a test). This protocol gives every request's headers a
deadline, from the connection's start or from the end of the previous response.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@functools.cache
def header_timeout_seconds() -> float:
    # From the environment rather than passed in: uvicorn builds the protocol itself, in
    # each worker; `modelport serve` puts the setting there (a .env file included).
    return float(os.environ.get("MODELPORT_HEADER_TIMEOUT_SECONDS", "10"))


class HeaderDeadlineProtocol(HttpToolsProtocol):
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(header_timeout_seconds(), self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
