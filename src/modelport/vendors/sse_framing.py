"""Server-sent events framed from a stream's decoded bytes, each held only up to its bound
(the bounds and their errors are vendors/bounded.py's, which reads the stream)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from modelport.errors import UpstreamError


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    data: str


class Lines:
    """Splits decoded bytes into lines (LF, CRLF or CR, as SSE allows), holding at most
    `limit` bytes of a line that has not ended yet."""

    def __init__(self, limit: int, too_long: Callable[[], UpstreamError]) -> None:
        self._pending = bytearray()
        self._limit = limit
        self._too_long = too_long

    def feed(self, piece: bytes) -> list[bytes]:
        # A CR held back ends its line once any byte but LF follows it.
        held_cr = self._pending.endswith(b"\r")
        self._pending += piece
        if not held_cr and b"\n" not in piece and b"\r" not in piece:
            if len(self._pending) > self._limit:
                raise self._too_long()
            return []
        buffer = bytes(self._pending)
        if len(buffer) <= self._limit + 2:
            return self._within(buffer)
        lines = buffer.splitlines(keepends=True)
        last = lines[-1]
        # A line without its end, or ending in CR (perhaps the first half of a CRLF), waits.
        unfinished = not last.endswith((b"\n", b"\r")) or last.endswith(b"\r")
        self._pending = bytearray(lines.pop() if unfinished else b"")
        if any(len(line) > self._limit + 2 for line in lines) or len(self._pending) > self._limit:
            raise self._too_long()
        return [line.rstrip(b"\r\n") for line in lines]

    def _within(self, buffer: bytes) -> list[bytes]:
        """`feed`'s answer where the whole buffer is within the bound, so no line of it can
        break it (the usual case, checked once rather than line by line)."""
        lines = buffer.splitlines()  # their ends removed
        if buffer.endswith(b"\n"):
            self._pending = bytearray()
        elif buffer.endswith(b"\r"):  # perhaps the first half of a CRLF: that line waits
            self._pending = bytearray(lines.pop() + b"\r")
        else:  # the last line has not ended
            self._pending = bytearray(lines.pop())
        if len(self._pending) > self._limit:
            raise self._too_long()
        return lines


class Framing:
    """Whole server-sent events from decoded bytes, each within
    MODELPORT_UPSTREAM_MAX_EVENT_BYTES. Not a generator: `feed` answers the events a
    piece completes (most often one or none), so that the stream's one generator
    (`events_within`) is the only one each event passes."""

    def __init__(
        self, limit: int, too_big: Callable[[], UpstreamError], not_utf8: Callable[[int], UpstreamError]
    ) -> None:
        self._limit = limit
        self._too_big = too_big
        self._not_utf8 = not_utf8
        self._lines = Lines(limit, too_big)
        self._name = ""
        self._data: list[str] = []
        self._size = 0
        self._unread: list[bytes] = []

    def feed(self, piece: bytes) -> list[Event]:
        """The events a piece completes."""
        self._unread = self._lines.feed(piece)
        return self.more()

    def more(self) -> list[Event]:
        """The events of the lines not read yet. A line that ends the stream (too big, not
        UTF-8) is raised only once the events before it are passed on: this answers those,
        and the next call raises. So, as when lines were read one at a time on demand, a
        caller that stops first (`[DONE]`) gets the same events and no error, nor its count."""
        events: list[Event] = []
        lines, self._unread = self._unread, []
        for index, raw in enumerate(lines):
            problem = self._read(raw, events)
            if problem is not None:
                if events:
                    self._unread = lines[index:]
                    return events
                raise problem()
        return events

    def _read(self, raw: bytes, events: list[Event]) -> Callable[[], UpstreamError] | None:
        """Take one line, an event it ends into `events`; or, changing nothing, what to
        raise when the line ends the stream."""
        if raw.startswith(b"data:"):  # most lines: read on bytes, only the value decoded
            start = 6 if raw.startswith(b" ", 5) else 5
            try:
                value = raw[start:].decode("utf-8")
            except UnicodeDecodeError as exc:
                return functools.partial(self._not_utf8, start + exc.start)
        else:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return functools.partial(self._not_utf8, exc.start)
            if not line:  # a blank line ends the event
                if self._data:
                    events.append(Event(self._name, "\n".join(self._data)))
                    self._data = []
                self._name, self._size = "", 0
                return None
            field, _, value = line.partition(":")
            if field != "data":
                if field == "event":
                    self._name = value[1:] if value.startswith(" ") else value
                # `id`, `retry` and comments (a line starting with ":") mean nothing here.
                return None
            if value.startswith(" "):
                value = value[1:]
        if self._size + len(raw) > self._limit:
            return self._too_big
        self._size += len(raw)
        self._data.append(value)
        return None
