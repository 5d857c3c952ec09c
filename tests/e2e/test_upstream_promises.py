"""What the README promises about upstreams, against a real `modelport serve` and real
loopback upstreams (issue 28, section 4): credentials never reach a log or an answer,
`MODELPORT_UPSTREAM_ALLOW` and the always-denied link-local range hold at call time, a
redirect is never followed, `Retry-After` is honoured up to 4 s, and each way an
upstream fails is counted under its reason in `/metrics`.

The upstream is an aiohttp server in a thread with its own event loop; the upstream
`model` name picks its behaviour, and every request it receives is recorded with its
arrival time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.conftest import in_process, sqlite_settings
from tests.e2e.test_operations import scrape
from tests.servers import free_port, modelport_serving
from tests.vendors.conftest import deploy

pytestmark = pytest.mark.e2e

KEY = "mp_upstream_promises_admin_key_0123"
HEADERS = {"x-api-key": KEY}
BODY = {"chat_history": [], "prompt": "Hi", "temperature": 0, "max_tokens": 5}
# The server credentials: random letters and digits, so that only the gateway's knowledge
# of the value can hide it (its catch-all for `sk-...`-looking tokens never matches).
ENV_KEY = "Envkey" + uuid.uuid4().hex + uuid.uuid4().hex
STORED_SECRET = "Stored" + uuid.uuid4().hex + uuid.uuid4().hex
# 169.254.169.254 written as one hexadecimal number: no address to the policy (so a name,
# which the operator may allow, and which is not resolved when the model is written), one
# to the resolver (getaddrinfo) at call time.
METADATA_IN_HEX = "0xa9fea9fe"
OK_ANSWER: dict[str, Any] = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 1},
}


def echoes(secret: str) -> list[str]:
    """The forms an upstream may send a credential back in: as sent, reversed, hex,
    and base64 (standard and URL-safe)."""
    raw = secret.encode()
    return [secret, secret[::-1], raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]


# A run of this many characters of a credential (or of one of its forms) gives it away
# too: a quote cut short must not cut through one.
TELLING_RUN = 16


def runs(secret: str) -> set[str]:
    """Every run of TELLING_RUN characters of the credential's forms."""
    return {
        form[start : start + TELLING_RUN] for form in echoes(secret) for start in range(len(form) - TELLING_RUN + 1)
    }


def telling(text: str, secret: str) -> list[str]:
    """The runs of `secret`'s forms that `text` holds."""
    return sorted(run for run in runs(secret) if run in text)


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


# ---- the upstreams ----------------------------------------------------------------------


@dataclass
class Upstreams:
    base_url: str  # the OpenAI-compatible upstream, .../v1
    redirect_target: str  # a second server, where the upstream's redirects point
    # Upstream model name -> the arrival time (monotonic) of each request for it.
    arrivals: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # Every request the redirect target received: (method, path).
    redirected: list[tuple[str, str]] = field(default_factory=list)


def _upstream_app(upstreams: Upstreams) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model: str = body["model"]
        upstreams.arrivals[model].append(time.monotonic())
        behaviour = model.rsplit("@", 1)[0]  # "retry-after-1@<unique>": one counter per test
        credential = request.headers.get("authorization", "").removeprefix("Bearer ")
        if behaviour.startswith("echo-"):  # a vendor that quotes the key it got, every way it can
            said = "; ".join(echoes(credential))
            headers = {"x-echo-authorization": f"Bearer {credential}", "www-authenticate": f'Bearer key="{said}"'}
            if behaviour == "echo-stream-error":
                events = _sse({"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]})
                events += _sse({"error": {"message": f"quota exceeded for key {said}", "type": "insufficient_quota"}})
                return web.Response(body=events, headers={**headers, "content-type": "text/event-stream"})
            status = int(behaviour.removeprefix("echo-"))
            if status == 429:
                headers["retry-after"] = credential  # a header the gateway passes on
            message = {"error": {"message": f"Incorrect API key provided: {said}", "key": credential}}
            return web.json_response(message, status=status, headers=headers)
        if behaviour in ("redirect-302", "redirect-307"):
            location = f"{upstreams.redirect_target}/v1/chat/completions"
            return web.Response(status=int(behaviour[-3:]), headers={"location": location})
        if behaviour.startswith("retry-after-"):  # a busy vendor: Retry-After first, then an answer
            seconds = behaviour.split("-")[2]
            status = 429 if behaviour.endswith("-429") else 503
            if len(upstreams.arrivals[model]) == 1 or seconds == "30":
                busy = {"error": {"message": "busy, come back later"}}
                return web.json_response(busy, status=status, headers={"retry-after": seconds})
            return web.json_response(OK_ANSWER)
        if behaviour == "silent":  # accepts the request and never answers
            await asyncio.sleep(60)
            return web.json_response(OK_ANSWER)
        if behaviour in ("broken", "broken-stream"):  # the connection closes half-way through the body
            stream = behaviour == "broken-stream"
            response = web.StreamResponse(
                headers={"content-type": "text/event-stream" if stream else "application/json"}
            )
            if not stream:
                response.content_length = 4096
            await response.prepare(request)
            partial = OK_ANSWER["choices"][0]
            await response.write(_sse({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}) if stream
                                 else json.dumps(partial).encode()[:20])  # fmt: skip
            await asyncio.sleep(0.1)
            assert request.transport is not None
            request.transport.close()
            return response
        if behaviour == "ok":
            return web.json_response(OK_ANSWER)
        return web.json_response({"error": {"message": f"unknown model {model}"}}, status=404)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def _target_app(upstreams: Upstreams) -> web.Application:
    async def anything(request: web.Request) -> web.Response:
        upstreams.redirected.append((request.method, request.path))
        return web.json_response(OK_ANSWER)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    port, target_port = free_port(), free_port()
    state = Upstreams(base_url=f"http://127.0.0.1:{port}/v1", redirect_target=f"http://127.0.0.1:{target_port}")
    loop = asyncio.new_event_loop()
    runners = []
    for app, listening in ((_upstream_app(state), port), (_target_app(state), target_port)):
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", listening).start())
        runners.append(runner)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield state
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


# ---- the gateway ------------------------------------------------------------------------


@dataclass
class Gateway:
    base_url: str
    log: Path  # the server's stdout and stderr

    def create(self, model: str, *, base_url: str, **parameters: Any) -> httpx.Response:
        return httpx.post(
            f"{self.base_url}/v4/models",
            headers=HEADERS,
            json={"name": f"{model}-{uuid.uuid4().hex[:8]}", "model_type": "CHAT_COMPLETION", "model_vendor": "OPENAI",
                  "model_creation_parameters": {"base_url": base_url, "model": model, **parameters}},
        )  # fmt: skip

    def deploy(self, model: str, *, base_url: str, **parameters: Any) -> str:
        created = self.create(model, base_url=base_url, **parameters)
        assert created.status_code == 200, created.text
        deployment = httpx.post(
            f"{self.base_url}/v4/models/{created.json()['id']}/deployments", headers=HEADERS, json={"name": "d"}
        )
        assert deployment.status_code == 200, deployment.text
        return str(deployment.json()["id"])

    def chat(self, deployment: str, *, stream: bool = False) -> httpx.Response:
        return httpx.post(
            f"{self.base_url}/v4/models/{deployment}/chat-completions",
            headers=HEADERS,
            json={**BODY, "stream": stream},
            timeout=60,
        )

    def upstream_errors(self, reason: str) -> float:
        return scrape(self.base_url, "modelport_upstream_errors_total", vendor="OPENAI", reason=reason)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`modelport serve` as an operator with vendor keys runs it: a server credential tied
    to the loopback upstream, account secrets on, every request logged at debug level;
    upstreams allowed on loopback only (and one host by name, see METADATA_IN_HEX);
    two tries per call and a short read timeout, so that each failure is quick."""
    data = tmp_path_factory.mktemp("upstream-promises")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("ECHO_TEST_KEY", ENV_KEY)
        with modelport_serving(
            data,
            api_key=KEY,
            embedded_engine="false",
            log_level="debug",
            access_log="true",
            secret_key="a-test-only-secret-key-for-upstream-promises",
            upstream_key_envs="ECHO_TEST_KEY@127.0.0.1",
            upstream_allow=f"127.0.0.1/32,{METADATA_IN_HEX}",
            upstream_attempts="2",
            upstream_backoff="0.01",
            upstream_read_timeout="3",  # long enough for a busy machine, short for the silent upstream
        ) as base_url:
            yield Gateway(base_url, data / "server.log")


# ---- 1. credentials never reach a log or an answer ---------------------------------------


ECHOING = ["echo-500", "echo-400", "echo-401", "echo-404", "echo-429", "echo-stream-error"]


def test_a_credential_the_upstream_echoes_reaches_no_answer_and_no_log_line(
    gateway: Gateway, upstreams: Upstreams
) -> None:
    stored = httpx.put(f"{gateway.base_url}/v4/secrets/echo", headers=HEADERS, json={"value": STORED_SECRET})
    assert stored.status_code in (200, 201), stored.text
    credentials = {"api_key_env": "ECHO_TEST_KEY", "api_key_secret": "echo"}
    seen: dict[str, tuple[int, str]] = {}
    for setting, name in credentials.items():
        for model in ECHOING:
            deployment = gateway.deploy(model, base_url=upstreams.base_url, **{setting: name})
            answer = gateway.chat(deployment, stream=model.endswith("stream-error"))
            shown = answer.text + json.dumps(answer.headers.multi_items())
            for secret in (ENV_KEY, STORED_SECRET):
                assert not telling(shown, secret), (setting, model, shown)
            seen[f"{setting}/{model}"] = (answer.status_code, deployment)
    # Every credential reached the upstream (it had something to echo) ...
    assert all(upstreams.arrivals[model] for model in ECHOING)
    # ... and each failure was answered as the README says, with its reason.
    statuses = {name: status for name, (status, _) in seen.items()}
    assert statuses == {
        f"{setting}/{model}": {"echo-500": 502, "echo-400": 400, "echo-401": 502, "echo-404": 502,
                               "echo-429": 429, "echo-stream-error": 200}[model]
        for setting in credentials for model in ECHOING
    }  # fmt: skip
    log = gateway.log.read_text()
    # The log holds these requests (one line each at least), and never a credential.
    assert all(deployment in log for _, deployment in seen.values())
    for secret in (ENV_KEY, STORED_SECRET):
        leaked = telling(log, secret)
        assert not leaked, [line for line in log.splitlines() if any(run in line for run in leaked)][:5]


# ---- 2. where upstreams may be ----------------------------------------------------------


@pytest.mark.parametrize("outside", ["http://10.0.0.7:8000/v1", "http://[fd00::7]:8000/v1"])
def test_a_base_url_outside_the_allow_list_is_refused_when_the_model_is_written(gateway: Gateway, outside: str) -> None:
    refused = gateway.create("ok", base_url=outside)
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert "not" in detail and "allowed on this server" in detail


def test_an_allowed_name_that_resolves_to_link_local_at_call_time_is_refused(
    gateway: Gateway, upstreams: Upstreams
) -> None:
    """The name is allowed and is no address when the model is written; at call time the
    resolver turns it into 169.254.169.254, where cloud metadata answers: never connected."""
    assert socket.getaddrinfo(METADATA_IN_HEX, 80, socket.AF_INET)[0][4][0] == "169.254.169.254"
    deployment = gateway.deploy("ok", base_url=f"http://{METADATA_IN_HEX}:{free_port()}/v1")
    refused = gateway.chat(deployment)
    assert refused.status_code == 400
    detail = refused.json()["detail"]
    assert "169.254.169.254" in detail and "denied" in detail
    # The same server still reaches what it allows.
    assert gateway.chat(gateway.deploy("ok", base_url=upstreams.base_url)).status_code == 200


def test_a_name_that_resolves_into_an_allowed_network_is_allowed(gateway: Gateway, upstreams: Upstreams) -> None:
    """The allow-list names 127.0.0.1/32, not `localhost`: the name is checked by what it
    resolves to (/etc/hosts: 127.0.0.1), at the connection."""
    by_name = upstreams.base_url.replace("127.0.0.1", "localhost")
    assert gateway.chat(gateway.deploy("ok", base_url=by_name)).status_code == 200


def _scripted_dns(answers: dict[str, str], asked: list[tuple[str, int]]) -> type[AbstractResolver]:
    """aiohttp's resolver, with the names in `answers` answered from there (and each
    question noted); every other name goes to the real one."""

    class Scripted(AbstractResolver):
        def __init__(self) -> None:
            self._real = aiohttp.ThreadedResolver()

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            if host not in answers:
                return await self._real.resolve(host, port, family)
            asked.append((host, port))
            return [ResolveResult(hostname=host, host=answers[host], port=port, family=socket.AF_INET,
                                  proto=0, flags=socket.AI_NUMERICHOST)]  # fmt: skip

        async def close(self) -> None:
            await self._real.close()

    return Scripted


async def test_a_name_rebound_to_link_local_after_it_served_is_refused_at_call_time(
    tmp_path: Path, upstreams: Upstreams, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a name the operator allows answers loopback, then 169.254.169.254.
    No resolver on this machine can be told to change its answer (a name in /etc/hosts is
    not ours to write), so this one case runs the app in-process with aiohttp's resolver
    scripted; the gateway's own check after DNS, its policy and its connections are real."""
    answers = {"rebind.test": "127.0.0.1"}
    asked: list[tuple[str, int]] = []
    monkeypatch.setattr(aiohttp, "DefaultResolver", _scripted_dns(answers, asked))
    upstream_port = int(upstreams.base_url.rsplit(":", 1)[1].split("/")[0])
    # Another port for the second deployment: aiohttp keeps a name's checked addresses
    # (and open connections) per host and port for a while, so a new pair is resolved anew.
    other_port = int(upstreams.redirect_target.rsplit(":", 1)[1])
    settings = sqlite_settings(tmp_path, upstream_allow=["rebind.test"], upstream_attempts=1)
    async with in_process(settings) as (_, client):
        served = await deploy(client, vendor="OPENAI", base_url=f"http://rebind.test:{upstream_port}/v1", model="ok")
        later = await deploy(client, vendor="OPENAI", base_url=f"http://rebind.test:{other_port}/v1", model="ok")
        answer = await client.post(f"/v4/models/{served}/chat-completions", json=BODY)
        assert answer.status_code == 200, answer.text
        answers["rebind.test"] = "169.254.169.254"
        refused = await client.post(f"/v4/models/{later}/chat-completions", json=BODY)
    assert refused.status_code == 400
    assert "169.254.169.254" in refused.json()["detail"] and "denied" in refused.json()["detail"]
    # Each call asked DNS when it connected; creating the deployments asked nothing.
    assert asked == [("rebind.test", upstream_port), ("rebind.test", other_port)]
    assert upstreams.redirected == []


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_is_never_followed(gateway: Gateway, upstreams: Upstreams, status: int) -> None:
    model = f"redirect-{status}"
    deployment = gateway.deploy(model, base_url=upstreams.base_url)
    answer = gateway.chat(deployment)
    assert answer.status_code == 502
    assert f"answered {status}" in answer.json()["detail"]
    assert len(upstreams.arrivals[model]) == 1  # a redirect is not a failure to try again
    assert upstreams.redirected == []
    # The target was there to be reached all along.
    assert httpx.get(f"{upstreams.redirect_target}/probe").status_code == 200
    assert upstreams.redirected.pop() == ("GET", "/probe")


# ---- 3. Retry-After ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_of_a_second_is_waited_before_the_next_try(
    gateway: Gateway, upstreams: Upstreams, status: int
) -> None:
    model = f"retry-after-1-{status}@{uuid.uuid4().hex[:8]}"
    answer = gateway.chat(gateway.deploy(model, base_url=upstreams.base_url))
    assert answer.status_code == 200, answer.text
    first, second = upstreams.arrivals[model]
    # The backoff is 0.01 s: only the upstream's Retry-After makes the gap a second.
    assert second - first >= 0.9


def test_a_retry_after_beyond_four_seconds_is_cut_to_four_and_passed_on(gateway: Gateway, upstreams: Upstreams) -> None:
    model = f"retry-after-30-429@{uuid.uuid4().hex[:8]}"
    answer = gateway.chat(gateway.deploy(model, base_url=upstreams.base_url))
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "30"  # the client learns when the vendor wants it back
    first, second = upstreams.arrivals[model]
    # Waited the 4 s the README allows, not the 30 s asked.
    assert 3.9 <= second - first < 30


# ---- 4. upstream failures in /metrics -----------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "model", "stream", "status"),
    [
        ("timeout", "silent", False, 504),
        ("connect", None, False, 502),
        ("broken", "broken", False, 502),
        ("broken", "broken-stream", True, 200),
    ],
)
def test_each_way_an_upstream_fails_is_counted_under_its_reason(
    gateway: Gateway, upstreams: Upstreams, reason: str, model: str | None, stream: bool, status: int
) -> None:
    # No model: a loopback port nothing listens on.
    base_url = upstreams.base_url if model else f"http://127.0.0.1:{free_port()}/v1"
    deployment = gateway.deploy(model or "ok", base_url=base_url)
    before = gateway.upstream_errors(reason)
    answer = gateway.chat(deployment, stream=stream)
    assert answer.status_code == status, answer.text
    if stream:  # the stream had started: it ends with an error event
        assert answer.text.rstrip().rsplit("\n\n", 1)[-1].startswith("event: error")
    assert gateway.upstream_errors(reason) == before + 1
