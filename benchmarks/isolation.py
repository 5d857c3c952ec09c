"""What the embedded engine costs the rest of the gateway: requests/s to a vendor
deployment (an OPENAI model on the mock upstream), with the embedded model idle and
while it decodes 8 streams, on one modelport worker.

    .venv/bin/python benchmarks/isolation.py
    PYTHONPATH=/path/to/older/checkout/src .venv/bin/python benchmarks/isolation.py   # an older modelport

Before the engine had its own process, it decoded on a thread of the gateway's
process, and every step competed with the request handlers for the GIL. Rounds
alternate idle and busy, with wrk on loopback; medians are reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gateway"))

from run import MODELPORT_BODY, Target, configure_modelport, run_wrk  # noqa: E402

from servers import API_KEY, MODELPORT, free_port, modelport_env, start, stop  # noqa: E402

STREAMS = 8
HEADERS = {"x-api-key": API_KEY}


def embedded_load(base: str, deployment: str, stop_event: threading.Event, tokens: list[int]) -> None:
    """Keep one embedded stream going until told to stop (one of STREAMS threads)."""
    body = {"prompt": "Count from one to one thousand: 1, 2, 3,", "temperature": 0, "max_tokens": 200, "stream": True}
    with httpx.Client(timeout=120, headers=HEADERS) as client:
        while not stop_event.is_set():
            url = f"{base}/v4/models/{deployment}/completions"
            with client.stream("POST", url, json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        tokens[0] += 1
                    if stop_event.is_set():
                        break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="modelport-isolation-"))
    mock_port, port = free_port(), free_port()
    mock = start(
        [sys.executable, str(HERE / "gateway" / "mock_upstream.py"), "--port", str(mock_port)],
        dict(os.environ),
        workdir / "mock.log",
    )
    server = None
    try:
        vendor_deployment = configure_modelport(workdir, port, mock_port)
        server = start([MODELPORT, "serve"], modelport_env(workdir, port), workdir / "modelport.log")
        base = f"http://127.0.0.1:{port}"
        for _ in range(1200):
            try:
                if httpx.get(f"{base}/health", timeout=1).json().get("embedded_models_loaded"):
                    break
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.05)
        listing = httpx.get(f"{base}/v4/model-deployments", headers=HEADERS).json()["items"]
        embedded = next(item["id"] for item in listing if item["id"] != vendor_deployment)
        target = Target(
            "modelport", f"{base}/v4/models/{vendor_deployment}/chat-completions", MODELPORT_BODY, HEADERS, server
        )
        run_wrk(target, workdir, connections=args.connections, seconds=1, stream=False)  # warm up
        idle: list[float] = []
        busy: list[float] = []
        token_rates: list[float] = []
        for round_ in range(args.rounds):
            result = run_wrk(target, workdir, connections=args.connections, seconds=args.seconds, stream=False)
            idle.append(result["rps"])
            stop_event, tokens = threading.Event(), [0]
            threads = [
                threading.Thread(target=embedded_load, args=(base, embedded, stop_event, tokens))
                for _ in range(STREAMS)
            ]
            for thread in threads:
                thread.start()
            time.sleep(2)  # all streams running
            before = tokens[0]
            result = run_wrk(target, workdir, connections=args.connections, seconds=args.seconds, stream=False)
            token_rates.append((tokens[0] - before) / args.seconds)
            busy.append(result["rps"])
            stop_event.set()
            for thread in threads:
                thread.join()
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        print(f"\n{args.connections} connections to the vendor deployment, {args.seconds} s per run, "
              f"median of {args.rounds} rounds\n")  # fmt: skip
        print("| embedded model | vendor requests/s | embedded tokens/s meanwhile |\n| --- | --- | --- |")
        print(f"| idle | {statistics.median(idle):.0f} | 0 |")
        print(f"| decoding {STREAMS} streams | {statistics.median(busy):.0f} | {statistics.median(token_rates):.0f} |")
    finally:
        stop(server)
        stop(mock)


if __name__ == "__main__":
    main()
