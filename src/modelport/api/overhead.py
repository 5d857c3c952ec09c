"""Adds `x-modelport-overhead-ms` to every response: the milliseconds the gateway
spent on the request before its response started, not counting time spent waiting
for the vendor. For a stream that is the work before the first event; for a plain
answer, everything but the vendor's own time."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.timing import RequestClock, current_clock

HEADER = b"x-modelport-overhead-ms"


class OverheadHeader:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = RequestClock()
        token = current_clock.set(clock)

        async def send_with_overhead(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((HEADER, f"{clock.overhead_ms():.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_overhead)
        finally:
            current_clock.reset(token)
