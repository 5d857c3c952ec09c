"""The event stream's writes: events that are already there go out in one write, an
event that has to be waited for never holds back the ones before it, and a stream cut
off while its generator waits still runs the generator's cleanup, in the request's task.
And its ending: the surface's end of a complete stream, its error event for a failed one
or one the shutdown ends, nothing more for one whose client went away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from starlette.requests import ClientDisconnect

from modelport.api.sse import MAX_WRITE_BYTES, EventStream, Framing
from modelport.errors import ModelportError
from modelport.observability.shutdown import gate

# uvicorn says 2.3 (Starlette then watches for the disconnect in a task of its own);
# 2.4 servers report a client gone as an OSError from `send`.
SPEC_VERSIONS = pytest.mark.parametrize("spec_version", ["2.3", "2.4"])


def _error(status: int, body: dict[str, Any]) -> bytes:
    return b"error %d %s|" % (status, str(body["detail"]).encode())


# Events that are their own bytes, so that the writes show them as they came.
AS_IS: Framing[bytes] = Framing(event=lambda event: event, error=_error)
WITH_DONE: Framing[bytes] = Framing(event=lambda event: event, error=_error, done=b"done|")


class Client:
    """The ASGI server's side: what was written, and a way to see each write arrive."""

    def __init__(self, *, fails_after: int | None = None, slow: float = 0.0) -> None:
        self.bodies: list[bytes] = []
        self.slow = slow  # seconds each write takes, as when uvicorn waits for the client to drain
        self.finished = False
        self.wrote = asyncio.Event()
        self._fails_after = fails_after

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body":
            return
        if not message.get("more_body"):
            if message.get("body"):  # a last event written with the end
                self.bodies.append(message["body"])
            self.finished = True
            return
        if self._fails_after is not None and len(self.bodies) >= self._fails_after:
            raise OSError("the client went away")
        self.bodies.append(message["body"])
        self.wrote.set()
        if self.slow:
            await asyncio.sleep(self.slow)

    async def next_write(self) -> bytes:
        await asyncio.wait_for(self.wrote.wait(), 2)
        self.wrote.clear()
        return self.bodies[-1]


async def serve(
    events: AsyncIterator[bytes], client: Client, spec_version: str = "2.4", framing: Framing[bytes] = AS_IS
) -> None:
    scope = {"type": "http", "asgi": {"spec_version": spec_version}}
    await EventStream(events, framing)(scope, client.receive, client.send)


async def test_events_that_are_already_there_go_out_in_one_write() -> None:
    async def events() -> AsyncIterator[bytes]:
        for n in range(5):
            yield b"data: %d\n\n" % n

    client = Client()
    await serve(events(), client)
    assert client.bodies == [b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n"]
    assert client.finished


async def test_an_event_that_is_waited_for_does_not_hold_back_the_ones_before_it() -> None:
    upstream = asyncio.Queue[bytes]()

    async def events() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"
        while (item := await upstream.get()) != b"end":
            yield item

    client = Client()
    serving = asyncio.create_task(serve(events(), client))
    assert await client.next_write() == b"ab"  # written while the generator still waits
    upstream.put_nowait(b"c")
    assert await client.next_write() == b"c"
    upstream.put_nowait(b"d")
    upstream.put_nowait(b"e")
    upstream.put_nowait(b"end")
    await asyncio.wait_for(serving, 2)
    assert client.bodies == [b"ab", b"c", b"de"]
    assert client.finished


async def test_a_fast_stream_is_written_in_bounded_pieces() -> None:
    event = b"x" * (MAX_WRITE_BYTES // 3 + 1)

    async def events() -> AsyncIterator[bytes]:
        for _ in range(7):
            yield event

    client = Client()
    await serve(events(), client)
    assert b"".join(client.bodies) == event * 7
    assert [len(body) // len(event) for body in client.bodies] == [3, 3, 1]


async def test_a_failure_after_ready_events_comes_after_them_as_the_surfaces_error_event() -> None:
    async def events() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"
        raise ValueError("upstream broke")

    client = Client()
    await serve(events(), client, framing=WITH_DONE)
    # The cause stays in the log: the client learns only that the stream failed.
    assert b"".join(client.bodies) == b"ab" + b"error 500 internal error while streaming|"
    assert client.finished


async def test_a_modelport_error_ends_the_stream_with_its_status_and_detail() -> None:
    class Refused(ModelportError):
        status_code = 429

    async def events() -> AsyncIterator[bytes]:
        yield b"a"
        raise Refused("too many tokens")

    client = Client()
    await serve(events(), client, framing=WITH_DONE)
    assert b"".join(client.bodies) == b"a" + b"error 429 too many tokens|"  # and no `done`
    assert client.finished


async def test_a_complete_stream_ends_with_the_surfaces_end() -> None:
    async def events() -> AsyncIterator[bytes]:
        yield b"a|"
        yield b"b|"

    client = Client()
    await serve(events(), client, framing=WITH_DONE)
    assert b"".join(client.bodies) == b"a|b|done|"
    assert client.finished


@SPEC_VERSIONS
async def test_a_stream_the_shutdown_ends_gets_the_surfaces_error_event_last(
    spec_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"a|"
            await asyncio.Event().wait()  # a stream still going when the grace period ends
        finally:
            closed.set()

    client = Client()
    serving = asyncio.create_task(serve(events(), client, spec_version, WITH_DONE))
    assert await client.next_write() == b"a|"
    monkeypatch.setattr(gate, "expired", True)  # what `gate` does at the end of the grace period
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):  # for the middleware, which records the 503
        await serving
    assert client.bodies == [b"a|", b"error 503 the server is shutting down|"]
    assert client.finished
    assert closed.is_set()


@SPEC_VERSIONS
async def test_a_cancelled_stream_cleans_up_in_its_own_task_while_its_generator_waits(spec_version: str) -> None:
    ran_in: list[asyncio.Task[Any] | None] = []
    cleaned_up_in: list[asyncio.Task[Any] | None] = []

    async def events() -> AsyncIterator[bytes]:
        ran_in.append(asyncio.current_task())
        try:
            yield b"a"
            await asyncio.Event().wait()
            yield b"never"
        finally:
            # What must not be lost is done before any await, as the service records
            # usage: in a task cancelled through a cancel scope (Starlette's, under
            # uvicorn), every await here raises again.
            cleaned_up_in.append(asyncio.current_task())
            await asyncio.sleep(0)

    client = Client()
    serving = asyncio.create_task(serve(events(), client, spec_version))
    assert await client.next_write() == b"a"
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert cleaned_up_in == ran_in  # not later, by the garbage collector
    assert client.bodies == [b"a"]  # the client left: no error event, no end
    assert not client.finished


async def test_a_client_gone_stops_the_stream_even_while_its_upstream_stalls() -> None:
    upstream = asyncio.Queue[bytes]()
    cleaned_up_in: list[asyncio.Task[Any] | None] = []

    async def events() -> AsyncIterator[bytes]:
        try:
            while True:
                yield await upstream.get()  # after "b", nothing more comes
        finally:
            cleaned_up_in.append(asyncio.current_task())

    client = Client(fails_after=1)
    serving = asyncio.create_task(serve(events(), client))
    upstream.put_nowait(b"a")
    assert await client.next_write() == b"a"
    upstream.put_nowait(b"b")  # its write fails: the client is gone
    with pytest.raises(ClientDisconnect):
        await asyncio.wait_for(serving, 2)
    assert cleaned_up_in == [serving]
    assert client.bodies == [b"a"]


async def test_a_base_exception_from_the_generator_comes_out_as_itself() -> None:
    class Stop(BaseException):
        pass

    async def events() -> AsyncIterator[bytes]:
        yield b"a"
        raise Stop

    client = Client()
    with pytest.raises(Stop):
        await serve(events(), client)
    assert client.bodies == [b"a"]


@SPEC_VERSIONS
@pytest.mark.parametrize("deadline", ["anyio", "asyncio"])
async def test_the_generators_own_deadline_fires_in_the_generator_while_a_slow_client_is_written_to(
    spec_version: str, deadline: str
) -> None:
    async def events() -> AsyncIterator[bytes]:
        yield b"a"
        # The deadline passes while "a" is still being written to the slow client.
        if deadline == "anyio":
            with anyio.move_on_after(0.05):
                await asyncio.Event().wait()
        else:
            try:
                async with asyncio.timeout(0.05):
                    await asyncio.Event().wait()
            except TimeoutError:
                pass
        yield b"timed out"

    client = Client(slow=0.2)
    await asyncio.wait_for(serve(events(), client, spec_version), 2)
    assert client.bodies == [b"a", b"timed out"]
    assert client.finished


async def test_a_client_gone_stops_a_stream_that_outruns_its_writes() -> None:
    async def events() -> AsyncIterator[bytes]:
        while True:  # never waits for an upstream: only for room to write
            yield b"x" * (MAX_WRITE_BYTES // 2 + 1)

    client = Client(fails_after=0)
    with pytest.raises(ClientDisconnect):
        await asyncio.wait_for(serve(events(), client), 2)
    assert client.bodies == []


async def test_a_client_gone_as_the_server_says_it_stops_the_stream_while_its_upstream_stalls() -> None:
    """ASGI 2.3 (uvicorn): the disconnect comes from `receive`; the stream stops at
    once, its generator closed in the request's own task, and nothing more is written."""
    cleaned_up_in: list[asyncio.Task[Any] | None] = []
    gone = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            await asyncio.Event().wait()  # the upstream stalls
            yield b"never"
        finally:
            cleaned_up_in.append(asyncio.current_task())

    class Leaving(Client):
        async def receive(self) -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

    client = Leaving()
    serving = asyncio.create_task(serve(events(), client, "2.3", WITH_DONE))
    assert await client.next_write() == b"a"
    gone.set()
    await asyncio.wait_for(serving, 2)  # ends as Starlette's does: no error for the server
    assert cleaned_up_in == [serving]
    assert client.bodies == [b"a"] and not client.finished  # no `done`, no end of the body


@SPEC_VERSIONS
async def test_a_complete_stream_leaves_no_task_behind(spec_version: str) -> None:
    async def events() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    before = asyncio.all_tasks()
    client = Client()
    await asyncio.wait_for(serve(events(), client, spec_version, WITH_DONE), 2)
    assert b"".join(client.bodies) == b"abdone|" and client.finished
    assert asyncio.all_tasks() == before  # the writer and the listener ended with it
