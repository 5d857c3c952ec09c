"""What an adapter's call to its vendor is made of: a request (`Outbound`), the answer
(`Inbound`), and what carries one to the other (`Transport`).

These are modelport's own, and small, where the adapters used httpx's `Request` and
`Response`: building those (their `Headers` normalised and merged, a URL object, a byte
stream, a response wrapping another response's body) was about a tenth of the gateway's
CPU on a JSON request (issue 27). The network is aiohttp's pool
(`vendors/transport.py`); tests, and anyone embedding modelport, may still hand in an
httpx transport (`HttpxTransport` there), which sees the httpx request it always saw.

A failure to get an answer is raised as httpx's transport errors (`httpx.ConnectError`,
`httpx.ReadTimeout`, ...), whichever transport carried it: they are plain exception
classes, raised only when a call fails, and every message that names one stays as it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

import httpx
from yarl import URL

if TYPE_CHECKING:
    from modelport.vendors.bounded import AnswerBounds


@dataclass(frozen=True, slots=True)
class Address:
    """A URL as httpx reads and encodes it (so what is sent, and signed, is what it was),
    parsed once: each deployment calls the same few."""

    text: str  # encoded: what goes on the request line, and into a SigV4 signature
    scheme: str
    host: str
    port: int | None
    path: str
    netloc: str  # the Host header: host (IDNA-encoded already) and any port given
    wire: URL  # the same, for aiohttp: yarl is told not to decode it again


@lru_cache(maxsize=1024)
def address(url: str, query: tuple[tuple[str, str], ...] = ()) -> Address:
    """`url`, with `query` merged into its own query as httpx merges `params`. At most
    1,024 are kept, the least recently used dropped (a templated base_url makes more)."""
    parsed = httpx.URL(url)
    if query:
        parsed = parsed.copy_merge_params(dict(query))
    text = str(parsed)
    return Address(
        text=text,
        scheme=parsed.scheme,
        host=parsed.host,
        port=parsed.port,
        path=parsed.path,
        netloc=parsed.netloc.decode("ascii"),
        wire=URL(text, encoded=True),
    )


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to connect, and of silence on the socket while an answer is read."""

    connect: float | None
    read: float | None


@dataclass(slots=True)
class Outbound:
    """A request ready to send: its headers in the order and spelling they go out."""

    method: str
    url: Address
    headers: list[tuple[str, str]]
    body: bytes
    timeouts: Timeouts

    def set_header(self, name: str, value: str) -> None:
        """As httpx's `headers[name] = value`: the first of that name takes the value where
        it stands and any others go; a new name goes last."""
        lower = name.lower()
        kept: list[tuple[str, str]] = []
        placed = False
        for given, old in self.headers:
            if given.lower() != lower:
                kept.append((given, old))
            elif not placed:
                kept.append((given, value))
                placed = True
        if not placed:
            kept.append((name, value))
        self.headers = kept

    def merged_headers(self) -> dict[str, str]:
        """Lower-case names, a name sent twice joined with ", " (as httpx's `items()`)."""
        merged: dict[str, str] = {}
        for name, value in self.headers:
            lower = name.lower()
            merged[lower] = f"{merged[lower]}, {value}" if lower in merged else value
        return merged


class Inbound:
    """An answer's status and headers, with its body not yet read: `body` gives it as it
    arrived (still encoded, unless `decoded`), and `aclose` ends it, handing the
    connection back to the pool when the body was read to its end."""

    __slots__ = ("_close", "body", "bounds", "decoded", "headers", "request", "status_code")

    def __init__(
        self,
        status_code: int,
        headers: Mapping[str, str],
        request: Outbound,
        body: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]],
        *,
        decoded: bool = False,
    ) -> None:
        self.status_code = status_code
        self.headers = headers  # looked up by any spelling of a name
        self.request = request
        self.body = body
        # True for an answer an httpx transport built in memory: httpx decoded it already.
        self.decoded = decoded
        # Set by `vendors.upstream.send`: what reading this answer is held to.
        self.bounds: AnswerBounds | None = None
        self._close = close

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    async def aclose(self) -> None:
        await self._close()


class Transport(Protocol):
    """Carries a request to its upstream and returns the answer once its headers are in."""

    async def send(self, request: Outbound) -> Inbound: ...

    async def aclose(self) -> None: ...
