"""A deliberately cheap OpenAI-compatible upstream: a raw ASGI app that answers every
POST with precomputed bytes, a fixed JSON completion or a fixed 20-chunk SSE stream
(on a path ending in /responses: a fixed response object, or its stream of events with
20 text deltas).

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

_MESSAGE = {"id": "msg_mock", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": "tok " * 20, "annotations": []}]}  # fmt: skip
_RESPONSE = {"id": "resp_mock", "object": "response", "created_at": 0, "status": "completed", "model": "mock",
             "output": [_MESSAGE], "tools": [], "tool_choice": "auto", "parallel_tool_calls": True,
             "usage": {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}}  # fmt: skip
RESPONSE_ANSWER = json.dumps(_RESPONSE).encode()
_EVENTS = [
    {"type": "response.created", "response": {**_RESPONSE, "status": "in_progress", "output": [], "usage": None}},
    {"type": "response.output_item.added", "output_index": 0, "item": {**_MESSAGE, "content": []}},
    *[{"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0, "content_index": 0,
       "delta": "tok ", "logprobs": []}] * 20,
    {"type": "response.output_item.done", "output_index": 0, "item": _MESSAGE},
    {"type": "response.completed", "response": _RESPONSE},
]  # fmt: skip
RESPONSE_STREAM = b"".join(
    f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': number})}\n\n".encode()
    for number, event in enumerate(_EVENTS)
)
RESPONSE_JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(RESPONSE_ANSWER)).encode()),
]
RESPONSE_SSE_HEADERS = [(b"content-type", b"text/event-stream"),
                        (b"content-length", str(len(RESPONSE_STREAM)).encode())]  # fmt: skip


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
    if scope["path"].endswith("/responses"):
        headers, answer = (
            (RESPONSE_SSE_HEADERS, RESPONSE_STREAM) if streaming else (RESPONSE_JSON_HEADERS, RESPONSE_ANSWER)
        )
    else:
        headers, answer = (SSE_HEADERS, STREAM) if streaming else (JSON_HEADERS, ANSWER)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, http="httptools", loop="uvloop"
    )


if __name__ == "__main__":
    main()
