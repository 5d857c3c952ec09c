"""Processes the benchmarks start and stop: free loopback ports, modelport with its
settings, and a clean stop of a whole process group (uvicorn workers included)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

MODELPORT = str(Path(sys.executable).parent / "modelport")
# At least 24 characters, as modelport requires of a first admin key.
API_KEY = "mp_bench_key_for_loopback_runs_only"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def modelport_env(workdir: Path, port: int, **settings: str) -> dict[str, str]:
    """Environment for `modelport serve` on a SQLite file in `workdir`; `settings`
    adds MODELPORT_* variables (`workers="2"` → MODELPORT_WORKERS=2)."""
    return {
        **os.environ,
        "MODELPORT_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/modelport.db",
        "MODELPORT_API_KEY": API_KEY,
        "MODELPORT_PORT": str(port),
        "MODELPORT_LOG_LEVEL": "warning",
        **{f"MODELPORT_{name.upper()}": value for name, value in settings.items()},
    }


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
