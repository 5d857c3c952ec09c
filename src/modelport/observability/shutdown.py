"""Graceful shutdown: on SIGTERM (or SIGINT) requests in flight get a grace period
(`MODELPORT_SHUTDOWN_GRACE_SECONDS`) to finish; those still running then are ended by
modelport itself, cleanly: a stream gets an `error` event, a plain request a 503, and
the service records their usage with status 503.

uvicorn does the rest: on the signal it stops accepting connections and closes idle
ones, and waits for requests in flight. Its own limit (`timeout_graceful_shutdown`) is
set a little past the grace period, so it never has to cancel a request itself (which
would cut streams off mid-event and fill the log with CancelledError tracebacks).

The signal reaches the app by wrapping the handler uvicorn installs, in each worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

# Seconds uvicorn waits beyond the grace period, for the requests ended at its close
# to write their last event and record their usage.
UVICORN_MARGIN_SECONDS = 5.0
REASON = "the server is shutting down"


class ShutdownGate:
    def __init__(self) -> None:
        self.grace_seconds = 30.0
        self.draining = False  # a stop was asked for: not ready for new work
        self.expired = False  # the grace period is over: what still runs is ended
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        return task

    def leave(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._tasks.discard(task)

    def begin(self) -> None:
        """Start the grace period (from the event loop's thread)."""
        if self.draining:
            return
        self.draining = True
        loop = asyncio.get_running_loop()
        if self._tasks:
            log.info("shutting down: %d request(s) in flight get %g s to finish", len(self._tasks), self.grace_seconds)
        loop.call_later(self.grace_seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._tasks:
            log.warning("shutdown grace period over: ending %d request(s) still in flight", len(self._tasks))
        for task in list(self._tasks):
            task.cancel(REASON)

    @contextlib.contextmanager
    def watching_signals(self, grace_seconds: float) -> Iterator[None]:
        """For an app's lifetime: SIGTERM and SIGINT also start this gate's grace period.
        Only the main thread can handle signals; elsewhere (an app under test in a
        thread) this does nothing."""
        self.grace_seconds = grace_seconds
        self.draining = self.expired = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handle(sig: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.begin)
            before = previous[sig]
            if callable(before):
                before(sig, frame)
            elif before == signal.SIG_DFL and sig == signal.SIGINT:
                raise KeyboardInterrupt

        for sig in previous:
            signal.signal(sig, handle)
        try:
            yield
        finally:
            for sig, before in previous.items():
                # Put back only what is still ours (uvicorn restores its own on exit).
                if signal.getsignal(sig) is handle:
                    signal.signal(sig, before)


gate = ShutdownGate()


def cut_off_status() -> int:
    """The status of a request that was cancelled: 503 when the shutdown ended it,
    499 when its client went away."""
    return 503 if gate.expired else 499
