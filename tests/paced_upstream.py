"""An OpenAI-compatible upstream for end-to-end tests of limits: a plain answer at once
(10 prompt and 5 completion tokens), or a stream of 20 one-token chunks paced by the
model name (`paced-0.2`: 0.2 s between chunks), with its usage at the end.

    python -m tests.paced_upstream --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvicorn

STREAM_CHUNKS = 20


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(body or b"{}")
    if not request.get("stream"):
        answer = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": request.get("model"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})
        return
    pace = float(str(request.get("model", "paced-0")).rpartition("-")[2] or 0)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for _ in range(STREAM_CHUNKS):
        chunk = {"choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}
        await send({"type": "http.response.body", "body": _event(chunk), "more_body": True})
        await asyncio.sleep(pace)
    usage = {"prompt_tokens": 10, "completion_tokens": STREAM_CHUNKS, "total_tokens": 10 + STREAM_CHUNKS}
    tail = _event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    tail += _event({"choices": [], "usage": usage}) + b"data: [DONE]\n\n"
    await send({"type": "http.response.body", "body": tail})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
