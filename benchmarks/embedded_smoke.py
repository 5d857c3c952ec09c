"""Quick numbers for the embedded engine through a running modelport server.

    .venv/bin/python benchmarks/embedded_smoke.py --base-url http://127.0.0.1:8080 --api-key KEY

1. Disconnect: the latency of a 3-token request right after a client abandoned a
   3000-token stream, against the same request on an idle server. If abandoned work
   kept running, the second number would be tens of seconds.
2. One stream: time to first token and decode tokens per second over 200 tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    headers = {"x-api-key": args.api_key}
    base = args.base_url
    deployment = httpx.get(f"{base}/v4/model-deployments", headers=headers).json()["items"][0]["id"]
    url = f"{base}/v4/models/{deployment}/completions"

    def short_request() -> float:
        started = time.perf_counter()
        response = httpx.post(
            url, json={"prompt": "Hello", "temperature": 0, "max_tokens": 3}, headers=headers, timeout=60
        )
        response.raise_for_status()
        return time.perf_counter() - started

    alone = [short_request() for _ in range(args.rounds)]
    after_disconnect = []
    long_stream = {"prompt": "1, 2, 3,", "temperature": 0, "max_tokens": 3000, "stream": True}
    for _ in range(args.rounds):
        with (
            httpx.Client(timeout=60) as client,
            client.stream("POST", url, json=long_stream, headers=headers) as response,
        ):
            events = 0
            for line in response.iter_lines():
                events += line.startswith("data:")
                if events == 10:
                    break
        after_disconnect.append(short_request())
    print(
        f"3-token request: idle median {statistics.median(alone):.3f}s; "
        f"right after a disconnect median {statistics.median(after_disconnect):.3f}s, max {max(after_disconnect):.3f}s"
    )

    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    body = {"prompt": "1, 2, 3,", "temperature": 0, "max_tokens": 200, "stream": True}
    with httpx.Client(timeout=120) as client, client.stream("POST", url, json=body, headers=headers) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                first = first if first is not None else time.perf_counter() - started
                tokens = json.loads(line[5:]).get("response_tokens") or tokens
    total = time.perf_counter() - started
    assert first is not None
    rate = (tokens - 1) / (total - first)
    print(f"one stream: {tokens} tokens in {total:.2f}s, first token {first:.3f}s, {rate:.1f} tokens/s")


if __name__ == "__main__":
    main()
