"""/docs in a browser that cannot reach the internet: Swagger UI's files come from
modelport itself, request bodies are shown and the key entered under "Authorize" works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import E2E_KEY
from tests.web.conftest import loopback_only

pytestmark = pytest.mark.e2e


@pytest.fixture
def offline_page(browser: Browser, server: str) -> Iterator[tuple[Page, list[str]]]:
    """A page whose requests to anything but the loopback server are refused."""
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 1000})
    blocked = loopback_only(context)
    yield context.new_page(), blocked
    context.close()


def test_the_openapi_document_declares_the_key_header(server: str) -> None:
    document = httpx.get(f"{server}/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes == {
        "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        "HTTPBearer": {"type": "http", "scheme": "bearer"},  # what the OpenAI SDK sends
    }
    operation = document["paths"]["/v4/model-deployments"]["get"]
    assert operation["security"] == [{"APIKeyHeader": []}, {"HTTPBearer": []}]  # either one
    # Declared once, as the scheme: not also as a plain header parameter.
    parameters = [parameter["name"] for parameter in operation.get("parameters", [])]
    assert "x-api-key" not in parameters and "authorization" not in parameters
    assert "x-selected-account-id" in parameters
    assert "security" not in document["paths"]["/health"]["get"]


def test_docs_render_offline_show_bodies_and_authorize(offline_page: tuple[Page, list[str]], tmp_path: Path) -> None:
    page, blocked = offline_page
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("modelport", timeout=30_000)
    assert blocked == [], f"/docs asked for files outside modelport: {blocked}"

    # A request body is shown, with its fields.
    chat = page.locator(
        ".opblock-post", has=page.locator('[data-path="/v4/models/{model_deployment_id}/chat-completions"]')
    )
    chat.locator(".opblock-summary").click()
    expect(chat.locator(".opblock-section-request-body")).to_contain_text("Request body")
    expect(chat.locator(".opblock-section-request-body")).to_contain_text("chat_history")

    # The key entered under "Authorize" is sent with "Try it out".
    page.click(".auth-wrapper .authorize")
    page.fill(".modal-ux input", E2E_KEY)
    page.click(".modal-ux .auth-btn-wrapper .authorize")
    page.click(".modal-ux .btn-done")
    listing = page.locator(".opblock-get", has=page.locator('[data-path="/v4/model-deployments"]'))
    listing.locator(".opblock-summary").click()
    listing.locator(".try-out__btn").click()
    listing.locator(".execute").click()
    expect(listing.locator(".live-responses-table tr.response .response-col_status")).to_have_text("200")
    expect(listing.locator(".live-responses-table")).to_contain_text("smollm2")
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
    assert blocked == []


def test_redoc_renders_offline(offline_page: tuple[Page, list[str]]) -> None:
    page, blocked = offline_page
    page.goto("/redoc")
    expect(page.locator(".api-info h1")).to_contain_text("modelport", timeout=30_000)
    expect(page.locator("body")).to_contain_text("chat-completions")
    # ReDoc's sidebar shows a "powered by" logo from its CDN: the page's policy keeps the
    # browser from asking for it at all.
    assert blocked == [], blocked


def test_the_favicon_is_served(server: str) -> None:
    icon = httpx.get(f"{server}/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/png"
    assert icon.content.startswith(b"\x89PNG")
