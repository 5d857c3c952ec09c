"""Issue 24's two targets through the server, each measured as many short pairs of wrk
runs against one modelport process (and the Python floor), so that what slows this
machine for a while slows both halves of a pair alike:

- **keyed / member**: varied deterministic requests by a member key with a model
  allow-list whose response cache always misses (a lookup, then a store) against the
  same requests by a member key with neither: what the allow-list, the audit log and the
  cache add to a generated request (target: at most 1.05).
- **hit / floor**: a request answered from the response cache against the Python floor
  (floor.py, a bare forwarding proxy) forwarding the same call to the mock (target: at
  most 3).

Each pair runs its two halves back to back, in alternating order; the ratio of their
CPU per request is the pair's. The median of the pairs is reported, with the quartiles
and the extremes: a few pairs in a run land far off (a half at 1.4x the other), and the
median is not moved by them. `--pin` keeps the servers on one CPU and wrk and the mock on
the other, so that the scheduler does not move them between runs.

    .venv/bin/python benchmarks/gateway/paired.py --pin --pairs 16 --seconds 2 --concurrency 1,32,64

`run.py --keyed --cache` measures the same things among every other target, pooled over
`--repeat` runs of several seconds: a run's pooled ratio moved by ±5 % between two runs
of the same code on this 2-core machine, as much as the first target allows.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import (  # noqa: E402
    MODELPORT_BODY,
    OPENAI_BODY,
    Target,
    configure_modelport,
    process_tree,
    run_wrk,
    table,
    wait_until_served,
)

from servers import API_KEY, MODELPORT, free_port, modelport_env, start, stop  # noqa: E402


def quartiles(values: list[float]) -> tuple[float, float, float]:
    low, median, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, median, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=12, help="pairs of runs per scenario")
    parser.add_argument("--seconds", type=int, default=2, help="length of each wrk run")
    parser.add_argument("--concurrency", default="1,32,64")
    parser.add_argument("--only", choices=("keyed", "hit"), help="one of the two comparisons")
    parser.add_argument(
        "--pin", action="store_true", help="modelport and the floor on the first CPU, wrk and the mock on the second"
    )
    args = parser.parse_args()
    if args.pin:  # inherited by what this starts: the mock and wrk
        os.sched_setaffinity(0, {1})

    workdir = Path(tempfile.mkdtemp(prefix="modelport-paired-"))
    mock_port, port, floor_port = free_port(), free_port(), free_port()
    processes = [
        start(
            [sys.executable, str(HERE / "mock_upstream.py"), "--port", str(mock_port)],
            dict(os.environ),
            workdir / "mock.log",
        )
    ]
    try:
        deployment, _, cached_key, keyed_key = configure_modelport(workdir, port, mock_port, cache=True, keyed=True)
        assert cached_key is not None and keyed_key is not None
        mock = Target("mock", f"http://127.0.0.1:{mock_port}/v1/chat/completions", OPENAI_BODY, {})
        wait_until_served(mock, time.perf_counter())
        gateway = start(
            [MODELPORT, "serve"], modelport_env(workdir, port, embedded_engine="false"), workdir / "modelport.log"
        )
        processes.append(gateway)
        floor = start(
            [sys.executable, str(HERE / "floor.py"), "--port", str(floor_port), "--upstream", mock.url],
            dict(os.environ),
            workdir / "floor.log",
        )
        processes.append(floor)
        if args.pin:
            for server in (gateway, floor):
                for pid in process_tree(server.pid):
                    for thread in Path(f"/proc/{pid}/task").iterdir():  # each thread has its own
                        os.sched_setaffinity(int(thread.name), {0})

        url = f"http://127.0.0.1:{port}/v4/models/{deployment}/chat-completions"
        varied_body = {**MODELPORT_BODY, "prompt": "Say hello. @N@", "temperature": 0}

        def served(name: str, key: str, body: dict[str, object], *, varying: bool) -> Target:
            target = Target(
                name, url, body, {"x-api-key": key, "content-type": "application/json"}, gateway, varying=varying
            )
            wait_until_served(target, time.perf_counter())
            return target

        keyed = served("keyed", keyed_key, varied_body, varying=True)  # the server is up from here
        member = httpx.post(
            f"http://127.0.0.1:{port}/v4/api-keys",
            json={"role": "member", "name": "bench-member"},
            headers={"x-api-key": API_KEY},
            timeout=10,
        )
        member.raise_for_status()
        comparisons = {
            "keyed": (keyed, served("member", member.json()["key"], varied_body, varying=True)),
            "hit": (
                served("hit", cached_key, {**MODELPORT_BODY, "temperature": 0}, varying=False),
                Target("floor", f"http://127.0.0.1:{floor_port}/v1/chat/completions", OPENAI_BODY, {}, floor),
            ),
        }
        wait_until_served(comparisons["hit"][1], time.perf_counter())
        if args.only:
            comparisons = {args.only: comparisons[args.only]}

        for measured, against in comparisons.values():  # lazy imports, pools and caches filled
            for target in (measured, against):
                for stream in (False, True):
                    run_wrk(target, workdir, connections=8, seconds=1, stream=stream)

        rows = []
        for connections in [int(c) for c in args.concurrency.split(",")]:
            for stream in (False, True):
                scenario = f"{'stream' if stream else 'json'}@{connections}"
                for name, (measured, against) in comparisons.items():
                    ratios = []
                    for number in range(args.pairs):
                        halves = (measured, against) if number % 2 == 0 else (against, measured)
                        cpu = {}
                        for target in halves:
                            result = run_wrk(
                                target, workdir, connections=connections, seconds=args.seconds, stream=stream
                            )
                            if result["errors"]:
                                raise SystemExit(f"{target.name} {scenario}: {result['errors']} errors")
                            cpu[target.name] = result["cpu_ms_per_request"]
                        ratios.append(cpu[measured.name] / cpu[against.name])
                        print(
                            f"{scenario:10} {name:6} pair {number + 1:2}: {measured.name} {cpu[measured.name]:.3f} "
                            f"{against.name} {cpu[against.name]:.3f} ms/req, ratio {ratios[-1]:.3f}",
                            flush=True,
                        )
                    low, median, high = quartiles(ratios)
                    rows.append(
                        [
                            scenario,
                            f"{measured.name} / {against.name}",
                            f"{median:.3f}",
                            f"{low:.3f} to {high:.3f}",
                            f"{min(ratios):.3f} to {max(ratios):.3f}",
                        ]
                    )
        print()
        print(table(rows, ["scenario", "ratio of CPU per request", "median", "quartiles", "extremes"]))
    finally:
        for process in reversed(processes):
            stop(process)


if __name__ == "__main__":
    main()
