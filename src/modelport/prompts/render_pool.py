"""The render pool: fair shares of the threads that render chat templates (SPEC 9).

Renders are synchronous and can take up to `MAX_RENDER_SECONDS` (prompts/budget.py):
request handlers render on this pool's threads (`render_chat_async`), never on the
event loop, in a fair share per account.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass

from modelport.errors import RateLimited
from modelport.prompts.budget import MAX_RENDER_SECONDS


@dataclass(frozen=True, slots=True)
class RenderScope:
    """Whose request the renders in this task serve (set by the service per request)."""

    account: str
    # Called with each chat prompt rendered for the request, before a vendor sends it:
    # the limits reserve the prompt as rendered (inference/admission.py, `reserve_rendered`).
    on_rendered: Callable[[str], Awaitable[None]] | None = None


render_scope: ContextVar[RenderScope | None] = ContextVar("modelport_render_scope", default=None)


class _AccountRenders:
    __slots__ = ("slots", "users")

    def __init__(self, per_account: int) -> None:
        self.slots = asyncio.Semaphore(per_account)
        self.users = 0  # renders waiting for a slot or holding one


class RenderPool:
    """The threads that render chat templates, shared fairly between accounts.

    A render is pure Python and holds the GIL while it runs, so each render running at
    once takes a share of the event loop's time: 30 one-second templates at once
    slowed every other request, and /health/live, from milliseconds to seconds
    (issue 21). Hence:

    - at most `threads` renders run at once, on threads of their own (not asyncio's
      default executor, which name lookups and other `to_thread` work share);
    - an account has at most `per_account` renders running or queued for a thread; one
      more waits for a slot up to `MAX_RENDER_SECONDS` (the longest one render can
      take), then is refused with 429 naming `template_renders_per_account`. Waiting
      that long lets an ordinary burst of millisecond renders through; refusing after
      it keeps one account's flood from piling up requests (and their bodies) here;
    - at most `queue` renders wait or run in all; past that, 429 naming
      `template_render_queue`, before anything waits.

    A render keeps its slot until its thread finishes, even when its request was
    cancelled: a thread cannot be stopped, only the render's own budget ends it.
    """

    def __init__(self, *, threads: int = 4, per_account: int = 2, queue: int = 64) -> None:
        self.threads = threads
        self.per_account = per_account
        self.queue = queue
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="modelport-render")
        self._accounts: dict[str, _AccountRenders] = {}
        self._pending = 0  # renders waiting for a slot, for a thread, or running

    async def run(self, account: str, render: Callable[[], str]) -> str:
        if self._pending >= self.queue:
            raise RateLimited(
                f"the server is already rendering or waiting to render {self._pending} chat templates "
                f"(template_render_queue is {self.queue}); try again shortly",
                retry_after="1",
            )
        renders = self._accounts.get(account)
        if renders is None:
            renders = self._accounts[account] = _AccountRenders(self.per_account)
        renders.users += 1
        self._pending += 1
        try:
            async with asyncio.timeout(MAX_RENDER_SECONDS):
                await renders.slots.acquire()
        except BaseException as exc:
            self._leave(account, renders)
            if isinstance(exc, TimeoutError):
                raise RateLimited(
                    f"this account already has {self.per_account} chat template renders under way "
                    "(template_renders_per_account); try again shortly",
                    retry_after="1",
                ) from None
            raise
        loop = asyncio.get_running_loop()
        try:
            future = self._executor.submit(render)
        except BaseException:
            self._finished(account, renders)
            raise
        future.add_done_callback(lambda _: self._call_in_loop(loop, account, renders))
        return await asyncio.wrap_future(future)

    def _call_in_loop(self, loop: asyncio.AbstractEventLoop, account: str, renders: _AccountRenders) -> None:
        # On the render thread: the counts belong to the event loop.
        try:
            loop.call_soon_threadsafe(self._finished, account, renders)
        except RuntimeError:  # the loop has closed: nobody waits any more
            self._finished(account, renders)

    def _finished(self, account: str, renders: _AccountRenders) -> None:
        renders.slots.release()
        self._leave(account, renders)

    def _leave(self, account: str, renders: _AccountRenders) -> None:
        renders.users -= 1
        self._pending -= 1
        if renders.users == 0 and self._accounts.get(account) is renders:
            del self._accounts[account]

    def shutdown(self) -> None:
        """No more renders; those queued or running finish (their requests wait on them)."""
        self._executor.shutdown(wait=False)


_pool: RenderPool | None = None


def render_pool() -> RenderPool:
    global _pool
    if _pool is None:
        _pool = RenderPool()
    return _pool


def configure_render_pool(*, threads: int, per_account: int, queue: int) -> RenderPool:
    """Size the render pool from the settings (`template_render_*`); renders already
    under way finish on the old one."""
    global _pool
    current = _pool
    if current is not None and (current.threads, current.per_account, current.queue) == (threads, per_account, queue):
        return current
    if current is not None:
        current.shutdown()
    _pool = RenderPool(threads=threads, per_account=per_account, queue=queue)
    return _pool
