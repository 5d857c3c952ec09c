"""What the suite needs from the machine, and the one place that decides whether a
missing piece skips its tests or fails them.

Locally a missing piece is a skip that says why. CI (`.ci/run`) sets
`MODELPORT_TEST_REQUIRE_<NAME>=1` for each piece (POSTGRES, BROWSER, REDIS,
PORTABLE_BUILD, AGENT_CLIS, README_TOOLS, HADOLINT), and there the same gap fails the run
instead. The Debian packages the suite needs (chromium, redis-server, binutils for objdump) are installed with apt when
they are missing and the suite runs as root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest


def required(name: str) -> bool:
    """Whether `MODELPORT_TEST_REQUIRE_<name>=1`: a gap in `name` fails instead of skipping."""
    return os.environ.get(f"MODELPORT_TEST_REQUIRE_{name}") == "1"


def unavailable(name: str, message: str) -> NoReturn:
    """Skip the test saying why, or fail it where `name` is required."""
    if required(name):
        pytest.fail(f"{message} (MODELPORT_TEST_REQUIRE_{name}=1)", pytrace=False)
    pytest.skip(message)


def _apt_install(package: str) -> str | None:
    """`apt-get install package`; None when done, else why it could not be."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "apt-get is not available"
    if os.geteuid() != 0:
        return f"installing it needs root (run: sudo apt-get install -y {package})"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", package]):
        done = subprocess.run(step, env=environment, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0 and step[1] == "install":
            return f"`{' '.join(step)}` failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return None


def debian_executable(executable: str | Path, package: str, name: str) -> str:
    """The path of `executable` (a name on PATH, or an absolute path), installing the
    Debian `package` that has it when it is missing; else a skip, or a failure where
    `name` is required."""

    def find() -> str | None:
        if isinstance(executable, Path):
            return str(executable) if executable.exists() else None
        return shutil.which(executable)

    found = find()
    if found is not None:
        return found
    problem = _apt_install(package)
    found = find()
    if found is not None:
        return found
    problem = problem or f"apt-get installed {package} but {executable} is not there"
    unavailable(name, f"these tests need {executable} (Debian package {package}): {problem}")
