"""The operator's terminal against a real `modelport serve` and its database: listings,
keys found by name or prefix, usage, and `modelport chat` fed from stdin."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelport.cli.main import app
from tests.conftest import CHAT_DEPLOYMENT
from tests.servers import modelport_serving

pytestmark = pytest.mark.e2e

KEY = "mp_console_admin_key_0123456789"
MODELPORT = Path(sys.executable).parent / "modelport"
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], Path]]:
    """The server's URL, the environment under which the CLI reaches its database (in
    an 80-column terminal), and the server's log."""
    data = tmp_path_factory.mktemp("console")
    with modelport_serving(data, api_key=KEY, usage_flush_seconds="0.2") as base_url:
        env = {"MODELPORT_DATABASE_URL": f"sqlite:///{data / 'modelport.db'}", "COLUMNS": "80"}
        yield base_url, env, data / "server.log"


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(app, list(args), env=env, input=stdin)
    assert result.exit_code == 0, result.output
    return result.output


def refused_soon(base_url: str, key: str) -> bool:
    """The server sees a change the CLI made within its cache refresh (0.5 s)."""
    deadline = time.monotonic() + 10
    while httpx.get(f"{base_url}/v4/models", headers={"x-api-key": key}).status_code != 401:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _chat_deployment(base_url: str) -> dict[str, Any]:
    """A fresh install's chat deployment (it has an embedding one too)."""
    listing = httpx.get(f"{base_url}/v4/model-deployments", headers={"x-api-key": KEY}).json()["items"]
    [deployment] = [item for item in listing if item["name"] == CHAT_DEPLOYMENT]
    return dict(deployment)


def test_first_start_prints_the_deployment_id_and_a_curl_line(served: tuple[str, dict[str, str], Path]) -> None:
    base_url, _env, log = served
    deployment = _chat_deployment(base_url)
    printed = log.read_text()
    assert f"Default deployment: {deployment['id']}" in printed
    assert f"curl -s {base_url}/v4/models/{deployment['id']}/chat-completions" in printed
    assert KEY not in printed  # given by the operator, so not echoed: the line says $MODELPORT_API_KEY
    # Pasted into a shell where MODELPORT_API_KEY is set (Docker, compose, Kubernetes),
    # the line answers: the shell fills the key in.
    lines = printed.splitlines()
    start = next(index for index, line in enumerate(lines) if line.strip().startswith("curl -s"))
    pasted = "\n".join(lines[start : start + 2]).strip()
    done = subprocess.run(
        ["bash", "-c", pasted], env={**os.environ, "MODELPORT_API_KEY": KEY}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["finish_reason"] in ("stop", "length"), done.stdout


def in_terminal(env: dict[str, str], *args: str, columns: int = 80) -> str:
    """What `modelport ARGS` shows in a terminal COLUMNS wide (a pseudo-terminal)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    environment = {**os.environ, **env, "TERM": "xterm", "NO_COLOR": "1"}
    environment.pop("COLUMNS", None)
    process = subprocess.Popen(
        [str(MODELPORT), *args], stdin=terminal, stdout=terminal, stderr=terminal, env=environment
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0, output
    return ANSI.sub("", output.decode()).replace("\r\n", "\n")


def test_listings_never_cut_a_cell_in_80_columns_piped_or_as_json(served: tuple[str, dict[str, str], Path]) -> None:
    base_url, env, _log = served
    deployment = _chat_deployment(base_url)
    assert deployment["account_id"] in cli(env, "accounts", "list")
    assert "default" in cli(env, "accounts", "list")
    for command in (["deployments", "list"], ["models", "list", "--account", "default"], ["accounts", "list"]):
        rows = json.loads(cli(env, *command, "--json"))
        assert rows and all(isinstance(row, dict) for row in rows)
        narrow = in_terminal(env, *command)
        assert all(len(line) <= 80 for line in narrow.splitlines()), narrow
        piped = subprocess.run(
            [str(MODELPORT), *command], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
        ).stdout
        for row in rows:  # every cell whole, on one line, in both
            for cell in row.values():
                assert any(cell in line for line in narrow.splitlines()), (cell, narrow)
                assert any(cell in line for line in piped.splitlines()), (cell, piped)
    deployments = json.loads(cli(env, "deployments", "list", "--json"))
    [chat] = [row for row in deployments if row["id"] == deployment["id"]]
    assert chat["status"] == "READY" and chat["name"] == CHAT_DEPLOYMENT
    assert deployment["model_instance_id"] in cli(env, "models", "list", "--account", "default")


def test_keys_are_created_in_a_named_account_and_revoked_by_name_or_prefix(
    served: tuple[str, dict[str, str], Path],
) -> None:
    base_url, env, _log = served
    created = [cli(env, "keys", "create", "--account", "default", "--name", name) for name in ("c-one", "c-two")]
    first, second = (output.strip().splitlines()[-1] for output in created)
    ids = [re.search(rf"key id ({UUID.pattern})", output)[1] for output in created]  # type: ignore[index]
    listing = cli(env, "keys", "list", "--account", "default")
    assert all(key_id in listing for key_id in ids), listing  # whole, not cut
    headers = {"x-api-key": first}
    assert httpx.get(f"{base_url}/v4/models", headers=headers).status_code == 200

    assert "revoked" in cli(env, "keys", "revoke", "c-one")
    assert refused_soon(base_url, first)
    assert "revoked" in cli(env, "keys", "revoke", ids[1][:8])
    assert refused_soon(base_url, second)

    ambiguous = CliRunner().invoke(app, ["keys", "revoke", ""], env=env)
    assert ambiguous.exit_code == 1
    unknown = CliRunner().invoke(app, ["keys", "create", "--account", "no-such-account"], env=env)
    assert (unknown.exit_code, "no account named 'no-such-account'" in unknown.output) == (1, True)


def test_chat_streams_answers_and_keeps_the_history_then_usage_counts_them(
    served: tuple[str, dict[str, str], Path],
) -> None:
    base_url, env, _log = served
    chat_env = {**env, "MODELPORT_API_KEY": KEY}
    before = _chat_requests(env)  # other tests of this module may have used it (the banner's curl)
    output = cli(
        chat_env, "chat", "--base-url", base_url, "--max-tokens", "8", "--temperature", "0", "--system", "Be brief.",
        stdin="What is the capital of France?\nAnd of Italy?\n/exit\n",
    )  # fmt: skip
    assert "smollm2-135m-instruct-embedded" in output
    assert output.count("model>") == 2
    prompt_tokens = [int(count) for count in re.findall(r"(\d+) prompt \+ \d+ completion tokens", output)]
    assert len(prompt_tokens) == 2
    assert prompt_tokens[1] > prompt_tokens[0] + 8  # the second turn carried the first one with it
    deadline = time.monotonic() + 10
    while _chat_requests(env) != (before[0] + 2, 0) and time.monotonic() < deadline:
        time.sleep(0.2)  # usage records are written in batches, a moment after the answer
    assert _chat_requests(env) == (before[0] + 2, 0)  # requests, failed


def _chat_requests(env: dict[str, str]) -> tuple[int, int]:
    """(requests, failed) of the last hour, from `modelport usage`: only the chat
    deployment is used in this module."""
    rows = [line for line in cli(env, "usage", "--since", "1h").splitlines() if UUID.search(line)]
    if not rows:
        return 0, 0
    [row] = rows
    requests, failed = row.split()[2:4]
    return int(requests), int(failed)


def test_chat_without_a_key_says_so(served: tuple[str, dict[str, str], Path]) -> None:
    base_url, env, _log = served
    result = CliRunner().invoke(app, ["chat", "--base-url", base_url], env={**env, "MODELPORT_API_KEY": ""})
    assert result.exit_code == 1
    assert "no API key" in result.output


def test_chat_finds_the_server_from_modelport_url_and_a_deployment_from_its_models_name(
    served: tuple[str, dict[str, str], Path],
) -> None:
    base_url, env, _log = served
    chat_env = {**env, "MODELPORT_API_KEY": KEY, "MODELPORT_URL": base_url, "MODELPORT_PORT": "1"}
    output = cli(chat_env, "chat", "smollm2-135m-instruct", stdin="/exit\n")  # a model's name, not a deployment's
    assert "smollm2-135m-instruct-embedded" in output
    unknown = CliRunner().invoke(app, ["chat", "no-such-model"], env=chat_env, input="/exit\n")
    assert unknown.exit_code == 1 and "cannot pick deployment 'no-such-model'" in unknown.output
