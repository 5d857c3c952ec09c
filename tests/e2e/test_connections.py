"""Slow and idle clients cannot hold the server's connections (issue 10)."""

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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("connections")
    with modelport_serving(data, api_key=E2E_KEY, embedded_engine="false", header_timeout_seconds="1") as base_url:
        yield base_url


def test_connections_that_never_finish_their_headers_are_closed(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
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
    with httpx.Client(base_url=server, timeout=5) as client:
        for _ in range(3):
            assert client.get("/health").status_code == 200
            time.sleep(0.3)
