"""The agent CLIs people point at a gateway, installed from npm for the tests that run them.

Each CLI is pinned (the versions issue 23 was reported against) and installed once into
`~/.cache/modelport/npm/<package>@<version>`, so a later run starts it in milliseconds.
Node and npm come with the machine (Debian's `nodejs` and `npm`, installed with apt when
missing, see `prerequisites.debian_executable`). A CLI that cannot be installed skips its
tests locally and fails them in CI (`MODELPORT_TEST_REQUIRE_AGENT_CLIS=1`, set by `.ci/run`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.prerequisites import debian_executable, unavailable

CLAUDE_CODE = ("@anthropic-ai/claude-code", "2.1.197", "claude")
CODEX = ("@openai/codex", "0.171.0", "codex")

_CACHE = Path(os.environ.get("MODELPORT_NPM_CACHE", Path.home() / ".cache" / "modelport" / "npm"))


def agent_cli(cli: tuple[str, str, str]) -> Path:
    """The path of the CLI's executable, installing the pinned package when missing."""
    package, version, binary = cli
    folder = _CACHE / f"{package.replace('/', '+')}@{version}"
    executable = folder / "node_modules" / ".bin" / binary
    if _runs(executable):
        return executable
    debian_executable("node", "nodejs", "AGENT_CLIS")
    npm = debian_executable("npm", "npm", "AGENT_CLIS")
    folder.mkdir(parents=True, exist_ok=True)
    # The package's own platform binary comes as an optional dependency; its postinstall
    # script only links it, so the install needs no scripts to run.
    done = subprocess.run(
        [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", f"{package}@{version}"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0 or not _runs(executable):
        output = done.stdout[-1500:] + done.stderr[-1500:]
        unavailable("AGENT_CLIS", f"npm could not install {package}@{version}: {output}")
    return executable


def _runs(executable: Path) -> bool:
    if not executable.exists():
        return False
    try:
        done = subprocess.run([str(executable), "--version"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
