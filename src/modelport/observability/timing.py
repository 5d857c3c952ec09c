"""The gateway's own share of a request's time: wall time minus time spent waiting
for the vendor. Reported to callers in the `x-modelport-overhead-ms` header.

The HTTP layer (observability/observation.py) opens a `RequestClock` per request; the service marks the stretches
spent waiting on a vendor with `waiting_for_vendor()`. The clock travels in a context
variable so the service needs no HTTP object to report it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestClock:
    started: float = field(default_factory=time.perf_counter)
    vendor_seconds: float = 0.0

    def overhead_ms(self) -> float:
        return max(0.0, (time.perf_counter() - self.started - self.vendor_seconds) * 1000)


current_clock: ContextVar[RequestClock | None] = ContextVar("modelport_request_clock", default=None)


@contextmanager
def waiting_for_vendor() -> Iterator[None]:
    clock = current_clock.get()
    if clock is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        clock.vendor_seconds += time.perf_counter() - started
