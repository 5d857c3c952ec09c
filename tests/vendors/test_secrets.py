"""Account secrets: stored encrypted, used by reference, never shown."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tests.vendors.conftest import deploy

VALUE = "sk-account-secret-abcdef123456"


async def test_a_secret_is_sent_upstream_but_never_stored_or_shown_in_clear(recorded_app: Any) -> None:
    app, client, transport = recorded_app
    stored = await client.put("/v4/secrets/openai-key", json={"value": VALUE})
    assert stored.status_code == 200 and VALUE not in stored.text
    listing = await client.get("/v4/secrets")
    assert [item["name"] for item in listing.json()] == ["openai-key"] and VALUE not in listing.text
    async with app.state.sessions() as session:
        [ciphertext] = (await session.execute(text("SELECT ciphertext FROM account_secrets"))).scalars().all()
    assert VALUE.encode() not in ciphertext

    transport.answers["claude-secret"] = (200, "documented/anthropic/message.json")
    deployment = await deploy(client, vendor="ANTHROPIC", model="claude-secret", api_key_secret="openai-key")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json={"chat_history": [], "prompt": "Hi"})
    assert response.status_code == 200, response.text
    assert transport.sent[-1].headers["x-api-key"] == VALUE
    model = await client.get("/v4/model-deployments")
    assert VALUE not in model.text


async def test_a_missing_secret_is_503_naming_it(recorded_app: Any) -> None:
    _app, client, _transport = recorded_app
    deployment = await deploy(client, vendor="ANTHROPIC", model="claude-nosecret", api_key_secret="never-stored")
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json={"chat_history": [], "prompt": "Hi"})
    assert response.status_code == 503
    assert "never-stored" in response.json()["detail"]


async def test_members_cannot_manage_secrets_and_names_are_checked(recorded_app: Any) -> None:
    _app, client, _transport = recorded_app
    member = await client.post("/v4/api-keys", json={"role": "member"})
    headers = {"x-api-key": member.json()["key"]}
    assert (await client.put("/v4/secrets/x", json={"value": "v"}, headers=headers)).status_code == 403
    assert (await client.get("/v4/secrets", headers=headers)).status_code == 403
    assert (await client.put("/v4/secrets/bad name!", json={"value": "v"})).status_code == 422
    assert (await client.delete("/v4/secrets/not-there")).status_code == 404


async def test_an_account_secret_is_the_accounts_own_to_send_to_any_allowed_host(recorded_app: Any) -> None:
    """Unlike a server variable (api_key_env, tied to hosts: test_credential_destinations),
    an account's own secret goes wherever its admin points the model."""
    _app, client, transport = recorded_app
    await client.put("/v4/secrets/own-key", json={"value": VALUE})
    transport.answers["claude-anywhere"] = (200, "documented/anthropic/message.json")
    deployment = await deploy(
        client,
        vendor="ANTHROPIC",
        model="claude-anywhere",
        api_key_secret="own-key",
        base_url="https://llm.example.net",
    )
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json={"chat_history": [], "prompt": "Hi"})
    assert response.status_code == 200, response.text
    assert transport.sent[-1].url.host == "llm.example.net"
    assert transport.sent[-1].headers["x-api-key"] == VALUE


async def test_a_server_variable_is_not_sent_to_a_host_it_is_not_tied_to(recorded_app: Any, monkeypatch: Any) -> None:
    """ANTHROPIC_TEST_KEY is tied to api.anthropic.com (tests/vendors/conftest.py)."""
    _app, client, transport = recorded_app
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", "sk-ant-server-key-0123456789")
    sent = len(transport.sent)
    model = await client.post(
        "/v4/models",
        json={"name": "claude-elsewhere", "model_type": "CHAT_COMPLETION", "model_vendor": "ANTHROPIC",
              "model_creation_parameters": {"model": "claude-x", "api_key_env": "ANTHROPIC_TEST_KEY",
                                            "base_url": "https://llm.example.net"}},
    )  # fmt: skip
    assert model.status_code == 422
    assert "api.anthropic.com" in model.json()["detail"] and "llm.example.net" in model.json()["detail"]
    assert len(transport.sent) == sent
