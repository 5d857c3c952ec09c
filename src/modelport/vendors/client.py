"""The client the adapters call vendors with: it builds a request (`vendors/wire.py`) the
way httpx.AsyncClient built it, and sends it over one transport (`vendors/transport.py`'s
aiohttp pool, or an httpx transport a test hands in).

What httpx.AsyncClient did per request that a gateway's calls never use is not done:
merging the request's URL and headers with the client's, the auth and redirect loops
(modelport follows no redirect: a vendor that answers 302 is refused, `vendors/upstream.py`),
the cookie jar (which would also carry one tenant's upstream cookies into another's calls).
What reaches the wire is the same: the same default headers in the same order, the same
URL encoding, the same timeouts (`tests/vendors/test_client.py` holds it to httpx's).
"""

from __future__ import annotations

import functools
from urllib.parse import urlencode

import httpx

from modelport.vendors.transport import HttpxTransport
from modelport.vendors.wire import Address, Inbound, Outbound, Timeouts, Transport, address

# What httpx.AsyncClient sends unless told otherwise (`send` replaces accept-encoding), by
# lower-case name.
_DEFAULTS: dict[str, tuple[str, str]] = {
    "accept": ("accept", "*/*"),
    "accept-encoding": ("accept-encoding", "gzip, deflate"),
    "connection": ("connection", "keep-alive"),
    "user-agent": ("user-agent", f"python-httpx/{httpx.__version__}"),
}
# The methods httpx sends a `Content-Length: 0` with when they carry no body.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FORM = "application/x-www-form-urlencoded"


@functools.cache
def default_timeouts() -> Timeouts:
    from modelport.config import Settings  # config does not import vendors; this stays one-way

    defaults = Settings.model_construct()
    return Timeouts(connect=defaults.upstream_connect_timeout, read=defaults.upstream_read_timeout)


def _header_list(
    url: Address, method: str, body: bytes, given: dict[str, str] | None, content_type: str | None = None
) -> list[tuple[str, str]]:
    """The headers httpx would send with `body` (`Request(content=...)`, or `data=` for a
    form with its `content_type`, after `AsyncClient`'s defaults), in its order: `Host` and
    an empty body's `Content-Length: 0` first, then the defaults `given` does not name,
    then `given` (as `Headers.update` merges them), then the body's `Content-Length` and
    a form's `Content-Type`."""
    given = given or {}
    named = {name.lower() for name in given}
    listed: list[tuple[str, str]] = [pair for lower, pair in _DEFAULTS.items() if lower not in named]
    listed.extend(given.items())
    sized = "content-length" in named or "transfer-encoding" in named
    if body and "content-length" not in named:
        listed.append(("Content-Length", str(len(body))))
        sized = True
    if content_type is not None and "content-type" not in named:
        listed.append(("Content-Type", content_type))
    first: list[tuple[str, str]] = []
    if "host" not in named and url.host:
        first.append(("Host", url.netloc))
    if not sized and method in _BODY_METHODS:
        first.append(("Content-Length", "0"))
    return first + listed


class UpstreamClient:
    """Builds requests and sends them over one transport; the answer's body is left for
    the caller to read within its bounds (`vendors/bounded.py`)."""

    def __init__(self, transport: Transport | httpx.AsyncBaseTransport, timeouts: Timeouts | None = None) -> None:
        # An httpx transport (a test's recorded vendor, `httpx.MockTransport`) is spoken to in httpx's terms.
        self._transport = HttpxTransport(transport) if isinstance(transport, httpx.AsyncBaseTransport) else transport
        self._timeouts = timeouts or default_timeouts()

    def build_request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Outbound:
        """A request with a body of bytes (`content`) or a form (`data`: a token
        exchange), its query merged from `params` into the URL's own."""
        parsed = address(url, tuple(params.items()) if params else ())
        method = method.upper()
        if data is not None:
            body = urlencode(data, doseq=True).encode()
            listed = _header_list(parsed, method, body, headers, _FORM)
        else:
            body = content or b""
            listed = _header_list(parsed, method, body, headers)
        return Outbound(method, parsed, listed, body, self._timeouts)

    async def send(self, request: Outbound) -> Inbound:
        return await self._transport.send(request)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
