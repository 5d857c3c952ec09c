"""Which grammars were in flight when an engine died, so that they are not sent again.

A request that crashes the engine (issue 21: a grammar llama.cpp's parser could not
survive) would crash it again on every retry, and each restart fails every other
request on that model. So when an engine's connection ends while requests are in
flight, the gateway remembers their grammars, by hash, and refuses them (400) from
then on instead of sending them again.

An engine that died with several requests in flight cannot say which one did it, so
a grammar this gateway has already seen finish is never blamed: a popular schema (the
json_object grammar) is not poisoned by sharing a step with the one that crashed.
Both records are bounded, the oldest forgotten first, and last as long as the process.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable

from modelport.errors import InvalidRequest

# Grammars remembered per record; the oldest are forgotten first.
REMEMBERED = 4096


def grammar_fingerprint(grammar: str) -> str:
    return hashlib.sha256(grammar.encode()).hexdigest()


class CrashLedger:
    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._remembered = remembered
        self._crashed: OrderedDict[str, None] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()

    def check(self, fingerprint: str, engine: str) -> None:
        """400 for a grammar that was in flight when the engine died."""
        if fingerprint in self._crashed:
            raise InvalidRequest(
                f"the embedded engine for {engine} stopped while a request with this same JSON schema "
                "(response_format, or a forced tool call's parameters) was in it; it is refused so that it "
                "cannot stop the engine again for every other request. Change the schema, or ask an operator."
            )

    def crashed(self, fingerprints: Iterable[str]) -> None:
        for fingerprint in fingerprints:
            if fingerprint not in self._finished:
                _remember(self._crashed, fingerprint, self._remembered)

    def finished(self, fingerprint: str) -> None:
        _remember(self._finished, fingerprint, self._remembered)

    def __contains__(self, fingerprint: str) -> bool:
        return fingerprint in self._crashed


def _remember(record: OrderedDict[str, None], fingerprint: str, limit: int) -> None:
    record[fingerprint] = None
    record.move_to_end(fingerprint)
    while len(record) > limit:
        record.popitem(last=False)
