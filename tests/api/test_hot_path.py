"""The inference routes' hot path (`api/hot_path.py`, issue 27): the routes it serves,
and that nothing a client sees differs from FastAPI serving them. The same requests
(answers, streams, every kind of refusal, on every surface) go to an application with
the hot path and to one without it, on one database, and must get the same statuses,
headers and bodies but for what is new on every request (ids, times)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Request

from modelport.api.app import create_app
from modelport.api.deps import CurrentPrincipal, Service
from modelport.api.front import Front
from modelport.api.hot_path import HotPath, plan_for
from tests.conftest import ADMIN_KEY, serving, sqlite_settings

CHAT = {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}  # fmt: skip
TEXT = {"id": "cmpl-up", "object": "text_completion", "created": 1, "model": "up",
        "choices": [{"index": 0, "text": "hello", "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}  # fmt: skip

# What the issue names, and modelport's other inference POST routes.
HOT_ROUTES = {
    "/v4/models/{model_deployment_id}/chat-completions",
    "/v4/models/{model_deployment_id}/completions",
    "/v4/models/{model_deployment_id}/embeddings",
    "/v4/models/{model_deployment_id}/rerankings",
    "/v4/chat-completions",
    "/v4/completions",
    "/v1/chat/completions",
    "/v4/beta/chat/completions",
    "/v1/completions",
    "/v4/beta/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/v1/responses/{response_id}/cancel",
}


def _upstream(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    answer = TEXT if request.url.path.endswith("/v1/completions") else CHAT
    if not body.get("stream"):
        return httpx.Response(200, json=answer)
    if answer is TEXT:
        pieces = [{**TEXT, "choices": [{"index": 0, "text": "hel", "finish_reason": None}]},
                  {**TEXT, "choices": [{"index": 0, "text": "lo", "finish_reason": "stop"}]}]  # fmt: skip
    else:
        delta = [{"role": "assistant", "content": "hel"}, {"content": "lo"}]
        pieces = [{**CHAT, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": part, "finish_reason": "stop" if index else None}]}
                  for index, part in enumerate(delta)]  # fmt: skip
    usage = {**CHAT, "object": "chat.completion.chunk", "choices": [], "usage": CHAT["usage"]}
    frames = "".join(f"data: {json.dumps(event)}\n\n" for event in [*pieces, usage]) + "data: [DONE]\n\n"
    return httpx.Response(200, content=frames.encode(), headers={"content-type": "text/event-stream"})


def _requests(deployment: str) -> list[tuple[str, str, Any, dict[str, str]]]:
    """(name, path, JSON body, headers): answers, streams and refusals on every surface."""
    v4 = f"/v4/models/{deployment}/chat-completions"
    chat = {"model": "hot", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    message = {"model": "hot", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    return [
        ("v4 chat", v4, {"chat_history": [], "prompt": "hi", "max_tokens": 5}, {}),
        ("v4 chat streamed", v4, {"chat_history": [], "prompt": "hi", "max_tokens": 5, "stream": True}, {}),
        ("v4 completion", f"/v4/models/{deployment}/completions", {"prompt": "hi", "max_tokens": 5}, {}),
        ("v4 bad body", v4, {"prompt": 3}, {}),
        ("v4 not JSON", v4, "{", {}),
        ("v4 unknown deployment", "/v4/models/nope/chat-completions", {"chat_history": [], "prompt": "hi"}, {}),
        ("v4 no key", v4, {"chat_history": [], "prompt": "hi"}, {"x-api-key": ""}),
        ("v4 wrong key", v4, {"chat_history": [], "prompt": "hi"}, {"x-api-key": "mp_" + "x" * 40}),
        # A chat deployment answers neither; a body that is not one is refused first.
        ("v4 embeddings of a chat model", f"/v4/models/{deployment}/embeddings", {"texts": ["a"]}, {}),
        ("v4 embeddings bad body", f"/v4/models/{deployment}/embeddings", {"texts": 5}, {}),
        ("v4 rerankings not JSON", f"/v4/models/{deployment}/rerankings", "{", {}),
        ("v4 rerankings unknown deployment", "/v4/models/nope/rerankings", {"query": "q", "chunks": ["a"]}, {}),
        ("SGP top-level chat", "/v4/chat-completions", {**chat, "messages": [{"role": "user", "content": "hi"}]}, {}),
        ("openai chat", "/v1/chat/completions", chat, {}),
        ("openai chat streamed", "/v1/chat/completions", {**chat, "stream": True}, {}),
        ("openai chat bearer", "/v1/chat/completions", chat, {"x-api-key": "", "authorization": f"Bearer {ADMIN_KEY}"}),
        ("openai bad body", "/v1/chat/completions", {"model": "hot"}, {}),
        ("openai unknown model", "/v1/chat/completions", {**chat, "model": "nope"}, {}),
        ("openai completion", "/v1/completions", {"model": "hot", "prompt": "hi", "max_tokens": 5}, {}),
        ("openai several prompts", "/v1/completions", {"model": "hot", "prompt": ["a", "b"], "max_tokens": 5}, {}),
        ("anthropic message", "/v1/messages", message, {}),
        ("anthropic message streamed", "/v1/messages", {**message, "stream": True}, {}),
        ("anthropic bad body", "/v1/messages", {"model": "hot"}, {}),
        ("anthropic count", "/v1/messages/count_tokens", {"model": "hot", "messages": message["messages"]}, {}),
        ("responses", "/v1/responses", {"model": "hot", "input": "hi", "store": False}, {}),
        ("responses cancel unknown", "/v1/responses/resp_nope/cancel", None, {}),
    ]


_NEW_EACH_TIME = {"id", "created", "created_at", "response_id", "request_id"}
_IDS = re.compile(r"\b(chatcmpl|cmpl|msg|resp|rs|msg_resp|item)[-_][A-Za-z0-9]+")


def _same_each_time(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: "*" if key in _NEW_EACH_TIME else _same_each_time(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_same_each_time(item) for item in value]
    return _IDS.sub("<id>", value) if isinstance(value, str) else value


def _seen(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in ("x-request-id", "x-modelport-overhead-ms", "date", "content-length")
    }
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = []
        for line in response.text.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(_same_each_time(json.loads(line[6:])))
            elif line:
                events.append(line)
        return response.status_code, headers, events
    return response.status_code, headers, _same_each_time(response.json())


async def _answers(application: FastAPI, deployment: str | None) -> tuple[str, dict[str, Any]]:
    """The deployment (made when not given) and what each request of `_requests` got."""
    async with serving(application) as client:
        if deployment is None:
            made = await client.post(
                "/v4/models",
                json={"name": "hot", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
                      "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up",
                                                    "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}},
            )  # fmt: skip
            assert made.status_code == 200, made.text
            created = await client.post(f"/v4/models/{made.json()['id']}/deployments", json={"name": "d"})
            deployment = str(created.json()["id"])
        seen = {}
        for name, path, body, headers in _requests(deployment):
            content = body if isinstance(body, str) else None
            sent = await client.post(
                path, json=None if content is not None else body, content=content,
                headers={"content-type": "application/json", **headers},
            )  # fmt: skip
            seen[name] = _seen(sent)
    return deployment, seen


def _without_hot_path(application: FastAPI) -> FastAPI:
    [entry] = [entry for entry in application.user_middleware if entry.cls is Front]
    entry.kwargs["routes"] = []  # every request on to FastAPI, past the same observer and guard
    return application


async def test_the_hot_path_serves_every_inference_route_and_no_other(tmp_path: Path) -> None:
    application = create_app(sqlite_settings(tmp_path), upstream_transport=httpx.MockTransport(_upstream))
    [entry] = [entry for entry in application.user_middleware if entry.cls is Front]
    served = {route.path for route in entry.kwargs["routes"]}
    assert served == HOT_ROUTES


@pytest.mark.parametrize("root_path", ["", "/gateway"])
def test_a_route_is_found_by_its_path_as_by_matching_each_in_turn(tmp_path: Path, root_path: str) -> None:
    """Routes without path parameters are looked up by path: each request finds the route
    Starlette's matching in turn finds (the first whose pattern matches), behind a root
    path too, and a route not served here is not found."""
    application = create_app(sqlite_settings(tmp_path))
    [entry] = [entry for entry in application.user_middleware if entry.cls is Front]
    routes = entry.kwargs["routes"]
    hot = HotPath(routes, {})
    paths = [re.sub(r"\{[^}]+\}", "some-id", route.path) for route in routes] + ["/v4/api-keys", "/v1/models"]
    assert any("some-id" not in path for path in paths[: len(routes)])  # some are found by path
    for path in paths:
        for method in ("POST", "GET"):
            scope = {"type": "http", "method": method, "path": root_path + path, "root_path": root_path}
            expected = next((route for route in routes if route.matches(dict(scope))[0].name == "FULL"), None)
            found = hot.route(scope)
            assert (found.route if found else None) is (expected if method == "POST" else None), (method, path)
            if found is not None:
                assert scope["route"] is found.route and "path_params" in scope


async def test_a_client_sees_the_same_answers_refusals_and_streams_with_and_without_it(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path, auth_failures_per_minute=0, usage_flush_seconds=60)
    upstream = httpx.MockTransport(_upstream)
    deployment, hot = await _answers(create_app(settings, upstream_transport=upstream), None)
    _, plain = await _answers(_without_hot_path(create_app(settings, upstream_transport=upstream)), deployment)
    assert hot.keys() == plain.keys()
    for name in hot:
        assert hot[name] == plain[name], name
    # The requests covered what they say: answers, streams and each kind of refusal.
    statuses = {name: seen[0] for name, seen in hot.items()}
    assert statuses["v4 chat"] == statuses["openai chat streamed"] == statuses["anthropic message"] == 200
    assert (statuses["v4 bad body"], statuses["v4 unknown deployment"], statuses["v4 no key"]) == (422, 404, 401)
    assert (statuses["openai bad body"], statuses["anthropic bad body"]) == (400, 400)
    assert statuses["v4 embeddings of a chat model"] == 400
    assert (statuses["v4 embeddings bad body"], statuses["v4 rerankings not JSON"]) == (422, 422)
    assert statuses["v4 rerankings unknown deployment"] == 404


async def test_the_openapi_document_is_the_same_with_and_without_it(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path)
    with_it = create_app(settings).openapi()
    without_it = _without_hot_path(create_app(settings)).openapi()
    assert with_it == without_it
    assert "/v4/models/{model_deployment_id}/chat-completions" in with_it["paths"]


def test_a_route_asking_for_what_only_fastapi_resolves_is_refused_at_start_up() -> None:
    router = APIRouter()

    @router.post("/with-query")
    async def with_query(limit: int, principal: CurrentPrincipal) -> None: ...

    @router.post("/with-body")
    async def with_body(body: dict[str, int], service: Service) -> None: ...

    async def elsewhere(request: Request) -> int:
        return 1

    @router.post("/with-other-dependency")
    async def with_other(value: int = Depends(elsewhere)) -> None: ...

    @router.post("/with-background-tasks")
    async def with_tasks(tasks: BackgroundTasks, principal: CurrentPrincipal) -> None: ...

    refusals = {}
    for route in router.routes:
        with pytest.raises(ValueError) as refused:
            plan_for(route)  # type: ignore[arg-type]
        refusals[route.path] = str(refused.value)  # type: ignore[attr-defined]
    assert "query parameters" in refusals["/with-query"]
    assert "body parameters" in refusals["/with-body"]
    assert "no resolver" in refusals["/with-other-dependency"]
    assert "background tasks" in refusals["/with-background-tasks"]
