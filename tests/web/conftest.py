"""A real browser for the page tests: Debian's `chromium`, driven by Playwright.

The suite installs the browser itself (`apt-get install chromium`) when it is missing,
when it runs as root and apt is there. Playwright's own browser download is never used."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Playwright, Route, sync_playwright

from tests.prerequisites import debian_executable

CHROMIUM = Path(os.environ.get("MODELPORT_TEST_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def chromium() -> Path:
    # CI sets MODELPORT_TEST_REQUIRE_BROWSER=1: a browser that cannot be had fails the run.
    return Path(debian_executable(CHROMIUM, "chromium", "BROWSER"))


# Module scope, not session: Playwright's sync API runs an event loop on this thread
# while it is open, and pytest-asyncio cannot run async tests under it.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright, chromium: Path) -> Iterator[Browser]:
    # --no-sandbox: Chromium's sandbox refuses to run as root, which test machines often are.
    launched = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
    yield launched
    launched.close()


def loopback_only(context: BrowserContext) -> list[str]:
    """Refuse the context's requests to anything but the loopback server, as a machine
    with no internet access would; the list returned fills with what was refused."""
    blocked: list[str] = []

    def route(request_route: Route) -> None:
        if urlsplit(request_route.request.url).hostname in {"127.0.0.1", "localhost"}:
            request_route.continue_()
        else:
            blocked.append(request_route.request.url)
            request_route.abort("internetdisconnected")

    context.route("**/*", route)
    return blocked
