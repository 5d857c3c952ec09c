"""Stream-safe stop sequences.

Text arrives in arbitrary pieces (tokens, SSE chunks). A stop sequence may be split
across pieces, so the filter holds back the shortest tail that could still grow into a
stop sequence and releases everything before it. No part of a stop sequence is ever
released, and the concatenation of everything released equals the full text cut at
the first stop sequence: the one that completes first.

`OutputFilter` applies it to a vendor's chunks, keeping their per-token logprobs in step
with the text it releases.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from modelport.generation import GenerationChunk, TokenLogprob


class StopSequenceFilter:
    """Feed text pieces in; get back the text that is safe to send on."""

    def __init__(self, stop_sequences: Sequence[str]) -> None:
        if any(not stop for stop in stop_sequences):
            raise ValueError("stop sequences must not be empty")
        self._stops = tuple(dict.fromkeys(stop_sequences))
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop sequence that ended the text

    def feed(self, piece: str) -> str:
        """Add a piece of generated text; return what may be released now.

        After a stop sequence is found, `stopped` is True and further pieces are dropped.
        """
        if self.stopped:
            return ""
        if not self._stops:
            return piece
        buffer = self._held + piece
        # Any occurrence must start inside the held tail or the new piece: a stop that
        # started earlier would have kept its beginning held back. Generation ends at
        # the stop that completes first (ties: the longer one, which starts earlier),
        # so a whole text and the same text in pieces are cut at the same place.
        found = [(i + len(stop), i, stop) for stop in self._stops if (i := buffer.find(stop)) >= 0]
        if found:
            _end, cut, self.matched = min(found)
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = self._longest_stop_prefix_suffix(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The generation ended without a stop sequence: release what was held back."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop."""
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:length]):
                    best = length
                    break
        return best


class OutputFilter:
    """Stop-sequence filtering, with logprob entries kept in step with the text.

    An entry is released once all of its token's bytes have been released; at a stop
    sequence, the entry that straddles it is cut to the bytes before the stop, so the
    released tokens always join to the released text. Counting UTF-8 bytes rather
    than characters keeps tokens that split a character in step.
    """

    def __init__(self, stop_sequences: tuple[str, ...]) -> None:
        self._stops = StopSequenceFilter(stop_sequences)
        self._pending: deque[TokenLogprob] = deque()
        self._unmatched = 0  # released UTF-8 bytes not yet covered by released entries

    @property
    def stopped(self) -> bool:
        return self._stops.stopped

    @property
    def matched(self) -> str | None:
        return self._stops.matched

    def take(self, chunk: GenerationChunk) -> tuple[str, list[TokenLogprob]]:
        if chunk.logprobs:
            self._pending.extend(chunk.logprobs)
        return self._release(self._stops.feed(chunk.text))

    def finish(self) -> tuple[str, list[TokenLogprob]]:
        text, entries = self._release(self._stops.flush())
        if self._pending and self._unmatched > 0:
            straddler = self._pending[0]
            cut = _token_bytes(straddler)[: self._unmatched]
            entries.append(
                TokenLogprob(
                    token=cut.decode("utf-8", "ignore"),
                    logprob=straddler.logprob,
                    bytes=list(cut),
                    top_logprobs=straddler.top_logprobs,
                )
            )
        self._pending.clear()
        return text, entries

    def _release(self, text: str) -> tuple[str, list[TokenLogprob]]:
        self._unmatched += len(text.encode("utf-8"))
        released: list[TokenLogprob] = []
        while self._pending and len(_token_bytes(self._pending[0])) <= self._unmatched:
            entry = self._pending.popleft()
            self._unmatched -= len(_token_bytes(entry))
            released.append(entry)
        return text, released


def _token_bytes(entry: TokenLogprob) -> bytes:
    return bytes(entry.bytes) if entry.bytes is not None else entry.token.encode("utf-8")
