"""A deliberately cheap OpenAI-compatible upstream: a raw ASGI app that answers every
POST with precomputed bytes, a fixed JSON completion or a fixed 20-chunk SSE stream.

    python benchmarks/gateway/mock_upstream.py --port 9100
"""

from __future__ import annotations

import argparse
import json

import uvicorn

ANSWER = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 0,
        "model": "mock",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello from the mock."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
).encode()


def _chunk(**fields: object) -> str:
    return json.dumps(
        {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": "mock", **fields}
    )


_CHUNK = _chunk(choices=[{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}])
_LAST = _chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
_USAGE = _chunk(choices=[], usage={"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30})
STREAM = b"".join(f"data: {line}\n\n".encode() for line in [*[_CHUNK] * 19, _LAST, _USAGE]) + b"data: [DONE]\n\n"
JSON_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"content-length", str(len(STREAM)).encode())]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    # Cheaper than parsing JSON: the gateways send "stream": true only when streaming.
    streaming = b'"stream":true' in body.replace(b" ", b"")
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS if streaming else JSON_HEADERS})
    await send({"type": "http.response.body", "body": STREAM if streaming else ANSWER})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, http="httptools", loop="uvloop"
    )


if __name__ == "__main__":
    main()
