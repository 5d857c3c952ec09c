"""A server credential goes only where the operator ties it (issue 21, findings 2, 9, 12).

Real upstreams on loopback record every request they get, so each test asserts on
what actually reached a host, not only on the status modelport answers."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from modelport.policy import (
    DEFAULT_KEY_HOSTS,
    VENDOR_BASE_URLS,
    ServerPolicy,
    UpstreamDenied,
    parse_key_envs,
    upstream_host,
)
from modelport.vendors import anthropic, cohere, google, openai
from modelport.vendors.client import UpstreamClient
from modelport.vendors.transport import AiohttpTransport
from modelport.vendors.upstream import scrub
from tests.conftest import in_process, sqlite_settings
from tests.servers import free_port

OPERATOR_KEY = "sk-operator-openai-key-0123456789abcdef"  # the value of OPENAI_API_KEY
LOOP_KEY = "sk-loopback-tied-key-0123456789abcdef"  # the value of LOOP_KEY, tied to 127.0.0.1


class Recorder(BaseHTTPRequestHandler):
    """Records each request's path and headers; answers like OpenAI, or (`/echo`) with
    a 401 that echoes the bearer key back reversed, in hex and in base64."""

    seen: list[tuple[str, dict[str, str]]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.seen.append((self.path, {name.lower(): value for name, value in self.headers.items()}))
        key = self.headers.get("authorization", "").removeprefix("Bearer ")
        if self.path.startswith("/echo"):
            status = 401
            echoed = f"rev {key[::-1]} hex {key.encode().hex()} b64 {base64.b64encode(key.encode()).decode()}"
            body: dict[str, Any] = {"error": {"message": f"bad key: {echoed}"}}
        else:
            status = 200
            body = {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            }
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """A recording upstream on 127.0.0.1; yields its base URL and what it saw."""
    seen: list[tuple[str, dict[str, str]]] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """modelport with its real transport: OPENAI_API_KEY tied (by default) to
    api.openai.com, LOOP_KEY tied to 127.0.0.1."""
    settings = sqlite_settings(
        tmp_path_factory.mktemp("destinations"),
        upstream_attempts=1,
        upstream_key_envs=["OPENAI_API_KEY", "LOOP_KEY@127.0.0.1"],
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", OPERATOR_KEY)
        env.setenv("LOOP_KEY", LOOP_KEY)
        async with in_process(settings) as served:
            yield served


def model(name: str, vendor: str = "OPENAI", **parameters: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model_type": "CHAT_COMPLETION",
        "model_vendor": vendor,
        "model_creation_parameters": {"model": "gpt-x", **parameters},
    }


async def stored_deployment(application: Any, name: str, vendor: str, parameters: dict[str, Any]) -> str:
    """A model and deployment written straight to the database, as settings stored
    before a rule was (or by an older modelport): the request-time checks must hold."""
    from modelport.store import repo

    async with application.state.sessions() as session, session.begin():
        account_id = (await session.execute(text("SELECT id FROM accounts ORDER BY created_at LIMIT 1"))).scalar_one()
        created = await repo.create_model(
            session, account_id=account_id, name=name, model_type="CHAT_COMPLETION", model_vendor=vendor,
            model_creation_parameters=parameters, created_by_user_id="legacy", created_by_identity_type="user",
        )  # fmt: skip
        deployment = await repo.create_deployment(
            session, account_id=account_id, model_id=created.id, name="d", status="READY",
            vendor_configuration={}, model_creation_parameters=None, deployment_metadata=None,
            created_by_user_id="legacy", created_by_identity_type="user",
        )  # fmt: skip
        return str(deployment.id)


async def chat(client: httpx.AsyncClient, deployment: str, **extra: Any) -> httpx.Response:
    return await client.post(
        f"/v4/models/{deployment}/chat-completions", json={"chat_history": [], "prompt": "hi", **extra}
    )


def keys_seen(seen: list[tuple[str, dict[str, str]]]) -> str:
    return json.dumps(seen)


# --- where a server key may go -------------------------------------------------------------


def test_each_vendor_variable_is_tied_to_its_adapters_own_host() -> None:
    """The defaults the policy ties vendor keys to are the hosts the adapters call."""
    assert VENDOR_BASE_URLS == {
        "OPENAI": openai.OPENAI_BASE_URL,
        "ANTHROPIC": anthropic.ANTHROPIC_BASE_URL,
        "GOOGLE": google.GEMINI_BASE_URL,
        "COHERE": cohere.COHERE_BASE_URL,
    }
    vendor_of = {"OPENAI_API_KEY": "OPENAI", "ANTHROPIC_API_KEY": "ANTHROPIC", "GEMINI_API_KEY": "GOOGLE",
                 "GOOGLE_API_KEY": "GOOGLE", "COHERE_API_KEY": "COHERE"}  # fmt: skip
    for variable, hosts in DEFAULT_KEY_HOSTS.items():
        assert upstream_host(VENDOR_BASE_URLS[vendor_of[variable]]) in hosts


def test_key_envs_entries_tie_variables_to_hosts() -> None:
    ties = parse_key_envs(["OPENAI_API_KEY@api.openai.com", "eu.api.openai.com", "MINE", "LOCAL@localhost",
                           "ANY@*", "COHERE_API_KEY"])  # fmt: skip
    assert ties == {
        "OPENAI_API_KEY": {"api.openai.com", "eu.api.openai.com"},
        "MINE": frozenset(),  # tied to nothing: sent nowhere until the operator says where
        "LOCAL": {"localhost"},
        "ANY": {"*"},
        "COHERE_API_KEY": {"api.cohere.com", "api.cohere.ai"},
    }


async def test_a_server_key_for_another_host_is_refused_at_creation(
    app: tuple[Any, httpx.AsyncClient], upstream: tuple[str, list[Any]]
) -> None:
    """Finding 2: OPENAI_API_KEY with base_url at a host of one's choosing."""
    _app, client = app
    base, seen = upstream
    before = len(seen)
    refused = await client.post("/v4/models", json=model("steal", api_key_env="OPENAI_API_KEY", base_url=f"{base}/v1"))
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert "MODELPORT_UPSTREAM_KEY_ENVS" in detail and "127.0.0.1" in detail and "api.openai.com" in detail
    # The same through a deployment's override of an allowed model's base_url.
    allowed = await client.post("/v4/models", json=model("openai-ok", api_key_env="OPENAI_API_KEY"))
    assert allowed.status_code == 200, allowed.text
    override = await client.post(
        f"/v4/models/{allowed.json()['id']}/deployments",
        json={"name": "elsewhere", "model_creation_parameters": {"base_url": f"{base}/v1"}},
    )
    assert override.status_code == 422 and "api_key_env OPENAI_API_KEY" in override.json()["detail"]
    # And an Anthropic model naming the OpenAI key (its own API is not OpenAI's host).
    other_vendor = await client.post("/v4/models", json=model("cross", "ANTHROPIC", api_key_env="OPENAI_API_KEY"))
    assert other_vendor.status_code == 422 and "api.anthropic.com" in other_vendor.json()["detail"]
    assert len(seen) == before


async def test_a_stored_setting_sending_a_key_elsewhere_is_refused_per_request(
    app: tuple[Any, httpx.AsyncClient], upstream: tuple[str, list[Any]]
) -> None:
    """Settings written before the rule: the request-time check refuses, nothing is sent."""
    application, client = app
    base, seen = upstream
    before = len(seen)
    deployment = await stored_deployment(
        application, "legacy-steal", "OPENAI", {"model": "gpt-x", "api_key_env": "OPENAI_API_KEY", "base_url": base}
    )
    response = await chat(client, deployment)
    assert response.status_code == 400, response.text
    assert "OPENAI_API_KEY" in response.json()["detail"]
    assert len(seen) == before and OPERATOR_KEY not in keys_seen(seen)


async def test_a_key_tied_to_a_host_reaches_it(
    app: tuple[Any, httpx.AsyncClient], upstream: tuple[str, list[Any]]
) -> None:
    _app, client = app
    base, seen = upstream
    created = await client.post("/v4/models", json=model("tied", "OTHER", api_key_env="LOOP_KEY", base_url=base))
    assert created.status_code == 200, created.text
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
    response = await chat(client, deployment.json()["id"])
    assert response.status_code == 200, response.text
    assert seen[-1][1]["authorization"] == f"Bearer {LOOP_KEY}"


async def test_the_transport_never_sends_a_server_key_to_an_untied_host(upstream: tuple[str, list[Any]]) -> None:
    """The last line, whatever put the key in the request (here a header set by hand)."""
    base, seen = upstream
    before = len(seen)
    policy = ServerPolicy(key_envs=("OPENAI_API_KEY",))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", OPERATOR_KEY)
        async with UpstreamClient(AiohttpTransport(policy=policy)) as http:
            for headers, url in [
                ({"authorization": f"Bearer {OPERATOR_KEY}"}, base),
                ({}, f"{base}/?k={OPERATOR_KEY}"),
            ]:
                with pytest.raises(UpstreamDenied, match="OPENAI_API_KEY"):
                    await http.send(http.build_request("POST", url, headers=headers, content=b"{}"))
            sent = await http.send(
                http.build_request(
                    "POST", base, headers={"authorization": "Bearer something-else-entirely"}, content=b"{}"
                )
            )
            await sent.aclose()
    assert sent.status_code == 200
    assert len(seen) == before + 1 and OPERATOR_KEY not in keys_seen(seen)


async def test_only_operators_write_a_server_key_unless_allowed(app: tuple[Any, httpx.AsyncClient]) -> None:
    _app, client = app
    admin = await client.post("/v4/api-keys", json={"role": "admin", "name": "account-admin"})
    as_admin = {"x-api-key": admin.json()["key"]}
    refused = await client.post("/v4/models", json=model("admin-env", api_key_env="OPENAI_API_KEY"), headers=as_admin)
    assert refused.status_code == 403 and "MODELPORT_UPSTREAM_KEYS_FOR_ADMINS" in refused.json()["detail"]
    # Setting up with their account's own secret is theirs to do.
    own = await client.post("/v4/models", json=model("admin-secret", api_key_secret="mine"), headers=as_admin)
    assert own.status_code == 200, own.text
    allowing = ServerPolicy(key_envs=("OPENAI_API_KEY",), admins_use_server_keys=True)
    allowing.check_model_parameters({"api_key_env": "OPENAI_API_KEY"}, by_operator=False)


# --- bindings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "{{ host }}",
        "{{ host }}/v1",
        "http://{{ host }}/v1",
        "http://127.0.0.1{{ rest }}",
        "http://127.0.0.1:{{ port }}/v1",
        "{{ scheme }}://127.0.0.1/v1",
    ],
)
async def test_a_binding_never_fills_the_scheme_host_or_port(app: tuple[Any, httpx.AsyncClient], base_url: str) -> None:
    _app, client = app
    response = await client.post("/v4/models", json=model("bound-host", "OTHER", base_url=base_url))
    assert response.status_code == 422, response.text
    assert "never its scheme, host or port" in response.text


async def test_a_binding_may_fill_the_path(app: tuple[Any, httpx.AsyncClient], upstream: tuple[str, list[Any]]) -> None:
    _app, client = app
    base, seen = upstream
    created = await client.post(
        "/v4/models",
        json={**model("bound-path", "OTHER", base_url=base + "/{{ tenant }}/v1", headers={"x-note": "{{ note }}"}),
              "request_schema": {"parameters": [{"name": "tenant", "type": "str"}, {"name": "note", "type": "str"}]}},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    deployment = (await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})).json()["id"]
    bindings = {"tenant": "@evil.example", "note": "fine"}
    response = await chat(client, deployment, model_request_parameters={"bindings": bindings})
    assert response.status_code == 200, response.text
    assert seen[-1][0] == "/@evil.example/v1/chat/completions"  # a path, on the same host

    # Finding 12: CR/LF in a header filled from a binding is a 400, never sent, never a 500.
    before = len(seen)
    for note in ("a\r\nx-injected: 1", "a\nb", "a\x1bb"):
        refused = await chat(client, deployment, model_request_parameters={"bindings": {"tenant": "t", "note": note}})
        assert refused.status_code == 400, refused.text
        assert "control character" in refused.json()["detail"]
    assert len(seen) == before
    assert (await chat(client, deployment, model_request_parameters={"bindings": bindings})).status_code == 200


# --- base_url forms and credential-looking settings (finding 12) -------------------------


@pytest.mark.parametrize(
    "base_url",
    ["http://user:hunter2@127.0.0.1:9/v1", "http://token@127.0.0.1:9/v1", "http://[::1/v1", "http://h:99999/v1",
     "http://h:port/v1", "http://exa mple.com/v1", "http://h\\@127.0.0.1/v1", "ftp://h/v1", "http:///v1"],
)  # fmt: skip
async def test_base_urls_that_cannot_be_sent_to_are_refused_at_creation(
    app: tuple[Any, httpx.AsyncClient], base_url: str
) -> None:
    _app, client = app
    response = await client.post("/v4/models", json=model("odd-url", "OTHER", base_url=base_url))
    assert response.status_code == 422, response.text
    assert "hunter2" not in response.text


@pytest.mark.parametrize("base_url", ["http://user:hunter2@127.0.0.1:9/v1", "http://h:99999/v1", "http://[::1/v1"])
async def test_stored_base_urls_that_cannot_be_sent_to_are_a_400_not_a_500(
    app: tuple[Any, httpx.AsyncClient], base_url: str
) -> None:
    application, client = app
    deployment = await stored_deployment(
        application, f"legacy-{free_port()}", "OTHER", {"model": "m", "base_url": base_url}
    )
    response = await chat(client, deployment)
    assert response.status_code == 400, response.text
    assert "hunter2" not in response.text


@pytest.mark.parametrize(
    "parameters",
    [
        {"headers": {"Cookie": "session=abc123"}},
        {"headers": {"Ocp-Apim-Subscription-Key": "0123456789abcdef"}},
        {"headers": {"PRIVATE-TOKEN": "glpat-0123456789"}},
        {"headers": {"X-Client-Secret": "s3cr3t"}},
        {"base_url": "https://user:hunter2@api.example.com/v1"},
        {"base_url": "https://api.example.com/v1?key=AIzaSy0123456789"},
        {"extra_body": {"callback": "https://hooks.example.com/?token=abc123"}},
        {"extra_body": {"session_token": "abc123"}},
    ],
)
async def test_credential_shaped_settings_are_refused(
    app: tuple[Any, httpx.AsyncClient], parameters: dict[str, Any]
) -> None:
    _app, client = app
    response = await client.post(
        "/v4/models", json=model("creds", "OTHER", **{"base_url": "http://h/v1", **parameters})
    )
    assert response.status_code == 422, response.text
    assert "/v4/secrets" in response.json()["detail"]


async def test_credential_shaped_settings_stored_before_are_never_shown_to_members(
    app: tuple[Any, httpx.AsyncClient],
) -> None:
    application, client = app
    secrets = ["session=abc123", "0123456789abcdef", "hunter2", "AIzaSy0123456789"]
    parameters = {
        "model": "m",
        "base_url": "https://user:hunter2@api.example.com/v1?key=AIzaSy0123456789&region=eu",
        "headers": {"Cookie": secrets[0], "Ocp-Apim-Subscription-Key": secrets[1], "x-trace": "kept"},
        "max_tokens_hint": 5,
    }
    await stored_deployment(application, "legacy-shown", "OTHER", parameters)
    member = await client.post("/v4/api-keys", json={"role": "member", "name": "reader"})
    shown = await client.get("/v4/models", headers={"x-api-key": member.json()["key"]})
    [listed] = [item for item in shown.json()["items"] if item["name"] == "legacy-shown"]
    assert not any(secret in json.dumps(listed) for secret in secrets)
    assert listed["model_creation_parameters"]["headers"]["x-trace"] == "kept"
    assert listed["model_creation_parameters"]["base_url"] == (
        "https://<redacted>@api.example.com/v1?key=<redacted>&region=eu"
    )


# --- redaction of echoed keys --------------------------------------------------------------


def test_scrub_redacts_a_secret_echoed_encoded() -> None:
    secret = "sk-abcdefghijklmnopqrstuvwxyz012345"
    for echoed in (
        secret[::-1],
        secret.encode().hex(),
        secret.encode().hex().upper(),
        base64.b64encode(secret.encode()).decode(),
        base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
        base64.b64encode(secret.encode() + b" and more").decode(),
    ):
        scrubbed = scrub(f"key was <{echoed}>!", [secret])
        assert scrubbed == "key was <[redacted]>!", (echoed, scrubbed)
    assert scrub("nothing to see", [secret]) == "nothing to see"


async def test_an_upstream_echoing_the_key_encoded_gets_it_redacted(
    app: tuple[Any, httpx.AsyncClient], upstream: tuple[str, list[Any]]
) -> None:
    _app, client = app
    base, _seen = upstream
    created = await client.post(
        "/v4/models", json=model("echo", "OTHER", api_key_env="LOOP_KEY", base_url=f"{base}/echo")
    )
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
    response = await chat(client, deployment.json()["id"])
    assert response.status_code == 502, response.text
    text = response.text
    assert "bad key" in text
    for form in (LOOP_KEY, LOOP_KEY[::-1], LOOP_KEY.encode().hex(), base64.b64encode(LOOP_KEY.encode()).decode()):
        assert form not in text


# --- "this host" and port scanning (finding 9) -------------------------------------------

LOOPBACK_DENIED = ServerPolicy(deny=("127.0.0.0/8",))


@pytest.mark.parametrize(
    "host", ["::", "[::]", "0:0:0:0:0:0:0:0", "::ffff:0.0.0.0", "::ffff:127.0.0.1", "::1", "0.0.0.0", "127.0.0.2"]
)
def test_every_spelling_of_this_host_is_denied_with_loopback(host: str) -> None:
    with pytest.raises(UpstreamDenied):
        LOOPBACK_DENIED.check_host(host)
    with pytest.raises(UpstreamDenied):  # ::1 alone denied stands for 127.0.0.1 too
        ServerPolicy(deny=("::1/128",)).check_host("127.0.0.1" if host == "::1" else host)


def _ipv6_listener() -> socket.socket | None:
    try:
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", 0))
        listener.listen()
    except OSError:
        return None
    return listener


async def test_the_unspecified_address_never_reaches_the_machine() -> None:
    listener = _ipv6_listener()
    if listener is None:
        pytest.skip("no IPv6 on this machine")
    port = listener.getsockname()[1]
    listener.settimeout(0.5)
    try:
        async with UpstreamClient(AiohttpTransport(policy=LOOPBACK_DENIED)) as http:
            for host in ("[::]", "[0:0:0:0:0:0:0:0]", "[::ffff:127.0.0.1]"):
                with pytest.raises(UpstreamDenied):
                    await http.send(http.build_request("GET", f"http://{host}:{port}/"))
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing connected
    finally:
        listener.close()


def _serve_once(answer: bytes) -> int:
    """A port that accepts one connection, writes `answer` (not HTTP) and closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


async def test_closed_and_non_http_ports_read_the_same(app: tuple[Any, httpx.AsyncClient]) -> None:
    """Finding 9: the answer must not tell a closed port from one that speaks another protocol."""
    _app, client = app
    ports = {"closed": free_port(), "ssh": _serve_once(b"SSH-2.0-OpenSSH_9.6\r\n"), "silent-close": _serve_once(b"")}
    details = {}
    for what, port in ports.items():
        created = await client.post(
            "/v4/models", json=model(f"scan-{what}", "OTHER", base_url=f"http://127.0.0.1:{port}/v1")
        )
        deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
        response = await chat(client, deployment.json()["id"])
        details[what] = (response.status_code, response.json()["detail"])
    assert len(set(details.values())) == 1, details
    assert details["closed"][0] == 502
