"""The VERTEX_AI adapter (Gemini and Claude on Vertex) through modelport's app, against a
fake token endpoint that verifies each service account's signed assertion and a fake
Vertex AI that requires the tokens it issued (tests/vendors/cloud_fakes.py), answering
in the documented shapes (fixtures/documented/vertex-ai)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from modelport.errors import ModelportError
from modelport.vendors.client import UpstreamClient
from modelport.vendors.upstream import RetryPolicy
from modelport.vendors.vertex import REFRESH_MARGIN_SECONDS, TokenSource
from tests.vendors.cloud_fakes import CloudFake, ServiceAccount, cloud_app

GEMINI = "gemini-2.0-flash-001"
CLAUDE = "claude-sonnet-4-5@20250929"
ACCOUNT = ServiceAccount("modelport@my-project.iam.gserviceaccount.com", "key-1")
# Its own key, for the test that counts token fetches; and one whose key Google does not know.
BUSY = ServiceAccount("busy@my-project.iam.gserviceaccount.com", "key-2")
UNKNOWN = ServiceAccount("unknown@my-project.iam.gserviceaccount.com", "key-unknown")
# One whose token endpoint is a deployment's `token_url`, with the Vertex host a `base_url`.
PRIVATE = ServiceAccount("private@my-project.iam.gserviceaccount.com", "key-3")
PROMPT = {"chat_history": [], "prompt": "Hi"}
HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi."},
    {"role": "assistant", "content": "Hello."},
]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}


@pytest.fixture(scope="module")
async def vertex(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[httpx.AsyncClient, CloudFake]]:
    fake = CloudFake(accounts={account.key_id: account for account in (ACCOUNT, BUSY, PRIVATE)})
    async with cloud_app(tmp_path_factory.mktemp("vertex"), fake) as client:
        for name, account in (("sa", ACCOUNT), ("sa-busy", BUSY), ("sa-unknown", UNKNOWN), ("sa-private", PRIVATE)):
            stored = await client.put(f"/v4/secrets/{name}", json={"value": account.json()})
            assert stored.status_code == 200, stored.text
        yield client, fake


async def deploy(client: httpx.AsyncClient, model: str = GEMINI, **parameters: Any) -> str:
    settings = {"model": model, "project": "my-project", "region": "us-central1", "api_key_secret": "sa", **parameters}
    created = await client.post(
        "/v4/models",
        json={"name": f"vertex-{uuid.uuid4().hex[:8]}", "model_type": "CHAT_COMPLETION", "model_vendor": "VERTEX_AI",
              "model_creation_parameters": settings},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "vertex"})
    assert deployment.status_code == 200, deployment.text
    return str(deployment.json()["id"])


def sse_data(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]


def fetched_for(fake: CloudFake, account: ServiceAccount) -> list[tuple[str, str, str]]:
    return [fetch for fetch in fake.fetches if fetch[0] == account.email]


async def test_gemini_on_vertex_with_a_token_from_the_service_account(vertex: Any) -> None:
    client, fake = vertex
    fake.answers[GEMINI] = (200, "vertex-ai/gemini_generate.json")
    deployment = await deploy(client)
    body = {"chat_history": HISTORY, "prompt": "Capital of France?", "max_tokens": 50, "temperature": 0.5}
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["completions"][0][1] == ["Paris is the capital of France."]
    assert (result["finish_reason"], result["prompt_tokens"], result["response_tokens"]) == ("stop", 9, 7)
    sent = fake.sent[-1]
    assert str(sent.url) == (
        "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1/"
        "publishers/google/models/gemini-2.0-flash-001:generateContent"
    )
    # The token the fake endpoint issued for this account, fetched from the key's own token_uri.
    _email, token_url, token = fetched_for(fake, ACCOUNT)[-1]
    assert token_url == "https://oauth2.googleapis.com/token"
    assert sent.headers["authorization"] == f"Bearer {token}"
    sent_body = json.loads(sent.content)  # the Gemini API's own body (vendors/google.py's translation)
    assert sent_body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [turn["role"] for turn in sent_body["contents"]] == ["user", "model", "user"]
    assert sent_body["generationConfig"]["maxOutputTokens"] == 50


async def test_the_token_is_fetched_once_for_many_requests_even_at_once(vertex: Any) -> None:
    client, fake = vertex
    fake.answers["gemini-busy"] = (200, "vertex-ai/gemini_generate.json")
    deployment = await deploy(client, "gemini-busy", api_key_secret="sa-busy")
    url = f"/v4/models/{deployment}/chat-completions"
    answers = await asyncio.gather(*(client.post(url, json=PROMPT) for _ in range(6)))
    answers += [await client.post(url, json=PROMPT) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200] * 9
    assert len(fetched_for(fake, BUSY)) == 1


async def test_a_streamed_gemini_function_call(vertex: Any) -> None:
    client, fake = vertex
    fake.answers["gemini-tools"] = (200, "vertex-ai/gemini_stream_function_call.sse")
    deployment = await deploy(client, "gemini-tools")
    body = {"model": deployment, "messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER],
            "stream": True}  # fmt: skip
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    deltas = [chunk["choices"][0]["delta"] for chunk in sse_data(response) if chunk.get("choices")]
    calls = [call for delta in deltas for call in delta.get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"location": "Boston, MA"}
    sent = fake.sent[-1]
    assert sent.url.path.endswith("/models/gemini-tools:streamGenerateContent") and sent.url.params["alt"] == "sse"
    assert json.loads(sent.content)["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


async def test_claude_on_vertex_takes_anthropics_body_without_model(vertex: Any) -> None:
    client, fake = vertex
    fake.answers[CLAUDE] = (200, "vertex-ai/claude_message_tool_use.json")
    deployment = await deploy(client, CLAUDE, publisher="anthropic", region="us-east5")
    body = {"model": deployment, "messages": [{"role": "user", "content": "Weather in Boston?"}], "tools": [WEATHER],
            "max_tokens": 200}  # fmt: skip
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the weather in Boston."
    call = choice["message"]["tool_calls"][0]
    assert (call["id"], json.loads(call["function"]["arguments"])) == (
        "toolu_vrtx_01DJv1qLKc8Rk1cXHY9QrAvt",
        {"location": "Boston, MA"},
    )
    sent = fake.sent[-1]
    assert str(sent.url) == (
        "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project/locations/us-east5/"
        "publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    )
    sent_body = json.loads(sent.content)
    assert "model" not in sent_body and sent_body["anthropic_version"] == "vertex-2023-10-16"
    assert "anthropic-version" not in sent.headers
    assert sent_body["tools"] == [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]  # type: ignore[index]
    assert sent_body["max_tokens"] == 200 and sent_body["stream"] is False


async def test_claude_on_vertex_streamed(vertex: Any) -> None:
    client, fake = vertex
    fake.answers["claude-stream"] = (200, "vertex-ai/claude_stream.sse")
    deployment = await deploy(client, "claude-stream", publisher="anthropic")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json={**PROMPT, "stream": True})
    assert response.status_code == 200, response.text
    events = sse_data(response)
    assert "".join(event["completions"][0][1][0] for event in events) == "Hello there!"
    assert (events[-1]["finish_reason"], events[-1]["prompt_tokens"], events[-1]["response_tokens"]) == ("stop", 14, 4)
    assert fake.sent[-1].url.path.endswith(":streamRawPredict")
    assert json.loads(fake.sent[-1].content)["stream"] is True


async def test_token_endpoint_and_vertex_host_are_settings(vertex: Any) -> None:
    client, fake = vertex
    fake.answers["gemini-private"] = (200, "vertex-ai/gemini_generate.json")
    deployment = await deploy(
        client, "gemini-private", api_key_secret="sa-private", token_url="https://tokens.internal.test/token",
        base_url="https://vertex.internal.test/v1",
    )  # fmt: skip
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=PROMPT)
    assert response.status_code == 200, response.text
    assert [fetch[1] for fetch in fetched_for(fake, PRIVATE)] == ["https://tokens.internal.test/token"]
    assert fake.sent[-1].url.host == "vertex.internal.test"


async def test_a_key_google_does_not_know_is_refused_without_echoing_it(vertex: Any) -> None:
    client, fake = vertex
    fake.answers["gemini-unknown"] = (200, "vertex-ai/gemini_generate.json")
    deployment = await deploy(client, "gemini-unknown", api_key_secret="sa-unknown")
    sent_before = len([request for request in fake.sent if "/publishers/" in request.url.path])
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=PROMPT)
    assert response.status_code == 502, response.text
    assert "invalid_grant" in response.text and "service-account key" in response.text
    assert "PRIVATE KEY" not in response.text and UNKNOWN.private_pem[40:80] not in response.text
    assert len([request for request in fake.sent if "/publishers/" in request.url.path]) == sent_before


async def test_a_permission_error_from_vertex_names_it(vertex: Any) -> None:
    client, fake = vertex
    fake.answers["gemini-denied"] = (403, "vertex-ai/error_permission.json")
    deployment = await deploy(client, "gemini-denied")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=PROMPT)
    assert response.status_code == 502
    assert "aiplatform.endpoints.predict" in response.json()["detail"]
    assert "ya29." not in response.text


async def test_settings_are_checked_when_registered(vertex: Any) -> None:
    client, _ = vertex

    async def deploy_status(settings: dict[str, Any]) -> httpx.Response:
        created = await client.post(
            "/v4/models",
            json={"name": f"v-{uuid.uuid4().hex[:8]}", "model_type": "CHAT_COMPLETION", "model_vendor": "VERTEX_AI",
                  "model_creation_parameters": settings},
        )  # fmt: skip
        if created.status_code != 200:
            return created
        return await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})

    complete = {"model": GEMINI, "project": "my-project", "region": "us-central1", "api_key_secret": "sa"}
    for missing in ("project", "region", "api_key_secret"):
        answer = await deploy_status({name: value for name, value in complete.items() if name != missing})
        assert answer.status_code == 422 and missing in json.dumps(answer.json()), (missing, answer.text)
    for bad in ({"region": "us-central1.evil.example"}, {"publisher": "meta"}, {"project": "My Project"},
                {"token_url": "oauth2.googleapis.com/token"}):  # fmt: skip
        answer = await deploy_status({**complete, **bad})
        assert answer.status_code == 422, (bad, answer.text)


async def test_a_missing_secret_is_a_clear_503(vertex: Any) -> None:
    client, _ = vertex
    deployment = await deploy(client, "gemini-nokey", api_key_secret="not-stored")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=PROMPT)
    assert response.status_code == 503 and "not-stored" in response.json()["detail"]


async def test_a_secret_that_is_no_service_account_key_is_a_clear_503(vertex: Any) -> None:
    client, _ = vertex
    assert (await client.put("/v4/secrets/sa-text", json={"value": "AIzaSy-an-api-key"})).status_code == 200
    deployment = await deploy(client, "gemini-text", api_key_secret="sa-text")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=PROMPT)
    assert response.status_code == 503 and "service-account key" in response.json()["detail"]
    assert "AIzaSy" not in response.text


# --- the token cache itself, on a clock the test moves ------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_token_is_refreshed_shortly_before_it_expires() -> None:
    fake = CloudFake(accounts={ACCOUNT.key_id: ACCOUNT}, token_lifetime=3600)
    clock = Clock()
    async with UpstreamClient(fake) as client:
        tokens = TokenSource(client, RetryPolicy(attempts=1), clock=clock)
        first = await tokens.token(ACCOUNT.json(), None)
        clock.now += 3600 - REFRESH_MARGIN_SECONDS - 1  # still good
        assert await tokens.token(ACCOUNT.json(), None) == first
        clock.now += 2  # within the margin: refreshed
        second = await tokens.token(ACCOUNT.json(), None)
    assert second != first
    assert [fetch[2] for fetch in fake.fetches] == [first, second]


async def test_one_refresh_at_a_time_for_concurrent_requests() -> None:
    fake = CloudFake(accounts={ACCOUNT.key_id: ACCOUNT})
    async with UpstreamClient(fake) as client:
        tokens = TokenSource(client, RetryPolicy(attempts=1))
        found = await asyncio.gather(*(tokens.token(ACCOUNT.json(), None) for _ in range(20)))
    assert len(set(found)) == 1 and len(fake.fetches) == 1


async def test_the_token_cache_is_bounded() -> None:
    """At most `max_cached` tokens are kept (MAX_CACHED_TOKENS, 1,024, on the server): the
    oldest is dropped, and fetched again when next needed."""
    accounts = [ServiceAccount(f"sa{index}@p.iam.gserviceaccount.com", f"bound-{index}") for index in range(3)]
    fake = CloudFake(accounts={account.key_id: account for account in accounts})
    async with UpstreamClient(fake) as client:
        tokens = TokenSource(client, RetryPolicy(attempts=1), max_cached=2)
        for account in accounts:
            await tokens.token(account.json(), None)
        await tokens.token(accounts[2].json(), None)  # kept
        await tokens.token(accounts[0].json(), None)  # dropped: fetched again
    assert [fetch[0] for fetch in fake.fetches] == [account.email for account in accounts] + [accounts[0].email]


async def test_a_key_that_fails_keeps_no_lock_behind() -> None:
    fake = CloudFake(accounts={})  # knows no key: every assertion is refused
    async with UpstreamClient(fake) as client:
        tokens = TokenSource(client, RetryPolicy(attempts=1))
        for _ in range(3):
            with pytest.raises(ModelportError, match="invalid_grant"):
                await tokens.token(UNKNOWN.json(), None)
        assert not tokens._locks and not tokens._tokens


async def test_a_token_answer_without_a_token_is_an_upstream_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"token_type": "Bearer"})

    async with UpstreamClient(httpx.MockTransport(handler)) as client:
        with pytest.raises(ModelportError, match="access_token"):
            await TokenSource(client, RetryPolicy(attempts=1)).token(ACCOUNT.json(), None)


async def test_a_token_url_the_operator_denies_is_refused_when_written(tmp_path: Any) -> None:
    fake = CloudFake(accounts={ACCOUNT.key_id: ACCOUNT})
    async with cloud_app(tmp_path, fake, upstream_deny=["tokens.evil.test"]) as client:
        settings = {"model": GEMINI, "project": "p1", "region": "us-central1", "api_key_secret": "sa",
                    "token_url": "https://tokens.evil.test/token"}  # fmt: skip
        created = await client.post(
            "/v4/models",
            json={"name": "denied", "model_type": "CHAT_COMPLETION", "model_vendor": "VERTEX_AI",
                  "model_creation_parameters": settings},
        )  # fmt: skip
    assert created.status_code == 422 and "tokens.evil.test" in created.json()["detail"]


async def test_the_servers_key_goes_only_to_the_hosts_the_operator_tied_it_to(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service-account key in the server's environment (`api_key_env`), tied to Google's
    token and Vertex hosts: an assertion signed with it is never sent to a `token_url` on
    another host, nor its token to another Vertex `base_url`."""
    monkeypatch.setenv("VERTEX_SERVICE_ACCOUNT", ACCOUNT.json())
    fake = CloudFake(accounts={ACCOUNT.key_id: ACCOUNT})
    fake.answers[GEMINI] = (200, "vertex-ai/gemini_generate.json")
    tied = ["VERTEX_SERVICE_ACCOUNT@oauth2.googleapis.com", "us-central1-aiplatform.googleapis.com"]
    async with cloud_app(tmp_path, fake, upstream_key_envs=tied) as client:
        served = await deploy(client, api_key_secret=None, api_key_env="VERTEX_SERVICE_ACCOUNT")
        assert (await client.post(f"/v4/models/{served}/chat-completions", json=PROMPT)).status_code == 200
        assert len(fetched_for(fake, ACCOUNT)) == 1
        # A token endpoint elsewhere: its deployment is created (no base_url names the
        # host yet), and each request is refused before anything is signed.
        deployment = await deploy(
            client,
            api_key_secret=None,
            api_key_env="VERTEX_SERVICE_ACCOUNT",
            token_url="https://tokens.elsewhere.test/token",
        )
        refused = await client.post(f"/v4/models/{deployment}/chat-completions", json=PROMPT)
        assert refused.status_code == 400 and "tokens.elsewhere.test" in refused.json()["detail"], refused.text
        # A Vertex host elsewhere is refused when written.
        settings = {"model": GEMINI, "project": "p1", "region": "us-central1", "api_key_env": "VERTEX_SERVICE_ACCOUNT",
                    "base_url": "https://vertex.elsewhere.test/v1"}  # fmt: skip
        created = await client.post(
            "/v4/models",
            json={"name": "elsewhere", "model_type": "CHAT_COMPLETION", "model_vendor": "VERTEX_AI",
                  "model_creation_parameters": settings},
        )  # fmt: skip
        assert created.status_code == 422 and "vertex.elsewhere.test" in created.json()["detail"], created.text
        assert len(fetched_for(fake, ACCOUNT)) == 1  # nothing more was signed and sent
        assert {request.url.host for request in fake.sent} == {
            "oauth2.googleapis.com",
            "us-central1-aiplatform.googleapis.com",
        }
