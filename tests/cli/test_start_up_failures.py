"""`modelport serve` that cannot start says why in one line, with a non-zero exit and no
traceback: a database that does not exist or does not answer, Redis out of reach, a
port in use. The command is the installed console script, run as an operator runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prerequisites import unavailable
from tests.servers import free_port

MODELPORT = Path(sys.executable).parent / "modelport"


def serve(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MODELPORT_DATABASE_URL": f"sqlite:///{tmp_path / 'modelport.db'}",
        "MODELPORT_PORT": str(free_port()),
        "MODELPORT_EMBEDDED_ENGINE": "false",
        **{f"MODELPORT_{name.upper()}": value for name, value in settings.items()},
    }
    return subprocess.run([str(MODELPORT), "serve"], env=env, capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _postgres_running() -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 5432)) != 0:
            unavailable("POSTGRES", "PostgreSQL is not running on 127.0.0.1:5432")


def test_a_database_that_does_not_exist(tmp_path: Path) -> None:
    _postgres_running()
    url = "postgresql://postgres:s3cret@127.0.0.1:5432/no_such_db_for_modelport"
    line = one_line_error(serve(tmp_path, database_url=url))
    assert "postgres:***@127.0.0.1:5432/no_such_db_for_modelport: " in line and "does not exist" in line
    assert "s3cret" not in line and "MODELPORT_DATABASE_URL" in line


def test_a_database_server_that_does_not_answer(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/modelport"
    line = one_line_error(serve(tmp_path, database_url=url))
    assert "cannot open the database" in line and "database server runs" in line


def test_redis_out_of_reach(tmp_path: Path) -> None:
    line = one_line_error(serve(tmp_path, redis_url=f"redis://:hunter2@127.0.0.1:{free_port()}/0"))
    assert "cannot reach Redis at redis://:***@127.0.0.1" in line and "hunter2" not in line


def test_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(serve(tmp_path, port=str(port)))
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port" in line


@pytest.mark.parametrize("command", [["keys", "list", "--account", "x"], ["spend", "--account", "x"]])
def test_the_other_commands_say_the_same_in_one_line(tmp_path: Path, command: list[str]) -> None:
    env = {**os.environ, "MODELPORT_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/modelport"}
    result = subprocess.run([str(MODELPORT), *command], env=env, capture_output=True, text=True, timeout=120)
    assert "cannot open the database" in one_line_error(result)
