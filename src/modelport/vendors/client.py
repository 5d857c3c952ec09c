"""The HTTP client the adapters call vendors with: httpx's requests and responses, sent
straight to a transport (`vendors/transport.py`'s aiohttp pool, or what tests inject).

`httpx.AsyncClient` does per request what a gateway's upstream calls never use: merging
the request's URL and headers with the client's, the auth and redirect loops (modelport
follows no redirect: a vendor that answers 302 is refused, `vendors/upstream.py`), the
cookie jar (which would also carry one tenant's upstream cookies into another's calls),
proxies from the environment (none apply when a transport is given). On the hot path
that bookkeeping was about a tenth of the gateway's CPU per request (issue 27).
`UpstreamClient` keeps the two calls the adapters make, with the same requests on the
wire: the same default headers, the same timeouts, the same errors.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

import httpx


class HttpClient(Protocol):
    """What the adapters ask of a client: an `httpx.AsyncClient`, or `UpstreamClient`."""

    def build_request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = ...,
        data: dict[str, Any] | None = ...,
        headers: dict[str, str] | None = ...,
        params: dict[str, str] | None = ...,
    ) -> httpx.Request: ...

    async def send(self, request: httpx.Request, *, stream: bool = ...) -> httpx.Response: ...

    async def aclose(self) -> None: ...


# What httpx.AsyncClient sends unless told otherwise (`send` replaces accept-encoding).
_DEFAULT_HEADERS = httpx.Headers(
    {
        "accept": "*/*",
        "accept-encoding": "gzip, deflate",
        "connection": "keep-alive",
        "user-agent": f"python-httpx/{httpx.__version__}",
    }
)
# The same, by lower-case name, for `_header_list`.
_DEFAULTS: dict[str, tuple[str, str]] = {name: (name, value) for name, value in _DEFAULT_HEADERS.items()}
# The methods httpx sends a `Content-Length: 0` with when they carry no body.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@lru_cache(maxsize=1024)
def _parsed(url: str) -> httpx.URL:
    """A URL parsed once: each deployment calls the same few (parsing one was a tenth of
    building a request). At most 1,024 are kept, the least recently used dropped."""
    return httpx.URL(url)


def _header_list(url: httpx.URL, method: str, body: bytes, given: dict[str, str] | None) -> list[tuple[str, str]]:
    """The headers httpx would send with `body` (`Request(content=...)` after
    `AsyncClient`'s defaults), in its order: `Host` and an empty body's `Content-Length:
    0` first, then the defaults `given` does not name, then `given` (as `Headers.update`
    merges them), then the body's `Content-Length`. `tests/vendors/test_client.py` holds
    it to httpx's."""
    given = given or {}
    named = {name.lower() for name in given}
    listed: list[tuple[str, str]] = [pair for lower, pair in _DEFAULTS.items() if lower not in named]
    listed.extend(given.items())
    sized = "content-length" in named or "transfer-encoding" in named
    if body and "content-length" not in named:
        listed.append(("Content-Length", str(len(body))))
        sized = True
    first: list[tuple[str, str]] = []
    if "host" not in named and url.host:
        first.append(("Host", url.netloc.decode("ascii")))  # IDNA-encoded already
    if not sized and method in _BODY_METHODS:
        first.append(("Content-Length", "0"))
    return first + listed


class UpstreamClient:
    """`build_request` and `send` (always streamed: the body is read by the caller,
    within its bounds) over one transport."""

    def __init__(self, transport: httpx.AsyncBaseTransport, timeout: httpx.Timeout) -> None:
        self._transport = transport
        self._timeout = timeout.as_dict()

    def build_request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Request:
        if data is not None or params is not None:
            # A form or a query (a token exchange, a few vendors' URLs): httpx encodes them.
            sent = _DEFAULT_HEADERS.copy()
            if headers:
                sent.update(headers)
            return httpx.Request(
                method,
                _parsed(url),
                content=content,
                data=data,
                headers=sent,
                params=params,
                extensions={"timeout": self._timeout},
            )
        # A body of bytes, as every model call sends: the header list is made here in one
        # pass, where httpx copies, merges and rebuilds it four times (issue 27).
        parsed = _parsed(url)
        request = httpx.Request(
            method,
            parsed,
            headers=_header_list(parsed, method.upper(), content or b"", headers),
            stream=httpx.ByteStream(content or b""),
            extensions={"timeout": self._timeout},
        )
        request.read()  # as httpx does with a body given whole: `request.content` is there
        return request

    async def send(self, request: httpx.Request, *, stream: bool = True) -> httpx.Response:
        if not stream:
            raise ValueError("UpstreamClient sends streamed requests only: read the body within its bounds")
        response = await self._transport.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()
