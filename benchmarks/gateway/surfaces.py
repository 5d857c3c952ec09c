"""The CPU a /v1/responses call costs against the same call on /v1/chat/completions, on
one server, in the same run: translated (an OpenAI-compatible model whose upstream
speaks chat completions only) and passed through (an OPENAI model, whose upstream
serves the Responses API). Issue 23's targets: at most 1.2x and 1.1x.

    .venv/bin/python benchmarks/gateway/surfaces.py --rounds 6 [--stream] [--store]

The targets take turns, round after round, so that all of them see the same machine;
prints each one's CPU ms per request (the server's own CPU, its children included) in
every round, the medians, and each /v1/responses median over its chat twin's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import run  # puts benchmarks/ on the path, where servers.py is

from servers import API_KEY, MODELPORT, free_port, modelport_env, start, stop

HERE = Path(__file__).resolve().parent
MODELS = {"chat-only": "OTHER", "relayed": "OPENAI"}


def configure(workdir: Path, port: int, mock_port: int) -> None:
    """First start: a translated and a passed-through model, both on the mock."""
    process = start([MODELPORT, "serve"], modelport_env(workdir, port, embedded_engine="false"),
                    workdir / "setup.log")  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"x-api-key": API_KEY}, timeout=10) as client:
            for _ in range(600):
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            for name, vendor in MODELS.items():
                model = client.post(
                    "/v4/models",
                    json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": vendor,
                          "model_creation_parameters": {"base_url": f"http://127.0.0.1:{mock_port}/v1",
                                                        "model": "mock"}},
                )  # fmt: skip
                model.raise_for_status()
                client.post(f"/v4/models/{model.json()['id']}/deployments", json={"name": name}).raise_for_status()
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--store", action="store_true", help="keep each response (the API's default)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="modelport-surfaces-"))
    mock_port, port = free_port(), free_port()
    mock = start([sys.executable, str(HERE / "mock_upstream.py"), "--port", str(mock_port)], dict(os.environ),
                 workdir / "mock.log")  # fmt: skip
    server = None
    try:
        configure(workdir, port, mock_port)
        server = start([MODELPORT, "serve"], modelport_env(workdir, port, embedded_engine="false"),
                       workdir / "server.log")  # fmt: skip
        headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
        base = f"http://127.0.0.1:{port}/v1"
        targets = []
        for model in MODELS:
            chat = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
            responses = {"model": model, "input": "Say hello.", "max_output_tokens": 16, "store": args.store}
            targets.append(run.Target(f"{model} chat", f"{base}/chat/completions", chat, headers, server))
            targets.append(run.Target(f"{model} responses", f"{base}/responses", responses, headers, server))
        for target in targets:
            run.wait_until_served(target, time.perf_counter())
            run.run_wrk(target, workdir, connections=args.concurrency, seconds=2, stream=args.stream)  # warm up
        measured: dict[str, list[float]] = {target.name: [] for target in targets}
        for round_ in range(args.rounds):
            for target in targets if round_ % 2 == 0 else targets[::-1]:
                result = run.run_wrk(
                    target, workdir, connections=args.concurrency, seconds=args.seconds, stream=args.stream
                )
                measured[target.name].append(result["cpu_ms_per_request"])
        medians = {name: statistics.median(values) for name, values in measured.items()}
        for name, values in measured.items():
            rounds = ", ".join(f"{value:.3f}" for value in values)
            print(f"{name:20} median {medians[name]:.3f} CPU ms/request  ({rounds})")
        for model in MODELS:
            ratio = medians[f"{model} responses"] / medians[f"{model} chat"]
            print(f"{model}: /v1/responses / /v1/chat/completions = {ratio:.2f}x")
    finally:
        if server is not None:
            stop(server)
        stop(mock)


if __name__ == "__main__":
    main()
