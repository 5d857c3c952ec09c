"""A chat template built to freeze the server freezes only its own request (issue 10)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CHAT_DEPLOYMENT
from tests.servers import modelport_serving

pytestmark = pytest.mark.e2e

KEY = "mp_hostile_templates_key"
NESTED = "{% for m in messages %}{% for c in m.content %}{% for d in m.content %}{% endfor %}{% endfor %}{% endfor %}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("hostile")
    with modelport_serving(data, api_key=KEY) as base_url:
        yield base_url


def test_the_server_answers_others_while_a_hostile_template_renders(server: str) -> None:
    headers = {"x-api-key": KEY}
    [deployment] = [
        item
        for item in httpx.get(f"{server}/v4/model-deployments", headers=headers).json()["items"]
        if item["name"] == CHAT_DEPLOYMENT
    ]
    url = f"{server}/v4/models/{deployment['id']}/chat-completions"
    hostile: dict[str, httpx.Response] = {}

    def attack() -> None:
        body = {"chat_history": [], "prompt": "x " * 20_000, "chat_template": NESTED, "max_tokens": 3}
        hostile["response"] = httpx.post(url, json=body, headers=headers, timeout=30)

    attacker = threading.Thread(target=attack)
    attacker.start()
    time.sleep(0.2)  # the render is under way
    for _ in range(3):
        started = time.monotonic()
        assert httpx.get(f"{server}/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        small = httpx.post(url, json={"chat_history": [], "prompt": "Hi", "max_tokens": 3}, headers=headers, timeout=5)
        assert small.status_code == 200
        assert time.monotonic() - started < 1.0
    attacker.join()
    response = hostile["response"]
    assert response.status_code == 400
    assert "too costly" in response.json()["detail"]


NESTED_RANGE = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}Hi"


def test_the_nested_range_template_gets_400_naming_the_range_budget(server: str) -> None:
    headers = {"x-api-key": KEY}
    [deployment] = [
        item
        for item in httpx.get(f"{server}/v4/model-deployments", headers=headers).json()["items"]
        if item["name"] == CHAT_DEPLOYMENT
    ]
    body = {"chat_history": [], "prompt": "Hi", "chat_template": NESTED_RANGE, "max_tokens": 3}
    response = httpx.post(
        f"{server}/v4/models/{deployment['id']}/chat-completions", json=body, headers=headers, timeout=30
    )
    assert response.status_code == 400
    assert "range()" in response.json()["detail"]
