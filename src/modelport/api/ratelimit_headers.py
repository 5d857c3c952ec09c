"""Adds the `x-ratelimit-remaining-requests` / `-tokens` headers that admission found
(SPEC 7) to the answer. The service knows no HTTP: it writes them into a per-request
dict (`limits.gate.response_headers`) that this middleware hands out and reads back
when the response starts."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.limits.gate import response_headers


class RateLimitHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found: dict[str, str] = {}
        token = response_headers.set(found)

        async def send_with_limits(message: Message) -> None:
            if found and message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers += [(name.encode(), value.encode()) for name, value in found.items()]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            response_headers.reset(token)
