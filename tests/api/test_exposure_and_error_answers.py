"""What the server shows and how it answers odd requests (issue 21, findings 12 and 11's
log half): a seed outside 64 bits is a 400/422, not a 500; a 500 tells a keep-alive client
to reconnect; a short operator key is refused at start-up; /metrics can require a key and
names no tenant; /v4/spend shows an admin only the keys that admin may list; 503s carry
Retry-After."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from typer.testing import CliRunner

from modelport.api.app import create_app
from modelport.api.connections import RequestDeadlineProtocol
from modelport.catalogue.spend import OTHER_KEYS
from modelport.cli.main import app as cli
from modelport.config import Settings
from modelport.errors import DeploymentUnavailable, EngineOverloaded
from modelport.store import usage
from modelport.store.tables import utcnow
from tests.conftest import ADMIN_KEY, CHAT_DEPLOYMENT, in_process, sqlite_settings
from tests.servers import free_port

METRICS_KEY = "metrics-scrape-key"
TENANT = "tenant-name-that-must-not-leak"


def _settings(data: Path, **overrides: object) -> Settings:
    # The engine stays off: the bootstrap deployments stay PENDING, a 503 to ask for.
    return sqlite_settings(data, **{"usage_flush_seconds": 0.2, **overrides})


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with in_process(_settings(tmp_path_factory.mktemp("exposure"), metrics_key=METRICS_KEY)) as pair:
        yield pair


# ---- seed -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2**64, 2**63, -(2**63) - 1, 10**40])
async def test_a_seed_outside_64_bits_is_refused_naming_it(
    served: tuple[FastAPI, httpx.AsyncClient], seed: int
) -> None:
    _, client = served
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "seed": seed}
    answer = await client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 400, answer.text  # the OpenAI surface's 422
    assert answer.json()["error"]["param"] == "seed" or "seed" in answer.json()["error"]["message"]


async def test_a_64_bit_seed_is_taken(served: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = served
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "seed": 2**63 - 1}
    answer = await client.post("/v1/chat/completions", json=body)
    assert answer.status_code != 400, answer.text  # past validation (the deployment is not loaded: 503)


# ---- Retry-After ---------------------------------------------------------------------


async def test_a_deployment_that_is_not_ready_answers_503_with_retry_after(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = served
    listing = (await client.get("/v4/model-deployments")).json()
    [deployment] = [item for item in listing["items"] if item["name"] == CHAT_DEPLOYMENT]
    answer = await client.post(
        f"/v4/models/{deployment['id']}/chat-completions", json={"chat_history": [], "prompt": "hi"}
    )
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["retry-after"]) >= 1


def test_every_kind_of_unavailable_says_when_to_ask_again() -> None:
    assert DeploymentUnavailable("restarting").headers() == {"Retry-After": "5"}
    assert EngineOverloaded("queue full").headers() == {"Retry-After": "1"}


# ---- /metrics ------------------------------------------------------------------------


async def test_metrics_need_the_metrics_key_when_one_is_set(served: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = served
    for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": ADMIN_KEY}):
        answer = await client.get("/metrics", headers={"x-api-key": "", **headers})
        assert answer.status_code == 401, headers
        assert "MODELPORT_METRICS_KEY" in answer.json()["detail"]
    for headers in ({"authorization": f"Bearer {METRICS_KEY}"}, {"x-api-key": METRICS_KEY}):
        assert (await client.get("/metrics", headers=headers)).status_code == 200


async def test_metrics_label_deployments_by_id_never_by_tenant(served: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = served
    created = await client.post("/accounts", json={"account_name": f"{TENANT}-{uuid.uuid4().hex[:8]}"})
    assert created.status_code == 200, created.text
    account = created.json()["account_id"]
    model = await client.post(
        "/v4/models",
        json={"name": "labelled-model", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
              "model_creation_parameters": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}},
        headers={"x-selected-account-id": account},
    )  # fmt: skip
    assert model.status_code == 200, model.text
    deployment = await client.post(
        f"/v4/models/{model.json()['id']}/deployments",
        json={"name": f"{TENANT}-deployment"},
        headers={"x-selected-account-id": account},
    )
    assert deployment.status_code == 200, deployment.text
    await client.post(
        f"/v4/models/{deployment.json()['id']}/chat-completions",
        json={"chat_history": [], "prompt": "hi"},
        headers={"x-selected-account-id": account},
    )
    scraped = (await client.get("/metrics", headers={"x-api-key": METRICS_KEY})).text
    assert deployment.json()["id"] in scraped  # its traffic is there...
    assert TENANT not in scraped  # ...under an opaque id, never the account's or the deployment's name
    # The model's name is a label too (issue 25): the operator's scrape names what it counts.
    labelled = [line for line in scraped.splitlines() if f'deployment="{deployment.json()["id"]}"' in line]
    assert labelled and all('model_name="labelled-model"' in line for line in labelled)


# ---- /v4/spend -----------------------------------------------------------------------


async def test_spend_shows_an_admin_only_the_keys_that_admin_may_list(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    application, client = served
    operator_keys = (await client.get("/v4/api-keys")).json()
    [operator_key] = [key["id"] for key in operator_keys if key["name"] == "first admin key"]
    admin = (await client.post("/v4/api-keys", json={"role": "admin", "name": "account admin"})).json()
    account = (await client.get("/v4/spend")).json()["account_id"]
    records = [
        {"account_id": account, "deployment_id": "d", "status": 200, "latency_ms": 1, "cost": cost,
         "key_id": key_id, "request_id": str(uuid.uuid4()), "created_at": utcnow(),
         "prompt_tokens": 1, "response_tokens": 1, "estimated": False}
        for key_id, cost in ((operator_key, 0.5), (admin["id"], 0.25))
    ]  # fmt: skip
    async with application.state.sessions() as session, session.begin():
        await usage.insert_usage(session, records)
    as_admin = (await client.get("/v4/spend", headers={"x-api-key": admin["key"]})).json()
    assert operator_key not in as_admin["by_key"]
    assert as_admin["by_key"][admin["id"]] == pytest.approx(0.25)
    assert as_admin["by_key"][OTHER_KEYS] == pytest.approx(0.5)
    assert sum(as_admin["by_key"].values()) == pytest.approx(as_admin["spend"])
    as_operator = (await client.get("/v4/spend")).json()
    assert as_operator["by_key"][operator_key] == pytest.approx(0.5)


# ---- the operator key ------------------------------------------------------------------


def test_a_short_operator_key_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="at least 24 characters"):
        _settings(tmp_path, api_key="1234")
    env = {"MODELPORT_API_KEY": "1234", "MODELPORT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"}
    result = CliRunner().invoke(cli, ["serve"], env=env)
    assert result.exit_code == 1
    assert "MODELPORT_API_KEY: the first admin key must be at least 24 characters" in result.output
    assert _settings(tmp_path, api_key="").api_key is None  # empty: one is generated


# ---- a 500 and the keep-alive connection ------------------------------------------------


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app, with one route that fails unexpectedly, under uvicorn with
    modelport's protocol on a loopback port."""
    application = create_app(_settings(tmp_path_factory.mktemp("failing")))

    @application.get("/test-only/unexpected-failure")
    async def fail() -> None:
        raise RuntimeError("a bug")

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(application, host="127.0.0.1", port=port, http=RequestDeadlineProtocol, log_level="critical")
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server did not start")
            thread.join(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_500_tells_a_keep_alive_client_to_reconnect(failing_server: str) -> None:
    port = int(failing_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /test-only/unexpected-failure HTTP/1.1\r\nHost: x\r\n\r\n")
        head = sock.recv(65536).partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 500 ")
    assert b"connection: close" in head.split(b"\r\n")


def test_the_request_after_a_500_on_a_kept_alive_client_is_served(failing_server: str) -> None:
    with httpx.Client(base_url=failing_server, timeout=10) as client:
        for _ in range(5):
            assert client.get("/test-only/unexpected-failure").status_code == 500
            assert client.get("/health/live").status_code == 200
