"""The page at `/` in a real browser (Debian's chromium), against a real `modelport serve`
with the embedded model: chat with streaming, keys created and revoked, the views."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import CHAT_DEPLOYMENT, E2E_KEY

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
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    requested: list[str] = []
    opened.on("request", lambda request: requested.append(request.url))
    opened.on("dialog", lambda dialog: dialog.accept())  # "Revoke this key?"
    yield opened
    opened.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    context.close()
    assert not [url for url in requested if E2E_KEY in url], "the API key must never be put in a URL"


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
    # The chat deployment only: the embedding one cannot chat (the usage view lists both).
    expect(page.locator("#deployment option")).to_have_count(1)
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
    assert f"prompt tokens {direct['prompt_tokens']}" in shown
    assert f"response tokens {direct['response_tokens']}" in shown
    assert "gateway overhead ? ms" not in shown  # the x-modelport-overhead-ms header was read
    # One span per generated token, each with its log-probability.
    tokens = page.locator(".turn.assistant .token")
    expect(tokens).to_have_count(direct["response_tokens"])
    assert "logprob" in (tokens.first.get_attribute("title") or "")

    # The conversation goes on: the second turn is sent with the first as its history.
    page.fill("#prompt", "And one more?")
    page.click("#send")
    expect(page.locator(".turn.assistant .facts")).to_have_count(2, timeout=120_000)
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)


def test_a_key_is_created_shown_once_and_revoked(page: Page, server: str) -> None:
    page.goto("/")
    use_key(page)
    page.click(".tab[data-view=keys]")
    page.fill("#new-key-name", "browser-made")
    page.click("#key-create-form button[type=submit]")
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
    page.goto("/")
    use_key(page)
    page.click(".tab[data-view=keys]")
    expect(page.locator("#keys-table tbody")).to_contain_text("admins-secret-ci")

    page.click("#forget-key")
    expect(page.locator("#keys-table tbody tr")).to_have_count(0)
    expect(page.locator("#deployment option")).to_have_count(0)

    use_key(page)
    page.click(".tab[data-view=catalogue]")
    expect(page.locator("#models-table tbody tr")).to_have_count(2)
    use_key(page, member.json()["key"])  # a member of the same account: no key list for it
    page.click(".tab[data-view=keys]")
    expect(page.locator("#keys-table tbody")).not_to_contain_text("admins-secret-ci")


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
    narrow = context.new_page()
    narrow.goto("/")
    use_key(narrow)
    narrow.click(f".tab[data-view={view}]")
    expect(narrow.locator(f"#{view}")).to_be_visible()
    narrow.wait_for_load_state("networkidle")
    overflow = narrow.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    context.close()
    assert overflow <= 0, f"the {view} view is {overflow} px wider than a 420 px window"
