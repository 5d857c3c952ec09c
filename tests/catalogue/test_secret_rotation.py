"""Rotating MODELPORT_SECRET_KEY (issue 24, 6): a server given `new,old` still sends the
secrets stored under `old`; `modelport secrets rotate` seals them all again with `new`,
after which a server given `new` alone sends them; a secret that no key opens fails the
rotation and nothing is changed. The real application and the real command, on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from modelport.catalogue.secrets import SecretBox
from modelport.config import Settings
from modelport.store import db
from modelport.store import secrets as stored_secrets
from modelport.store.accounts import create_account
from tests.conftest import in_process, sqlite_settings

MODELPORT = Path(sys.executable).parent / "modelport"
OLD, NEW = "old-" + "o" * 40, "new-" + "n" * 40
VENDOR_KEY = "sk-vendor-" + uuid.uuid4().hex


class Upstream:
    """An OpenAI-compatible upstream that keeps the Authorization header of each call."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.authorizations.append(request.headers.get("authorization", ""))
        message = {"role": "assistant", "content": "hi"}
        return httpx.Response(
            200,
            json={"id": "c", "object": "chat.completion", "created": 0, "model": "up",
                  "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
        )  # fmt: skip


async def _served_call(data: Path, secret_key: str, upstream: Upstream, deployment: str | None = None) -> str:
    """Start the app with `secret_key`; on the first start store the secret and a deployment
    that sends it; call the deployment once. Returns the deployment id."""
    settings = sqlite_settings(data, secret_key=secret_key, upstream_attempts=1)
    async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (_, client):
        if deployment is None:
            assert (await client.put("/v4/secrets/vendor", json={"value": VENDOR_KEY})).status_code == 200
            model = await client.post(
                "/v4/models",
                json={"name": "up", "model_type": "CHAT_COMPLETION", "model_vendor": "OTHER",
                      "model_creation_parameters": {"base_url": "http://upstream.test/v1", "model": "up",
                                                    "api_key_secret": "vendor"}},
            )  # fmt: skip
            assert model.status_code == 200, model.text
            created = await client.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "d"})
            deployment = str(created.json()["id"])
        answer = await client.post(
            f"/v4/models/{deployment}/chat-completions", json={"chat_history": [], "prompt": "x"}
        )
        assert answer.status_code == 200, answer.text
    return deployment


def _rotate(data: Path, secret_key: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELPORT_DATABASE_URL": f"sqlite:///{data / 'modelport.db'}",
           "MODELPORT_SECRET_KEY": secret_key}  # fmt: skip
    return subprocess.run([str(MODELPORT), "secrets", "rotate"], env=env, capture_output=True, text=True, timeout=120)


async def test_a_rotated_key_keeps_every_secret_usable(tmp_path: Path) -> None:
    upstream = Upstream()
    deployment = await _served_call(tmp_path, OLD, upstream)
    # The new key first: what was sealed with the old one still opens.
    await _served_call(tmp_path, f"{NEW},{OLD}", upstream, deployment)
    done = _rotate(tmp_path, f"{NEW}, {OLD}")
    assert done.returncode == 0, done.stderr
    assert "sealed 1 secret(s) again" in done.stdout and VENDOR_KEY not in done.stdout + done.stderr
    # Old key dropped: the new one alone opens the secret.
    await _served_call(tmp_path, NEW, upstream, deployment)
    assert upstream.authorizations == [f"Bearer {VENDOR_KEY}"] * 3
    # ...and the old key alone no longer does: the deployment says why (503), and never sends a wrong key.
    settings = sqlite_settings(tmp_path, secret_key=OLD, upstream_attempts=1)
    async with in_process(settings, upstream=httpx.MockTransport(upstream)) as (_, client):
        refused = await client.post(
            f"/v4/models/{deployment}/chat-completions", json={"chat_history": [], "prompt": "x"}
        )
    assert refused.status_code == 503 and "cannot be decrypted" in refused.json()["detail"]
    assert len(upstream.authorizations) == 3


async def test_a_secret_no_key_opens_fails_the_rotation_and_nothing_changes(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path)
    async with db.opened(settings) as (engine, sessions):
        await db.upgrade(engine)
        async with sessions() as session, session.begin():
            account = (await create_account(session, name="rotation")).id
            await stored_secrets.put_secret(session, account_id=account, name="a", ciphertext=SecretBox(OLD).seal("A"))
            stray = SecretBox("lost-" + "l" * 40).seal("B")
            await stored_secrets.put_secret(session, account_id=account, name="b", ciphertext=stray)
    failed = _rotate(tmp_path, f"{NEW},{OLD}")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert f"{account}/b" in failed.stderr and "nothing was changed" in failed.stderr
    async with db.opened(settings) as (_, sessions), sessions() as session:
        kept = {secret.name: secret.ciphertext for secret in await stored_secrets.all_secrets(session)}
    assert SecretBox(OLD).open(kept["a"], name="a") == "A"  # still sealed with the old key alone
    assert kept["b"] == stray


def test_the_setting_refuses_an_empty_key_and_the_command_needs_one(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="an empty key in the list"):
        Settings(secret_key=f"{NEW},,{OLD}")
    missing = _rotate(tmp_path, "")
    assert missing.returncode == 1 and "MODELPORT_SECRET_KEY is not set" in missing.stderr


def test_the_newest_key_seals_and_every_key_opens() -> None:
    both = SecretBox(f"{NEW},{OLD}")
    assert SecretBox(NEW).open(both.seal("v"), name="v") == "v"
    assert both.open(SecretBox(OLD).seal("w"), name="w") == "w"
    # Sealed again: the new key alone opens what only the old one did.
    assert SecretBox(NEW).open(both.reseal(SecretBox(OLD).seal("x"), name="x"), name="x") == "x"
