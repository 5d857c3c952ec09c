"""This checkout's modelport against another checkout's, side by side: CPU per request,
alternating wrk runs so that both see the same machine (one run per target, as
`run.py --baseline-src` does, varies by about 20 % on a small shared machine).

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/gateway/ab.py --before-src /tmp/before/src --rounds 8 --stream

Prints each server's CPU ms per request in every round, and the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import run  # puts benchmarks/ on the path, where servers.py is

from servers import API_KEY, free_port, modelport_env, start, stop

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "src"
# The command line of whichever layout a checkout has (modelport/cli.py before 0.2).
SERVE = (
    "import importlib.util, sys; sys.argv[0] = 'modelport'; "
    "cli = importlib.util.find_spec('modelport.cli'); "
    "name = 'modelport.cli.main' if cli.submodule_search_locations else 'modelport.cli'; "
    "importlib.import_module(name).app()"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-src", type=Path, required=True, help="the other checkout's src/")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="modelport-ab-"))
    mock_port, after_port, before_port = free_port(), free_port(), free_port()
    mock = start([sys.executable, str(HERE / "mock_upstream.py"), "--port", str(mock_port)], dict(os.environ),
                 workdir / "mock.log")  # fmt: skip
    servers = []
    try:
        deployment, _key = run.configure_modelport(workdir, after_port, mock_port)
        targets = []
        for name, port, source in (("after", after_port, SOURCE), ("before", before_port, args.before_src)):
            env = modelport_env(workdir, port, embedded_engine="false")
            env["PYTHONPATH"] = str(source.resolve())
            process = start([sys.executable, "-c", SERVE, "serve"], env, workdir / f"{name}.log")
            servers.append(process)
            target = run.Target(
                name,
                f"http://127.0.0.1:{port}/v4/models/{deployment}/chat-completions",
                run.MODELPORT_BODY,
                {"x-api-key": API_KEY, "content-type": "application/json"},
                process,
            )
            run.wait_until_served(target, time.perf_counter())
            run.run_wrk(target, workdir, connections=args.concurrency, seconds=2, stream=args.stream)  # warm up
            targets.append(target)
        measured: dict[str, list[float]] = {target.name: [] for target in targets}
        for round_ in range(args.rounds):
            for target in targets if round_ % 2 == 0 else targets[::-1]:
                result = run.run_wrk(
                    target, workdir, connections=args.concurrency, seconds=args.seconds, stream=args.stream
                )
                measured[target.name].append(result["cpu_ms_per_request"])
        for name, values in measured.items():
            rounds = ", ".join(f"{value:.3f}" for value in values)
            print(f"{name:7} median {statistics.median(values):.3f} CPU ms/request  ({rounds})")
    finally:
        for process in servers:
            stop(process)
        stop(mock)


if __name__ == "__main__":
    main()
