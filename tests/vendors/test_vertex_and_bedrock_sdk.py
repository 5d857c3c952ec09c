"""The SGP SDK, strict, registers and runs VERTEX_AI, BEDROCK and LAUNCH models (valid SDK
vendors that modelport used to refuse) against the cloud fakes (tests/vendors/cloud_fakes.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from scale_gp import AsyncSGPClient

from tests.conftest import ADMIN_KEY
from tests.vendors.cloud_fakes import CloudFake, ServiceAccount, cloud_served

ACCOUNT = ServiceAccount("sdk@my-project.iam.gserviceaccount.com", "sdk-key")
KEY_ID, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
MESSAGES = [{"role": "user", "content": "Capital of France?"}]


@pytest.fixture(scope="module")
async def sdk(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[AsyncSGPClient, CloudFake]]:
    fake = CloudFake(aws_keys={KEY_ID: SECRET}, accounts={ACCOUNT.key_id: ACCOUNT})
    async with cloud_served(tmp_path_factory.mktemp("sdk"), fake) as (application, _client):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://modelport.test")
        async with http, AsyncSGPClient(
            api_key=ADMIN_KEY, base_url="http://modelport.test", http_client=http, _strict_response_validation=True,
            max_retries=0,
        ) as client:  # fmt: skip
            account_id = (await client.accounts.create(account_name="cloud-vendors")).account_id
            selected = {"x-api-key": ADMIN_KEY, "x-selected-account-id": account_id}
            aws = json.dumps({"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET})
            for name, value in (("aws", aws), ("vertex-sa", ACCOUNT.json())):
                stored = await http.put(f"/v4/secrets/{name}", json={"value": value}, headers=selected)
                assert stored.status_code == 200, stored.text
            yield client.with_options(account_id=account_id), fake


@pytest.mark.parametrize(
    ("vendor", "settings", "answer"),
    [
        ("BEDROCK", {"model": "amazon.nova-lite-v1:0", "region": "us-east-1", "api_key_secret": "aws"},
         "bedrock/converse.json"),
        ("VERTEX_AI", {"model": "gemini-2.0-flash-001", "project": "my-project", "region": "us-central1",
                       "api_key_secret": "vertex-sa"}, "vertex-ai/gemini_generate.json"),
    ],
)  # fmt: skip
async def test_models_create_and_a_chat_through_the_sdk(
    sdk: Any, vendor: str, settings: dict[str, Any], answer: str
) -> None:
    client, fake = sdk
    fake.answers[settings["model"]] = (200, answer)
    name = f"sdk-{vendor.lower()}"
    model = await client.models.create(
        account_id=client.account_id, name=name, model_type="CHAT_COMPLETION", model_vendor=vendor,
        model_creation_parameters=settings,
    )  # fmt: skip
    assert (model.model_vendor, model.model_creation_parameters) == (vendor, settings)
    deployment = await client.models.deployments.create(model.id, name=f"{name}-deployment")
    assert deployment.status == "READY"
    chat = await client.chat_completions.create(model=name, messages=MESSAGES)  # type: ignore[arg-type]
    assert chat.chat_completion.message.content == "Paris is the capital of France."


async def test_a_launch_model_is_created_through_the_sdk(sdk: Any) -> None:
    client, _ = sdk
    model = await client.models.create(
        account_id=client.account_id, name="sdk-launch", model_type="COMPLETION", model_vendor="LAUNCH",
        model_creation_parameters={"model": "llama", "base_url": "http://launch.test/v1"},
    )  # fmt: skip
    deployment = await client.models.deployments.create(
        model.id, name="sdk-launch-deployment", vendor_configuration={"vendor": "LAUNCH", "min_workers": 0}
    )
    assert (model.model_vendor, deployment.status) == ("LAUNCH", "READY")
