"""Google Vertex AI: Gemini (`publisher: google`) and Claude (`publisher: anthropic`).

Both live under one project and region:
`{base}/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}:{method}`.
Gemini takes the Gemini API's own GenerateContentRequest (`:generateContent`,
`:streamGenerateContent?alt=sse`), translated by vendors/google.py; Claude takes
Anthropic's Messages body without `model` and with `anthropic_version:
vertex-2023-10-16` (`:rawPredict`, `:streamRawPredict`), translated by
vendors/anthropic.py. Their answers are read by those adapters' parsers too.

Auth: the account's service-account key (its JSON, in an account secret) becomes an
OAuth access token by the JWT-bearer grant: google-auth reads the key and signs the
assertion; the token request itself goes out through modelport's own HTTP client, so
the upstream address rules, retries and answer bounds apply to the token endpoint as
to any upstream, and nothing blocks the event loop. Tokens are cached per key until a
minute before they expire, and one refresh at a time runs for each key: concurrent
requests wait for it rather than each fetching its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from google.auth import jwt
from google.oauth2 import service_account

from modelport.errors import InvalidRequest, MissingCredential, UpstreamError
from modelport.generation import GenerationCall, GenerationChunk
from modelport.policy import ServerPolicy
from modelport.vendors.anthropic import AnthropicVendor
from modelport.vendors.base import Capabilities, ChunkStream, Embeddings, Target
from modelport.vendors.client import UpstreamClient
from modelport.vendors.google import GoogleVendor, gemini_body
from modelport.vendors.http_vendor import Outgoing
from modelport.vendors.settings import VertexSettings
from modelport.vendors.upstream import (
    RetryPolicy,
    api_key_for,
    configured_headers,
    join_url,
    json_request,
    read_json,
    send,
    upstream_model,
)

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ANTHROPIC_VERSION = "vertex-2023-10-16"
# A token is refreshed this long before Google says it expires (a request signed with
# it must still reach Vertex in time), and an assertion is valid this long.
REFRESH_MARGIN_SECONDS = 60.0
ASSERTION_SECONDS = 3600
# Tokens cached at most (one per service-account key in use): the oldest goes first.
MAX_CACHED_TOKENS = 1024


def vertex_base_url(region: str) -> str:
    host = "aiplatform.googleapis.com" if region == "global" else f"{region}-aiplatform.googleapis.com"
    return f"https://{host}/v1"


def _settings(target: Target) -> VertexSettings:
    settings = target.settings
    if not isinstance(settings, VertexSettings) or not settings.project or not settings.region:
        raise InvalidRequest(f"deployment {target.deployment_id} names no VERTEX_AI `project` and `region`")
    return settings


def model_url(target: Target, method: str) -> str:
    settings = _settings(target)
    assert settings.region is not None  # _settings checked it
    base = settings.base_url or vertex_base_url(settings.region)
    path = (
        f"projects/{settings.project}/locations/{settings.region}/publishers/{settings.publisher}/"
        f"models/{upstream_model(target)}:{method}"
    )
    return join_url(base, path)


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic()


class TokenSource:
    """Access tokens for service-account keys, cached, refreshed one at a time per key."""

    def __init__(
        self,
        client: UpstreamClient,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_cached: int = MAX_CACHED_TOKENS,
    ) -> None:
        self._client = client
        self._policy = policy
        self._clock = clock
        self._max_cached = max_cached
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def token(self, key_json: str, token_url: str | None) -> str:
        key = hashlib.sha256(f"{token_url}\0{key_json}".encode()).hexdigest()
        cached = self._tokens.get(key)
        if cached is not None and cached.expires_at - REFRESH_MARGIN_SECONDS > self._clock():
            return cached.value
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            # Another request may have refreshed it while this one waited.
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at - REFRESH_MARGIN_SECONDS > self._clock():
                return cached.value
            try:
                fresh = await self._fetch(key_json, token_url)
            except BaseException:
                if key not in self._tokens:  # a key that never worked keeps no lock behind
                    self._locks.pop(key, None)
                raise
            self._tokens.pop(key, None)
            self._tokens[key] = fresh
            while len(self._tokens) > self._max_cached:
                oldest = next(iter(self._tokens))
                del self._tokens[oldest]
                self._locks.pop(oldest, None)
            return fresh.value

    async def _fetch(self, key_json: str, token_url: str | None) -> _Token:
        try:
            info = json.loads(key_json)
            # google-auth is not fully typed.
            credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[SCOPE]
            )
        except (ValueError, TypeError, KeyError) as exc:
            # Never the key's text: only what is wrong with it.
            raise MissingCredential(
                f"the VERTEX_AI credential is not a service-account key (JSON with client_email, private_key and "
                f"token_uri): {type(exc).__name__}"
            ) from None
        audience = token_url or info.get("token_uri") or GOOGLE_TOKEN_URL
        now = int(time.time())
        claims = {
            "iss": credentials.service_account_email,
            "scope": SCOPE,
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
        }
        assertion = jwt.encode(credentials.signer, claims).decode()  # type: ignore[no-untyped-call]
        request = self._client.build_request(
            "POST",
            audience,
            data={"grant_type": JWT_BEARER, "assertion": assertion},
            headers={"accept": "application/json"},
        )
        started = self._clock()
        secrets = [assertion, str(info.get("private_key") or "")]
        try:
            response = await send(self._client, request, vendor="VERTEX_AI token endpoint", policy=self._policy,
                                  secrets=secrets)  # fmt: skip
        except InvalidRequest as exc:
            # The endpoint refused the key (invalid_grant): the deployment's credential is
            # wrong, which no change to the request fixes; said as a vendor refusing its key is.
            raise UpstreamError(
                f"{exc.detail} (the service-account key in the deployment's secret was refused)", **exc.extra
            ) from None
        answer = await read_json(response, vendor="VERTEX_AI token endpoint")
        value = answer.get("access_token") if isinstance(answer, dict) else None
        expires_in = answer.get("expires_in", 3600) if isinstance(answer, dict) else None
        if not isinstance(value, str) or not value or not isinstance(expires_in, int | float):
            raise UpstreamError("the VERTEX_AI token endpoint answered without an access_token and expires_in")
        return _Token(value, started + float(expires_in))


class _VertexAuth:
    """What both publishers' adapters share: the bearer token in place of an API key."""

    vendor = "VERTEX_AI"
    _client: UpstreamClient
    _tokens: TokenSource
    _server: ServerPolicy

    async def authorized(
        self, target: Target, url: str, body: dict[str, Any], headers: dict[str, str], *,
        params: dict[str, str] | None = None,
    ) -> Outgoing:  # fmt: skip
        key_json = api_key_for(target, self.vendor)
        if not key_json:
            raise MissingCredential(
                f"deployment {target.deployment_id} has no VERTEX_AI credential: name an account secret holding a "
                "service-account key (api_key_secret)"
            )
        token_url = _settings(target).token_url
        if not target.api_key:
            # The server's own key (api_key_env): the token endpoint gets an assertion signed
            # with it and Vertex the token it buys, so both hosts must be ones the operator
            # tied the variable to (MODELPORT_UPSTREAM_KEY_ENVS), as every vendor's base_url is.
            for destination in (url, token_url):
                if destination:
                    self._server.check_server_key(self.vendor, {**target.parameters, "base_url": str(destination)})
        token = await self._tokens.token(key_json, token_url)
        sent_headers = {**headers, **configured_headers(target), "Authorization": f"Bearer {token}"}
        request = json_request(self._client, url, body, headers=sent_headers, params=params)
        return Outgoing(request, token)


class VertexGemini(_VertexAuth, GoogleVendor):
    vendor = "VERTEX_AI"

    def __init__(self, client: UpstreamClient, policy: RetryPolicy, tokens: TokenSource, server: ServerPolicy) -> None:
        super().__init__(client, policy)
        self._tokens = tokens
        self._server = server

    async def build_request(self, target: Target, call: GenerationCall, *, stream: bool) -> Outgoing:
        url = model_url(target, "streamGenerateContent" if stream else "generateContent")
        return await self.authorized(target, url, gemini_body(target, call), {},
                                     params={"alt": "sse"} if stream else None)  # fmt: skip

    def capabilities(self, target: Target) -> Capabilities:
        return replace(super().capabilities(target), vendor=self.vendor)

    async def embed(self, target: Target, texts: list[str]) -> Embeddings:
        raise InvalidRequest("VERTEX_AI deployments do not embed texts on this server", param="model")


class VertexClaude(_VertexAuth, AnthropicVendor):
    vendor = "VERTEX_AI"

    def __init__(self, client: UpstreamClient, policy: RetryPolicy, tokens: TokenSource, server: ServerPolicy) -> None:
        super().__init__(client, policy)
        self._tokens = tokens
        self._server = server

    async def build_request(self, target: Target, call: GenerationCall, *, stream: bool) -> Outgoing:
        body, headers = self._body(target, call, stream=stream)
        # Vertex names the model in the path and the API version in the body.
        body.pop("model", None)
        body["anthropic_version"] = ANTHROPIC_VERSION
        headers.pop("anthropic-version", None)
        url = model_url(target, "streamRawPredict" if stream else "rawPredict")
        return await self.authorized(target, url, body, headers)

    def capabilities(self, target: Target) -> Capabilities:
        found = replace(super().capabilities(target), vendor=self.vendor)
        # As Anthropic's own adapter does with AnthropicSettings: the model's output limit.
        ceiling = target.settings.max_output_tokens if isinstance(target.settings, VertexSettings) else None
        if ceiling and found.default_max_tokens and ceiling < found.default_max_tokens:
            return replace(found, default_max_tokens=ceiling)
        return found

    async def count_prompt(self, target: Target, call: GenerationCall) -> int:
        # Anthropic's own counting endpoint is not Vertex's: never called (VertexVendor
        # offers no count_prompt), and never sending this deployment's key elsewhere.
        raise InvalidRequest("VERTEX_AI counts no prompt upstream")


class VertexVendor:
    """The VERTEX_AI adapter: each deployment's `publisher` picks who speaks for it."""

    def __init__(self, client: UpstreamClient, policy: RetryPolicy, server: ServerPolicy) -> None:
        self._client = client
        self.tokens = TokenSource(client, policy)
        self._gemini = VertexGemini(client, policy, self.tokens, server)
        self._claude = VertexClaude(client, policy, self.tokens, server)

    def _for(self, target: Target) -> VertexGemini | VertexClaude:
        return self._claude if _settings(target).publisher == "anthropic" else self._gemini

    def capabilities(self, target: Target) -> Capabilities:
        return self._for(target).capabilities(target)

    async def complete(self, target: Target, call: GenerationCall) -> GenerationChunk:
        return await self._for(target).complete(target, call)

    async def stream(self, target: Target, call: GenerationCall) -> ChunkStream:
        return await self._for(target).stream(target, call)

    async def aclose(self) -> None:
        await self._client.aclose()  # the one client both publishers and the tokens share
