"""The one middleware (`api/front.py`) runs its steps in the order the layers it
replaced ran: the observer around everything (a refusal by the guard and a CORS
preflight are observed: request id, overhead, metrics, log line), a preflight answered
before any of the guard's checks, and the guard's refusals made before routing (so
counted under no route) and carrying the CORS headers when CORS is on; a request still
running at the end of the shutdown's grace period is ended by it, with a 503."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from modelport.api.front import Front
from modelport.observability.shutdown import REASON as SHUTDOWN_REASON
from modelport.observability.shutdown import gate
from tests.conftest import in_process, sqlite_settings

ORIGIN = "https://chat.example.com"
CHAT = {"model": "nope", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _answered(text: str, route: str, status: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelport_requests_total"
        and (sample.labels["route"], sample.labels["status"]) == (route, status)
    )


def _observed(answer: httpx.Response) -> bool:
    return "x-request-id" in answer.headers and "x-modelport-overhead-ms" in answer.headers


async def test_a_refusal_by_the_guard_is_observed_logged_and_counted_under_no_route(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with in_process(sqlite_settings(tmp_path)) as (_app, client):
        before = (await client.get("/metrics")).text
        with caplog.at_level(logging.INFO, logger="modelport.requests"):
            refused = await client.post("/v1/chat/completions", content=b"hi", headers={"content-type": "text/plain"})
        after = (await client.get("/metrics")).text
    assert refused.status_code == 415 and _observed(refused)
    assert "must be JSON" in refused.json()["error"]["message"]  # OpenAI's shape on its route
    assert _answered(after, "other", "415") == _answered(before, "other", "415") + 1
    [line] = [record for record in caplog.records if record.name == "modelport.requests"]
    fields = line.modelport_fields  # type: ignore[attr-defined]
    assert (fields["request_id"], fields["route"], fields["status"]) == (refused.headers["x-request-id"], "other", 415)


async def test_with_cors_a_preflight_comes_before_the_guard_and_every_answer_has_the_cors_headers(
    tmp_path: Path,
) -> None:
    preflight = {"origin": ORIGIN, "access-control-request-method": "POST"}
    async with in_process(sqlite_settings(tmp_path, cors_origins=[ORIGIN])) as (_app, client):
        # The guard would refuse the NUL in the query: the preflight is answered first.
        allowed = await client.options("/v1/chat/completions?x=%00", headers=preflight)
        refused = await client.post("/v1/chat/completions?x=%00", json=CHAT, headers={"origin": ORIGIN})
        too_large = await client.post(
            "/v1/chat/completions", json={**CHAT, "pad": "x" * 5_000_000}, headers={"origin": ORIGIN}
        )
        unknown = await client.post("/v1/chat/completions", json=CHAT, headers={"origin": ORIGIN})
        without_origin = await client.post("/v1/chat/completions", json=CHAT)
    assert allowed.status_code == 200 and _observed(allowed)
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    # 400: OpenAI's status for the guard's 422, on its route.
    assert (refused.status_code, too_large.status_code, unknown.status_code) == (400, 413, 404)
    assert "NUL" in refused.json()["error"]["message"]
    for answer in (refused, too_large, unknown):
        assert _observed(answer)
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in answer.headers["access-control-expose-headers"]
    assert "access-control-allow-origin" not in without_origin.headers
    assert without_origin.headers["vary"] == "Origin"


def _front_waiting_forever() -> Front:
    """A Front whose one hot route waits until it is cancelled."""
    router = APIRouter()

    @router.post("/wait")
    async def wait(request: Request) -> Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def fastapi_app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("the hot path serves /wait")

    routes = [route for route in router.routes if isinstance(route, APIRoute)]
    return Front(fastapi_app, routes=routes, exception_handlers={}, max_bytes=1024, uploads={}, access_log=False)


async def _waiting(front: Front) -> tuple[asyncio.Task[None], list[Message]]:
    scope = {"type": "http", "method": "POST", "path": "/wait", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json")]}  # fmt: skip
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    task = asyncio.create_task(front(scope, receive, send))
    for _ in range(10):
        await asyncio.sleep(0)  # into the endpoint's wait
    return task, sent


async def test_a_request_still_running_when_the_shutdowns_grace_period_ends_gets_a_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task, sent = await _waiting(_front_waiting_forever())
    monkeypatch.setattr(gate, "expired", True)  # what `gate` does at the end of the grace period
    task.cancel(SHUTDOWN_REASON)
    await task  # ended here, cleanly: no CancelledError
    start, body = sent
    assert start["status"] == 503
    assert orjson.loads(body["body"]) == {"detail": SHUTDOWN_REASON}


async def test_any_other_cancellation_goes_on() -> None:
    task, sent = await _waiting(_front_waiting_forever())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sent == []
