"""Real servers on free loopback ports, for tests that need one."""

from __future__ import annotations

import socket
import subprocess
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
def running(command: list[str], *, ready_url: str, log_path: Path, env: dict[str, str] | None = None) -> Iterator[None]:
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
        yield
    finally:
        process.terminate()
        process.wait(timeout=20)
