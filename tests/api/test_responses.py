"""The Responses API (`/v1/responses`) through the ASGI app, on SQLite and PostgreSQL,
driven by the `openai` SDK on the embedded model: whole and streamed answers (the SDK's
own types parse every event), stored responses (retrieve, input items, delete, another
account's), `text.format`, and bodies refused with a 400 naming the field."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.conftest import ADMIN_KEY

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
async def sdk(app: FastAPI) -> AsyncIterator[AsyncOpenAI]:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=120)
    async with AsyncOpenAI(
        base_url="http://modelport.test/v1", api_key=ADMIN_KEY, http_client=http, max_retries=0
    ) as client:
        yield client


async def test_a_whole_response_is_stored_listed_and_deleted(sdk: AsyncOpenAI) -> None:
    answer = await sdk.responses.create(
        model=MODEL,
        instructions="You are terse.",
        input="Name a colour.",
        max_output_tokens=8,
        temperature=0,
        metadata={"ticket": "42"},
    )
    assert isinstance(answer, Response) and answer.id.startswith("resp_")
    assert answer.status in ("completed", "incomplete") and answer.model == MODEL
    assert answer.output_text and answer.output[0].type == "message"
    if answer.status == "incomplete":
        assert answer.incomplete_details is not None
        assert answer.incomplete_details.reason == "max_output_tokens"
    usage = answer.usage
    assert usage is not None and usage.input_tokens > 0 and 0 < usage.output_tokens <= 8
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert answer.instructions == "You are terse." and answer.metadata == {"ticket": "42"}

    kept = await sdk.responses.retrieve(answer.id)
    assert kept.id == answer.id and kept.output_text == answer.output_text and kept.usage == answer.usage

    items = await sdk.responses.input_items.list(answer.id)
    [item] = items.data
    assert item.type == "message" and item.role == "user"
    assert [(part.type, getattr(part, "text", None)) for part in item.content] == [("input_text", "Name a colour.")]

    await sdk.responses.delete(answer.id)
    with pytest.raises(openai.NotFoundError) as gone:
        await sdk.responses.retrieve(answer.id)
    assert gone.value.status_code == 404 and "not found" in gone.value.message
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.delete(answer.id)


async def test_a_streamed_response_is_the_documented_events_in_order(sdk: AsyncOpenAI) -> None:
    stream = await sdk.responses.create(
        model=MODEL, input="Say hello.", max_output_tokens=12, temperature=0, stream=True
    )
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    final = events[-1].response  # type: ignore[union-attr]
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas and deltas == final.output_text == events[-4].text  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.output_tokens > 0
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"  # type: ignore[union-attr]
    # Stored before the last event went out: a client may read it back at once.
    assert (await sdk.responses.retrieve(final.id)).output_text == deltas


async def test_the_stream_helper_accumulates_the_same_answer(sdk: AsyncOpenAI) -> None:
    async with sdk.responses.stream(model=MODEL, input="Say hello.", max_output_tokens=64, temperature=0) as stream:
        texts = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert final.output_text == "".join(texts) and final.output_text


async def test_a_json_schema_format_answers_valid_json(sdk: AsyncOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "maxLength": 12}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    answer = await sdk.responses.create(
        model=MODEL,
        input="Name a colour as JSON.",
        max_output_tokens=40,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "colour", "schema": schema, "strict": True}},
    )
    assert answer.status == "completed", answer.incomplete_details
    assert set(json.loads(answer.output_text)) == {"colour"}
    assert answer.text is not None and answer.text.format is not None and answer.text.format.type == "json_schema"


async def test_not_stored_responses_are_not_found(sdk: AsyncOpenAI) -> None:
    answer = await sdk.responses.create(model=MODEL, input="Hi", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(answer.id)
    with pytest.raises(openai.BadRequestError) as unknown:
        await sdk.responses.create(model=MODEL, input="Hi", max_output_tokens=2, previous_response_id=answer.id)
    assert unknown.value.param == "previous_response_id"


async def test_another_accounts_response_is_not_found(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 2})
    assert created.status_code == 200, created.text
    response_id = created.json()["id"]
    account = (await client.post("/accounts", json={"account_name": "responses-elsewhere"})).json()["account_id"]
    elsewhere = {"x-selected-account-id": account}
    for method, path in [
        ("GET", f"/v1/responses/{response_id}"),
        ("GET", f"/v1/responses/{response_id}/input_items"),
        ("DELETE", f"/v1/responses/{response_id}"),
        ("POST", f"/v1/responses/{response_id}/cancel"),
    ]:
        answer = await client.request(method, path, headers=elsewhere)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["error"]["type"] == "invalid_request_error"
        assert answer.json()["error"]["code"] == "not_found"
    continued = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "Hi", "previous_response_id": response_id},
        headers=elsewhere,
    )
    assert continued.status_code == 400 and continued.json()["error"]["param"] == "previous_response_id"
    # Still there for its own account; and not a background response, so not cancellable.
    assert (await client.get(f"/v1/responses/{response_id}")).status_code == 200
    cancel = await client.post(f"/v1/responses/{response_id}/cancel")
    assert cancel.status_code == 400 and "background" in cancel.json()["error"]["message"]


async def test_input_items_are_paged_in_either_order(client: httpx.AsyncClient) -> None:
    items = [{"role": "user", "content": f"m{index}"} for index in range(5)]
    created = await client.post("/v1/responses", json={"model": MODEL, "input": items, "max_output_tokens": 1})
    assert created.status_code == 200, created.text
    path = f"/v1/responses/{created.json()['id']}/input_items"

    def texts(page: dict[str, Any]) -> list[str]:
        return [item["content"][0]["text"] for item in page["data"]]

    newest = (await client.get(path, params={"limit": 2})).json()
    assert texts(newest) == ["m4", "m3"] and newest["has_more"] is True
    rest = (await client.get(path, params={"limit": 10, "after": newest["last_id"]})).json()
    assert texts(rest) == ["m2", "m1", "m0"] and rest["has_more"] is False
    oldest = (await client.get(path, params={"order": "asc"})).json()
    assert texts(oldest) == ["m0", "m1", "m2", "m3", "m4"]
    assert oldest["first_id"] == oldest["data"][0]["id"] and oldest["last_id"] == oldest["data"][-1]["id"]
    assert (await client.get(path, params={"limit": 101})).status_code == 400


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "input": "Hi", "frobnicate": 1}, "frobnicate"),
        ({"model": MODEL, "input": [{"role": "wizard", "content": "x"}]}, "input.0.role"),
        ({"model": MODEL, "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input.0.call_id"),
        ({"model": MODEL, "input": "Hi", "tools": [{"type": "function"}]}, "tools.0.name"),
        ({"model": MODEL, "input": "Hi", "tools": [{"type": "teleport"}]}, "tools.0.type"),
        (
            {"model": MODEL, "input": "Hi", "text": {"format": {"type": "json_schema", "schema": {}}}},
            "text.format.name",
        ),
        ({"model": MODEL, "input": "Hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": MODEL, "input": "Hi", "temperature": 3}, "temperature"),
        ({"model": MODEL, "input": "Hi", "background": True}, "background"),
        ({"model": MODEL, "input": "Hi", "tool_choice": "required"}, "tool_choice"),
        ({"model": MODEL, "input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0"),
        ({"input": "Hi"}, "model"),
    ],
)
async def test_a_malformed_body_is_a_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    answer = await client.post("/v1/responses", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


async def test_not_json_is_a_400(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/responses", content=b"{", headers={"content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"


async def test_every_event_and_object_passes_the_sdks_types_strictly(client: httpx.AsyncClient) -> None:
    """The SDK builds its objects leniently; validated, they show a field left out."""
    events = TypeAdapter(ResponseStreamEvent)
    body = {"model": MODEL, "input": "Say hello.", "max_output_tokens": 6, "temperature": 0}
    async with client.stream("POST", "/v1/responses", json={**body, "stream": True}) as streamed:
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
        frames = [frame async for frame in _frames(streamed)]
    assert frames and all(name == data["type"] for name, data in frames)
    for _, data in frames:
        events.validate_python(data)
    final = Response.model_validate(frames[-1][1]["response"])
    assert Response.model_validate((await client.get(f"/v1/responses/{final.id}")).json()) == final
    whole = Response.model_validate((await client.post("/v1/responses", json=body)).json())
    assert whole.output_text == final.output_text  # the same answer at temperature 0


async def _frames(streamed: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE frame."""
    name = ""
    async for line in streamed.aiter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield name, json.loads(line.removeprefix("data: "))
