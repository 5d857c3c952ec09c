"""The page at `/` in a real browser (Debian's chromium), against a real `modelport serve`
with the embedded model: chat with streaming by model name or deployment, keys created
and revoked, the registry edited by an admin (and only by one), the operator's account
selector, the usage tables against the API's own answer. The browser can reach nothing
but the server: every page fails its test if it asked for anything else."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import CHAT_DEPLOYMENT, E2E_KEY
from tests.web.conftest import loopback_only

ADMIN = {"x-api-key": E2E_KEY}
CHAT_MODEL = "smollm2-135m-instruct"

pytestmark = pytest.mark.e2e

# Records how the answer's text grows while it is marked as streaming: more than one
# length seen means the answer appeared piece by piece, not all at the end.
WATCH_STREAM = """() => {
  window.seenLengths = [];
  new MutationObserver(() => {
    const turn = document.querySelector('.turn.assistant.streaming .text');
    if (turn) window.seenLengths.push(turn.textContent.length);
  }).observe(document.querySelector('#transcript'), {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture
def page(browser: Browser, server: str, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 860}, locale="en-US")
    blocked = loopback_only(context)
    opened = context.new_page()
    requested: list[str] = []
    opened.on("request", lambda request: requested.append(request.url))
    opened.on("dialog", lambda dialog: dialog.accept())  # "Revoke this key?"
    yield opened
    opened.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    context.close()
    assert not [url for url in requested if E2E_KEY in url], "the API key must never be put in a URL"
    assert blocked == [], f"the page asked for something outside the server: {blocked}"


def use_key(page: Page, key: str = E2E_KEY) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")


def test_the_page_is_served_with_a_content_security_policy(server: str) -> None:
    answer = httpx.get(f"{server}/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert httpx.get(f"{server}/web/app.js").status_code == 200


def test_chat_streams_the_answer_with_its_token_counts(page: Page, server: str, tmp_path: Path) -> None:
    page.goto("/")
    expect(page.locator("#notice")).to_contain_text("Paste an API key")
    use_key(page)
    # The chat model only, by name: the embedding one cannot chat (the usage view lists both
    # deployments). It is called by its name, as /v1 routes it, unless a deployment is picked.
    expect(page.locator("#model option")).to_have_count(1)
    expect(page.locator("#model")).to_have_value(CHAT_MODEL)
    expect(page.locator("#deployment option")).to_have_count(2)
    expect(page.locator("#deployment")).to_have_value("")
    expect(page.locator("#usage-deployment option")).to_have_count(2)
    assert page.evaluate("sessionStorage.getItem('modelport.api-key')") == E2E_KEY
    assert page.evaluate("localStorage.length") == 0
    page.fill("#max-tokens", "24")
    page.locator("#temperature").fill("0")
    page.check("#logprobs")
    page.evaluate(WATCH_STREAM)
    page.fill("#prompt", "Name three colours.")
    page.press("#prompt", "Enter")

    facts = page.locator(".turn.assistant .facts")
    expect(facts).to_contain_text("response tokens", timeout=120_000)
    answer = page.locator(".turn.assistant .text").inner_text()
    streamed_lengths = page.evaluate("window.seenLengths.filter((n) => n > 0)")
    assert len(set(streamed_lengths)) > 1, f"the answer appeared all at once: {streamed_lengths}"

    # The same greedy request, not streamed, gives the text the page showed.
    listing = httpx.get(f"{server}/v4/model-deployments", headers={"x-api-key": E2E_KEY}).json()["items"]
    [deployment] = [item for item in listing if item["name"] == CHAT_DEPLOYMENT]
    direct = httpx.post(
        f"{server}/v4/models/{deployment['id']}/chat-completions",
        headers={"x-api-key": E2E_KEY},
        json={"chat_history": [], "prompt": "Name three colours.", "temperature": 0, "max_tokens": 24},
        timeout=120,
    ).json()
    assert answer == direct["completions"][0][1][0]
    shown = facts.inner_text()
    assert shown.startswith(f"model {CHAT_MODEL} ·")  # the name resolved to the one deployment
    assert f"prompt tokens {direct['prompt_tokens']}" in shown
    assert f"response tokens {direct['response_tokens']}" in shown
    assert "gateway overhead ? ms" not in shown  # the x-modelport-overhead-ms header was read
    # One span per generated token, each with its log-probability.
    tokens = page.locator(".turn.assistant .token")
    expect(tokens).to_have_count(direct["response_tokens"])
    assert "logprob" in (tokens.first.get_attribute("title") or "")

    # The conversation goes on, now with the deployment picked by hand: the second turn is
    # sent with the first as its history.
    page.select_option("#deployment", deployment["id"])
    page.fill("#prompt", "And one more?")
    page.click("#send")
    expect(page.locator(".turn.assistant .facts")).to_have_count(2, timeout=120_000)
    assert page.locator(".turn.assistant .facts").nth(1).inner_text().startswith(f"deployment {CHAT_DEPLOYMENT} ")
    assert page.locator(".turn.assistant .error").count() == 0
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)


def test_a_key_is_created_shown_once_and_revoked(page: Page, server: str) -> None:
    page.goto("/")
    use_key(page)
    page.click(".tab[data-view=keys]")
    page.fill("#new-key-name", "browser-made")
    page.click("#key-editor button[type=submit]")
    secret = page.locator("#new-key-value")
    expect(secret).to_contain_text("mp_")
    new_key = secret.inner_text()
    assert httpx.get(f"{server}/v4/model-deployments", headers={"x-api-key": new_key}).status_code == 200

    row = page.locator("#keys-table tbody tr", has_text="browser-made")
    expect(row.locator(".key-state")).to_have_text("active")
    page.click("#dismiss-new-key")
    expect(page.locator("#new-key")).to_be_hidden()
    assert new_key not in page.content()  # shown once: gone from the page once dismissed

    row.locator("button.revoke").click()
    expect(row.locator(".key-state")).to_have_text("revoked")
    expect(row.locator("button.revoke")).to_be_disabled()
    assert httpx.get(f"{server}/v4/model-deployments", headers={"x-api-key": new_key}).status_code == 401


def test_the_views_show_the_catalogue_and_the_usage_chart(page: Page, server: str, tmp_path: Path) -> None:
    listing = httpx.get(f"{server}/v4/model-deployments", headers={"x-api-key": E2E_KEY}).json()["items"]
    [deployment] = [item for item in listing if item["name"] == CHAT_DEPLOYMENT]
    httpx.post(
        f"{server}/v4/models/{deployment['id']}/chat-completions",
        headers={"x-api-key": E2E_KEY},
        json={"chat_history": [], "prompt": "Hi", "max_tokens": 4},
        timeout=120,
    ).raise_for_status()
    page.goto("/")
    use_key(page)
    page.click(".tab[data-view=catalogue]")
    expect(page.locator("#models-table tbody tr")).to_have_count(2)  # the chat and the embedding model
    expect(page.locator("#models-table tbody")).to_contain_text("smollm2-135m-instruct")
    expect(page.locator("#models-table tbody")).to_contain_text("all-minilm-l6-v2")
    deployment_row = page.locator("#deployments-table tbody tr", has_text=deployment["id"])
    expect(deployment_row.locator(".status")).to_have_text("READY")

    page.click(".tab[data-view=usage]")
    page.select_option("#usage-deployment", deployment["id"])
    expect(page.locator("#usage-summary")).to_contain_text("response tokens in the period")
    assert not page.locator("#usage-summary").inner_text().startswith("0 prompt")
    heights = page.eval_on_selector_all(
        "#usage-chart rect.bar.response", "bars => bars.map((bar) => Number(bar.getAttribute('height')))"
    )
    assert any(height > 0 for height in heights)
    page.screenshot(path=str(tmp_path / "usage.png"), full_page=True)


def test_a_refused_key_is_said_so(page: Page) -> None:
    page.goto("/")
    use_key(page, "mp_not_a_key")
    expect(page.locator("#notice")).to_contain_text("refused (401)")


def test_switching_keys_clears_every_view(page: Page, server: str) -> None:
    """What the admin's key showed (its account's keys, models, usage) must not stay on
    screen under a member's key, or after Forget."""
    admin = {"x-api-key": E2E_KEY}
    created = httpx.post(f"{server}/v4/api-keys", headers=admin, json={"name": "admins-secret-ci", "role": "admin"})
    assert created.status_code in (200, 201), created.text
    member = httpx.post(f"{server}/v4/api-keys", headers=admin, json={"name": "plain-member", "role": "member"})
    assert member.status_code in (200, 201), member.text
    listing = httpx.get(f"{server}/v4/model-deployments", headers=admin).json()["items"]
    [chat] = [item for item in listing if item["name"] == CHAT_DEPLOYMENT]
    used = httpx.post(  # some usage for the admin's usage tables to show
        f"{server}/v4/models/{chat['id']}/chat-completions",
        headers=admin,
        json={"chat_history": [], "prompt": "Hi", "max_tokens": 1},
        timeout=120,
    )
    assert used.status_code == 200, used.text
    page.goto("/")
    use_key(page)
    page.click(".tab[data-view=usage]")
    expect(page.locator("#usage-keys-table tbody tr").first).to_be_visible()
    page.click(".tab[data-view=keys]")
    expect(page.locator("#keys-table tbody")).to_contain_text("admins-secret-ci")

    page.click("#forget-key")
    expect(page.locator("#keys-table tbody tr")).to_have_count(0)
    expect(page.locator("#model option")).to_have_count(0)
    expect(page.locator("#deployment option")).to_have_count(0)
    expect(page.locator("#usage-deployments-table tbody tr")).to_have_count(0)
    expect(page.locator("#usage-keys-table tbody tr")).to_have_count(0)

    use_key(page)
    page.click(".tab[data-view=catalogue]")
    expect(page.locator("#models-table tbody tr")).to_have_count(2)
    page.click("#new-model")
    page.fill("#model-name", "half-typed-by-the-admin")
    use_key(page, member.json()["key"])  # a member of the same account: no key list for it
    expect(page.locator("#model-form")).to_be_hidden()
    expect(page.locator("#models-table tbody tr")).to_have_count(2)
    expect(page.locator("main button.edit")).to_have_count(0)
    page.click(".tab[data-view=keys]")
    expect(page.locator("#keys-table tbody")).not_to_contain_text("admins-secret-ci")


def _api_refusal(method: str, server: str, path: str, body: dict[str, Any]) -> tuple[int, str]:
    """The status and `detail` the API itself answers to a request the page makes."""
    answer = httpx.request(method, f"{server}{path}", headers=ADMIN, json=body)
    assert answer.status_code >= 400, answer.text
    return answer.status_code, str(answer.json()["detail"])


def _model(server: str, name: str, headers: dict[str, str] = ADMIN) -> dict[str, Any]:
    models = httpx.get(f"{server}/v4/models", headers=headers, params={"limit": 1000}).json()["items"]
    [model] = [item for item in models if item["name"] == name]
    return dict(model)


def test_an_admin_creates_and_edits_a_model_and_a_deployment_and_sees_the_apis_refusals(
    page: Page, server: str, tmp_path: Path
) -> None:
    name = f"made-in-page-{uuid.uuid4().hex[:6]}"
    parameters = {"model": "m", "base_url": "http://127.0.0.1:9/v1"}
    page.goto("/")
    use_key(page)
    page.click(".tab[data-view=catalogue]")
    expect(page.locator("#models-table tbody")).to_contain_text(CHAT_MODEL)

    page.click("#new-model")
    page.fill("#model-name", name)
    page.select_option("#model-type", "CHAT_COMPLETION")
    page.select_option("#model-vendor", "LLMENGINE")
    page.fill("#model-parameters", json.dumps(parameters))
    page.click("#model-form button[type=submit]")
    expect(page.locator("#model-form")).to_be_hidden()
    expect(page.locator("#models-table tbody tr", has_text=name)).to_have_count(1)
    created = _model(server, name)
    assert (created["model_type"], created["model_vendor"]) == ("CHAT_COMPLETION", "LLMENGINE")
    assert created["model_creation_parameters"] == parameters

    # The same name again: the API's 409, with its own words, shown in the form.
    page.click("#new-model")
    page.fill("#model-name", name)
    page.click("#model-form button[type=submit]")
    status, detail = _api_refusal("POST", server, "/v4/models", {"name": name, "model_type": "CHAT_COMPLETION"})
    assert status == 409
    expect(page.locator("#model-form .form-error")).to_have_text(f"{status}: {detail}")
    page.click("#model-form .cancel")

    # An edit sends what changed; a setting the API refuses (a key written into the
    # settings: 422, pointing to the secrets) is refused in the page too.
    row = page.locator("#models-table tbody tr", has_text=name)
    row.locator("button.edit", has_text="Edit").click()
    expect(page.locator("#model-name")).to_have_value(name)
    page.fill("#model-display-name", "Made in the page")
    page.click("#model-form button[type=submit]")
    expect(page.locator("#models-table tbody tr", has_text="Made in the page")).to_have_count(1)
    edited = _model(server, name)
    assert edited["display_name"] == "Made in the page"
    assert edited["model_creation_parameters"] == parameters  # untouched
    row.locator("button.edit", has_text="Edit").click()
    leaky = {**parameters, "api_key": "sk-not-here"}
    page.fill("#model-parameters", json.dumps(leaky))
    page.click("#model-form button[type=submit]")
    status, detail = _api_refusal("PATCH", server, f"/v4/models/{created['id']}", {"model_creation_parameters": leaky})
    assert status == 422 and "/v4/secrets" in detail
    expect(page.locator("#model-form .form-error")).to_have_text(f"{status}: {detail}")
    page.click("#model-form .cancel")
    assert _model(server, name)["model_creation_parameters"] == parameters

    # A deployment of it, made from its row, then renamed.
    row.locator("button.edit", has_text="Deploy").click()
    expect(page.locator("#deployment-model")).to_have_value(created["id"])
    page.fill("#deployment-name", f"{name}-d")
    page.fill("#deployment-vendor-configuration", "{not json")
    page.click("#deployment-form button[type=submit]")
    expect(page.locator("#deployment-form .form-error")).to_contain_text("Vendor configuration is not JSON")
    page.fill("#deployment-vendor-configuration", "")
    page.click("#deployment-form button[type=submit]")
    deployment_row = page.locator("#deployments-table tbody tr", has_text=f"{name}-d")
    expect(deployment_row).to_have_count(1)
    listed = httpx.get(f"{server}/v4/models/{created['id']}/deployments", headers=ADMIN).json()["items"]
    assert [item["name"] for item in listed] == [f"{name}-d"]
    deployment_row.locator("button.edit").click()
    expect(page.locator("#deployment-model")).to_be_disabled()
    page.fill("#deployment-name", f"{name}-renamed")
    page.click("#deployment-form button[type=submit]")
    expect(page.locator("#deployments-table tbody tr", has_text=f"{name}-renamed")).to_have_count(1)
    listed = httpx.get(f"{server}/v4/models/{created['id']}/deployments", headers=ADMIN).json()["items"]
    assert [item["name"] for item in listed] == [f"{name}-renamed"]
    page.screenshot(path=str(tmp_path / "registry.png"), full_page=True)


def _enum(schema: dict[str, Any]) -> set[str]:
    """The values a property of the OpenAPI document allows (an optional one: its anyOf)."""
    found = set(schema.get("enum", []))
    for choice in schema.get("anyOf", []):
        found |= set(choice.get("enum", []))
    return found


def test_the_model_forms_choices_are_the_apis(page: Page, server: str) -> None:
    model_create = httpx.get(f"{server}/openapi.json").json()["components"]["schemas"]["ModelCreate"]["properties"]
    page.goto("/")
    use_key(page)
    page.click(".tab[data-view=catalogue]")
    page.click("#new-model")
    for select, field in (("#model-type", "model_type"), ("#model-vendor", "model_vendor")):
        offered = page.eval_on_selector_all(f"{select} option", "options => options.map((option) => option.value)")
        assert sorted(offered) == sorted(_enum(model_create[field])), field


def test_a_member_sees_no_create_or_edit_controls(page: Page, server: str) -> None:
    member = httpx.post(f"{server}/v4/api-keys", headers=ADMIN, json={"name": "reader", "role": "member"})
    assert member.status_code == 201, member.text
    page.goto("/")
    use_key(page, member.json()["key"])
    page.click(".tab[data-view=catalogue]")
    expect(page.locator("#models-table tbody")).to_contain_text(CHAT_MODEL)
    expect(page.locator("#deployments-table tbody")).to_contain_text(CHAT_DEPLOYMENT)
    expect(page.locator("#new-model")).to_be_hidden()
    expect(page.locator("#new-deployment")).to_be_hidden()
    expect(page.locator("main button.edit")).to_have_count(0)
    expect(page.locator("#account-form")).to_be_hidden()  # a member's key has its own account only
    page.click(".tab[data-view=keys]")
    expect(page.locator("#keys-for-admins")).to_be_visible()
    expect(page.locator("#key-editor")).to_be_hidden()
    page.click(".tab[data-view=usage]")
    expect(page.locator("#usage-for-admins")).to_be_visible()
    expect(page.locator("#usage-tables")).to_be_hidden()
    expect(page.locator("#notice")).to_be_hidden()  # nothing was refused: nothing was asked


def test_the_operators_account_selector_switches_what_is_shown(page: Page, server: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    second = httpx.post(f"{server}/accounts", headers=ADMIN, json={"account_name": f"second-{suffix}"})
    assert second.status_code == 200, second.text
    second_id = second.json()["account_id"]
    in_second = {**ADMIN, "x-selected-account-id": second_id}
    model = httpx.post(
        f"{server}/v4/models",
        headers=in_second,
        json={"name": f"only-in-second-{suffix}", "model_type": "CHAT_COMPLETION", "model_vendor": "LLMENGINE",
              "model_creation_parameters": {"model": "m", "base_url": "http://127.0.0.1:9/v1"}},
    )  # fmt: skip
    assert model.status_code == 200, model.text
    for headers, key_name in ((in_second, f"second-key-{suffix}"), (ADMIN, f"first-key-{suffix}")):
        created = httpx.post(f"{server}/v4/api-keys", headers=headers, json={"name": key_name, "role": "member"})
        assert created.status_code == 201, created.text

    page.goto("/")
    use_key(page)
    expect(page.locator("#account-form")).to_be_visible()
    expect(page.locator("#account option", has_text=f"second-{suffix} (admin)")).to_have_count(1)
    page.click(".tab[data-view=catalogue]")
    expect(page.locator("#models-table tbody")).to_contain_text(CHAT_MODEL)

    page.select_option("#account", second_id)
    expect(page.locator("#models-table tbody tr")).to_have_count(1)
    expect(page.locator("#models-table tbody")).to_contain_text(f"only-in-second-{suffix}")
    page.click(".tab[data-view=keys]")
    expect(page.locator("#keys-table tbody")).to_contain_text(f"second-key-{suffix}")
    expect(page.locator("#keys-table tbody")).not_to_contain_text(f"first-key-{suffix}")
    page.click(".tab[data-view=playground]")
    expect(page.locator("#model option")).to_have_text([f"only-in-second-{suffix} (0 deployments)"])

    first_id = page.locator("#account option").first.get_attribute("value")
    page.select_option("#account", first_id)
    expect(page.locator("#model option", has_text=CHAT_MODEL)).to_have_count(1)
    expect(page.locator("#model option", has_text=f"only-in-second-{suffix}")).to_have_count(0)
    page.click(".tab[data-view=keys]")
    expect(page.locator("#keys-table tbody")).to_contain_text(f"first-key-{suffix}")
    expect(page.locator("#keys-table tbody")).not_to_contain_text(f"second-key-{suffix}")
    assert page.evaluate("sessionStorage.getItem('modelport.account')") == first_id

    # A remembered account the key no longer belongs to (a membership removed since) is
    # dropped on the next load, rather than making every request a 403.
    page.evaluate("sessionStorage.setItem('modelport.account', 'an-account-this-key-left')")
    page.reload()
    page.click(".tab[data-view=catalogue]")
    expect(page.locator("#models-table tbody")).to_contain_text(CHAT_MODEL)
    assert page.evaluate("sessionStorage.getItem('modelport.account')") == first_id
    expect(page.locator("#notice")).to_be_hidden()


def _shown(value: Any, column: str) -> str:
    """How the page writes a number of /v4/usage-summary."""
    if value is None:
        return "\u2013"  # an en dash: no value
    return f"${value:.6f}" if column == "spend" else f"{value:,}"


def test_the_usage_tables_show_what_the_api_answers(page: Page, server: str, tmp_path: Path) -> None:
    created = httpx.post(f"{server}/v4/api-keys", headers=ADMIN, json={"name": "usage-measured", "role": "member"})
    assert created.status_code == 201, created.text
    key = {"x-api-key": created.json()["key"]}
    listing = httpx.get(f"{server}/v4/model-deployments", headers=ADMIN, params={"limit": 1000}).json()["items"]
    [chat] = [item for item in listing if item["name"] == CHAT_DEPLOYMENT]
    for prompt in ("Hi", "Name a colour."):
        answer = httpx.post(
            f"{server}/v4/models/{chat['id']}/chat-completions",
            headers=key,
            json={"chat_history": [], "prompt": prompt, "max_tokens": 4},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
    # A deployment whose upstream is not there: a failure, recorded with the rest.
    unreachable = httpx.post(
        f"{server}/v4/models",
        headers=ADMIN,
        json={"name": f"unreachable-{uuid.uuid4().hex[:6]}", "model_type": "CHAT_COMPLETION",
              "model_vendor": "LLMENGINE", "model_creation_parameters": {"model": "m", "base_url": "http://127.0.0.1:9/v1"}},
    )  # fmt: skip
    assert unreachable.status_code == 200, unreachable.text
    dead = httpx.post(
        f"{server}/v4/models/{unreachable.json()['id']}/deployments", headers=ADMIN, json={"name": "dead"}
    )
    assert dead.status_code == 200, dead.text
    failed = httpx.post(
        f"{server}/v4/models/{dead.json()['id']}/chat-completions",
        headers=key,
        json={"chat_history": [], "prompt": "Hi", "max_tokens": 4},
        timeout=120,
    )
    assert failed.status_code >= 500, failed.text

    page.goto("/")
    use_key(page)
    page.click(".tab[data-view=usage]")
    key_row = page.locator(f'#usage-keys-table tbody tr[data-id="{created.json()["id"]}"]')
    expect(key_row).to_have_count(1)
    expect(key_row.locator("th")).to_contain_text("usage-measured")
    now = datetime.now(UTC)
    period = {"start_date": (now - timedelta(days=1)).isoformat(), "end_date": (now + timedelta(minutes=2)).isoformat()}
    summary = httpx.get(f"{server}/v4/usage-summary", headers=ADMIN, params=period).json()

    mine = summary["by_key"][created.json()["id"]]
    assert (mine["requests"], mine["failures"]) == (3, 1)
    assert mine["latency_ms"]["p50"] > 0
    for table, group, totals in (
        ("#usage-keys-table", created.json()["id"], mine),
        ("#usage-deployments-table", chat["id"], summary["by_deployment"][chat["id"]]),
        ("#usage-deployments-table", dead.json()["id"], summary["by_deployment"][dead.json()["id"]]),
    ):
        row = page.locator(f'{table} tbody tr[data-id="{group}"]')
        latency = totals["latency_ms"] or {}
        for column in ("requests", "failures", "prompt_tokens", "response_tokens", "spend", "p50", "p95", "p99"):
            value = totals[column] if column in totals else latency.get(column)
            expect(row.locator(f'td[data-column="{column}"]')).to_have_text(_shown(value, column))
    expect(page.locator(f'#usage-deployments-table tbody tr[data-id="{chat["id"]}"] th')).to_have_text(CHAT_DEPLOYMENT)
    assert re.fullmatch(r"[\d,]+", page.locator("#usage-keys-table tbody td[data-column=requests]").first.inner_text())
    page.screenshot(path=str(tmp_path / "usage-tables.png"), full_page=True)


def _key(server: str, key_id: str) -> dict[str, Any]:
    [key] = [key for key in httpx.get(f"{server}/v4/api-keys", headers=ADMIN).json() if key["id"] == key_id]
    return dict(key)


def _shown_refusal(detail: Any) -> str:
    """How the page writes the API's `detail` (api.js `describeDetail`)."""
    if isinstance(detail, str):
        return detail
    return "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in detail)


def _as_the_page_shows_it(method: str, server: str, path: str, body: dict[str, Any]) -> str:
    """The API's own refusal of a request the page makes, as the page's form shows it."""
    answer = httpx.request(method, f"{server}{path}", headers=ADMIN, json=body)
    assert answer.status_code >= 400, answer.text
    return f"{answer.status_code}: {_shown_refusal(answer.json()['detail'])}"


def _chat_deployment(server: str) -> dict[str, Any]:
    listing = httpx.get(f"{server}/v4/model-deployments", headers=ADMIN, params={"limit": 1000}).json()["items"]
    [chat] = [item for item in listing if item["name"] == CHAT_DEPLOYMENT]
    return dict(chat)


def test_a_key_made_in_the_page_is_limited_to_its_allow_lists_until_its_expiry(page: Page, server: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    # A model whose name is markup: the page must show it as text wherever it names it.
    hostile = f"<script>window.injected = 1</script><b>bold-{suffix}</b>"
    made = httpx.post(
        f"{server}/v4/models",
        headers=ADMIN,
        json={"name": hostile, "model_type": "CHAT_COMPLETION", "model_vendor": "LLMENGINE",
              "model_creation_parameters": {"model": "m", "base_url": "http://127.0.0.1:9/v1"}},
    )  # fmt: skip
    assert made.status_code == 200, made.text
    chat = _chat_deployment(server)
    embedding = _model(server, "all-minilm-l6-v2")
    # The browser in a zone half an hour off the hour: the expiry typed is the user's local time.
    page.context.new_cdp_session(page).send("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    page.goto("/")
    use_key(page)
    page.click(".tab[data-view=keys]")
    expect(page.locator("#key-models option", has_text=hostile)).to_have_count(1)
    page.fill("#new-key-name", f"limited-{suffix}")
    page.select_option("#key-models", [hostile])
    page.select_option("#key-deployments", [chat["id"]])
    page.fill("#key-expires", "2030-01-31T12:00")
    page.click("#key-editor button[type=submit]")
    secret = page.locator("#new-key-value")
    expect(secret).to_contain_text("mp_")
    limited = {"x-api-key": secret.inner_text()}

    row = page.locator("#keys-table tbody tr", has_text=f"limited-{suffix}")
    expect(row.locator(".key-allowed div")).to_have_text([f"model {hostile}", f"deployment {CHAT_DEPLOYMENT}"])
    expect(row.locator(".key-expires")).to_have_text("1/31/2030, 12:00:00 PM")
    expect(row.locator(".key-state")).to_have_text("active")
    assert page.locator("#keys-table b, #key-models b, #keys-table script").count() == 0
    assert page.evaluate("window.injected") is None
    key_id = row.get_attribute("data-key-id")
    assert key_id
    stored = _key(server, key_id)
    assert (stored["models"], stored["deployments"]) == ([hostile], [chat["id"]])
    assert datetime.fromisoformat(stored["expires_at"]) == datetime(2030, 1, 31, 6, 30, tzinfo=UTC)

    # Limited for real: the listed model and the listed deployment's model answer, any
    # other model of the account is a 404 for this key (and not listed to it).
    assert httpx.get(f"{server}/v4/models/{made.json()['id']}", headers=limited).status_code == 200
    assert httpx.get(f"{server}/v4/models/{chat['model_instance_id']}", headers=limited).status_code == 200
    assert httpx.get(f"{server}/v4/models/{embedding['id']}", headers=limited).status_code == 404
    shown = httpx.get(f"{server}/v4/model-deployments", headers=limited, params={"limit": 1000}).json()["items"]
    assert [item["id"] for item in shown] == [chat["id"]]

    # An edit: the model's entry dropped, the expiry cleared; the deployment stays.
    page.click("#dismiss-new-key")
    row.locator("button.edit").click()
    expect(page.locator("#key-editor-title")).to_have_text(f"Edit key limited-{suffix}")
    expect(page.locator("#key-expires")).to_have_value("2030-01-31T12:00")
    expect(page.locator("#new-key-role")).to_be_disabled()
    assert page.eval_on_selector("#key-models", "select => [...select.selectedOptions].map((o) => o.value)") == [
        hostile
    ]
    page.select_option("#key-models", [])
    page.fill("#key-expires", "")
    page.click("#key-editor button[type=submit]")
    expect(row.locator(".key-expires")).to_have_text("never")
    expect(row.locator(".key-allowed div")).to_have_text([f"deployment {CHAT_DEPLOYMENT}"])
    expect(page.locator("#notice")).to_have_text(f"Key limited-{suffix} saved.")
    expect(page.locator("#key-editor-title")).to_have_text("New key")
    stored = _key(server, key_id)
    assert (stored["models"], stored["deployments"], stored["expires_at"]) == (None, [chat["id"]], None)
    assert httpx.get(f"{server}/v4/models/{made.json()['id']}", headers=limited).status_code == 404
    assert httpx.get(f"{server}/v4/models/{chat['model_instance_id']}", headers=limited).status_code == 200


def test_an_expiry_in_the_past_shows_the_apis_refusal_in_the_form(page: Page, server: str) -> None:
    name = f"never-made-{uuid.uuid4().hex[:6]}"
    page.goto("/")
    use_key(page)
    page.click(".tab[data-view=keys]")
    page.fill("#new-key-name", name)
    page.fill("#key-expires", "2020-01-01T00:00")
    page.click("#key-editor button[type=submit]")
    sent = page.evaluate("new Date('2020-01-01T00:00').toISOString()")  # the browser's local time
    body = {"name": name, "role": "member", "models": None, "deployments": None, "expires_at": sent}
    error = page.locator("#key-editor .form-error")
    expect(error).to_have_text(_as_the_page_shows_it("POST", server, "/v4/api-keys", body))
    expect(error).to_contain_text("expires_at")
    expect(error).to_contain_text("in the past")
    expect(page.locator("#new-key")).to_be_hidden()
    expect(page.locator("#new-key-name")).to_have_value(name)  # kept, to be corrected
    assert not [key for key in httpx.get(f"{server}/v4/api-keys", headers=ADMIN).json() if name in key["name"]]


def test_a_key_rotated_in_the_page_gets_a_new_secret_shown_once(page: Page, server: str) -> None:
    name = f"rotated-{uuid.uuid4().hex[:6]}"
    created = httpx.post(f"{server}/v4/api-keys", headers=ADMIN, json={"name": name, "role": "member"})
    assert created.status_code == 201, created.text
    old = created.json()["key"]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto("/")
    use_key(page)
    page.click(".tab[data-view=keys]")
    key_id = created.json()["id"]
    row = page.locator(f'#keys-table tbody tr[data-key-id="{key_id}"]')

    # A grace past the API's bound: its refusal, in the form; the key keeps its secret.
    row.locator("button.rotate").click()
    expect(page.locator("#key-rotate-title")).to_have_text(f"Rotate key {name}")
    page.fill("#key-grace", str(31 * 86400))
    page.click("#key-rotate-form button[type=submit]")
    refusal = _as_the_page_shows_it("POST", server, f"/v4/api-keys/{key_id}/rotate", {"grace_seconds": 31 * 86400})
    expect(page.locator("#key-rotate-form .form-error")).to_have_text(refusal)
    assert refusal.startswith("422: ") and "grace_seconds" in refusal
    expect(page.locator("#new-key")).to_be_hidden()
    assert httpx.get(f"{server}/v4/model-deployments", headers={"x-api-key": old}).status_code == 200

    # Grace 0: the new secret, shown once with its warning; the old one stops at once.
    page.fill("#key-grace", "0")
    page.click("#key-rotate-form button[type=submit]")
    secret = page.locator("#new-key-value")
    expect(secret).to_contain_text("mp_")
    new = secret.inner_text()
    assert new != old
    expect(page.locator("#key-rotate-form")).to_be_hidden()
    expect(page.locator("#new-key-note")).to_contain_text("will not be shown again")
    expect(page.locator("#new-key-note")).to_contain_text("The old secret has stopped working")
    assert httpx.get(f"{server}/v4/model-deployments", headers={"x-api-key": new}).status_code == 200
    assert httpx.get(f"{server}/v4/model-deployments", headers={"x-api-key": old}).status_code == 401
    prefix = _key(server, key_id)["display_prefix"]
    assert new.startswith(prefix)
    expect(row.locator("td.id")).to_have_text(f"{prefix}…")  # the list shows the new secret's prefix
    page.click("#copy-new-key")
    assert page.evaluate("navigator.clipboard.readText()") == new
    page.click("#dismiss-new-key")
    expect(page.locator("#new-key")).to_be_hidden()
    assert new not in page.content()  # shown once: gone from the page once dismissed
    expect(row.locator(".key-state")).to_have_text("active")


@pytest.mark.parametrize("view", ["playground", "catalogue", "keys", "usage"])
def test_a_phone_sized_window_scrolls_no_view_sideways(browser: Browser, server: str, view: str) -> None:
    admin = {"x-api-key": E2E_KEY}
    long_name = "a-deployment-with-a-name-far-too-long-for-a-phone-screen-" + "x" * 20
    listing = httpx.get(f"{server}/v4/model-deployments", headers=admin, params={"limit": 100}).json()["items"]
    if not any(item["name"] == long_name for item in listing):  # a select's widest option sets its width
        model = httpx.post(
            f"{server}/v4/models",
            headers=admin,
            json={"name": f"narrow-{view}", "model_type": "CHAT_COMPLETION", "model_vendor": "LLMENGINE",
                  "model_creation_parameters": {"model": "m", "base_url": "http://127.0.0.1:9/v1"}},
        )  # fmt: skip
        assert model.status_code == 200, model.text
        created = httpx.post(
            f"{server}/v4/models/{model.json()['id']}/deployments", headers=admin, json={"name": long_name}
        )
        assert created.status_code == 200, created.text
    context = browser.new_context(base_url=server, viewport={"width": 420, "height": 860})
    blocked = loopback_only(context)
    narrow = context.new_page()
    narrow.goto("/")
    use_key(narrow)
    narrow.click(f".tab[data-view={view}]")
    expect(narrow.locator(f"#{view}")).to_be_visible()
    if view == "catalogue":  # the admin's form, its widest part
        narrow.click("#new-model")
        expect(narrow.locator("#model-form")).to_be_visible()
    if view == "usage":
        expect(narrow.locator("#usage-tables")).to_be_visible()  # nine columns, rows or not
    narrow.wait_for_load_state("networkidle")
    overflow = narrow.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    context.close()
    assert overflow <= 0, f"the {view} view is {overflow} px wider than a 420 px window"
    assert blocked == [], blocked
