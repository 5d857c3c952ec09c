"""An OpenAI-compatible upstream for the batch tests that run real servers: it answers
`echo: <prompt>` after a pause given by the model name (`pause-0.05`: 0.05 s), and counts
the calls per prompt, which `GET /calls` answers as JSON (`{prompt: calls}`).

    python -m tests.batch_upstream --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from typing import Any

import uvicorn

CALLS: Counter[str] = Counter()


async def _body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _send_json(send: Any, payload: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        await _send_json(send, dict(CALLS))
        return
    request = json.loads(await _body(receive) or b"{}")
    prompt = str(request["messages"][-1]["content"])
    CALLS[prompt] += 1
    await asyncio.sleep(float(str(request.get("model", "pause-0")).rpartition("-")[2] or 0))
    choice = {"index": 0, "message": {"role": "assistant", "content": f"echo: {prompt}"}, "finish_reason": "stop"}
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    await _send_json(
        send,
        {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice], "usage": usage},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
