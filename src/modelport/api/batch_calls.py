"""Each line of a batch sent to this app's own route, in-process, as the key that created
the batch: the line takes the path any client's request takes (the body's checks, the
translation, the service with the key's and the account's limits, allow-lists and
budget, usage records, metrics), and its answer, error shapes included, is the route's.

The caller is handed to `api.deps.current_principal` in the request's ASGI scope
(`BATCH_PRINCIPAL`), set here and only here: no header or anything else a client sends
can set it.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.api.deps import BATCH_PRINCIPAL
from modelport.batches.files import FileBounds, FileStore
from modelport.batches.lines import LineAnswer
from modelport.batches.runner import BatchRunner
from modelport.batches.service import Batches
from modelport.config import Settings
from modelport.principal import Principal

_calling_as: ContextVar[Principal | None] = ContextVar("batch_principal", default=None)


class InProcessCalls:
    def __init__(self, app: ASGIApp) -> None:
        async def as_batch_principal(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                scope = {**scope, BATCH_PRINCIPAL: _calling_as.get()}
            await app(scope, receive, send)

        # The app runs in the caller's task (httpx's ASGI transport awaits it), so the
        # context variable set below is the one this request reads.
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=as_batch_principal, client=("127.0.0.1", 0)),
            base_url="http://modelport.batch",
            timeout=None,
        )

    async def __call__(self, principal: Principal, path: str, body: bytes) -> LineAnswer:
        token = _calling_as.set(principal)
        try:
            response = await self._client.post(path, content=body, headers={"content-type": "application/json"})
        finally:
            _calling_as.reset(token)
        try:
            parsed = response.json()
        except ValueError:
            parsed = response.text
        return LineAnswer(
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
            body=parsed,
            retry_after=_seconds(response.headers.get("retry-after")),
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _seconds(value: str | None) -> float | None:
    """A Retry-After in seconds (modelport sends no dates)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def batches(
    app: ASGIApp, settings: Settings, sessions: async_sessionmaker[Any]
) -> tuple[Batches, BatchRunner, InProcessCalls]:
    """The files and batches of `app` (built in its lifespan), its runner (not started
    yet), and the calls the runner makes to `app`'s routes (closed at shutdown)."""
    bounds = FileBounds(
        max_bytes=settings.files_max_bytes,
        max_bytes_per_account=settings.files_max_bytes_per_account,
        max_lines=settings.batch_max_lines,
    )
    files = FileStore(sessions, bounds, settings.files_dir)
    calls = InProcessCalls(app)
    runner = BatchRunner(
        sessions,
        files,
        calls,
        concurrency=settings.batch_concurrency,
        lease_seconds=settings.batch_lease_seconds,
        poll_seconds=settings.batch_poll_seconds,
    )
    return Batches(sessions, files, on_cancel=runner.cancelled), runner, calls
