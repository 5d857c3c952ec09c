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

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.api.deps import BATCH_PRINCIPAL
from modelport.batches.lines import LineAnswer
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
            status_code=response.status_code, request_id=response.headers.get("x-request-id"), body=parsed
        )

    async def aclose(self) -> None:
        await self._client.aclose()
