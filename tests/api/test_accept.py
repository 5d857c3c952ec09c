"""The serving loop accepts every waiting connection in one turn (api/accept.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from modelport.api.accept import new_event_loop


class _Recorder(asyncio.Protocol):
    made: list[int]
    turns: list[int]
    all_made: asyncio.Event

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(self.turns[0])
        if len(self.made) == 20:
            self.all_made.set()


def _connect_many(port: int, count: int, opened: list[socket.socket]) -> None:
    for _ in range(count):
        opened.append(socket.create_connection(("127.0.0.1", port)))


def test_a_burst_of_connections_is_accepted_while_the_loop_is_busy() -> None:
    """Under load every turn of the loop is long; 20 clients that connect together must
    not wait a turn each (uvloop on its own accepts one connection per turn)."""
    loop = new_event_loop()
    turns = [0]
    made: list[int] = []
    opened: list[socket.socket] = []

    def busy_turn() -> None:  # each turn of the loop lasts at least 5 ms, as under load
        turns[0] += 1
        time.sleep(0.005)
        loop.call_soon(busy_turn)

    async def main() -> None:
        class Protocol(_Recorder):
            pass

        Protocol.made, Protocol.turns, Protocol.all_made = made, turns, asyncio.Event()
        server = await loop.create_server(Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop.call_soon(busy_turn)
        # Connected from another thread, all at once: the kernel completes each handshake
        # and queues the connection until the server accepts it.
        clients = threading.Thread(target=_connect_many, args=(port, 20, opened))
        clients.start()
        await asyncio.to_thread(clients.join)
        first_turn = turns[0]
        await asyncio.wait_for(Protocol.all_made.wait(), 10)
        server.close()
        await server.wait_closed()
        assert len(made) == 20
        assert max(made) - first_turn <= 3, f"accepted over {max(made) - first_turn} turns"

    try:
        loop.run_until_complete(main())
    finally:
        for client in opened:
            client.close()
        loop.close()


def test_a_closed_server_refuses_new_connections_and_keeps_open_ones() -> None:
    loop = new_event_loop()

    async def main() -> None:
        answered = asyncio.Event()

        class Echo(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                self.transport.write(data)  # type: ignore[attr-defined]
                answered.set()

        server = await loop.create_server(Echo, "127.0.0.1", 0)
        assert server.is_serving()
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        server.close()
        await server.wait_closed()
        assert not server.is_serving()
        writer.write(b"still here")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        writer.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
