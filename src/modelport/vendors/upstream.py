"""What every HTTP vendor adapter shares: sending with bounded retries, mapping
failures to the caller's status codes, reading SSE, and finding credentials.

Retries happen only before the first byte of an answer: a connection error, a 429 or
a 5xx is tried again with exponential backoff; once a stream has started, a failure
ends it (it cannot be replayed without sending text twice).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import functools
import json
import math
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import httpx
import orjson

from modelport.errors import (
    InvalidRequest,
    MissingCredential,
    ModelportError,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from modelport.observability import metrics
from modelport.policy import MIN_TRACKED_SECRET, header_problem
from modelport.vendors.base import Target
from modelport.vendors.bounded import (
    ACCEPT_ENCODING,
    AnswerBounds,
    event_stream_messages,
    events_within,
    parse_json,
    read_error_body,
    read_json_within,
    too_slow,
)
from modelport.vendors.client import UpstreamClient
from modelport.vendors.wire import Inbound, Outbound

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How an upstream is called: its tries before the first byte, and the bounds its
    answer is read within (vendors/bounded.py)."""

    attempts: int = 3  # tries in all, the first included
    backoff: float = 0.25  # seconds before the 2nd try; doubles after each
    max_backoff: float = 4.0
    answers: AnswerBounds = field(default_factory=AnswerBounds.defaults)


def api_key_for(target: Target, vendor: str) -> str | None:
    """The credential for a target: none, or the server environment variable that
    `model_creation_parameters.api_key_env` names (503 naming it when unset)."""
    if target.api_key:
        return target.api_key
    variable = target.settings.api_key_env
    if not variable:
        return None
    value = os.environ.get(str(variable))
    if not value:
        raise MissingCredential(
            f"the {vendor} credential is missing: environment variable {variable} is not set on the modelport server"
        )
    return value


def upstream_model(target: Target) -> str:
    """The vendor's own name for the model (`model_creation_parameters.model`)."""
    model = target.settings.model
    if not model:
        raise InvalidRequest(f"deployment {target.deployment_id} names no upstream `model` in its parameters")
    return model


def configured_headers(target: Target) -> dict[str, str]:
    """`model_creation_parameters.headers`: extra headers for every upstream request.
    A value filled from a request's bindings is checked here, once filled: CR, LF or
    another control character would split the request (400, never sent)."""
    headers = dict(target.settings.headers or {})
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem:
            raise InvalidRequest(
                f"deployment {target.deployment_id}: {problem} (filled from model_request_parameters.bindings?)"
            )
    return headers


def json_request(
    client: UpstreamClient,
    url: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
) -> Outbound:
    """A POST with a JSON body, encoded by orjson (several times faster than the
    standard library)."""
    return client.build_request(
        "POST",
        url,
        content=orjson.dumps(body),
        headers={"content-type": "application/json", **headers},
        params=params,
    )


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Remove credentials from a vendor's message before it reaches a caller or a log:
    as sent, and as a vendor (or a host that is not one) may echo them back encoded."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
            if len(secret) >= MIN_TRACKED_SECRET:  # shorter encodings would match by chance
                text = _echoes(secret).sub("[redacted]", text)
    # Key-looking tokens the vendor may echo back (e.g. "Incorrect API key provided: sk-...").
    return re.sub(r"\b(sk|mp|key)-[A-Za-z0-9_\-]{8,}", "[redacted]", text)


def without_credential(payload: Any, secret: str | None) -> Any:
    """A JSON value relayed to a caller as the upstream wrote it (`/v1/responses` passed
    through), with the credential it was sent removed from every string, as sent or
    encoded. Nothing else is touched: unlike `scrub`, no key-looking token is, since the
    strings here are the model's own text."""
    if not secret:
        return payload
    if isinstance(payload, str):
        cleaned = payload.replace(secret, "[redacted]")
        return _echoes(secret).sub("[redacted]", cleaned) if len(secret) >= MIN_TRACKED_SECRET else cleaned
    if isinstance(payload, dict):
        return {name: without_credential(value, secret) for name, value in payload.items()}
    if isinstance(payload, list):
        return [without_credential(value, secret) for value in payload]
    return payload


@functools.lru_cache(maxsize=256)
def _echoes(secret: str) -> re.Pattern[str]:
    """A secret reversed, hex-encoded (either case) or base64-encoded (standard or URL
    alphabet). Base64 is matched by its whole 4-character groups, which are the same
    wherever the secret ends, then the rest of the run: a secret encoded with text
    after it (`user:key` in Basic auth is another matter: its groups shift)."""
    raw = secret.encode()
    whole = raw[: len(raw) - len(raw) % 3]
    forms = [re.escape(secret[::-1]), "(?i:" + re.escape(raw.hex()) + ")"]
    for encoded in {base64.b64encode(whole).decode(), base64.urlsafe_b64encode(whole).decode()}:
        forms.append(re.escape(encoded) + r"[A-Za-z0-9+/_\-]*=*")
    return re.compile("|".join(forms))


# The most of a vendor's error message a caller or a log line is given.
QUOTED_CHARS = 500


def vendor_message(body: bytes) -> str:
    """The human-readable part of a vendor's error body (OpenAI, Anthropic and Google
    all nest it as error.message), else the body itself; whole (shorten it once the
    credentials are scrubbed from it: a cut may fall inside one)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if payload.get("detail"):
            return str(payload["detail"])
    return json.dumps(payload)


def error_for(response: Inbound, body: bytes, *, vendor: str, secrets: Iterable[str | None]) -> ModelportError:
    message = scrub(vendor_message(body), secrets)[:QUOTED_CHARS]
    if response.status_code == 429:
        return RateLimited(
            f"{vendor} is rate limiting this deployment: {message}",
            # Always one (the README promises it): a vendor that names no usable time gets
            # the shortest honest guess, a second.
            retry_after=_retry_after_passed_on(response.headers.get("retry-after")) or "1",
        )
    if response.status_code in (408, 504):
        return UpstreamTimeout(f"{vendor} timed out: {message}")
    if response.status_code in (400, 413, 422):
        # The vendor refused this request (too long a prompt, a value it rejects):
        # the caller's to fix, so not a "vendor failed" 502.
        return InvalidRequest(f"{vendor} refused the request: {message}", upstream_status=response.status_code)
    if response.status_code == 404:
        # Most often a wrong base_url or model: say which address was called.
        return UpstreamError(
            f"{vendor} answered 404 for {called_url(response)}: {message}", upstream_status=response.status_code
        )
    return UpstreamError(f"{vendor} answered {response.status_code}: {message}", upstream_status=response.status_code)


def called_url(response: Inbound) -> str:
    """The address a response answered, without its query or user info (where a
    credential could sit)."""
    url = response.request.url
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


async def send(
    client: UpstreamClient,
    request: Outbound,
    *,
    vendor: str,
    policy: RetryPolicy,
    secrets: Iterable[str | None] = (),
) -> Inbound:
    """Send and return a 2xx response with its body not yet read (the caller streams
    or reads it with `read_json` or `sse_json`, which close it, within `policy.answers`).
    Failures are raised as ModelportErrors."""
    secrets = tuple(secrets)
    delay = policy.backoff
    first_byte = policy.answers.first_byte_seconds
    # Only what is decoded within a bound is asked for (a vendor's own default may be br).
    request.set_header("accept-encoding", ACCEPT_ENCODING)
    for attempt in range(1, policy.attempts + 1):
        last = attempt == policy.attempts
        try:
            async with asyncio.timeout(first_byte):
                response = await client.send(request)
        except TimeoutError:
            if last:
                raise too_slow(vendor, "its answer's headers", "upstream_first_byte_seconds", first_byte) from None
        except httpx.TimeoutException as exc:
            if last:
                metrics.upstream_failed(vendor, "timeout")
                raise UpstreamTimeout(f"{vendor} did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            if last:
                metrics.upstream_failed(vendor, "connect")
                raise UpstreamError(
                    f"could not reach {vendor}: {scrub(str(exc) or type(exc).__name__, secrets)}"
                ) from exc
        else:
            response.bounds = policy.answers
            if response.is_success:
                return response
            try:
                body = await read_error_body(response, vendor=vendor)
            finally:
                await response.aclose()
            if last or response.status_code not in RETRYABLE_STATUS:
                metrics.upstream_failed(vendor, str(response.status_code))
                raise error_for(response, body, vendor=vendor, secrets=secrets)
            retry_after = _seconds(response.headers.get("retry-after"))
            if retry_after is not None:
                delay = max(delay, retry_after)
        metrics.upstream_retried(vendor)
        await asyncio.sleep(min(delay, policy.max_backoff))
        delay *= 2
    raise AssertionError("unreachable")  # the last attempt returns or raises


def _retry_after_passed_on(value: str | None) -> str | None:
    """A vendor's Retry-After as the caller gets it: rewritten from what it says (whole
    seconds, or an HTTP date), never copied, since a vendor may put any text there, the
    credential it was sent included; a value that says neither is dropped."""
    seconds = _seconds(value)
    if seconds is not None and math.isfinite(seconds):
        return str(math.ceil(seconds))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value or "")
        if when.tzinfo is not None:
            return email.utils.format_datetime(when.astimezone(UTC), usegmt=True)
    return None


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(float(value), 0.0)
    return None


@contextlib.asynccontextmanager
async def _reading(response: Inbound, *, vendor: str, what: str) -> AsyncIterator[None]:
    """Read an answer's body: failures after the status line are the vendor's, and
    the response is closed however reading ends (finished, failed or abandoned)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        metrics.upstream_failed(vendor, "timeout")
        raise UpstreamTimeout(f"{vendor} stalled mid-{what}") from exc
    except httpx.TransportError as exc:
        metrics.upstream_failed(vendor, "broken")
        raise UpstreamError(f"{vendor} broke the connection mid-{what} ({type(exc).__name__})") from exc
    finally:
        await response.aclose()


async def read_json(response: Inbound, *, vendor: str) -> Any:
    """The parsed body of a 2xx answer from `send`, read within its bounds."""
    async with _reading(response, vendor=vendor, what="response"):
        return await read_json_within(response, vendor=vendor)


async def sse_json(response: Inbound, *, vendor: str) -> AsyncGenerator[tuple[str, Any], None]:
    """(event name, parsed JSON data) for each server-sent event of a 2xx answer from
    `send`, read within its bounds; `[DONE]` ends it."""
    async with _reading(response, vendor=vendor, what="stream"):
        events = events_within(response, vendor=vendor)
        async with contextlib.aclosing(events):
            async for event in events:
                data = event.data.strip()
                if data == "[DONE]":
                    return
                if data:
                    yield event.name, parse_json(data, vendor=vendor, what="sent an event with")


async def event_stream(response: Inbound, *, vendor: str) -> AsyncGenerator[bytes, None]:
    """As `sse_json`, for AWS's binary event-stream framing: each whole message of a 2xx
    answer from `send`, read within its bounds (the caller decodes it)."""
    async with _reading(response, vendor=vendor, what="stream"):
        messages = event_stream_messages(response, vendor=vendor)
        async with contextlib.aclosing(messages):
            async for message in messages:
                yield message


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")
