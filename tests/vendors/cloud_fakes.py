"""Fakes of the cloud vendors that check what a real one checks: a Bedrock that
recomputes each request's SigV4 signature with botocore and refuses a wrong one, and a
Google token endpoint that verifies the service account's signed assertion with its
public key, issuing tokens that a fake Vertex AI then requires. Answers come from the
documented fixtures (fixtures/documented/bedrock and vertex-ai); Bedrock's streams are
framed in AWS's binary event-stream encoding here (`frame`)."""

from __future__ import annotations

import hmac
import itertools
import json
import re
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from google.auth import jwt

from tests.vendors.recorded import DOCUMENTED

BEDROCK = DOCUMENTED / "bedrock"
VERTEX = DOCUMENTED / "vertex-ai"
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/bedrock/aws4_request, "
    r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})$"
)


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total and headers lengths, their CRC32),
    string-typed headers (type 7), the payload, and the CRC32 of all that."""
    encoded = b"".join(
        len(name).to_bytes(1, "big") + name.encode() + b"\x07" + len(value.encode()).to_bytes(2, "big") + value.encode()
        for name, value in headers.items()
    )
    prelude = (12 + len(encoded) + len(payload) + 4).to_bytes(4, "big") + len(encoded).to_bytes(4, "big")
    message = prelude + zlib.crc32(prelude).to_bytes(4, "big") + encoded + payload
    return message + zlib.crc32(message).to_bytes(4, "big")


def event_stream(fixture: Path) -> bytes:
    """A `converse_stream*.json` fixture framed as ConverseStream sends it."""
    framed = b""
    for message in json.loads(fixture.read_text()):
        headers = {name: value for name, value in message.items() if name.startswith(":")}
        headers.setdefault(":message-type", "event")
        headers[":content-type"] = "application/json"
        framed += frame(headers, json.dumps(message["payload"]).encode())
    return framed


@dataclass
class ServiceAccount:
    """A service-account key as Google issues it (the JSON), with its public half."""

    email: str
    key_id: str
    token_uri: str = "https://oauth2.googleapis.com/token"
    private_pem: str = field(init=False)
    public_pem: bytes = field(init=False)

    def __post_init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def json(self) -> str:
        return json.dumps(
            {
                "type": "service_account",
                "project_id": "my-project",
                "private_key_id": self.key_id,
                "private_key": self.private_pem,
                "client_email": self.email,
                "client_id": "104761431592034112345",
                "token_uri": self.token_uri,
            }
        )


def _error(status: int, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


@dataclass
class CloudFake(httpx.AsyncBaseTransport):
    # Bedrock: access key id -> secret key; upstream model id -> (status, fixture under documented/).
    aws_keys: dict[str, str] = field(default_factory=dict)
    # The token endpoint: the service accounts whose keys it knows (key id -> account).
    accounts: dict[str, ServiceAccount] = field(default_factory=dict)
    token_lifetime: int = 3600
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Bedrock streams built by a test (upstream model id -> the framed bytes).
    framed: dict[str, bytes] = field(default_factory=dict)
    sent: list[httpx.Request] = field(default_factory=list)
    # Each token fetched: (client_email, the token URL asked, the token issued).
    fetches: list[tuple[str, str, str]] = field(default_factory=list)
    _issued: set[str] = field(default_factory=set)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def bodies(self, host_part: str) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.sent if host_part in str(request.url)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.sent.append(request)
        path = request.url.path
        if path.endswith("/token"):
            return self._token(request)
        if "/model/" in path and path.rsplit("/", 1)[-1] in ("converse", "converse-stream", "invoke"):
            return self._bedrock(request)
        if "/publishers/" in path:
            return self._vertex(request)
        return _error(404, {"message": f"no such fake route {path}"})

    # --- Bedrock ------------------------------------------------------------------------

    def _bedrock(self, request: httpx.Request) -> httpx.Response:
        found = _AUTHORIZATION.match(request.headers.get("authorization", ""))
        if found is None:
            return _error(403, {"message": "Missing Authentication Token"})
        secret = self.aws_keys.get(found["key"])
        if secret is None:
            return _error(403, {"message": "The security token included in the request is invalid."})
        if request.headers.get("x-amz-date", "")[:8] != found["date"]:
            return _error(403, {"message": "Credential scope date does not match X-Amz-Date"})
        signed = found["signed"].split(";")
        rebuilt = AWSRequest(
            method=request.method,
            url=str(request.url),
            data=request.content,
            headers={name: request.headers[name] for name in signed},
        )
        rebuilt.context["timestamp"] = request.headers["x-amz-date"]
        signer = SigV4Auth(
            Credentials(found["key"], secret, request.headers.get("x-amz-security-token")), "bedrock", found["region"]
        )
        expected = signer.signature(signer.string_to_sign(rebuilt, signer.canonical_request(rebuilt)), rebuilt)
        if not hmac.compare_digest(expected, found["signature"]) or "host" not in signed:
            body = json.loads((BEDROCK / "error_signature.json").read_text())
            return httpx.Response(403, json=body, headers={"x-amzn-ErrorType": "InvalidSignatureException"})
        if request.url.path.endswith("/invoke"):  # InvokeModel: the model's own body, echoed here
            return httpx.Response(200, json={"invoked": json.loads(request.content)})
        raw_model = request.url.raw_path.decode().split("/model/", 1)[1].rsplit("/", 1)[0]
        if unquote(raw_model) in self.framed:
            stream = self.framed[unquote(raw_model)]
            return httpx.Response(200, content=stream, headers={"content-type": "application/vnd.amazon.eventstream"})
        status, name = self.answers[unquote(raw_model)]
        fixture = DOCUMENTED / name
        if path_is_stream(request) and status == 200:
            return httpx.Response(
                200, content=event_stream(fixture), headers={"content-type": "application/vnd.amazon.eventstream"}
            )
        return httpx.Response(status, content=fixture.read_bytes(), headers={"content-type": "application/json"})

    # --- Google's token endpoint and Vertex AI ----------------------------------------------

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = {name: values[0] for name, values in parse_qs(request.content.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return _error(400, {"error": "unsupported_grant_type"})
        certs = {key_id: account.public_pem.decode() for key_id, account in self.accounts.items()}
        try:
            claims = jwt.decode(form.get("assertion", ""), certs=certs, audience=str(request.url))
        except ValueError as exc:
            return _error(400, {"error": "invalid_grant", "error_description": f"Invalid JWT Signature ({exc})"})
        if claims.get("scope") != "https://www.googleapis.com/auth/cloud-platform":
            return _error(400, {"error": "invalid_scope"})
        template = json.loads((VERTEX / "token.json").read_text())
        token = f"ya29.fake-{next(self._serial)}"
        self._issued.add(token)
        self.fetches.append((str(claims["iss"]), str(request.url), token))
        return httpx.Response(200, json={**template, "access_token": token, "expires_in": self.token_lifetime})

    def _vertex(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self._issued:
            return _error(
                401,
                {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                           "status": "UNAUTHENTICATED"}},
            )  # fmt: skip
        model = request.url.path.rsplit("/models/", 1)[1].split(":", 1)[0]
        status, name = self.answers[model]
        fixture = DOCUMENTED / name
        media = "text/event-stream" if name.endswith(".sse") else "application/json"
        return httpx.Response(status, content=fixture.read_bytes(), headers={"content-type": media})


def path_is_stream(request: httpx.Request) -> bool:
    return request.url.path.endswith("/converse-stream")


@asynccontextmanager
async def cloud_app(tmp: Path, fake: CloudFake, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """modelport on SQLite whose upstreams are `fake`, and a client calling it as the admin."""
    async with cloud_served(tmp, fake, **settings) as (_application, client):
        yield client


@asynccontextmanager
async def cloud_served(tmp: Path, fake: CloudFake, **settings: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """As `cloud_app`, with the application (for clients of its own, such as the SGP SDK)."""
    from modelport.config import Settings
    from tests.conftest import ADMIN_KEY, in_process

    configured = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp / 'cloud.db'}",
        api_key=ADMIN_KEY,
        embedded_engine=False,
        upstream_attempts=1,
        secret_key="a-test-only-secret-key",
        **settings,
    )
    async with in_process(configured, upstream=fake) as served:
        yield served
