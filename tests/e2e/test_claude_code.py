"""The real Claude Code CLI (`claude -p`, from npm, see tests/agent_clis.py) against a
real `modelport serve` whose ANTHROPIC deployment points at a fake Anthropic upstream
on loopback (tests/fake_anthropic.py): Claude Code's own request, thinking,
context management, prompt caching and beta flags included, reaches the upstream as
it was sent, and the answer (a thinking block, then text) comes back to the CLI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_clis import CLAUDE_CODE, agent_cli
from tests.conftest import E2E_KEY
from tests.fake_anthropic import ANSWER, FakeAnthropic, deploy, fake_anthropic
from tests.servers import modelport_serving

pytestmark = pytest.mark.e2e

MODEL = "claude-via-modelport"
UPSTREAM_MODEL = "claude-sonnet-fake"
# The whole run: the CLI starts in about a second; its first run writes its settings.
CLI_TIMEOUT_SECONDS = 180


@pytest.fixture(scope="module")
def claude() -> Path:
    return agent_cli(CLAUDE_CODE)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeAnthropic]]:
    """modelport (no embedded engine) with one model, MODEL, on the fake upstream."""
    data = tmp_path_factory.mktemp("claude-code")
    with (
        fake_anthropic() as upstream,
        modelport_serving(data, api_key=E2E_KEY, embedded_engine="false", upstream_attempts="1") as base_url,
    ):
        parameters = {"base_url": upstream.base_url, "model": UPSTREAM_MODEL}
        deploy(base_url, E2E_KEY, name=MODEL, vendor="ANTHROPIC", parameters=parameters)
        yield base_url, upstream


def test_claude_code_prints_the_upstreams_answer_and_its_request_arrives_whole(
    claude: Path, stack: tuple[str, FakeAnthropic], tmp_path: Path
) -> None:
    base_url, upstream = stack
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": E2E_KEY,
        # Its small-model side calls (titles, quota) go to the same model.
        "ANTHROPIC_SMALL_FAST_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": MODEL,
        # Nothing but the gateway: no telemetry, no update check, no error reporting.
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_NON_ESSENTIAL_MODEL_CALLS": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CI": "1",
    }
    done = subprocess.run(
        [str(claude), "-p", "say hi", "--model", MODEL],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
    assert ANSWER in done.stdout

    asked = [request for request in upstream.messages() if "thinking" in request.body]
    assert asked, f"no request with thinking reached the upstream: {[r.body.keys() for r in upstream.messages()]}"
    request = asked[-1]
    body = request.body
    assert body["model"] == UPSTREAM_MODEL and body["stream"] is True
    assert body["thinking"]["type"] in ("enabled", "adaptive")
    assert body["context_management"]["edits"]
    system = body["system"]
    assert isinstance(system, list) and any(block.get("cache_control") == {"type": "ephemeral"} for block in system)
    assert body["tools"] and all("input_schema" in tool or "type" in tool for tool in body["tools"])
    beta = request.headers["anthropic-beta"].split(",")
    assert "claude-code-20250219" in beta and any(flag.startswith("context-management") for flag in beta)
    # The gateway's own key stays with the gateway: the upstream got none.
    assert E2E_KEY not in str(request.headers)
