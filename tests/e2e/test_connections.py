"""Slow and idle clients cannot hold the server (issue 10): connections that never finish
their headers are closed, idle kept-alive ones close after MODELPORT_KEEP_ALIVE_SECONDS,
and connections past MODELPORT_MAX_CONNECTIONS get 503."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import E2E_KEY
from tests.servers import modelport_serving

pytestmark = pytest.mark.e2e

# Polled up to here: a busy machine may be slow to close a connection, never early.
PATIENCE = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("connections")
    with modelport_serving(data, api_key=E2E_KEY, embedded_engine="false", header_timeout_seconds="1") as base_url:
        yield base_url


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def accepted_connections(port: int) -> set[int]:
    """The client ports of the connections the server on `port` holds open right now,
    as the kernel lists them (/proc/net/tcp: its side of each established connection)."""
    peers = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if state == "01" and int(local.split(":")[1], 16) == port:  # 01: ESTABLISHED
            peers.add(int(remote.split(":")[1], 16))
    return peers


def read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer with a Content-Length, read off a kept-alive connection."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, f"closed before the answer's headers: {answer!r}"
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, f"closed before the answer's body: {answer!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_connections_that_never_finish_their_headers_are_closed(server: str) -> None:
    port = port_of(server)
    slow = []
    for index in range(50):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(10)
        if index % 2:  # half send nothing, half a request line and a header, then stall
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        slow.append(sock)
    # Meanwhile everyone else is served.
    assert httpx.get(f"{server}/health", timeout=2).status_code == 200
    started = time.monotonic()
    for sock in slow:
        assert sock.recv(100) == b""  # closed by the server, nothing sent
        sock.close()
    assert time.monotonic() - started < 5


def test_a_kept_alive_connection_serves_request_after_request(server: str) -> None:
    """Three requests, a pause between each shorter than the keep-alive: the server
    accepted one connection for all of them (its own list of open connections shows
    the one client port, after every request)."""
    port = port_of(server)
    seen: set[int] = set()
    with httpx.Client(base_url=server, timeout=5, limits=httpx.Limits(max_connections=1)) as client:
        for _ in range(3):
            response = client.get("/health")
            assert response.status_code == 200
            client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
            assert client_port in accepted_connections(port)
            seen.add(client_port)
            time.sleep(0.3)
    assert len(seen) == 1


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive(tmp_path: Path) -> None:
    # The next request's header deadline (MODELPORT_HEADER_TIMEOUT_SECONDS, 10 s here)
    # also runs from the end of an answer: the keep-alive, shorter, is what closes it.
    keep_alive = 1  # seconds (uvicorn takes whole seconds)
    with modelport_serving(
        tmp_path, api_key=E2E_KEY, embedded_engine="false", keep_alive_seconds=str(keep_alive)
    ) as server:
        sock = socket.create_connection(("127.0.0.1", port_of(server)))
        sock.settimeout(PATIENCE)
        try:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_answer(sock)
            idle_since = time.monotonic()
            assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in answer.lower()
            assert sock.getsockname()[1] in accepted_connections(port_of(server))  # kept open after its answer
            assert sock.recv(100) == b""  # then closed by the server, nothing more sent
            idle = time.monotonic() - idle_since
        finally:
            sock.close()
    # Not before the keep-alive (less the time the answer took to reach this side), and
    # well before the header deadline would have.
    assert keep_alive - 0.5 < idle < 9, f"closed after {idle:.2f} s idle"


def test_connections_past_max_connections_get_503(tmp_path: Path) -> None:
    slots = 4
    with modelport_serving(tmp_path, api_key=E2E_KEY, embedded_engine="false", max_connections=str(slots)) as server:
        port = port_of(server)
        # Requests still in flight hold their connections: each sent its headers and a
        # part of its body, which the server waits for (MODELPORT_BODY_TIMEOUT_SECONDS, 30 s).
        held = []
        for _ in range(slots - 1):  # uvicorn counts the connection asking too
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(
                b"POST /v4/models HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                + f"x-api-key: {E2E_KEY}\r\ncontent-length: 100\r\n\r\n{{".encode()
            )
            held.append(sock)
        try:
            # Polled: the server may not have read every held request yet on a busy machine.
            deadline = time.monotonic() + PATIENCE
            while (refused := httpx.get(f"{server}/health/live", timeout=10)).status_code != 503:
                assert time.monotonic() < deadline, refused
                time.sleep(0.1)
            assert refused.text == "Service Unavailable"  # uvicorn's own answer, before the app
        finally:
            for sock in held:
                sock.close()
        # Their slots come back once they are closed.
        deadline = time.monotonic() + PATIENCE
        while (status := httpx.get(f"{server}/health/live", timeout=10).status_code) != 200:
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
