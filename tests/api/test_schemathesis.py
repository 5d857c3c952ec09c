"""Schemathesis over modelport's own OpenAPI document, in-process: requests generated from
every operation's declared parameters and bodies, valid ones and invalid ones, must never
be answered with a 5xx. Runs on SQLite and on PostgreSQL, bounded by case counts.

Schemathesis's pytest integration (and its ASGI transport, which starts the app's
lifespan again in a thread of its own) does not fit the session-scoped app, whose
database connections belong to the test's event loop. So it is driven by hand:
Hypothesis draws the cases in a worker thread, and each request is sent on the test's
loop through an httpx ASGI client.

MODELPORT_FUZZ_EXAMPLES raises the examples per operation and mode (default 50), e.g.
for a longer local run. A run is bounded by that count alone, never by the clock: on a
busy machine it takes longer and proves the same. A request that hangs still fails (each
waits `REQUEST_HANG_SECONDS` at most). The cases are derandomized, so that CI sees the same ones each
run; MODELPORT_FUZZ_RANDOM=1 draws new ones.

A run proves what it fuzzed: every operation gets at least half its examples sent in
each mode (requests no HTTP client can build are counted, and do not count as sent),
and nothing is unsatisfiable in the positive mode; in the negative mode only the
operations in NOTHING_TO_GET_WRONG are, and exactly those.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

# A dev dependency (pyproject.toml): a missing install fails the run, it is not skipped.
import schemathesis
from fastapi import FastAPI
from hypothesis import Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core import NotSet

from modelport.catalogue.secrets import SecretBox
from tests.conftest import ADMIN_KEY

EXAMPLES = int(os.environ.get("MODELPORT_FUZZ_EXAMPLES", "50"))
BASE_URL = "http://modelport.test"
# Not a speed limit (a case's wall time on a shared CPU is no property of the gateway):
# a request not answered in this long is taken for a hang, and fails the run.
REQUEST_HANG_SECONDS = 60
# Operations with no parameter, query or body: a request cannot get them wrong, so the
# negative mode has nothing to draw (Unsatisfiable) and the positive mode has one case.
NOTHING_TO_GET_WRONG = frozenset({"GET /health", "GET /health/live", "GET /health/ready", "GET /metrics"})
# Routes that read their body with `parse_body` and declare it (`api.openapi_bodies`).
HAND_PARSED_BODIES = (
    "POST /v1/chat/completions",
    "POST /v4/beta/chat/completions",
    "POST /v1/completions",
    "POST /v4/beta/completions",
    "POST /v4/chat-completions",
    "POST /v4/completions",
    "POST /v1/embeddings",
)


@pytest.fixture(scope="module")
async def raw_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets the 500 response itself, not the app's exception."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=60) as http:
        yield http


def _as_httpx(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Schemathesis serializes a case for `requests`; the same request for httpx."""
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": dict(kwargs.get("headers") or {}),
        "params": kwargs.get("params") or None,
    }
    if "json" in kwargs:
        request["content"] = json.dumps(kwargs["json"]).encode()
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        if isinstance(data, dict):
            request["data"] = data
        else:
            request["content"] = data.encode() if isinstance(data, str) else data
    return request


def _shown(body: Any) -> str:
    return "(none)" if isinstance(body, NotSet) else repr(body)[:300]


class Fuzzer:
    """Sends the cases Hypothesis draws (in a worker thread) on the test's own loop."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.schema = schemathesis.openapi.from_dict(app.openapi())
        self.client = client
        self.headers = headers
        self.loop = asyncio.get_running_loop()
        self.failures: list[str] = []
        self.fuzzed: list[tuple[str, str]] = []  # (mode, "METHOD /path")
        self.unsatisfiable: set[tuple[str, str]] = set()
        self.sent: Counter[tuple[str, str]] = Counter()
        self.unbuildable: Counter[tuple[str, str]] = Counter()
        self.statuses: Counter[str] = Counter()

    def send(self, case: Any) -> None:
        fuzzed = self.fuzzed[-1]  # the operation and mode being fuzzed
        kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=self.headers)
        try:
            request = self.client.build_request(**_as_httpx(kwargs))
        except (httpx.InvalidURL, UnicodeEncodeError, TypeError, ValueError):
            # A request no HTTP client can send (schemathesis can draw such headers):
            # counted, and it does not count towards the operation's floor.
            self.unbuildable[fuzzed] += 1
            return
        response = asyncio.run_coroutine_threadsafe(self.client.send(request), self.loop).result(
            timeout=REQUEST_HANG_SECONDS
        )
        self.sent[fuzzed] += 1
        self.statuses[f"{case.method} {case.path} {response.status_code}"] += 1
        if response.status_code >= 500 and len(self.failures) < 50:
            self.failures.append(
                f"{response.status_code} {case.method} {case.formatted_path} "
                f"query={case.query!r} body={_shown(case.body)}: {response.text[:200]}"
            )

    def fuzz(
        self,
        wanted: Callable[[Any], bool] = lambda operation: True,
        *,
        examples: int = EXAMPLES,
        path_parameters: dict[str, str] | None = None,
        adjust: Callable[[Any], Any] = lambda case: case,
    ) -> None:
        for result in self.schema.get_all_operations():
            operation = result.ok()
            if not wanted(operation):
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzzed = (mode.value, f"{operation.method.upper()} {operation.path}")
                self.fuzzed.append(fuzzed)
                strategy = operation.as_strategy(
                    generation_mode=mode, headers=self.headers, path_parameters=path_parameters
                ).map(adjust)

                @settings(
                    max_examples=examples,
                    deadline=None,  # no clock: see REQUEST_HANG_SECONDS
                    derandomize=os.environ.get("MODELPORT_FUZZ_RANDOM") != "1",
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                )
                @given(case=strategy)
                def run(case: Any) -> None:
                    self.send(case)

                try:
                    run()
                except Unsatisfiable:
                    self.unsatisfiable.add(fuzzed)

    async def run(self, *args: Any, examples: int = EXAMPLES, **kwargs: Any) -> None:
        await asyncio.to_thread(self.fuzz, *args, examples=examples, **kwargs)
        print("\n".join(f"{count:5} {outcome}" for outcome, count in sorted(self.statuses.items())))
        assert not self.failures, "\n".join(self.failures)
        assert self.fuzzed, "no operation was fuzzed"
        # Nothing valid to draw would mean the schema (or a strategy) is broken; nothing
        # invalid is only right for the operations that take nothing.
        expected = {fuzzed for fuzzed in self.fuzzed if fuzzed[0] == "negative" and fuzzed[1] in NOTHING_TO_GET_WRONG}
        assert self.unsatisfiable == expected, f"unsatisfiable: {sorted(self.unsatisfiable ^ expected)}"
        floor = max(examples // 2, 1)
        short = [
            f"{mode} {operation}: {self.sent[mode, operation]} sent, {self.unbuildable[mode, operation]} unbuildable"
            for mode, operation in self.fuzzed
            if (mode, operation) not in self.unsatisfiable
            and self.sent[mode, operation] < (1 if operation in NOTHING_TO_GET_WRONG else floor)
        ]
        assert not short, f"fewer than {floor} cases sent:\n" + "\n".join(short)


async def test_no_generated_request_is_answered_with_a_5xx(
    app: FastAPI, raw_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test app has no MODELPORT_SECRET_KEY, so the secret routes would all be 503s
    # (rightly: a server setting is missing); with one, they are fuzzed for real.
    monkeypatch.setattr(app.state.catalogue.secrets, "box", SecretBox("schemathesis"))
    # An account of its own, so that what the run creates is seen by no other test.
    created = await raw_client.post(
        "/accounts", json={"account_name": f"schemathesis-{uuid.uuid4().hex[:8]}"}, headers={"x-api-key": ADMIN_KEY}
    )
    assert created.status_code == 200, created.text
    fuzzer = Fuzzer(app, raw_client, {"x-api-key": ADMIN_KEY, "x-selected-account-id": created.json()["account_id"]})
    await fuzzer.run()
    # The bodies the OpenAI-compatible routes parse by hand are declared, and drawn from.
    document = app.openapi()
    for operation in HAND_PARSED_BODIES:
        method, path = operation.split(" ")
        declared = document["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]["schema"]
        assert document["components"]["schemas"][declared["$ref"].rsplit("/", 1)[1]]["properties"], operation
        for mode in ("positive", "negative"):
            assert fuzzer.sent[mode, operation] >= max(EXAMPLES // 2, 1), (mode, operation)


def _short(case: Any) -> Any:
    """At most a few tokens per call, so that real generations stay fast."""
    if isinstance(case.body, dict):
        tokens = case.body.get("max_tokens")
        if tokens is None:
            # Absent or null (both valid) is the deployment's default: a whole window.
            case.body["max_tokens"] = 4
        elif type(tokens) in (int, float) and tokens > 4:
            # 1e6 as a float is out of the schema but the server's lax parsing takes it
            # as an int: bounded the same way, and kept a float.
            case.body["max_tokens"] = type(tokens)(4)
    return case


async def test_inference_on_the_embedded_deployment_is_never_a_5xx(
    app: FastAPI, raw_client: httpx.AsyncClient, deployment_id: str
) -> None:
    """The same, for the inference routes on a deployment that exists: bodies reach the
    vendor (the embedded engine) instead of stopping at a 404."""
    found = await raw_client.get("/v4/model-deployments", headers={"x-api-key": ADMIN_KEY})
    account = next(item["account_id"] for item in found.json()["items"] if item["id"] == deployment_id)
    fuzzer = Fuzzer(app, raw_client, {"x-api-key": ADMIN_KEY, "x-selected-account-id": account})
    await fuzzer.run(
        lambda operation: operation.path.startswith("/v4/models/{model_deployment_id}/"),
        examples=max(EXAMPLES // 2, 1),
        path_parameters={"model_deployment_id": deployment_id},
        adjust=_short,
    )
