"""The one middleware every HTTP request passes (issue 27): it observes the request,
answers a browser's CORS preflight when CORS is on, applies the request guard, and
serves an inference route itself; every other request goes on to FastAPI.

These were four ASGI layers before FastAPI (the observer, CORS, the guard, the hot
path), and each cost CPU on every request: a coroutine in the chain that every step of
the request's task passes through, and a wrapper of `send` or `receive` called for each
message. Here they are the steps of one function, in the order the layers ran:

1. the observation opens (`observability/observation.py`): its clock starts before any
   of modelport's work, and everything answered goes through its `send`, the guard's
   refusals and the preflight answers included;
2. CORS, when `MODELPORT_CORS_ORIGINS` is set: a preflight is answered before any check,
   and every other answer gets the CORS headers;
3. the guard (`api/limits.py`): size, JSON, NUL;
4. the hot path (`api/hot_path.py`) for an inference route, FastAPI for the rest.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.api.hot_path import HotPath
from modelport.api.limits import BODY_METHODS, RequestGuard, Upload, replaying
from modelport.observability.observation import Observation


class Front:
    """ASGI, around FastAPI's own stack (`app`): `routes` are the inference routes the
    hot path serves, with the application's `exception_handlers`; `max_bytes` and
    `uploads` the guard's bounds; `cors` the options of Starlette's `CORSMiddleware`
    when CORS is on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Iterable[APIRoute],
        exception_handlers: Mapping[Any, Callable[..., Any]],
        max_bytes: int,
        uploads: Mapping[str, Upload],
        access_log: bool,
        cors: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.hot_path = HotPath(routes, exception_handlers)
        self.guard = RequestGuard(max_bytes, uploads)
        self.access_log = access_log
        # It gives the preflight answer and the headers; its own `app` is never called
        # (what follows CORS is this class's).
        self.cors = CORSMiddleware(app, **cors) if cors is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        observed = Observation(scope, send)
        try:
            await self._answer(scope, receive, observed)
        except asyncio.CancelledError:
            if not await observed.ended_by_shutdown():
                raise
        finally:
            observed.close(access_log=self.access_log)

    async def _answer(self, scope: Scope, receive: Receive, observed: Observation) -> None:
        send: Send = observed.send
        if self.cors is not None:
            # `CORSMiddleware.__call__`'s two cases, taken here so that what follows CORS
            # stays in this function: a preflight answered before any check, and every
            # other answer given the CORS headers on its way out.
            request_headers = Headers(scope=scope)
            if (
                scope["method"] == "OPTIONS"
                and "origin" in request_headers
                and "access-control-request-method" in request_headers
            ):
                await self.cors.preflight_response(request_headers=request_headers)(scope, receive, send)
                return
            send = functools.partial(self.cors.send, send=send, request_headers=request_headers)
        guard = self.guard
        upload = guard.upload_for(scope)
        if upload is not None:
            await guard.pass_upload(self.app, scope, receive, send, upload)
            return
        if await guard.refuse_before_body(scope, send):
            return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        body = await guard.read_body(scope, receive, send)
        if body is None:
            return  # refused, or the client went away before it finished sending
        plan = self.hot_path.route(scope)
        if plan is None:
            await self.app(scope, replaying(body, receive), send)
        else:
            await self.hot_path.serve(plan, scope, receive, send, body, observed)
