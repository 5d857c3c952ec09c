"""A hostile upstream on a loopback port (issue 21, finding 5): whatever an account admin
writes into `base_url` answers. Each answer that breaks a bound ends the request with a
502 (504 for time) naming the bound, holds the gateway's memory near the bound rather
than the answer's size, closes the upstream connection, and leaves the event loop free
for other requests meanwhile.

The server runs in a thread with its own event loop, so it keeps sending whatever the
gateway's loop does; the gateway runs in this process, so its RSS is this process's.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.servers import free_port
from tests.vendors.conftest import deploy

KiB, MiB = 1024, 1024 * 1024
# Small bounds, so that every case ends within a second or two.
SMALL_BOUNDS = {
    "upstream_max_response_bytes": 256 * KiB,
    "upstream_max_event_bytes": 16 * KiB,
    "upstream_max_stream_bytes": 512 * KiB,
    "upstream_first_byte_seconds": 1.5,
    "upstream_event_gap_seconds": 1.5,
}
CHAT = {"chat_history": [], "prompt": "Hi", "temperature": 0, "max_tokens": 5}
_PAGE = os.sysconf("SC_PAGE_SIZE")


# ---- the hostile upstream ---------------------------------------------------------------


def gzip_of_repeats(unit: bytes, repeats: int) -> bytes:
    """A valid gzip body that inflates to `unit` * `repeats`, built in about a second for
    2 GiB: after a full flush the compressor starts afresh, so each unit compresses to
    the same bytes, written `repeats` times (deflate cannot do better than ~1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    compressor.compress(unit)
    block = compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(repeats):
        crc = zlib.crc32(unit, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = struct.pack("<II", crc, (len(unit) * repeats) & 0xFFFFFFFF)
    return header + block * repeats + compressor.flush() + trailer


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _delta(text: str) -> bytes:
    return _sse({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


OK_ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 1},
}


@dataclass
class Hostile:
    base_url: str
    bomb: bytes  # 2 GiB of zeros, as gzip
    # Upstream model name -> set when the gateway went away while it was still sending.
    hung_up: dict[str, threading.Event] = field(default_factory=dict)

    def gone(self, model: str) -> threading.Event:
        return self.hung_up.setdefault(model, threading.Event())


def _hostile_app(hostile: Hostile) -> web.Application:
    event_stream = {"Content-Type": "text/event-stream"}
    gzip_json = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    stream_bomb = gzip_of_repeats(_delta("x" * 1000) * 1000, 64)  # ~64 MiB of valid events

    async def sending(
        request: web.Request, model: str, headers: dict[str, str], chunks: Any, *, length: int | None = None
    ) -> web.StreamResponse:
        """Send `chunks` (an async iterator) until it ends or the gateway hangs up."""
        response = web.StreamResponse(headers=headers)
        response.content_length = length
        await response.prepare(request)
        try:
            async for chunk in chunks:
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            hostile.gone(model).set()
            return response
        # All of it written (into the socket's buffer): the gateway hangs up, or keeps the
        # connection for its next request.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if request.transport is None or request.transport.is_closing():
                hostile.gone(model).set()
                break
            await asyncio.sleep(0.05)
        return response

    async def forever(chunk: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
        while True:
            yield chunk
            await asyncio.sleep(pause)

    async def once(*chunks: bytes) -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body["model"]
        if model == "ok-gzip":  # an honest vendor that compresses: still served
            if body.get("stream"):
                events = _delta("Hel") + _delta("lo") + b"data: [DONE]\n\n"
                headers = {**event_stream, "Content-Encoding": "gzip"}
                return web.Response(body=gzip_of_repeats(events, 1), headers=headers)
            return web.Response(body=gzip_of_repeats(json.dumps(OK_ANSWER).encode(), 1), headers=gzip_json)
        if model == "bomb":
            return await sending(request, model, gzip_json, once(hostile.bomb))
        if model == "bomb-error":  # the bomb as a 500's body, which is only quoted
            return web.Response(status=500, body=hostile.bomb, headers=gzip_json)
        if model == "bomb-stream":
            headers = {**event_stream, "Content-Encoding": "gzip"}
            return await sending(request, model, headers, once(stream_bomb))
        if model == "huge":
            return await sending(request, model, {"Content-Type": "application/json"}, forever(b"[" * 64 * KiB))
        if model == "huge-declared":
            json_type = {"Content-Type": "application/json"}
            return await sending(request, model, json_type, forever(b" " * 64 * KiB), length=800 * MiB)
        if model == "huge-line":
            return await sending(request, model, event_stream, forever(b"data: " + b"a" * 64 * KiB))
        if model == "huge-event":  # short lines, one endless event
            return await sending(request, model, event_stream, forever(b"data: " + b"a" * 1000 + b"\n"))
        if model == "endless":
            return await sending(request, model, event_stream, forever(_delta("tick " * 1600)))
        if model == "drip":  # a byte at a time: the socket is never silent, no event ever ends
            return await sending(request, model, event_stream, forever(b" ", 0.05))
        if model == "drip-body":
            return await sending(request, model, {"Content-Type": "application/json"}, forever(b" ", 0.05))
        if model == "silent":
            await asyncio.sleep(30)
            return web.json_response(OK_ANSWER)
        if model == "bad-utf8":
            return web.Response(
                body=b'{"choices": [{"message": {"content": "\xff\xfe"}}]}', content_type="application/json"
            )
        if model == "bad-utf8-stream":
            return web.Response(body=_delta("fine") + b'data: {"choices": [{"delta": {"content": "\xc3\x28"}}]}\n\n',
                                headers=event_stream)  # fmt: skip
        if model == "html":
            return web.Response(body=b"<html>a login page</html>", content_type="text/html")
        if model == "json-for-stream":
            return web.json_response(OK_ANSWER)
        if model == "brotli":  # a coding that was not asked for
            return web.Response(body=b"\x0b\x02\x80{}\x03", headers={**gzip_json, "Content-Encoding": "br"})
        return web.json_response({"error": {"message": f"unknown model {model}"}}, status=404)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    port = free_port()
    upstream = Hostile(base_url=f"http://127.0.0.1:{port}/v1", bomb=gzip_of_repeats(bytes(MiB), 2048))
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_hostile_app(upstream), access_log=None, handle_signals=False, shutdown_timeout=1)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield upstream
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


# ---- the gateway ----------------------------------------------------------------------


async def _gateway(tmp_path_factory: pytest.TempPathFactory, **bounds: Any) -> AsyncIterator[httpx.AsyncClient]:
    from tests.conftest import in_process, sqlite_settings

    settings = sqlite_settings(tmp_path_factory.mktemp("hostile"), upstream_attempts=1, **bounds)
    async with in_process(settings) as (_, client):
        yield client


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _gateway(tmp_path_factory, **SMALL_BOUNDS):
        yield client


@pytest.fixture(scope="module")
async def default_gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _gateway(tmp_path_factory):
        yield client


async def ask(client: httpx.AsyncClient, hostile: Hostile, model: str, *, stream: bool) -> httpx.Response:
    deployment = await deploy(client, vendor="OPENAI", base_url=hostile.base_url, model=model)
    return await client.post(f"/v4/models/{deployment}/chat-completions", json={**CHAT, "stream": stream})


def failure(response: httpx.Response) -> tuple[int, str]:
    """(status, detail) of a refused request: its JSON error, or a stream's `error` event."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return response.status_code, str(response.json()["detail"])
    assert response.status_code == 200, response.text[:500]
    last = response.text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\ndata: "), last[:500]
    error = json.loads(last.split("data: ", 1)[1])
    return int(error["status_code"]), str(error["detail"])


# ---- measuring ------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


@dataclass
class Watch:
    baseline: int = field(default_factory=rss_bytes)
    peak: int = 0
    slowest_live: float = 0.0

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)


@contextmanager
def rss_watched() -> Iterator[Watch]:
    """This process's peak RSS while the block runs, sampled by a thread (the event
    loop may be what is stuck)."""
    watch = Watch()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            watch.peak = max(watch.peak, rss_bytes())
            done.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield watch
    finally:
        done.set()
        sampler.join()
        watch.peak = max(watch.peak, rss_bytes())


async def with_liveness(client: httpx.AsyncClient, watch: Watch, request: Any) -> httpx.Response:
    """Run `request` while /health/live is asked every 50 ms; the slowest answer is kept."""
    task = asyncio.ensure_future(request)
    while not task.done():
        started = time.monotonic()
        live = await client.get("/health/live")
        assert live.status_code == 200
        watch.slowest_live = max(watch.slowest_live, time.monotonic() - started)
        await asyncio.wait({task}, timeout=0.05)
    return await task


# A generous margin for a busy 2-core machine: the loop froze 24 s for the bomb before.
LIVE_WITHIN_SECONDS = 1.0
# Memory growth allowed over the bound itself, which an answer may fill before it breaks
# it (the bomb inflates to 2 GiB; it took this process to 4.2 GB RSS before).
MEMORY_MARGIN = 64 * MiB


# ---- the cases ------------------------------------------------------------------------


async def test_an_honest_gzip_answer_is_still_served(gateway: httpx.AsyncClient, hostile: Hostile) -> None:
    answer = await ask(gateway, hostile, "ok-gzip", stream=False)
    assert answer.status_code == 200, answer.text
    assert answer.json()["completions"][0][1][0] == "Hello"
    streamed = await ask(gateway, hostile, "ok-gzip", stream=True)
    assert "event: error" not in streamed.text
    text = "".join(
        json.loads(line[6:])["completions"][0][1][0] for line in streamed.text.splitlines() if line.startswith("data: ")
    )
    assert text == "Hello"


async def test_a_gzip_bomb_stops_at_the_default_bound(default_gateway: httpx.AsyncClient, hostile: Hostile) -> None:
    """2 MB that inflate to 2 GiB, with the default bounds: stopped at the bound, decoded."""
    from modelport.config import Settings

    bound = Settings.model_fields["upstream_max_response_bytes"].default
    with rss_watched() as watch:
        response = await with_liveness(default_gateway, watch, ask(default_gateway, hostile, "bomb", stream=False))
    status, detail = failure(response)
    print(f"bomb: RSS {watch.baseline / MiB:.0f} MiB -> peak {watch.peak / MiB:.0f} MiB, "
          f"slowest /health/live {watch.slowest_live:.3f} s")  # fmt: skip
    assert status == 502
    assert "MODELPORT_UPSTREAM_MAX_RESPONSE_BYTES" in detail
    assert watch.growth < bound + MEMORY_MARGIN
    assert watch.slowest_live < LIVE_WITHIN_SECONDS


@pytest.mark.parametrize(
    ("model", "stream", "bound"),
    [
        ("bomb", False, "MODELPORT_UPSTREAM_MAX_RESPONSE_BYTES"),
        ("bomb-stream", True, "MODELPORT_UPSTREAM_MAX_STREAM_BYTES"),
        ("huge", False, "MODELPORT_UPSTREAM_MAX_RESPONSE_BYTES"),
        ("huge-declared", False, "MODELPORT_UPSTREAM_MAX_RESPONSE_BYTES"),
        ("huge-line", True, "MODELPORT_UPSTREAM_MAX_EVENT_BYTES"),
        ("huge-event", True, "MODELPORT_UPSTREAM_MAX_EVENT_BYTES"),
        ("endless", True, "MODELPORT_UPSTREAM_MAX_STREAM_BYTES"),
    ],
)
async def test_an_answer_past_a_size_bound_is_502_naming_it(
    gateway: httpx.AsyncClient, hostile: Hostile, model: str, stream: bool, bound: str
) -> None:
    with rss_watched() as watch:
        response = await with_liveness(gateway, watch, ask(gateway, hostile, model, stream=stream))
    status, detail = failure(response)
    assert (status, bound in detail) == (502, True), detail
    assert watch.growth < MEMORY_MARGIN, f"RSS grew {watch.growth / MiB:.0f} MiB"
    assert watch.slowest_live < LIVE_WITHIN_SECONDS
    # The connection was closed, not handed back to the pool: the upstream saw it go.
    assert await asyncio.to_thread(hostile.gone(model).wait, 15)


async def test_an_error_answer_is_quoted_without_being_read_whole(gateway: httpx.AsyncClient, hostile: Hostile) -> None:
    with rss_watched() as watch:
        response = await ask(gateway, hostile, "bomb-error", stream=False)
    assert response.status_code == 502
    assert "answered 500" in response.json()["detail"]
    assert watch.growth < MEMORY_MARGIN


@pytest.mark.parametrize(
    ("model", "stream", "bound"),
    [
        ("silent", False, "MODELPORT_UPSTREAM_FIRST_BYTE_SECONDS"),
        ("drip", True, "MODELPORT_UPSTREAM_EVENT_GAP_SECONDS"),
        ("drip-body", False, "MODELPORT_UPSTREAM_EVENT_GAP_SECONDS"),
    ],
)
async def test_an_answer_past_a_time_bound_is_504_naming_it(
    gateway: httpx.AsyncClient, hostile: Hostile, model: str, stream: bool, bound: str
) -> None:
    watch = Watch()
    started = time.monotonic()
    response = await with_liveness(gateway, watch, ask(gateway, hostile, model, stream=stream))
    status, detail = failure(response)
    assert (status, bound in detail) == (504, True), detail
    # The bound is 1.5 s: ended then, not when the upstream stops (it never does).
    assert time.monotonic() - started < 15
    assert watch.slowest_live < LIVE_WITHIN_SECONDS
    if model != "silent":
        assert await asyncio.to_thread(hostile.gone(model).wait, 10)


@pytest.mark.parametrize(
    ("model", "stream", "words"),
    [
        ("bad-utf8", False, "not UTF-8"),
        ("bad-utf8-stream", True, "not UTF-8"),
        ("html", False, "content type 'text/html'"),
        ("json-for-stream", True, "did not answer with an event stream"),
        ("brotli", False, "content encoding 'br'"),
    ],
)
async def test_a_malformed_answer_is_a_clear_502(
    gateway: httpx.AsyncClient, hostile: Hostile, model: str, stream: bool, words: str
) -> None:
    response = await ask(gateway, hostile, model, stream=stream)
    status, detail = failure(response)
    assert (status, words in detail) == (502, True), detail


# ---- the event parser, on its own ---------------------------------------------------------


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("chunk_size", [1, 3, 4096])
async def test_events_are_read_the_same_whatever_the_line_ends_and_reads(newline: bytes, chunk_size: int) -> None:
    """SSE allows LF, CRLF and CR, and a network read may split a line (or a CRLF) anywhere."""
    from modelport.vendors.bounded import events_within
    from modelport.vendors.client import UpstreamClient

    text = b': a comment\nevent: first\ndata: {"a":\ndata: 1}\n\nid: 7\ndata: two\n\ndata: unfinished'
    body = text.replace(b"\n", newline)
    chunks = [body[start : start + chunk_size] for start in range(0, len(body), chunk_size)]
    client = UpstreamClient(
        httpx.MockTransport(
            lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Chunks(chunks))
        )
    )
    response = await client.send(client.build_request("GET", "http://upstream.test/"))
    events = [(event.name, event.data) async for event in events_within(response, vendor="TEST")]
    assert events == [("first", '{"a":\n1}'), ("", "two")]
