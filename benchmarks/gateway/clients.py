"""Which HTTP client should modelport use upstream? Each client posts the same JSON
body to the mock upstream from one event loop (uvloop), at several concurrencies.

    .venv/bin/python benchmarks/gateway/mock_upstream.py --port 9100 &
    .venv/bin/python benchmarks/gateway/clients.py --url http://127.0.0.1:9100/v1/chat/completions
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import uvloop
from httpx_aiohttp import AiohttpTransport

BODY = b'{"model":"mock","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
HEADERS = {"content-type": "application/json"}

Post = Callable[[], Awaitable[None]]


async def measure(post: Post, concurrency: int, seconds: float) -> tuple[float, float]:
    """Requests per second and CPU milliseconds per request of this process."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await post()
            done += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return done / wall, 1000 * cpu / max(done, 1)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
    plain = httpx.AsyncClient(limits=limits)
    bridged = httpx.AsyncClient(transport=AiohttpTransport(client=aiohttp.ClientSession()), limits=limits)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))

    async def with_httpx(client: httpx.AsyncClient) -> None:
        response = await client.post(args.url, content=BODY, headers=HEADERS)
        response.read()
        assert response.status_code == 200

    async def with_aiohttp() -> None:
        async with session.post(args.url, data=BODY, headers=HEADERS) as response:
            await response.read()
            assert response.status == 200

    clients: dict[str, Post] = {
        "httpx (httpcore pool)": lambda: with_httpx(plain),
        "httpx + aiohttp transport": lambda: with_httpx(bridged),
        "aiohttp": with_aiohttp,
    }
    print("| client | concurrency | requests/s | CPU ms/request |\n| --- | --- | --- | --- |")
    for concurrency in (1, 8, 32, 64):
        for name, post in clients.items():  # interleaved
            rps, cpu_ms = await measure(post, concurrency, args.seconds)
            print(f"| {name} | {concurrency} | {rps:,.0f} | {cpu_ms:.3f} |", flush=True)
    await plain.aclose()
    await bridged.aclose()
    await session.close()


if __name__ == "__main__":
    uvloop.run(main())
