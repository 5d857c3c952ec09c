"""The transports an adapter's request travels by (`vendors/wire.py`'s `Transport`).

`AiohttpTransport` is the network: aiohttp's connection pool. httpcore's pool (httpx's)
was the gateway's most expensive part under load: `benchmarks/gateway/clients.py`
measured 781 requests/s at 32 concurrent requests against 18,854 for aiohttp on the same
mock, and 1.3 ms of CPU per request against 0.05. Its failures are raised as the httpx
errors that mean the same thing (why not the `httpx-aiohttp` package: it reports a
dropped connection as a `ConnectTimeout`, which would turn a vendor's reset into a
misleading 504 "timed out").

`HttpxTransport` speaks to an httpx transport instead: the tests' recorded vendors and
`httpx.MockTransport` (`create_app(upstream_transport=...)`) get the `httpx.Request`
they always got.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from modelport.policy import ServerPolicy, UpstreamDenied
from modelport.vendors.wire import Inbound, Outbound, Timeouts

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


def _unanswered(exc: BaseException, request: Outbound) -> httpx.TransportError:
    """A failure before an answer's status line, worded the same whatever the cause
    (timeouts keep their kind: they are told apart by the time they take anyway)."""
    log.warning("upstream %s:%s gave no HTTP answer: %r", request.url.host, request.url.port, exc)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(NO_HTTP_ANSWER)
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout(NO_HTTP_ANSWER)
    return httpx.ConnectError(NO_HTTP_ANSWER)


def _mapped(exc: BaseException) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    return httpx.ReadError(message)


class _Body:
    """An answer's body as aiohttp reads it off the socket. An iterator of its own rather
    than an async generator: a stream's reader stops at its last event, before the body's
    end, and a generator left open there is closed by the event loop's finaliser (a
    wake-up system call and a task for each stream)."""

    __slots__ = ("_chunks",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._chunks = response.content.iter_any()  # a plain iterator: nothing to close

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _mapped(exc) from exc


def _closer(response: aiohttp.ClientResponse) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        # A body read to the end hands its connection back to the pool; one abandoned
        # half-way (the caller went away, a bound was broken) closes it, which stops the
        # vendor's work and leaves no unread bytes on a pooled connection.
        if response.content.at_eof():
            response.release()
        else:
            response.close()

    return close


class AiohttpTransport:
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
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}

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

    async def send(self, request: Outbound) -> Inbound:
        session = self._session or self._open()
        # Names are checked after DNS (the resolver); a literal address never reaches it.
        host = request.url.host
        barred = self._barred.get(host)
        if barred is None:
            self._policy.check_host(host)
            barred = self._barred[host] = self._policy.credentials_barred_from(host)
        if barred:  # the last line: a server credential leaves only for a host tied to it
            texts = [request.url.text, *(value for _, value in request.headers)]
            self._policy.check_credentials_sent(host, texts, barred)
        timeout = self._timeouts.get(request.timeouts)
        if timeout is None:
            given = request.timeouts
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=given.connect, sock_read=given.read)
            self._timeouts[given] = timeout  # one per client: a handful at most
        try:
            response = await session.request(
                request.method,
                # As httpx encoded it: yarl would otherwise decode `%3A` in a path to `:`,
                # and a signature computed over the encoded path (Bedrock's SigV4) would fail.
                request.url.wire,
                # Names in lower case, as httpx sent them.
                headers=[(name.lower(), value) for name, value in request.headers],
                data=request.body or None,
                allow_redirects=False,
                timeout=timeout,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            refusal = _refusal(exc)
            if refusal is not None:
                raise refusal from None
            raise _unanswered(exc, request) from exc
        return Inbound(response.status, response.headers, request, _Body(response), _closer(response))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxTransport:
    """An httpx transport behind modelport's `Transport`: it is sent the `httpx.Request`
    httpx.AsyncClient would have built (the same headers, URL, body and timeouts)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def send(self, request: Outbound) -> Inbound:
        timeouts = request.timeouts
        sent = httpx.Request(
            request.method,
            request.url.text,
            headers=request.headers,
            stream=httpx.ByteStream(request.body),
            # As httpx.Timeout(read, connect=connect) gives them.
            extensions={
                "timeout": {
                    "connect": timeouts.connect,
                    "read": timeouts.read,
                    "write": timeouts.read,
                    "pool": timeouts.read,
                }
            },
        )
        sent.read()  # as httpx does with a body given whole: `request.content` is there
        response = await self._transport.handle_async_request(sent)
        response.request = sent
        if response.is_stream_consumed:
            # Built in memory (`httpx.Response(200, json=...)`): httpx has read and decoded it.
            return Inbound(
                response.status_code, response.headers, request, _once(response.content), response.aclose, decoded=True
            )
        return Inbound(response.status_code, response.headers, request, response.aiter_raw(), response.aclose)

    async def aclose(self) -> None:
        await self._transport.aclose()


async def _once(content: bytes) -> AsyncIterator[bytes]:
    yield content
