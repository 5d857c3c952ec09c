"""The Python floor: the least a Python gateway can do per request. A raw ASGI app on
uvicorn (uvloop, httptools) that forwards each body to the upstream over one pooled
aiohttp session and relays the answer, streamed or not. No auth, no validation, no
records. modelport's CPU per request is reported as a multiple of this.

    python benchmarks/gateway/floor.py --port 9200 --upstream http://127.0.0.1:9100/v1/chat/completions
"""

from __future__ import annotations

import argparse

import aiohttp
import uvicorn


def build(upstream: str):  # type: ignore[no-untyped-def]
    session: aiohttp.ClientSession | None = None

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        nonlocal session
        if scope["type"] != "http":
            return
        if session is None:  # created on the server's loop, then reused by every request
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        async with session.post(upstream, data=body, headers={"content-type": "application/json"}) as answer:
            kind = answer.headers.get("content-type", "application/json").encode()
            await send({"type": "http.response.start", "status": answer.status, "headers": [(b"content-type", kind)]})
            async for piece in answer.content.iter_any():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        build(args.upstream), host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
        http="httptools", loop="uvloop",
    )  # fmt: skip


if __name__ == "__main__":
    main()
