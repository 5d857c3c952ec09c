"""System calls and kernel time per streamed request: modelport (one worker, an OPENAI
deployment on the mock upstream), and the same from another checkout's sources.

Each target serves the requests twice, one at a time: once to read the user and system
CPU time it spent (from /proc), once under `strace -c` to count its system calls. The
counts are the same on a busy machine as on a quiet one, and the system time varies far
less than the user time, so together they show what a change to the streaming path did
where whole-CPU timings drown in noise. /proc counts CPU time in ticks of 10 ms, so keep
`--requests` at 1,000 or more (a stream costs a few tenths of a millisecond in the kernel).

    .venv/bin/python benchmarks/gateway/syscalls.py --baseline-src /tmp/base/src

Needs strace (Debian: apt-get install strace).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from run import (  # run.py puts benchmarks/ on sys.path
    HERE,
    MODELPORT_BODY,
    Target,
    configure_modelport,
    cpu_times,
    table,
    wait_until_served,
)

from servers import API_KEY, MODELPORT, free_port, modelport_env, start, stop


def strace_counts(path: Path) -> dict[str, int]:
    """`strace -c`'s summary: calls per system call name."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        # rows: % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3])
    return counts


def measure(workdir: Path, env: dict[str, str], url: str, requests: int, label: str) -> list[str]:
    process = start([MODELPORT, "serve"], env, workdir / f"{label}.log")
    stream = {**MODELPORT_BODY, "stream": True}
    try:
        wait_until_served(Target(label, url, MODELPORT_BODY, {"x-api-key": API_KEY}, process), time.perf_counter())
        with httpx.Client(headers={"x-api-key": API_KEY}, timeout=10) as client:
            for _ in range(20):  # warm: pooled upstream connection, caches
                client.post(url, json=stream).raise_for_status()
            user, system = cpu_times(process.pid)
            for _ in range(requests):
                client.post(url, json=stream).raise_for_status()
            user_after, system_after = cpu_times(process.pid)
            summary = workdir / f"{label}.strace"
            tracer = subprocess.Popen(
                ["strace", "-f", "-c", "-o", str(summary), "-p", str(process.pid)], stderr=subprocess.DEVNULL
            )
            time.sleep(1)  # strace attaches to every thread
            events = 0
            for _ in range(requests):
                answer = client.post(url, json=stream)
                answer.raise_for_status()
                events += answer.text.count("data:")
            time.sleep(0.5)
            tracer.terminate()
            tracer.wait()
    finally:
        stop(process)
    counts = strace_counts(summary)
    writes = sum(counts.get(name, 0) for name in ("write", "writev", "sendto", "sendmsg"))
    return [
        label,
        f"{events / requests:.1f}",
        f"{writes / requests:.1f}",
        f"{counts.get('epoll_pwait', 0) / requests:.1f}",
        f"{sum(counts.values()) / requests:.1f}",
        f"{1000 * (user_after - user) / requests:.2f}",
        f"{1000 * (system_after - system) / requests:.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--baseline-src", type=Path, help="also modelport from this src/ (another checkout)")
    args = parser.parse_args()
    if shutil.which("strace") is None:
        sys.exit("needs strace (Debian: apt-get install strace)")
    workdir = Path(tempfile.mkdtemp(prefix="modelport-syscalls-"))
    mock_port, port = free_port(), free_port()
    mock = start(
        [sys.executable, str(HERE / "mock_upstream.py"), "--port", str(mock_port)], dict(os.environ),
        workdir / "mock.log",
    )  # fmt: skip
    try:
        deployment, _ = configure_modelport(workdir, port, mock_port)
        url = f"http://127.0.0.1:{port}/v4/models/{deployment}/chat-completions"
        env = modelport_env(workdir, port, embedded_engine="false")
        rows = [measure(workdir, env, url, args.requests, "modelport")]
        if args.baseline_src:
            env = modelport_env(workdir, port, embedded_engine="false")
            env["PYTHONPATH"] = os.pathsep.join([str(args.baseline_src.resolve()), env.get("PYTHONPATH", "")])
            rows.append(measure(workdir, env, url, args.requests, "baseline"))
    finally:
        stop(mock)
    print(
        table(
            rows,
            [
                "target",
                "events/request",
                "writes/request",
                "epoll waits/request",
                "system calls/request",
                "user CPU ms/request",
                "system CPU ms/request",
            ],
        )
    )


if __name__ == "__main__":
    main()
