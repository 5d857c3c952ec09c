"""The FastAPI floor: the least a gateway built as modelport is (FastAPI routes, a
pydantic request body) can do per request. One route at modelport's chat-completions
path validates the body with a pydantic model, forwards it to the upstream over one
pooled aiohttp session, and answers with the completion (or relays the stream). No
auth, no records, no limits, no middleware. Next to `floor.py`, it splits modelport's
cost into what the framework takes and what modelport's own features take.

    python benchmarks/gateway/fastapi_floor.py --port 9300 --upstream http://127.0.0.1:9100/v1/chat/completions
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel


class Body(BaseModel):
    chat_history: list[dict[str, Any]] = []
    prompt: str
    max_tokens: int | None = None
    stream: bool = False


def build(upstream: str) -> FastAPI:
    app = FastAPI()
    pool: list[aiohttp.ClientSession] = []  # created on the server's loop, then reused

    @app.post("/v4/models/{deployment_id}/chat-completions")
    async def chat(deployment_id: str, request: Request) -> Response:
        if not pool:
            pool.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        body = Body.model_validate_json(await request.body())
        messages = [*body.chat_history, {"role": "user", "content": body.prompt}]
        payload = orjson.dumps(
            {"model": "mock", "messages": messages, "max_tokens": body.max_tokens, "stream": body.stream}
        )
        answer = await pool[0].post(upstream, data=payload, headers={"content-type": "application/json"})
        if body.stream:

            async def relay() -> AsyncIterator[bytes]:
                async with answer:
                    async for piece in answer.content.iter_any():
                        yield piece

            return StreamingResponse(relay(), media_type="text/event-stream")
        async with answer:
            completion = orjson.loads(await answer.read())
        text = completion["choices"][0]["message"]["content"]
        reply = {"completions": [[body.prompt, [text]]], "finish_reason": "stop"}
        return Response(orjson.dumps(reply), media_type="application/json")

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
