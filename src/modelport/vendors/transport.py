"""httpx's API over aiohttp's connection pool.

The adapters speak httpx (requests, responses, and the transport seam the
tests use to replay recorded vendor answers), but httpcore's pool is the gateway's most
expensive part under load: `benchmarks/gateway/clients.py` measured 781 requests/s at
32 concurrent requests against 18,854 for aiohttp on the same mock, and 1.3 ms of CPU
per request against 0.05. This transport sends the request with aiohttp instead.

Why not the `httpx-aiohttp` package: it reports a dropped connection as a
`ConnectTimeout`, which would turn a vendor's reset into a misleading 504 "timed out".
Here aiohttp's errors map onto the httpx errors that mean the same thing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from modelport.policy import ServerPolicy, UpstreamDenied

log = logging.getLogger(__name__)

# Said of every upstream that gave no HTTP answer: a closed port, a reset, a port that
# speaks something else. Telling them apart would make the gateway a port scanner of
# whatever it can reach; the cause goes to the server's log only.
NO_HTTP_ANSWER = "no HTTP answer from the upstream (the cause is in the server's log)"


class _CheckedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only addresses the operator allows: the check sits
    between DNS and connect, so a name that resolves to a denied address (a metadata
    service, or a rebinding trick) is never connected to."""

    def __init__(self, policy: ServerPolicy) -> None:
        self._policy = policy
        self._resolver = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        denied: UpstreamDenied | None = None
        allowed = []
        for result in results:
            try:
                self._policy.check_address(ipaddress.ip_address(result["host"]), host=host)
            except UpstreamDenied as exc:
                denied = exc
            else:
                allowed.append(result)
        if not allowed and denied is not None:
            raise _Denied(denied)
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


class _Denied(OSError):
    """Carries the policy's refusal through aiohttp, which wraps resolver errors."""

    def __init__(self, refusal: UpstreamDenied) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal


def _refusal(exc: BaseException) -> UpstreamDenied | None:
    seen: Any = exc
    while seen is not None:
        if isinstance(seen, _Denied):
            return seen.refusal
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return None


def _unanswered(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """A failure before an answer's status line, worded the same whatever the cause
    (timeouts keep their kind: they are told apart by the time they take anyway)."""
    log.warning("upstream %s:%s gave no HTTP answer: %r", request.url.host, request.url.port, exc)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(NO_HTTP_ANSWER, request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout(NO_HTTP_ANSWER, request=request)
    return httpx.ConnectError(NO_HTTP_ANSWER, request=request)


def _mapped(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    return httpx.ReadError(message, request=request)


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request
        self._chunks = response.content.iter_any()  # a plain iterator: nothing to close

    # An iterator of its own rather than an async generator: a stream's reader stops at
    # its last event, before the body's end, and a generator left open there is closed
    # by the event loop's finaliser (a wake-up system call and a task for each stream).
    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _mapped(exc, self._request) from exc

    async def aclose(self) -> None:
        # A body read to the end hands its connection back to the pool; one abandoned
        # half-way (the caller went away) closes it, which stops the vendor's work.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, *, policy: ServerPolicy | None = None, max_connections: int = 512, keepalive_seconds: float = 30.0
    ) -> None:
        self._policy = policy or ServerPolicy()
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        # Hosts already checked, with the server credentials barred from each: the policy
        # and the environment do not change while the server runs.
        self._barred: dict[str, tuple[tuple[str, str], ...]] = {}

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running event loop, as aiohttp requires.
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=self._keepalive_seconds,
            resolver=_CheckedResolver(self._policy),
        )
        # Bodies pass through as sent: vendors/bounded.py decodes them, counting while it decodes.
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        # Names are checked after DNS (the resolver); a literal address never reaches it.
        host = request.url.host
        barred = self._barred.get(host)
        if barred is None:
            self._policy.check_host(host)
            barred = self._barred[host] = self._policy.credentials_barred_from(host)
        if barred:  # the last line: a server credential leaves only for a host tied to it
            texts = [str(request.url), *(value for _, value in request.headers.items())]
            self._policy.check_credentials_sent(host, texts, barred)
        timeout = request.extensions.get("timeout", {})
        try:
            response = await session.request(
                request.method,
                # As httpx encoded it: yarl would otherwise decode `%3A` in a path to `:`,
                # and a signature computed over the encoded path (Bedrock's SigV4) would fail.
                URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=await request.aread() or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=timeout.get("connect"), sock_read=timeout.get("read")
                ),
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            refusal = _refusal(exc)
            if refusal is not None:
                raise refusal from None
            raise _unanswered(exc, request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
