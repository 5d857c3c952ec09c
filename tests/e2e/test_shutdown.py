"""SIGTERM on a real `modelport serve` with the embedded model generating: the README's
"Shutdown" paragraph, end to end. The server stops taking connections and closes idle
ones, readiness says 503, a stream that finishes within the grace period finishes whole,
and plain requests still running or still waiting for the engine then get a 503."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CHAT_DEPLOYMENT
from tests.e2e.test_connections import read_answer
from tests.e2e.test_engine_process import ready_engine_pid
from tests.e2e.test_operations import HEADERS, serving

pytestmark = pytest.mark.e2e

# Long enough for the stream's tokens on a machine busy with other work.
GRACE = 45.0
COUNTING = "1, 2, 3, 4, 5, 6, 7,"  # greedy counting goes on: no early end of text
# One KV window of 8192 cells that one request may fill. The long request reserves most
# of it, the stream a few cells beside it, and the waiting request does not fit: it
# waits for the engine until the long one ends, past the grace period (to finish within
# it, one engine thread would need to generate over 160 tokens a second beside the
# others; a busy 2-core machine makes about 8).
ENGINE = {"embedded_kv_tokens": "8192", "embedded_max_sequence_kv_share": "1", "embedded_threads": "1"}
LONG = {"prompt": COUNTING, "temperature": 0, "max_tokens": 7400}
STREAM_TOKENS = 120
STREAM = {"prompt": COUNTING, "temperature": 0, "max_tokens": STREAM_TOKENS, "stream": True}
WAITING = {"prompt": COUNTING, "temperature": 0, "max_tokens": 900}
SHUTTING_DOWN = {"detail": "the server is shutting down"}


class ChunkedReader:
    """Answers read off one connection: a chunked one (a stream) chunk by chunk, and
    then the next answer, pipelined behind it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        assert data, f"closed mid-answer after {self.buffer!r}"
        self.buffer += data

    def _take_until(self, mark: bytes) -> bytes:
        while mark not in self.buffer:
            self._fill()
        taken, _, self.buffer = self.buffer.partition(mark)
        return taken

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def head(self) -> bytes:
        return self._take_until(b"\r\n\r\n")

    def chunk(self) -> bytes:
        """The next chunk's data; b"" for the last (empty) chunk."""
        size = int(self._take_until(b"\r\n").split(b";")[0], 16)
        data = self._take(size)
        self._take(2)  # its CRLF
        return data

    def answer(self) -> bytes:
        """A whole answer with a Content-Length."""
        head = self.head()
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        return head + b"\r\n\r\n" + self._take(length)


def chat_engine(base_url: str) -> dict[str, Any]:
    engines = httpx.get(f"{base_url}/health", timeout=10).json()["embedded_engines"]
    [entry] = [entry for entry in engines if entry["model"].startswith("SmolLM2")]
    return dict(entry)


def test_sigterm_drains_the_embedded_engine_within_the_grace_period(tmp_path: Path) -> None:
    settings = {"embedded_engine": "true", "shutdown_grace_seconds": str(GRACE), "keep_alive_seconds": "60", **ENGINE}
    with serving(tmp_path, **settings) as (base_url, process):
        ready_engine_pid(base_url)
        items = httpx.get(f"{base_url}/v4/model-deployments", headers=HEADERS, timeout=10).json()["items"]
        [deployment] = [item["id"] for item in items if item["name"] == CHAT_DEPLOYMENT]
        path = f"/v4/models/{deployment}/completions"
        address = ("127.0.0.1", int(base_url.rsplit(":", 1)[1]))

        # An idle kept-alive connection (the server would keep it for 60 s).
        idle = socket.create_connection(address)
        idle.settimeout(GRACE + 30)
        idle.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(idle).startswith(b"HTTP/1.1 200 ")

        plain: dict[str, tuple[float, httpx.Response]] = {}

        def ask(name: str, body: dict[str, Any]) -> None:
            response = httpx.post(f"{base_url}{path}", json=body, headers=HEADERS, timeout=GRACE + 60)
            plain[name] = (time.monotonic(), response)

        def engine_stats() -> dict[str, Any]:
            return dict(chat_engine(base_url).get("stats", {}))

        def wait_for(count: str, wanted: int) -> None:
            deadline = time.monotonic() + 60
            while (stats := engine_stats()).get(count) != wanted:
                assert time.monotonic() < deadline, stats
                time.sleep(0.05)

        long_running = threading.Thread(target=ask, args=("long", LONG))
        long_running.start()
        wait_for("running", 1)
        # The stream, on a connection of its own with a readiness probe pipelined behind
        # it: the server reads the probe only once the stream is done, so the probe is
        # surely answered after the signal, while the server drains. (uvicorn stops
        # accepting connections within a tenth of a second of the signal: a probe on a
        # new connection is refused rather than answered.)
        streamed = socket.create_connection(address)
        streamed.settimeout(GRACE + 30)
        body = json.dumps(STREAM).encode()
        streamed.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {HEADERS['x-api-key']}\r\n".encode()
            + f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
            + b"GET /health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        reader = ChunkedReader(streamed)
        stream_head = reader.head()
        received: list[tuple[float, str]] = []
        streaming = threading.Event()

        def stream() -> None:
            while chunk := reader.chunk():
                received.extend((time.monotonic(), line) for line in chunk.decode().splitlines())
                streaming.set()

        streamer = threading.Thread(target=stream)
        streamer.start()
        assert streaming.wait(60)
        waiter = threading.Thread(target=ask, args=("waiting", WAITING))
        waiter.start()
        wait_for("waiting", 1)  # the long request and the stream generate; this one does not fit beside them

        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert idle.recv(100) == b""  # the idle connection is closed, well before its keep-alive ends
        idle_closed_after = time.monotonic() - signalled
        idle.close()
        for thread in (streamer, long_running, waiter):
            thread.join(timeout=GRACE + 60)
            assert not thread.is_alive()
        readiness = reader.answer()
        assert streamed.recv(100) == b""  # and then this connection: no more requests are read
        streamed.close()
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)

    assert idle_closed_after < GRACE

    # Readiness, asked after the signal, is 503.
    head, _, answer = readiness.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert json.loads(answer) == {"status": "not ready", "reasons": ["the server is shutting down"]}

    # The stream went on after the signal and ended as usual: every token, no error event.
    assert stream_head.startswith(b"HTTP/1.1 200 ")
    lines = [line for _, line in received if line]
    events = [at for at, line in received if line.startswith("data:")]
    print(f"stream: {len(events)} events, the last {events[-1] - signalled:.2f} s after the signal")
    assert any(line.startswith("data:") for at, line in received if at > signalled)
    assert "event: error" not in lines, lines[-3:]
    last = json.loads(lines[-1].removeprefix("data:"))
    assert (last["finish_reason"], last["response_tokens"]) == ("length", STREAM_TOKENS)

    # The plain requests, the one generating and the one still waiting for the engine,
    # were answered 503 when the grace period ended, not before.
    for name in ("long", "waiting"):
        answered_at, response = plain[name]
        assert (response.status_code, response.json()) == (503, SHUTTING_DOWN), name
        assert answered_at - signalled > GRACE - 0.5, name

    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "CancelledError" not in log, log
    with sqlite3.connect(tmp_path / "modelport.db") as database:
        statuses = sorted(
            row[0]
            for row in database.execute("SELECT status FROM usage_records WHERE deployment_id = ?", (deployment,))
        )
    assert statuses == [200, 503, 503]
