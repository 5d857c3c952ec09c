"""A fake Anthropic Messages API on loopback, for the tests that point a real client
(Claude Code, the `anthropic` SDK) at modelport with an ANTHROPIC deployment behind it.

It keeps every request it gets (path, headers, JSON body) and answers each one as
Claude would with extended thinking: a thinking block with its signature, then text,
whole or streamed (`thinking_delta`, `signature_delta`, `text_delta`), and usage with
cache reads and writes. `/v1/messages/count_tokens` answers a fixed count.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.servers import free_port

ANSWER = "Hi from the fake upstream."
THINKING = "The user greets me; greet back."
SIGNATURE = "sig-EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
COUNTED_TOKENS = 4242
USAGE = {"input_tokens": 21, "output_tokens": 9, "cache_read_input_tokens": 1800, "cache_creation_input_tokens": 300}


@dataclass
class Received:
    path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeAnthropic:
    base_url: str
    received: list[Received] = field(default_factory=list)

    def messages(self) -> list[Received]:
        return [request for request in self.received if request.path == "/v1/messages"]


def _message(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": [
            {"type": "thinking", "thinking": THINKING, "signature": SIGNATURE},
            {"type": "text", "text": ANSWER, "citations": None},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": USAGE,
    }


def _events(body: dict[str, Any]) -> bytes:
    start = {**_message(body), "content": [], "stop_reason": None, "usage": {**USAGE, "output_tokens": 1}}
    half = len(THINKING) // 2
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": THINKING[:half]}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": THINKING[half:]}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": SIGNATURE}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": ANSWER}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": USAGE["output_tokens"]}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


def _app(fake: FakeAnthropic) -> Starlette:
    async def record(request: Request) -> dict[str, Any]:
        body = await request.json()
        fake.received.append(Received(request.url.path, request.url.query, dict(request.headers), body))
        return dict(body)

    async def messages(request: Request) -> Response:
        body = await record(request)
        if body.get("stream"):
            return Response(_events(body), media_type="text/event-stream")
        return JSONResponse(_message(body))

    async def count_tokens(request: Request) -> Response:
        await record(request)
        return JSONResponse({"input_tokens": COUNTED_TOKENS})

    return Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        ]
    )


@contextmanager
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """The fake upstream on a free loopback port, in a thread of this process."""
    port = free_port()
    fake = FakeAnthropic(base_url=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(uvicorn.Config(_app(fake), host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the fake Anthropic upstream did not start")
        time.sleep(0.05)
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def deploy(base_url: str, key: str, *, name: str, vendor: str, parameters: dict[str, Any]) -> str:
    """A chat model `name` of `vendor` with one deployment on a running modelport; its id."""
    with httpx.Client(base_url=base_url, headers={"x-api-key": key}, timeout=30) as client:
        model = client.post(
            "/v4/models",
            json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": vendor,
                  "model_creation_parameters": parameters},
        )  # fmt: skip
        assert model.status_code == 200, model.text
        deployment = client.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "upstream"})
        assert deployment.status_code == 200, deployment.text
        return str(deployment.json()["id"])
