"""The rest of Anthropic's request shapes on `/v1/messages` (issue 26), through the
`anthropic` SDK with strict response validation: `document` (PDF, URL) and
`search_result` blocks, images inside `tool_result`, server tools, `mcp_servers` and
`container` reach an ANTHROPIC deployment as sent, and are a 400 in Anthropic's shape
naming them and the deployment anywhere else (decided by the vendor's capabilities);
`message_start` carries the real input tokens (the upstream's own message_start, the
embedded engine's tokenized prompt); more than 4 stop sequences go to the vendors that
take them, within the bound. Upstreams answered in-process record what they were sent."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import RawMessageDeltaEvent, RawMessageStartEvent
from fastapi import FastAPI

from modelport.config import Settings
from modelport.schemas.inference import MAX_SURFACE_STOP_SEQUENCES
from tests.conftest import ADMIN_KEY, in_process

SECRET = "sk-ant-test-secret-0000"
PDF = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQKJcfsj6IK"}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
SEARCH_RESULT = {"type": "search_result", "source": "https://example.com/a", "title": "A",
                 "content": [{"type": "text", "text": "A is for apple."}], "citations": {"enabled": True}}  # fmt: skip
LOOKUP = {"name": "lookup", "description": "Look it up.", "input_schema": {"type": "object", "properties": {}}}
SERVER_TOOLS = [
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
    {"type": "code_execution_20250825", "name": "code_execution"},
    {"type": "bash_20250124", "name": "bash"},
    {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    {"type": "memory_20250818", "name": "memory"},
]
MCP_SERVERS = [{"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}]
# A conversation with every block only Anthropic takes.
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": [
        {"type": "document", "source": PDF, "title": "Report"},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/r.pdf"}},
        SEARCH_RESULT,
        {"type": "text", "text": "Summarise them."},
    ]},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "image", "source": PNG}, SEARCH_RESULT]},
        {"type": "text", "text": "Go on."},
    ]},
]  # fmt: skip
QUESTION = [{"role": "user", "content": "Hi"}]


def _events(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events)


ANTHROPIC_STREAM = _events(
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
     "content": [], "stop_reason": None, "stop_sequence": None,
     "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 100,
               "cache_creation_input_tokens": 7}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Read it."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 3}},
    {"type": "message_stop"},
)  # fmt: skip
OPENAI_ANSWER = {
    "id": "x", "object": "chat.completion", "created": 0, "model": "up",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}  # fmt: skip


class Upstream:
    """Anthropic's Messages API and OpenAI's chat, answering plainly; records every body."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.sent.append((request.url.path, body))
        if request.url.path.endswith("/v1/messages"):
            assert request.headers["x-api-key"] == SECRET
            if body.get("stream"):
                return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=ANTHROPIC_STREAM)
            return httpx.Response(200, json={
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [{"type": "text", "text": "Read it."}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 25, "output_tokens": 3}})  # fmt: skip
        return httpx.Response(200, json=OPENAI_ANSWER)

    def last(self) -> dict[str, Any]:
        return self.sent[-1][1]


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    return Upstream()


async def _deploy(client: httpx.AsyncClient, vendor: str, **parameters: Any) -> tuple[str, str]:
    """(model name, deployment id) of a new model of `vendor` on the upstream above."""
    name = f"{vendor.lower()}-{uuid.uuid4().hex[:8]}"
    made = await client.post(
        "/v4/models",
        json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": vendor,
              "model_creation_parameters": parameters},
    )  # fmt: skip
    assert made.status_code == 200, made.text
    deployed = await client.post(f"/v4/models/{made.json()['id']}/deployments", json={"name": "d"})
    assert deployed.status_code == 200, deployed.text
    return name, str(deployed.json()["id"])


@pytest.fixture(scope="module")
async def served(
    upstream: Upstream, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncAnthropic, dict[str, tuple[str, str]]]]:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", SECRET)
    settings = Settings(database_url=database_url, api_key=ADMIN_KEY, embedded_engine=False, upstream_attempts=1,
                        upstream_key_envs=["ANTHROPIC_TEST_KEY@upstream.test"])  # fmt: skip
    async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (app, client):
        models = {
            "ANTHROPIC": await _deploy(
                client, "ANTHROPIC", base_url="http://upstream.test", model="claude-x", api_key_env="ANTHROPIC_TEST_KEY"
            ),
            "OPENAI": await _deploy(client, "OPENAI", base_url="http://upstream.test/v1", model="up"),
            "OTHER": await _deploy(client, "OTHER", base_url="http://upstream.test/v1", model="up"),
        }
        # This anthropic SDK speaks through httpx2 (httpx's successor), which has the same ASGI transport.
        http2 = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), timeout=60)
        async with http2:
            sdk = AsyncAnthropic(base_url="http://modelport.test", api_key=ADMIN_KEY, http_client=http2,
                                 max_retries=0, _strict_response_validation=True)  # fmt: skip
            yield client, sdk, models
    monkeypatch.undo()


async def test_an_anthropic_deployment_gets_documents_search_results_and_server_tools_as_sent(
    served: Any, upstream: Upstream
) -> None:
    _client, sdk, models = served
    name, _ = models["ANTHROPIC"]
    message = await sdk.messages.create(
        model=name, max_tokens=50, messages=MESSAGES, tools=[LOOKUP, *SERVER_TOOLS], container="container_1",
        extra_body={"mcp_servers": MCP_SERVERS},
    )  # fmt: skip
    assert message.content[0].type == "text" and message.content[0].text == "Read it."
    path, sent = upstream.sent[-1]
    assert path == "/v1/messages"
    assert sent["messages"] == MESSAGES
    assert sent["tools"] == [LOOKUP, *SERVER_TOOLS]
    assert (sent["container"], sent["mcp_servers"]) == ("container_1", MCP_SERVERS)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": PDF}]}]}, "document blocks"),
        ({"messages": [{"role": "user", "content": [SEARCH_RESULT]}]}, "search_result blocks"),
        ({"messages": [
            {"role": "user", "content": "Look it up."}, MESSAGES[1],
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": [{"type": "image", "source": PNG}]}]},
        ]}, "images inside tool_result blocks"),
        ({"tools": [LOOKUP, SERVER_TOOLS[0], SERVER_TOOLS[2]]}, "server tools (bash_20250124, web_search_20250305)"),
        ({"mcp_servers": MCP_SERVERS}, "mcp_servers"),
        ({"container": "container_1"}, "container"),
    ],
    ids=["document", "search_result", "tool_result_image", "server_tools", "mcp_servers", "container"],
)  # fmt: skip
@pytest.mark.parametrize("vendor", ["OPENAI", "OTHER"])
async def test_another_vendor_answers_400_naming_what_it_cannot_take(
    served: Any, upstream: Upstream, extra: dict[str, Any], named: str, vendor: str
) -> None:
    client, sdk, models = served
    name, deployment = models[vendor]
    before = len(upstream.sent)
    body = {"model": name, "max_tokens": 20, "messages": QUESTION, **extra}
    answer = await client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert named in error["error"]["message"] and deployment in error["error"]["message"], error
    if "container" not in extra:  # count_tokens takes no container
        with pytest.raises(anthropic.BadRequestError, match="cannot take"):
            await sdk.messages.count_tokens(model=name, messages=body["messages"], extra_body={
                key: value for key, value in extra.items() if key != "messages"})  # fmt: skip
    assert len(upstream.sent) == before  # nothing reached the upstream
    # A plain-text document is text to any model: it goes through.
    text = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "A memo."}}
    plain = await sdk.messages.create(model=name, max_tokens=20, messages=[{"role": "user", "content": [text]}])
    assert plain.content[0].type == "text"
    assert upstream.last()["messages"][-1]["content"] == "A memo."


async def test_message_start_reports_the_upstreams_input_tokens(served: Any) -> None:
    _client, sdk, models = served
    name, _ = models["ANTHROPIC"]
    async with sdk.messages.stream(model=name, max_tokens=50, messages=QUESTION) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_message()
    start = events[0]
    assert isinstance(start, RawMessageStartEvent)
    usage = start.message.usage
    # Anthropic's meaning: input_tokens is the part neither read from nor written to the cache.
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (25, 100, 7)
    assert final.usage.input_tokens == 25 and final.usage.output_tokens == 3


async def test_a_cached_answer_replayed_reports_its_input_tokens_at_the_start(served: Any, upstream: Upstream) -> None:
    client, sdk, _models = served
    name, _ = await _deploy(client, "ANTHROPIC", base_url="http://upstream.test", model="claude-x",
                            api_key_env="ANTHROPIC_TEST_KEY", cache_ttl_seconds=60)  # fmt: skip
    before = len(upstream.sent)
    starts = []
    for _ in range(2):  # the second is answered from the response cache
        async with sdk.messages.stream(
            model=name, max_tokens=50, messages=QUESTION, extra_body={"temperature": 0}
        ) as stream:
            events = [event async for event in stream]  # read whole: a whole answer is kept
        starts.append(events[0])
    assert len(upstream.sent) == before + 1
    for start in starts:
        assert isinstance(start, RawMessageStartEvent)
        assert (start.message.usage.input_tokens, start.message.usage.cache_read_input_tokens) == (25, 100)


async def test_message_start_reports_the_embedded_models_input_tokens(app: FastAPI, client: httpx.AsyncClient) -> None:
    body = {"model": "smollm2-135m-instruct", "max_tokens": 2, "stream": True,
            "messages": [{"role": "user", "content": "Name a colour."}]}  # fmt: skip
    answer = await client.post("/v1/messages", json=body)
    assert answer.status_code == 200, answer.text
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    start = RawMessageStartEvent.model_validate(events[0])
    [delta] = [RawMessageDeltaEvent.model_validate(event) for event in events if event["type"] == "message_delta"]
    counted = await client.post("/v1/messages/count_tokens", json={key: body[key] for key in ("model", "messages")})
    tokens = counted.json()["input_tokens"]

    # Anthropic's input_tokens leave out what was read from the prompt cache: the
    # engine's prefix cache holds this prompt's start when an earlier test sent it.
    def whole(usage: Any) -> int:
        return (
            int(usage.input_tokens or 0)
            + int(usage.cache_read_input_tokens or 0)
            + int(usage.cache_creation_input_tokens or 0)
        )

    assert whole(start.message.usage) == tokens > 0
    assert whole(delta.usage) == tokens


async def test_more_than_four_stop_sequences_where_the_vendor_takes_them(served: Any, upstream: Upstream) -> None:
    client, sdk, models = served
    stops = [f"STOP{index}" for index in range(10)]
    message = await sdk.messages.create(model=models["ANTHROPIC"][0], max_tokens=20, messages=QUESTION,
                                        stop_sequences=stops)  # fmt: skip
    assert message.stop_reason == "end_turn"
    assert upstream.last()["stop_sequences"] == stops
    await sdk.messages.create(model=models["OTHER"][0], max_tokens=20, messages=QUESTION, stop_sequences=stops)
    assert upstream.last()["stop"] == stops  # an OpenAI-compatible server takes them

    before = len(upstream.sent)
    name, deployment = models["OPENAI"]  # OpenAI's own API takes 4
    refused = await client.post("/v1/messages", json={"model": name, "max_tokens": 20, "messages": QUESTION,
                                                      "stop_sequences": stops[:5]})  # fmt: skip
    assert refused.status_code == 400
    message_text = refused.json()["error"]["message"]
    assert "5 stop sequences" in message_text and "at most 4" in message_text and deployment in message_text
    beyond = [f"S{index}" for index in range(MAX_SURFACE_STOP_SEQUENCES + 1)]
    over = await client.post("/v1/messages", json={"model": models["ANTHROPIC"][0], "max_tokens": 20,
                                                   "messages": QUESTION, "stop_sequences": beyond})  # fmt: skip
    assert over.status_code == 400 and "stop_sequences" in over.json()["error"]["message"]
    assert len(upstream.sent) == before


async def test_the_embedded_model_takes_more_than_four_stop_sequences(client: httpx.AsyncClient) -> None:
    stops = ["a", "e", "i", "o", "u", " ", ".", "\n"]  # nearly every token holds one
    answer = await client.post(
        "/v1/messages",
        json={"model": "smollm2-135m-instruct", "max_tokens": 4, "temperature": 0, "stop_sequences": stops,
              "messages": [{"role": "user", "content": "Describe the sea."}]},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    message = answer.json()
    text = "".join(block["text"] for block in message["content"] if block["type"] == "text")
    assert not any(stop in text for stop in stops)
    if message["stop_reason"] == "stop_sequence":
        assert message["stop_sequence"] in stops
