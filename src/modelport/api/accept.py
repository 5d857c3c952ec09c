"""The event loop `modelport serve` runs on: uvloop, except that new connections are
accepted all at once rather than one per turn of the loop.

uvloop's libuv accepts one connection each time the listening socket is reported ready,
which happens once per turn of the loop, and a turn first runs every callback that is
ready. Under load a turn lasts as long as a step of every request in flight (about
25 ms with 64 requests in flight on the 2-core benchmark machine), so 64 clients that
connected together waited up to 64 turns to be accepted: their first requests took up
to 0.8 s, seen on the wire with tcpdump while modelport itself answered each within
0.11 s of reading it. That wait was the whole p99 at 64 connections. Here the loop
watches the listening socket like any other file, and each time it is ready every
connection that waits is accepted (as asyncio's own loop does), then handed to uvloop,
which serves it as before.

Used by `modelport serve` with one worker only, through uvicorn's `loop` option. Under
`--workers N` the workers share one listening socket, and accepting one connection per
turn is what spreads a burst of connections between them: with every waiting
connection accepted at once, the first worker to wake took all 8 connections of a burst
in 4 runs out of 6 (measured with `ss -tnp`), so there uvloop keeps its own way.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

# Out of file descriptors or memory: accepting again at once would spin. Wait, as asyncio does.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_RESOURCE_PAUSE_SECONDS = 1.0


class _Listener:
    """One listening socket, watched by the loop; every waiting connection is accepted."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol_factory: Callable[[], Any], backlog: int
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._watching = False
        self._handing_over: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    def start(self) -> None:
        if not self._watching and self._sock.fileno() != -1:
            self._loop.add_reader(self._sock.fileno(), self._accept_waiting)
            self._watching = True

    def stop(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False

    def _accept_waiting(self) -> None:
        for _ in range(self._backlog):  # bounded: a flood of connections cannot hold the loop
            try:
                conn, _address = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                log.error("cannot accept connections (%s); trying again in %.0f s", exc, _RESOURCE_PAUSE_SECONDS)
                self.stop()
                self._loop.call_later(_RESOURCE_PAUSE_SECONDS, self.start)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._serve(conn))
            self._handing_over.add(task)
            task.add_done_callback(self._handing_over.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._protocol_factory, conn)
        except OSError as exc:  # the client left before it could be served
            log.debug("accepted connection lost at once: %s", exc)
            conn.close()


class BatchAcceptServer(asyncio.AbstractServer):
    """What `loop.create_server` returns, for the listeners above."""

    def __init__(self, loop: asyncio.AbstractEventLoop, listeners: list[_Listener], sockets: list[socket.socket]):
        self._loop = loop
        self._listeners = listeners
        self._sockets = sockets
        self._serving = False

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        for listener in self._listeners:
            listener.start()
        self._serving = True

    async def serve_forever(self) -> None:
        await self.start_serving()
        await asyncio.Event().wait()  # until cancelled

    def close(self) -> None:
        for listener in self._listeners:
            listener.stop()
        for sock in self._sockets:
            sock.close()
        self._serving = False

    async def wait_closed(self) -> None:
        return None


def _listening_copies(sockets: Iterable[Any], backlog: int) -> list[socket.socket]:
    """Our own descriptors for the sockets uvloop bound (its objects cannot accept)."""
    copies = []
    for bound in sockets:
        sock = socket.socket(fileno=os.dup(bound.fileno()))
        sock.setblocking(False)
        sock.listen(backlog)
        copies.append(sock)
    return copies


try:
    import uvloop
except ImportError:  # no uvloop on this platform: asyncio's loop already accepts in batches
    uvloop = None  # type: ignore[assignment]


if uvloop is not None:

    class BatchAcceptLoop(uvloop.Loop):
        async def create_server(  # type: ignore[override]
            self,
            protocol_factory: Callable[[], Any],
            host: Any = None,
            port: Any = None,
            *,
            sock: socket.socket | None = None,
            backlog: int = 100,
            ssl: Any = None,
            **options: Any,
        ) -> asyncio.AbstractServer:
            if ssl is not None or sock is not None or options.get("start_serving") is False:
                return await super().create_server(
                    protocol_factory, host, port, sock=sock, backlog=backlog, ssl=ssl, **options
                )
            # uvloop resolves and binds the address (every family the name has); it never
            # starts serving, and hands its sockets over.
            bound: Any = await super().create_server(
                protocol_factory, host, port, backlog=backlog, start_serving=False, **options
            )
            sockets = _listening_copies(bound.sockets, backlog)
            bound.close()
            listeners = [_Listener(self, copy, protocol_factory, backlog) for copy in sockets]
            server = BatchAcceptServer(self, listeners, sockets)
            await server.start_serving()
            return server


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop for uvicorn's `loop` option: `"modelport.api.accept:new_event_loop"`."""
    if uvloop is None:
        return asyncio.new_event_loop()
    return BatchAcceptLoop()
