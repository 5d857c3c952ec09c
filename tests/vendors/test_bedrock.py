"""The BEDROCK adapter through modelport's app, against a fake Bedrock that recomputes
every request's SigV4 signature with botocore (tests/vendors/cloud_fakes.py) and answers
in the Converse API's documented shapes (fixtures/documented/bedrock)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.servers import free_port
from tests.vendors.cloud_fakes import CloudFake, cloud_app, frame

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
KEY_ID, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SERVER_KEY_ID, SERVER_SECRET = "AKIAI44QH8DHBEXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"
SERVER_TOKEN = "FwoGZXIvYXdzEXAMPLEsessiontoken0123456789"
HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi."},
    {"role": "assistant", "content": "Hello."},
]
PROMPT = {"chat_history": [], "prompt": "Hi"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}


@pytest.fixture(scope="module")
async def bedrock(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[httpx.AsyncClient, CloudFake]]:
    fake = CloudFake(aws_keys={KEY_ID: SECRET, SERVER_KEY_ID: SERVER_SECRET})
    envs = ["AWS_SECRET_ACCESS_KEY@bedrock-runtime.us-east-1.amazonaws.com"]
    async with cloud_app(tmp_path_factory.mktemp("bedrock"), fake, upstream_key_envs=envs) as client:
        value = json.dumps({"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET})
        stored = await client.put("/v4/secrets/aws", json={"value": value})
        assert stored.status_code == 200, stored.text
        yield client, fake


async def deploy(client: httpx.AsyncClient, model: str = MODEL, **parameters: Any) -> str:
    settings = {"model": model, "region": "us-east-1", "api_key_secret": "aws", **parameters}
    settings = {name: value for name, value in settings.items() if value is not None}
    created = await client.post(
        "/v4/models",
        json={"name": f"bedrock-{uuid.uuid4().hex[:8]}", "model_type": "CHAT_COMPLETION", "model_vendor": "BEDROCK",
              "model_creation_parameters": settings},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "bedrock"})
    assert deployment.status_code == 200, deployment.text
    return str(deployment.json()["id"])


def sse_data(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]


async def test_a_whole_answer_signed_for_the_region_and_translated(bedrock: Any) -> None:
    client, fake = bedrock
    fake.answers[MODEL] = (200, "bedrock/converse.json")
    deployment = await deploy(client)
    body = {"chat_history": HISTORY, "prompt": "Capital of France?", "temperature": 0.5, "top_p": 0.9,
            "max_tokens": 50, "stop_sequences": ["###"]}  # fmt: skip
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["completions"][0][1] == ["Paris is the capital of France."]
    assert (result["finish_reason"], result["prompt_tokens"], result["response_tokens"]) == ("stop", 21, 8)
    sent = fake.sent[-1]
    # The region's own host; the model id escaped once in the path (the signer escapes it again).
    assert sent.url.host == "bedrock-runtime.us-east-1.amazonaws.com"
    assert sent.url.raw_path == b"/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    assert SECRET not in str(sent.headers)
    assert json.loads(sent.content) == {
        "system": [{"text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"text": "Hi."}]},
            {"role": "assistant", "content": [{"text": "Hello."}]},
            {"role": "user", "content": [{"text": "Capital of France?"}]},
        ],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.5, "topP": 0.9, "stopSequences": ["###"]},
    }


async def test_a_wrong_secret_key_fails_the_signature_check_and_is_not_echoed(bedrock: Any) -> None:
    client, fake = bedrock
    fake.answers["wrong-key-model"] = (200, "bedrock/converse.json")
    wrong = "not-the-right-secret-key-0123456789"
    value = json.dumps({"aws_access_key_id": KEY_ID, "aws_secret_access_key": wrong})
    assert (await client.put("/v4/secrets/aws-wrong", json={"value": value})).status_code == 200
    deployment = await deploy(client, "wrong-key-model", api_key_secret="aws-wrong")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=PROMPT)
    assert response.status_code == 502, response.text
    assert "signature we calculated does not match" in response.json()["detail"]
    assert wrong not in response.text and KEY_ID not in response.text


async def test_the_max_tokens_stop_and_cached_input_tokens(bedrock: Any) -> None:
    client, fake = bedrock
    fake.answers["cut-model"] = (200, "bedrock/converse_max_tokens.json")
    deployment = await deploy(client, "cut-model")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json={**PROMPT, "max_tokens": 2})
    result = response.json()
    # inputTokens leaves out the cache reads: the prompt counted them all.
    assert (result["finish_reason"], result["prompt_tokens"], result["response_tokens"]) == ("length", 37, 2)


async def test_a_streamed_answer_read_from_aws_event_stream_frames(bedrock: Any) -> None:
    client, fake = bedrock
    fake.answers["stream-model"] = (200, "bedrock/converse_stream.json")
    deployment = await deploy(client, "stream-model")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json={**PROMPT, "stream": True})
    assert response.status_code == 200, response.text
    events = sse_data(response)
    assert "".join(event["completions"][0][1][0] for event in events) == "Hello there!"
    assert (events[-1]["finish_reason"], events[-1]["prompt_tokens"], events[-1]["response_tokens"]) == ("stop", 12, 3)
    assert fake.sent[-1].url.path.endswith("/converse-stream")


async def test_tool_calls_whole_and_the_tool_turn_sent_back(bedrock: Any) -> None:
    client, fake = bedrock
    fake.answers["tool-model"] = (200, "bedrock/converse_tool_use.json")
    deployment = await deploy(client, "tool-model")
    question = {"role": "user", "content": "Weather in Boston?"}
    body = {"model": deployment, "messages": [question], "tools": [WEATHER], "tool_choice": "required"}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert (call["id"], call["function"]["name"]) == ("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "get_weather")
    assert json.loads(call["function"]["arguments"]) == {"location": "Boston, MA"}
    assert json.loads(fake.sent[-1].content)["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "get_weather", "description": "The current weather in a city",
                                "inputSchema": {"json": WEATHER["function"]["parameters"]}}}],  # type: ignore[index]
        "toolChoice": {"any": {}},
    }  # fmt: skip
    # The call and the tool's answer go back as toolUse and toolResult blocks.
    fake.answers["tool-model"] = (200, "bedrock/converse.json")
    called = {"role": "assistant", "content": None, "tool_calls": [call]}
    answered = {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 22}'}
    body = {"model": deployment, "messages": [question, called, answered], "tools": [WEATHER]}
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    sent = json.loads(fake.sent[-1].content)
    messages = sent["messages"]
    assert "toolConfig" in sent  # Bedrock requires it once the conversation holds tool blocks
    assert messages[1]["content"] == [
        {"toolUse": {"toolUseId": call["id"], "name": "get_weather", "input": {"location": "Boston, MA"}}}
    ]
    assert messages[2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": call["id"], "content": [{"text": '{"temperature": 22}'}]}}],
    }


async def test_images_go_as_base64_blocks_and_urls_are_refused(bedrock: Any) -> None:
    client, fake = bedrock
    fake.answers["image-model"] = (200, "bedrock/converse.json")
    deployment = await deploy(client, "image-model")
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="

    def asking(url: str) -> dict[str, Any]:
        content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
        return {"model": deployment, "messages": [{"role": "user", "content": content}]}

    response = await client.post("/v1/chat/completions", json=asking(f"data:image/png;base64,{pixel}"))
    assert response.status_code == 200, response.text
    assert json.loads(fake.sent[-1].content)["messages"][0]["content"] == [
        {"text": "What is this?"},
        {"image": {"format": "png", "source": {"bytes": pixel}}},
    ]
    refused = await client.post("/v1/chat/completions", json=asking("https://example.com/cat.png"))
    assert refused.status_code == 400 and "data" in refused.json()["error"]["message"]


async def test_tool_choice_none_leaves_the_tools_out(bedrock: Any) -> None:
    client, fake = bedrock
    fake.answers["none-model"] = (200, "bedrock/converse.json")
    deployment = await deploy(client, "none-model")
    question = {"role": "user", "content": "Weather in Boston?"}
    body = {"model": deployment, "messages": [question], "tools": [WEATHER], "tool_choice": "none"}
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    assert "toolConfig" not in json.loads(fake.sent[-1].content)


async def test_a_streamed_tool_call_arrives_in_pieces(bedrock: Any) -> None:
    client, fake = bedrock
    fake.answers["stream-tool-model"] = (200, "bedrock/converse_stream_tool_use.json")
    deployment = await deploy(client, "stream-tool-model")
    body = {"model": deployment, "messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER],
            "stream": True}  # fmt: skip
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    chunks = sse_data(response)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk.get("choices")]
    calls = [call for delta in deltas for call in delta.get("tool_calls") or []]
    assert calls[0]["id"] == "tooluse_Xo6HqmsPTJe0Bzh2QQX1gA" and calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(call["function"].get("arguments") or "" for call in calls)
    assert json.loads(arguments) == {"location": "Boston, MA"}
    assert "".join(delta.get("content") or "" for delta in deltas) == "Checking."
    finishes = [chunk["choices"][0].get("finish_reason") for chunk in chunks if chunk.get("choices")]
    assert [finish for finish in finishes if finish] == ["tool_calls"]


async def test_an_exception_mid_stream_ends_the_stream_with_an_error(bedrock: Any) -> None:
    client, fake = bedrock
    fake.answers["broken-stream"] = (200, "bedrock/converse_stream_exception.json")
    deployment = await deploy(client, "broken-stream")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json={**PROMPT, "stream": True})
    assert "modelStreamErrorException" in response.text
    assert "The model stream ended unexpectedly" in response.text


async def test_a_validation_exception_is_the_callers_400(bedrock: Any) -> None:
    client, fake = bedrock
    fake.answers["bad-model"] = (400, "bedrock/error_validation.json")
    deployment = await deploy(client, "bad-model")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=PROMPT)
    assert response.status_code == 400
    assert "model identifier is invalid" in response.json()["detail"]


async def test_the_servers_aws_variables_sign_with_the_session_token(
    bedrock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, fake = bedrock
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SERVER_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SERVER_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SERVER_TOKEN)
    fake.answers["server-key-model"] = (200, "bedrock/converse.json")
    deployment = await deploy(client, "server-key-model", api_key_secret=None, api_key_env="AWS_SECRET_ACCESS_KEY")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=PROMPT)
    assert response.status_code == 200, response.text
    sent = fake.sent[-1]
    assert sent.headers["x-amz-security-token"] == SERVER_TOKEN
    assert "x-amz-security-token" in sent.headers["authorization"]  # signed, so it cannot be swapped
    # The variable is tied to us-east-1's host: another region's is refused before anything is sent.
    elsewhere = await deploy(client, "server-key-model", region="us-west-2", api_key_secret=None,
                             api_key_env="AWS_SECRET_ACCESS_KEY")  # fmt: skip
    sent_before = len(fake.sent)
    refused = await client.post(f"/v4/models/{elsewhere}/chat-completions", json=PROMPT)
    assert refused.status_code == 400 and "bedrock-runtime.us-west-2.amazonaws.com" in refused.json()["detail"]
    assert len(fake.sent) == sent_before


async def test_a_generic_model_is_executed_signed(bedrock: Any) -> None:
    """SGP's deployments.execute on a GENERIC Bedrock model: the body goes to base_url
    signed like any Bedrock call (the fake checks it), the credential in no header."""
    client, fake = bedrock
    url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.titan-embed-text-v2%3A0/invoke"
    created = await client.post(
        "/v4/models",
        json={"name": f"generic-{uuid.uuid4().hex[:8]}", "model_type": "GENERIC", "model_vendor": "BEDROCK",
              "model_creation_parameters": {"model": "amazon.titan-embed-text-v2:0", "region": "us-east-1",
                                            "api_key_secret": "aws", "base_url": url}},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    model_id = created.json()["id"]
    deployment = (await client.post(f"/v4/models/{model_id}/deployments", json={"name": "g"})).json()["id"]
    answer = await client.post(f"/v4/models/{model_id}/deployments/{deployment}/execute", json={"inputText": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"invoked": {"inputText": "hi"}}
    sent = fake.sent[-1]
    assert sent.url.raw_path == b"/model/amazon.titan-embed-text-v2%3A0/invoke"
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256") and SECRET not in str(sent.headers)


async def test_settings_are_checked_when_registered(bedrock: Any) -> None:
    client, _ = bedrock

    async def create(settings: dict[str, Any]) -> httpx.Response:
        created = await client.post(
            "/v4/models",
            json={"name": f"b-{uuid.uuid4().hex[:8]}", "model_type": "CHAT_COMPLETION", "model_vendor": "BEDROCK",
                  "model_creation_parameters": settings},
        )  # fmt: skip
        assert created.status_code == 200, created.text
        return await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})

    no_credential = await create({"model": MODEL, "region": "us-east-1"})
    assert no_credential.status_code == 422
    assert "api_key_secret" in json.dumps(no_credential.json())
    no_region = await create({"model": MODEL, "api_key_secret": "aws"})
    assert no_region.status_code == 422 and "region" in json.dumps(no_region.json())
    bad_region = await client.post(
        "/v4/models",
        json={"name": "b-bad-region", "model_type": "CHAT_COMPLETION", "model_vendor": "BEDROCK",
              "model_creation_parameters": {"model": MODEL, "region": "evil.example/x"}},
    )  # fmt: skip
    assert bad_region.status_code == 422 and "region" in json.dumps(bad_region.json())


async def test_a_missing_or_malformed_secret_is_a_clear_503(bedrock: Any) -> None:
    client, fake = bedrock
    fake.answers["no-secret"] = (200, "bedrock/converse.json")
    missing = await deploy(client, "no-secret", api_key_secret="not-stored")
    response = await client.post(f"/v4/models/{missing}/chat-completions", json=PROMPT)
    assert response.status_code == 503 and "not-stored" in response.json()["detail"]
    assert (await client.put("/v4/secrets/aws-text", json={"value": "just-a-key"})).status_code == 200
    malformed = await deploy(client, "no-secret", api_key_secret="aws-text")
    response = await client.post(f"/v4/models/{malformed}/chat-completions", json=PROMPT)
    assert response.status_code == 503 and "aws_secret_access_key" in response.json()["detail"]
    assert "just-a-key" not in response.text


async def test_an_event_larger_than_its_bound_ends_the_stream(tmp_path: Any) -> None:
    """MODELPORT_UPSTREAM_MAX_EVENT_BYTES holds for event-stream messages, read from their
    prelude before the message itself is held."""
    fake = CloudFake(aws_keys={KEY_ID: SECRET})
    headers = {":message-type": "event", ":content-type": "application/json"}
    small = {":event-type": "contentBlockDelta", **headers}
    fake.framed[MODEL] = frame(small, json.dumps({"contentBlockIndex": 0, "delta": {"text": "fits"}}).encode()) + frame(
        small, json.dumps({"contentBlockIndex": 0, "delta": {"text": "x" * 5000}}).encode()
    )
    async with cloud_app(tmp_path, fake, upstream_max_event_bytes=4096) as client:
        value = json.dumps({"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET})
        await client.put("/v4/secrets/aws", json={"value": value})
        deployment = await deploy(client)
        response = await client.post(f"/v4/models/{deployment}/chat-completions", json={**PROMPT, "stream": True})
    assert "fits" in response.text
    assert "MODELPORT_UPSTREAM_MAX_EVENT_BYTES" in response.text and "x" * 100 not in response.text


@contextmanager
def bedrock_on_loopback(fake: CloudFake) -> Iterator[str]:
    """The fake Bedrock behind a real HTTP server on loopback: the request it checks is the
    one that crossed the network, its path exactly as sent."""

    async def handle(request: web.Request) -> web.Response:
        seen = httpx.Request(
            request.method, f"http://{request.host}{request.raw_path}", headers=dict(request.headers),
            content=await request.read(),
        )  # fmt: skip
        answer = await fake.handle_async_request(seen)
        return web.Response(status=answer.status_code, body=answer.content,
                            headers={"content-type": answer.headers["content-type"]})  # fmt: skip

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    port = free_port()
    # Its own loop in its own thread: the test's loop is running modelport meanwhile.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
    asyncio.run_coroutine_threadsafe(runner.setup(), loop).result(timeout=10)
    asyncio.run_coroutine_threadsafe(web.TCPSite(runner, "127.0.0.1", port).start(), loop).result(timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


async def test_the_signature_holds_over_the_real_transport(tmp_path: Any) -> None:
    """Through modelport's aiohttp transport, which must send the path as signed: the `:`
    of a model version escaped (`%3A`), not decoded on the way."""
    from modelport.config import Settings
    from tests.conftest import ADMIN_KEY, in_process

    fake = CloudFake(aws_keys={KEY_ID: SECRET})
    fake.answers[MODEL] = (200, "bedrock/converse.json")
    fake.answers["stream:model"] = (200, "bedrock/converse_stream.json")
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'real.db'}", api_key=ADMIN_KEY,
                        embedded_engine=False, upstream_attempts=1, secret_key="a-test-only-secret-key")  # fmt: skip
    with bedrock_on_loopback(fake) as base_url:
        async with in_process(settings) as (_application, client):
            value = json.dumps({"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET})
            await client.put("/v4/secrets/aws", json={"value": value})
            whole = await deploy(client, base_url=base_url)
            response = await client.post(f"/v4/models/{whole}/chat-completions", json=PROMPT)
            assert response.status_code == 200, response.text
            assert response.json()["completions"][0][1] == ["Paris is the capital of France."]
            streamed = await deploy(client, "stream:model", base_url=base_url)
            response = await client.post(f"/v4/models/{streamed}/chat-completions", json={**PROMPT, "stream": True})
            assert "".join(event["completions"][0][1][0] for event in sse_data(response)) == "Hello there!"
    assert [request.url.raw_path for request in fake.sent] == [
        b"/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
        b"/model/stream%3Amodel/converse-stream",
    ]
