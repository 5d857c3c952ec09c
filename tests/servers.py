"""Real servers on free loopback ports, for tests that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(
    command: list[str], *, ready_url: str, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command`, wait until `ready_url` answers 200 (60 s at most), stop it after.
    If it dies or never answers, fail with what it wrote to `log_path`."""
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextmanager
def modelport_serving(data: Path, **settings: str) -> Iterator[str]:
    """`modelport serve` on a free loopback port and a fresh SQLite file in `data`;
    `settings` become MODELPORT_* variables (`api_key="k"` → MODELPORT_API_KEY=k).
    Yields the base URL once /health answers."""
    port = free_port()
    env = {
        **os.environ,
        "MODELPORT_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'modelport.db'}",
        "MODELPORT_PORT": str(port),
        "MODELPORT_LOG_LEVEL": "warning",
        # Within `running`'s 20 s wait at the end, even with requests still in flight.
        "MODELPORT_SHUTDOWN_GRACE_SECONDS": "5",
        **{f"MODELPORT_{name.upper()}": value for name, value in settings.items()},
    }
    base_url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "modelport"), "serve"]
    with running(command, ready_url=f"{base_url}/health", log_path=data / "server.log", env=env):
        yield base_url


def processes_mapping(path: Path) -> set[int]:
    """Processes that have this file mapped into memory: the ones holding a model."""
    holders = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path) in (entry / "maps").read_text():
                    holders.add(int(entry.name))
            except OSError:
                continue
    return holders
