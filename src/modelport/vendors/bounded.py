"""Reading an upstream's answer within bounds (SPEC 9).

The upstream is whatever an account admin writes into `base_url`, so its answer is
untrusted input: a 2 MB gzip that inflates to 2 GiB, an endless stream, one 800 MB SSE
line, a byte a second. Each is stopped by a setting named in the 502/504 it ends with:

- bytes are counted after decoding, while decoding, 64 KiB at a time: zlib is asked for
  at most that much per call (`max_length`), so a bomb is stopped at its bound plus one
  piece, never inflated first and measured after (httpx's own decoder inflates a whole
  network read at once, up to ~1000x its size);
- only `gzip` is asked for and decoded (`Accept-Encoding: gzip`); an answer in any other
  coding, nested codings included, is refused rather than decoded without a bound;
- an SSE line or event is held only up to its bound, and a stream only up to its total;
- time: to the answer's headers, and then to each complete event (or the whole body of
  an answer that is not a stream), so a drip that keeps the socket busy cannot keep the
  request alive. `upstream_read_timeout` stays the longest silence on the socket.

A bound broken mid-answer leaves unread bytes behind, so the transport closes that
connection instead of handing it back to the pool (vendors/transport.py, `_closer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import zlib
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from modelport.errors import UpstreamError, UpstreamTimeout
from modelport.observability import metrics
from modelport.vendors.sse_framing import Event, Framing
from modelport.vendors.wire import Inbound

if TYPE_CHECKING:
    from modelport.config import Settings

# The most one decoding step produces: the overshoot past a byte bound is at most this.
PIECE_BYTES = 64 * 1024
# Decoding gives the event loop a turn after this many bytes: a network read of gzip
# inflates to up to ~1000x its size without an await, and other requests wait meanwhile.
TURN_BYTES = 1024 * 1024
# The content codings asked for, and so the only ones decoded.
ACCEPT_ENCODING = "gzip"
# An error answer (4xx/5xx) is only quoted, shortened, in the caller's message.
ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class AnswerBounds:
    """The `upstream_*` bounds of config.py (their defaults live there)."""

    max_response_bytes: int
    max_event_bytes: int
    max_stream_bytes: int
    first_byte_seconds: float
    event_gap_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> AnswerBounds:
        return cls(
            max_response_bytes=settings.upstream_max_response_bytes,
            max_event_bytes=settings.upstream_max_event_bytes,
            max_stream_bytes=settings.upstream_max_stream_bytes,
            first_byte_seconds=settings.upstream_first_byte_seconds,
            event_gap_seconds=settings.upstream_event_gap_seconds,
        )

    @classmethod
    def defaults(cls) -> AnswerBounds:
        return _default_bounds()

    @classmethod
    def of(cls, response: Inbound) -> AnswerBounds:
        """What `vendors.upstream.send` said this answer is read within."""
        return response.bounds or cls.defaults()


@functools.cache
def _default_bounds() -> AnswerBounds:
    from modelport.config import Settings  # config does not import vendors; this stays one-way

    return AnswerBounds.from_settings(Settings.model_construct())


def _too_large(vendor: str, what: str, setting: str, limit: int) -> UpstreamError:
    metrics.upstream_failed(vendor, "too_large")
    return UpstreamError(
        f"{vendor} sent {what} larger than MODELPORT_{setting.upper()} ({limit} bytes); the request was ended"
    )


def too_slow(vendor: str, what: str, setting: str, seconds: float) -> UpstreamTimeout:
    metrics.upstream_failed(vendor, "timeout")
    return UpstreamTimeout(
        f"{vendor} did not send {what} within MODELPORT_{setting.upper()} ({seconds:g} s); the request was ended"
    )


def _malformed(vendor: str, what: str) -> UpstreamError:
    metrics.upstream_failed(vendor, "malformed")
    return UpstreamError(f"{vendor} {what}")


# ---- decoding, counted ----------------------------------------------------------------


class _Identity:
    def feed(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data

    def finish(self) -> Iterator[bytes]:
        return iter(())


class _Gzip:
    """gzip, inflated at most PIECE_BYTES per step; the caller counts each piece before
    asking for the next, so nothing past a bound is ever inflated."""

    def __init__(self, vendor: str) -> None:
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._vendor = vendor

    def feed(self, data: bytes) -> Iterator[bytes]:
        while not self._inflate.eof:
            try:
                piece = self._inflate.decompress(data, PIECE_BYTES)
            except zlib.error as exc:
                raise _malformed(self._vendor, f"sent a body that is not valid gzip ({exc})") from None
            data = self._inflate.unconsumed_tail
            if piece:
                yield piece
            # A full piece may leave output pending inside zlib with no input left.
            if not data and len(piece) < PIECE_BYTES:
                return

    def finish(self) -> Iterator[bytes]:
        if not self._inflate.eof:
            raise _malformed(self._vendor, "sent a gzip body that ends before its end")
        return iter(())


def _decoder(response: Inbound, vendor: str) -> _Identity | _Gzip:
    coding = response.headers.get("content-encoding", "").strip().lower()
    if coding in ("", "identity"):
        return _Identity()
    if coding in ("gzip", "x-gzip"):
        return _Gzip(vendor)
    raise _malformed(vendor, f"answered in content encoding {coding!r}, which modelport did not ask for")


async def _decoded(
    response: Inbound,
    *,
    vendor: str,
    what: str,
    setting: str,
    limit: int,
    due: Callable[[], float] | None,
) -> AsyncGenerator[bytes, None]:
    """The body's decoded pieces; more than `limit` bytes, encoded or decoded, end it, and
    so does a read still waiting at the loop time `due()` (TimeoutError). With no `due`,
    the caller holds the one deadline of the whole body around its reading."""
    decoder = _decoder(response, vendor)
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:  # refused before reading any of it
        raise _too_large(vendor, what, setting, limit)
    if response.decoded:  # an answer an httpx transport built in memory
        decoder = _Identity()
    encoded = decoded = since_turn = 0
    reads = response.body
    try:
        while True:
            if due is None:
                chunk = await anext(reads, None)
            else:
                # One deadline per network read (an event's own would cost a timer per event).
                async with asyncio.timeout_at(due()):
                    chunk = await anext(reads, None)
            if chunk is None:
                break
            encoded += len(chunk)
            if encoded > limit:
                raise _too_large(vendor, what, setting, limit)
            for piece in decoder.feed(chunk):
                decoded += len(piece)
                if decoded > limit:
                    raise _too_large(vendor, what, setting, limit)
                yield piece
                since_turn += len(piece)
                if since_turn >= TURN_BYTES:
                    since_turn = 0
                    await asyncio.sleep(0)
        for piece in decoder.finish():
            yield piece
    finally:
        # A stream's reader stops at its last event, before the body's end: the reads are
        # closed here, now, rather than by the event loop's finaliser for generators left
        # open (a wake-up system call and a task of its own for each stream).
        close = getattr(reads, "aclose", None)  # an httpx transport's body is a generator; typed an iterator
        if close is not None:
            await close()


def _stream_body(
    response: Inbound, vendor: str, bounds: AnswerBounds, due: Callable[[], float]
) -> AsyncGenerator[bytes, None]:
    """A stream's decoded body (SSE or AWS event stream), within
    MODELPORT_UPSTREAM_MAX_STREAM_BYTES, each read done by the loop time `due()`."""
    return _decoded(
        response, vendor=vendor, what="a stream", setting="upstream_max_stream_bytes",
        limit=bounds.max_stream_bytes, due=due,
    )  # fmt: skip


# ---- whole answers -----------------------------------------------------------------------


def _check_json_type(response: Inbound, vendor: str) -> None:
    """JSON, or no type at all, or text/plain (some compatible servers say so); an HTML
    page or a stream where JSON was asked for is refused before its body is read."""
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in ("", "application/json", "text/json", "text/plain") or media.endswith("+json"):
        return
    raise _malformed(vendor, f"answered with content type {media!r} where JSON was expected")


def _whole_body(response: Inbound, bounds: AnswerBounds, *, vendor: str, what: str) -> AsyncGenerator[bytes, None]:
    """The decoded pieces of an answer that is not a stream: at most
    MODELPORT_UPSTREAM_MAX_RESPONSE_BYTES. The caller reads them all within
    MODELPORT_UPSTREAM_EVENT_GAP_SECONDS (`_whole_within`): one deadline for the whole
    body, where a deadline for each read would cost a timer each, and one more for the
    read that finds the end."""
    return _decoded(
        response,
        vendor=vendor,
        what=what,
        setting="upstream_max_response_bytes",
        limit=bounds.max_response_bytes,
        due=None,
    )


def _whole_within(bounds: AnswerBounds) -> asyncio.Timeout:
    # Safe around the whole loop (a deadline that spans a generator's pieces may also
    # cancel whatever its caller awaits between them): the loops that read a whole body
    # await nothing but the body.
    return asyncio.timeout(bounds.event_gap_seconds)


async def read_json_within(response: Inbound, *, vendor: str) -> Any:
    """The parsed JSON body of a 2xx answer, within MODELPORT_UPSTREAM_MAX_RESPONSE_BYTES
    and, after the headers, MODELPORT_UPSTREAM_EVENT_GAP_SECONDS."""
    bounds = AnswerBounds.of(response)
    _check_json_type(response, vendor)
    body = _whole_body(response, bounds, vendor=vendor, what="an answer")
    whole = bytearray()  # grown in place: joining pieces would hold the body twice
    try:
        async with _whole_within(bounds), contextlib.aclosing(body):
            async for piece in body:
                whole += piece
    except TimeoutError:
        raise too_slow(vendor, "its whole answer", "upstream_event_gap_seconds", bounds.event_gap_seconds) from None
    return parse_json(whole, vendor=vendor, what="answered with")


def parse_json(body: bytes | bytearray | str, *, vendor: str, what: str) -> Any:
    # orjson first: a stream parses one of these per event, and it is several times faster
    # than the standard library. What it refuses (NaN, a lone surrogate, an integer past 64
    # bits, not JSON at all) is read as before, so that an answer reads the same either way.
    with contextlib.suppress(orjson.JSONDecodeError):
        return orjson.loads(body)
    try:
        text = body if isinstance(body, str) else body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(vendor, f"{what} bytes that are not UTF-8 (at byte {exc.start})") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: JSON nested deeper than the parser goes is no answer either.
        raise _malformed(vendor, f"{what} something that is not JSON: {text[:200]!r}") from None


async def read_error_body(response: Inbound, *, vendor: str) -> bytes:
    """The start of an error answer, to quote: never more than ERROR_BODY_BYTES decoded,
    and never waiting longer than MODELPORT_UPSTREAM_EVENT_GAP_SECONDS for it. A body that
    breaks either is cut where it stands: the status already says what went wrong."""
    bounds = AnswerBounds.of(response)
    pieces: list[bytes] = []
    size = 0
    body = _whole_body(response, bounds, vendor=vendor, what="an error answer")
    try:
        async with _whole_within(bounds), contextlib.aclosing(body):
            async for piece in body:
                pieces.append(piece)
                size += len(piece)
                if size >= ERROR_BODY_BYTES:
                    break
    except (TimeoutError, UpstreamError, httpx.TransportError):
        pass
    return b"".join(pieces)[:ERROR_BODY_BYTES]


# ---- server-sent events --------------------------------------------------------------------


def _check_stream_type(response: Inbound, vendor: str) -> None:
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "text/event-stream":
        raise _malformed(vendor, f"did not answer with an event stream: content type {media or 'none'!r}")


async def events_within(response: Inbound, *, vendor: str) -> AsyncGenerator[Event, None]:
    """The server-sent events of a 2xx answer, each within MODELPORT_UPSTREAM_MAX_EVENT_BYTES
    and MODELPORT_UPSTREAM_EVENT_GAP_SECONDS of the one before, all of them within
    MODELPORT_UPSTREAM_MAX_STREAM_BYTES."""
    bounds = AnswerBounds.of(response)
    _check_stream_type(response, vendor)
    framing = Framing(
        bounds.max_event_bytes,
        lambda: _too_large(vendor, "an event", "upstream_max_event_bytes", bounds.max_event_bytes),
        lambda at: _malformed(vendor, f"sent an event that is not UTF-8 (at byte {at})"),
    )
    loop = asyncio.get_running_loop()
    gap = bounds.event_gap_seconds
    # The wait for an event starts when it is asked for: the caller's own time between
    # events (writing to a slow client) is not the upstream's.
    due = loop.time() + gap
    body = _stream_body(response, vendor, bounds, lambda: due)
    # An event left unfinished when the stream ends is dropped, as the SSE standard says.
    try:
        async with contextlib.aclosing(body):
            async for piece in body:
                events = framing.feed(piece)
                while events:
                    for event in events:
                        yield event
                        due = loop.time() + gap
                    events = framing.more()
    except TimeoutError:
        raise too_slow(vendor, "its next event", "upstream_event_gap_seconds", gap) from None


# ---- AWS event streams (binary) ------------------------------------------------------------

# An AWS event-stream message begins with its total length and its headers' length (two
# big-endian uint32s) and a CRC of those; the total counts the prelude and a final CRC.
_PRELUDE_BYTES = 12
EVENT_STREAM_MEDIA = "application/vnd.amazon.eventstream"


async def event_stream_messages(response: Inbound, *, vendor: str) -> AsyncGenerator[bytes, None]:
    """The whole messages of a 2xx answer in AWS's binary event-stream framing (Bedrock's
    ConverseStream), each within MODELPORT_UPSTREAM_MAX_EVENT_BYTES (read from its prelude,
    before its body is held) and MODELPORT_UPSTREAM_EVENT_GAP_SECONDS of the one before,
    all of them within MODELPORT_UPSTREAM_MAX_STREAM_BYTES. The caller decodes each one
    (and checks its CRCs) with botocore's parser."""
    bounds = AnswerBounds.of(response)
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != EVENT_STREAM_MEDIA:
        raise _malformed(vendor, f"did not answer with an AWS event stream: content type {media or 'none'!r}")
    loop = asyncio.get_running_loop()
    due = loop.time() + bounds.event_gap_seconds
    body = _stream_body(response, vendor, bounds, lambda: due)
    pending = bytearray()
    try:
        async with contextlib.aclosing(body):
            async for piece in body:
                pending += piece
                while len(pending) >= _PRELUDE_BYTES:
                    total = int.from_bytes(pending[:4], "big")
                    if total > bounds.max_event_bytes:
                        raise _too_large(vendor, "an event", "upstream_max_event_bytes", bounds.max_event_bytes)
                    if total < _PRELUDE_BYTES + 4:
                        raise _malformed(vendor, f"sent an event-stream message of impossible length {total}")
                    if len(pending) < total:
                        break
                    message = bytes(pending[:total])
                    del pending[:total]
                    yield message
                    due = loop.time() + bounds.event_gap_seconds
    except TimeoutError:
        raise too_slow(vendor, "its next event", "upstream_event_gap_seconds", bounds.event_gap_seconds) from None
    if pending:
        raise _malformed(vendor, "ended its event stream in the middle of a message")
