"""A real browser for the page tests: Debian's `chromium`, driven by Playwright.

The suite installs the browser itself (`apt-get install chromium`) when it is missing,
it runs as root and apt is there. Playwright's own browser download is never used."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

CHROMIUM = Path(os.environ.get("MODELPORT_TEST_CHROMIUM", "/usr/bin/chromium"))
# CI sets this so that a browser that cannot be had fails the run instead of skipping it.
REQUIRE_BROWSER = os.environ.get("MODELPORT_TEST_REQUIRE_BROWSER") == "1"


def _install_chromium() -> str | None:
    """Install Debian's chromium; None when done, else why it could not be."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "apt-get is not available"
    if os.geteuid() != 0:
        return "installing it needs root (run: sudo apt-get install -y chromium)"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(step, env=environment, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0 and step[1] == "install":
            return f"`{' '.join(step)}` failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return None if CHROMIUM.exists() else f"apt-get installed chromium but {CHROMIUM} is not there"


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        problem = _install_chromium()
        if problem is not None:
            message = f"the browser tests need {CHROMIUM} (Debian package chromium): {problem}"
            if REQUIRE_BROWSER:
                pytest.fail(message)
            pytest.skip(message)
    return CHROMIUM


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
