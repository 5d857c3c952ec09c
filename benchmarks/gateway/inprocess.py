"""The gateway's own CPU per request, without sockets: requests handed straight to the
ASGI application, its upstream an in-memory transport answering the mock's bytes
(mock_upstream.py: a JSON completion, or a 20-event stream). What is left out (uvicorn,
aiohttp, the kernel) is the same for every commit, so two commits compare closely even
on a busy machine, where `run.py`'s wrk runs do not.

    .venv/bin/python benchmarks/gateway/inprocess.py                      # this checkout
    .venv/bin/python benchmarks/gateway/inprocess.py --against ../old/src # A/B, alternating
    .venv/bin/python benchmarks/gateway/inprocess.py --kinds stream --profile  # cProfile
    .venv/bin/python benchmarks/gateway/inprocess.py --paired --kinds member-json,keyed-json  # one process

Kinds: `json` and `stream` (the admin key; `v1-json` and `v1-stream`: the same on
OpenAI's surface, `/v1/chat/completions`), `hit-json` and `hit-stream` (a key whose
answers the response cache keeps: every request after the first is a hit), `varied-*`
(every request different, the admin key), `member-*` (the same, by a member key with
neither an allow-list nor a cache) and `keyed-*` (the same, by a member key with a model
allow-list and a cache that always misses: against `member-*`, what issue 24's features
add).
Each kind runs in a fresh process per round; the median of the rounds is reported.
With `--paired`, compare two kinds at a time: with more, a kind's cost moves with the
kinds measured around it, by a few per cent, as much as the differences measured.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KINDS = ("json", "stream", "hit-json", "hit-stream", "varied-json", "keyed-json", "varied-stream", "keyed-stream",
         "member-json", "member-stream", "listed-json", "listed-stream", "cached-json", "cached-stream", "v1-json",
         "v1-stream")  # fmt: skip
KEY = "mp_bench_inprocess_admin_key_0123456789"


async def _call(app: Any, path: str, body: bytes, key: str) -> list[dict[str, Any]]:
    """One request through the whole ASGI application, as uvicorn would hand it over."""
    headers = [(b"host", b"modelport.test"), (b"content-type", b"application/json"), (b"x-api-key", key.encode()),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 40000),
             "server": ("127.0.0.1", 8080)}  # fmt: skip
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    # A server's loop turns between requests; a request here may complete without once
    # suspending. Without a turn the loop never drops the timers requests cancelled
    # (asyncio does so in its turn), each holding its request's context, and the
    # collector walks thousands of them: a cost the benchmark made, not the gateway.
    await asyncio.sleep(0)
    return sent


def _upstream(answer: bytes, stream: bytes) -> Any:
    """An in-memory upstream that answers as the network transport of the checkout under
    test does, so that the objects it builds per answer are counted as they are in a real
    call: modelport's own answer (`vendors/wire.py`), or, in a checkout from before it,
    an httpx response over a body read in pieces, as its aiohttp transport built."""
    import httpx

    def chosen(body: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        if b'"stream":true' in body.replace(b" ", b""):
            return stream, [(b"Content-Type", b"text/event-stream")]
        return answer, [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(answer)).encode())]

    class Pieces:
        def __init__(self, content: bytes) -> None:
            self._pieces = iter([content])

        def __aiter__(self) -> Pieces:
            return self

        async def __anext__(self) -> bytes:
            try:
                return next(self._pieces)
            except StopIteration:
                raise StopAsyncIteration from None

    try:
        from modelport.vendors.wire import Inbound
    except ImportError:

        class Body(httpx.AsyncByteStream):
            def __init__(self, content: bytes) -> None:
                self._pieces = Pieces(content)

            def __aiter__(self) -> Any:
                return self._pieces

        class Transport(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                content, headers = chosen(await request.aread())
                return httpx.Response(200, headers=headers, stream=Body(content), request=request)

        return Transport()

    from multidict import CIMultiDict, CIMultiDictProxy

    async def closed() -> None:
        return None

    class Native:
        async def send(self, request: Any) -> Any:
            content, headers = chosen(request.body)
            listed = CIMultiDictProxy(CIMultiDict((name.decode(), value.decode()) for name, value in headers))
            return Inbound(200, listed, request, Pieces(content), closed)

        async def aclose(self) -> None:
            return None

    return Native()


class _Kinds:
    """One application with the catalogue and keys the benchmark's kinds call: for each
    kind, its path, its key and its request bodies."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._deployment = ""
        self._admin: Any = None

    async def setup(self, admin: Any) -> None:
        self._admin = admin
        parameters = {"base_url": "http://127.0.0.1:9/v1", "model": "mock",
                      "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}  # fmt: skip
        model = await admin.post("/v4/models", json={"name": "mock", "model_type": "CHAT_COMPLETION",
                                                     "model_vendor": "OPENAI",
                                                     "model_creation_parameters": parameters})  # fmt: skip
        deployment = await admin.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": "mock"})
        self._deployment = deployment.json()["id"]

    async def target(self, kind: str) -> tuple[str, str, Any]:
        """(path, key, body(number) -> bytes) for `kind`, its key created when it needs one."""
        key = KEY
        if kind.startswith(("hit-", "keyed-", "member-", "listed-", "cached-")):
            asked: dict[str, Any] = {"role": "member", "name": kind}
            if kind.startswith(("hit-", "keyed-", "cached-")):
                asked["cache_ttl_seconds"] = 86400
            if kind.startswith(("keyed-", "listed-")):
                asked["models"] = ["mock"]
            key = (await self._admin.post("/v4/api-keys", json=asked)).json()["key"]
        stream = kind.endswith("stream")
        varied = kind.startswith(("varied-", "keyed-", "member-", "listed-", "cached-"))
        # A mark per kind: two kinds measured in one process never share a cached answer.
        mark = f"{kind} " if varied else ""

        def body(number: int) -> bytes:
            prompt = f"Say hello. {mark}{number if varied else 0}"
            if kind.startswith("v1-"):  # OpenAI's surface, the same call
                messages = [{"role": "user", "content": prompt}]
                return json.dumps({"model": "mock", "messages": messages, "max_tokens": 16, "temperature": 0,
                                   "stream": stream}).encode()  # fmt: skip
            return json.dumps({"chat_history": [], "prompt": prompt, "max_tokens": 16, "temperature": 0,
                               "stream": stream}).encode()  # fmt: skip

        path = "/v1/chat/completions" if kind.startswith("v1-") else f"/v4/models/{self._deployment}/chat-completions"
        first = await _call(self.app, path, body(-1), key)
        if first[0]["status"] != 200:
            raise SystemExit(f"{kind}: {first}")
        for number in range(300):  # warm-up
            await _call(self.app, path, body(-2 - number), key)
        return path, key, body


async def _application(kinds: list[str]) -> AsyncIterator[tuple[Any, dict[str, tuple[str, str, Any]]]]:
    """Yields (app, {kind: target}) once, inside the application's lifespan."""
    import httpx

    sys.path.insert(0, str(HERE))
    from mock_upstream import ANSWER, STREAM

    from modelport.api.app import create_app
    from modelport.config import Settings

    data = Path(tempfile.mkdtemp(prefix="modelport-inprocess-"))
    settings = Settings(database_url=f"sqlite+aiosqlite:///{data / 'modelport.db'}", api_key=KEY,
                        embedded_engine=False)  # fmt: skip
    app = create_app(settings, upstream_transport=_upstream(ANSWER, STREAM))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://modelport.test", headers={"x-api-key": KEY}
        ) as admin,
    ):
        setup = _Kinds(app)
        await setup.setup(admin)
        yield app, {kind: await setup.target(kind) for kind in kinds}


async def measure(kind: str, requests: int, profile: Path | None) -> float:
    """CPU ms per request of `kind`, after a warm-up."""
    async for app, targets in _application([kind]):
        path, key, body = targets[kind]
        bodies = [body(number) for number in range(requests)]
        profiler = cProfile.Profile() if profile else None
        started = time.process_time()
        if profiler:
            profiler.enable()
        for each in bodies:
            await _call(app, path, each, key)
        if profiler:
            profiler.disable()
        spent = time.process_time() - started
        if profiler and profile:
            profiler.dump_stats(profile)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return 1000 * spent / requests


async def measure_paired(kinds: list[str], requests: int, batch: int) -> dict[str, float]:
    """CPU ms per request of each kind, measured in one process in alternating batches of
    `batch` requests: what slows the machine down for a while slows every kind alike."""
    spent = dict.fromkeys(kinds, 0.0)
    async for app, targets in _application(kinds):
        for start in range(0, requests, batch):
            order = kinds if (start // batch) % 2 == 0 else kinds[::-1]
            for kind in order:
                path, key, body = targets[kind]
                bodies = [body(number) for number in range(start, start + batch)]
                began = time.process_time()
                for each in bodies:
                    await _call(app, path, each, key)
                spent[kind] += time.process_time() - began
    return {kind: 1000 * value / requests for kind, value in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="json,stream", help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another checkout's src/: run alternately with this one's")
    parser.add_argument("--profile", action="store_true", help="one round under cProfile (writes <kind>.prof)")
    parser.add_argument("--paired", action="store_true",
                        help="every kind in one process per round, in alternating batches")  # fmt: skip
    parser.add_argument("--batch", type=int, default=100, help="with --paired: requests per batch")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one kind, one measurement
    args = parser.parse_args()
    if args.one and args.paired:
        kinds = args.one.split(",")
        print(json.dumps(asyncio.run(measure_paired(kinds, args.requests, args.batch))))
        return
    if args.one:
        profile = Path(f"{args.one}.prof") if args.profile else None
        print(json.dumps(asyncio.run(measure(args.one, args.requests, profile))))
        return
    kinds = [kind for kind in args.kinds.split(",") if kind]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    if args.paired:
        _paired(kinds, args)
        return
    sources = {"this checkout": HERE.parents[1] / "src"}
    if args.against:
        sources["--against"] = args.against.resolve()
    rounds = 1 if args.profile else args.rounds
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for kind in kinds:
            for name, source in sources.items():
                environment = {**os.environ, "PYTHONPATH": str(source)}
                command = [sys.executable, __file__, "--one", kind, "--requests", str(args.requests)]
                if args.profile:
                    command.append("--profile")
                    subprocess.run(command, env=environment, check=True)
                    continue
                out = subprocess.run(command, env=environment, check=True, capture_output=True, text=True)
                results.setdefault((kind, name), []).append(float(out.stdout.strip().splitlines()[-1]))
    if args.profile:
        return
    print("| kind | source | CPU ms/request (median) | rounds |")
    print("| --- | --- | --- | --- |")
    for (kind, name), values in results.items():
        print(f"| {kind} | {name} | {statistics.median(values):.3f} | {' '.join(f'{v:.3f}' for v in values)} |")


def _paired(kinds: list[str], args: argparse.Namespace) -> None:
    """Each round a fresh process measuring every kind in alternating batches; each
    kind's cost as a ratio to the first kind's in the same process."""
    rounds: list[dict[str, float]] = []
    for _ in range(args.rounds):
        command = [sys.executable, __file__, "--one", ",".join(kinds), "--paired", "--requests", str(args.requests),
                   "--batch", str(args.batch)]  # fmt: skip
        # A round is seconds; one that hangs (once, at its application's shutdown) is
        # reported rather than waited for.
        out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
        rounds.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"| kind | CPU ms/request (median) | rounds | ratio to {kinds[0]} (median) | ratio, each round |")
    print("| --- | --- | --- | --- | --- |")
    for kind in kinds:
        values = [each[kind] for each in rounds]
        ratios = [each[kind] / each[kinds[0]] for each in rounds]
        print(f"| {kind} | {statistics.median(values):.3f} | {' '.join(f'{v:.3f}' for v in values)} "
              f"| {statistics.median(ratios):.3f} | {' '.join(f'{r:.3f}' for r in ratios)} |")  # fmt: skip


if __name__ == "__main__":
    main()
