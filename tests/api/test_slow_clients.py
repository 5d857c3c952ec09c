"""Slow clients cannot hold the server (issue 21, finding 6 and item 8): a real
`modelport serve` on a loopback port, with 1-second header and body deadlines and 16
connection slots, against clients that stall their headers, stall or trickle their body
(with a Content-Length, and chunked), or read a stream slowly. Each gets a bounded
outcome; `/health/live` answers meanwhile, and the slots come back."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import E2E_KEY
from tests.servers import free_port, modelport_serving, running

pytestmark = pytest.mark.e2e

SLOTS = 16
# Generous: the deadlines are 1 s; these only catch "never", on a busy machine too.
ANSWER_WITHIN = 15.0
LIVE_WITHIN = 2.0


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    with running(
        [sys.executable, "-m", "tests.paced_upstream", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/",
        log_path=tmp_path_factory.mktemp("upstream") / "upstream.log",
    ):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with modelport_serving(
        tmp_path_factory.mktemp("slow-clients"),
        api_key=E2E_KEY,
        embedded_engine="false",
        header_timeout_seconds="1",
        body_timeout_seconds="1",
        max_connections=str(SLOTS),
        upstream_attempts="1",
    ) as base_url:
        yield base_url


def _address(server: str) -> tuple[str, int]:
    return "127.0.0.1", int(server.rsplit(":", 1)[1])


def _connect(server: str) -> socket.socket:
    sock = socket.create_connection(_address(server))
    sock.settimeout(ANSWER_WITHIN)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _json_body(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    parsed: dict[str, object] = json.loads(body)
    return parsed


def _assert_live(server: str) -> None:
    started = time.monotonic()
    assert httpx.get(f"{server}/health/live", timeout=LIVE_WITHIN).status_code == 200
    assert time.monotonic() - started < LIVE_WITHIN


def _chat_head(path: str, framing: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {E2E_KEY}\r\ncontent-type: application/json\r\n".encode()
        + framing
        + b"\r\n"
    )


def test_a_body_that_stalls_after_its_content_length_gets_408_and_is_closed(server: str) -> None:
    sock = _connect(server)
    sock.sendall(_chat_head("/v4/models/x/chat-completions", b"content-length: 100\r\n") + b'{"prompt": ')
    _assert_live(server)  # served meanwhile
    started = time.monotonic()
    answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert "body_timeout_seconds" in str(_json_body(answer)["detail"])
    assert time.monotonic() - started < ANSWER_WITHIN
    sock.close()


def test_a_chunked_body_that_stalls_gets_408_in_the_surfaces_error_shape(server: str) -> None:
    # Chunked: a body without a Content-Length; its end never comes.
    sock = _connect(server)
    sock.sendall(_chat_head("/v1/chat/completions", b"transfer-encoding: chunked\r\n") + b'5\r\n{"mod\r\n')
    _assert_live(server)
    answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    error = _json_body(answer)["error"]
    assert isinstance(error, dict) and "body_timeout_seconds" in error["message"]
    sock.close()


def test_a_body_trickled_a_byte_at_a_time_is_cut_off_at_the_deadline(server: str) -> None:
    # Each byte comes well within any per-read timeout; the whole body never does.
    sock = _connect(server)
    sock.sendall(_chat_head("/v4/models/x/chat-completions", b"transfer-encoding: chunked\r\n"))
    started = time.monotonic()
    answer = b""
    sock.settimeout(0.2)
    while time.monotonic() - started < ANSWER_WITHIN:
        try:
            sock.sendall(b"1\r\n \r\n")
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # the server closed while we still wrote
            break
        if not chunk:
            break
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < ANSWER_WITHIN
    sock.close()


def test_headers_that_stall_are_closed_without_an_answer(server: str) -> None:
    sock = _connect(server)
    sock.sendall(b"POST /v4/models/x/chat-completions HTTP/1.1\r\nHost: x\r\n")
    _assert_live(server)
    assert _read_until_closed(sock) == b""
    sock.close()


def test_every_slot_held_by_a_stalled_body_comes_back(server: str) -> None:
    # uvicorn counts the connection asking too: SLOTS - 1 others fill the server.
    held = [_connect(server) for _ in range(SLOTS - 1)]
    for sock in held:
        sock.sendall(_chat_head("/v4/models/x/chat-completions", b"content-length: 50\r\n") + b"{")
    deadline = time.monotonic() + ANSWER_WITHIN
    answers = [_read_until_closed(sock) for sock in held]
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)
    assert time.monotonic() < deadline
    for sock in held:
        sock.close()
    # Once the deadline closed them, every slot serves again, all at once.
    again = [_connect(server) for _ in range(SLOTS - 1)]
    try:
        for sock in again:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
        assert all(_read_until_closed(sock).startswith(b"HTTP/1.1 200 ") for sock in again)
    finally:
        for sock in again:
            sock.close()


def _paced_deployment(server: str, upstream: str) -> str:
    with httpx.Client(base_url=server, headers={"x-api-key": E2E_KEY}, timeout=30) as client:
        model = client.post(
            "/v4/models",
            json={
                "name": "paced",
                "model_type": "CHAT_COMPLETION",
                "model_vendor": "OPENAI",
                # 20 events, 0.1 s apart: the stream outlasts both 1-second deadlines.
                "model_creation_parameters": {"base_url": upstream, "model": "paced-0.1"},
            },
        )
        assert model.status_code == 200, model.text
        deployment = client.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "paced"})
        assert deployment.status_code == 200, deployment.text
        return str(deployment.json()["id"])


def test_a_stream_read_slowly_is_served_whole_past_the_read_deadlines(server: str, upstream: str) -> None:
    deployment = _paced_deployment(server, upstream)
    body = json.dumps({"chat_history": [], "prompt": "hi", "max_tokens": 30, "stream": True}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # the server's writes back up
    sock.settimeout(ANSWER_WITHIN)
    sock.connect(_address(server))
    sock.sendall(_chat_head(f"/v4/models/{deployment}/chat-completions", f"content-length: {len(body)}\r\n".encode()))
    sock.sendall(body)
    live_failures: list[BaseException] = []

    def probe() -> None:
        try:
            for _ in range(5):
                _assert_live(server)
                time.sleep(0.3)
        except BaseException as exc:  # reported by the test's thread
            live_failures.append(exc)

    prober = threading.Thread(target=probe)
    prober.start()
    started = time.monotonic()
    received = b""
    while b"0\r\n\r\n" not in received[-16:] and time.monotonic() - started < 60:
        chunk = sock.recv(64)
        if not chunk:
            break
        received += chunk
        time.sleep(0.01)
    prober.join()
    sock.close()
    assert not live_failures, live_failures
    assert received.startswith(b"HTTP/1.1 200 ")
    assert time.monotonic() - started > 1.5  # it did outlast the deadlines
    assert received.count(b'"tok "') == 20 and received.rstrip().endswith(b"0")
