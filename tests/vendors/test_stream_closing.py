"""A stream read through the real transport from a real server, stopped at its `[DONE]`
before the body's end (as every stream is), leaves nothing for the event loop's
finaliser of async generators to close: each one left was a wake-up system call and a
task of its own per stream (issue 27), and a read of the body the caller never asked for."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelport.vendors.client import UpstreamClient
from modelport.vendors.transport import AiohttpTransport
from modelport.vendors.upstream import RetryPolicy, send, sse_json
from modelport.vendors.wire import Timeouts

# The last event comes after `[DONE]`, in a later write: no reader asks for it.
FIRST = b'data: {"n": 1}\n\ndata: [DONE]\n\n'
AFTER = b'data: {"n": 2}\n\n'


class Streaming(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(FIRST) + len(AFTER)))
        self.end_headers()
        self.wfile.write(FIRST)
        self.wfile.flush()
        self.wfile.write(AFTER)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Streaming)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    server.shutdown()


async def test_a_stream_stopped_at_done_leaves_no_generator_to_the_finaliser(upstream: str) -> None:
    left: list[str] = []
    firstiter, finalizer = sys.get_asyncgen_hooks()

    def finalising(generator: Any) -> None:
        left.append(generator.__qualname__)
        if finalizer is not None:
            finalizer(generator)

    client = UpstreamClient(AiohttpTransport(), Timeouts(connect=10.0, read=10.0))
    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalising)
    try:
        for _ in range(3):
            request = client.build_request("POST", upstream, content=b"{}")
            response = await send(client, request, vendor="test", policy=RetryPolicy())
            events = [data async for _, data in sse_json(response, vendor="test")]
            assert events == [{"n": 1}]
        for _ in range(3):  # what the garbage collector would find, it finds now
            await asyncio.sleep(0)
    finally:
        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)
        await client.aclose()
    assert left == []
