"""The real Codex CLI (npm `@openai/codex`, pinned in `tests/agent_clis.py`) pointed at
modelport as a custom provider with `wire_api = "responses"`, as its users configure it:
its first request (about 40 KB: developer and user messages, function, namespace and
web_search tools, reasoning, include, prompt_cache_key, client_metadata, streamed) is
translated onto a deployment whose upstream speaks only chat completions, and the CLI
prints the upstream's answer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent_clis import CODEX, agent_cli
from tests.servers import modelport_serving

pytestmark = pytest.mark.e2e

KEY = "mp_codex_cli_admin_key_0123456789"
ANSWER = "Hello from the chat-completions upstream."


class ChatUpstream:
    """An OpenAI-compatible upstream on loopback that speaks only /v1/chat/completions
    (streamed), and records every body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                upstream.bodies.append(body)
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
                chunks = [
                    {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                    *(
                        {**base, "choices": [{"index": 0, "delta": {"content": word}}]}
                        for word in re.findall(r"\S+\s*", ANSWER)
                    ),
                    {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                    {
                        **base,
                        "choices": [],
                        "usage": {"prompt_tokens": 900, "completion_tokens": 7, "total_tokens": 907},
                    },
                ]
                for chunk in chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ChatUpstream]]:
    """modelport (no embedded engine) with two models on the recording upstream: an
    OPENAI one and an OpenAI-compatible (LLMENGINE) one."""
    data = tmp_path_factory.mktemp("codex")
    upstream = ChatUpstream()
    try:
        with modelport_serving(data, api_key=KEY, embedded_engine="false") as base_url:
            admin = {"x-api-key": KEY}
            for name, vendor in (("codex-openai", "OPENAI"), ("codex-compatible", "LLMENGINE")):
                model = httpx.post(
                    f"{base_url}/v4/models",
                    headers=admin,
                    json={"name": name, "model_type": "CHAT_COMPLETION", "model_vendor": vendor,
                          "model_creation_parameters": {"model": "upstream-model", "base_url": upstream.url},
                          "base_model_metadata": {"model_details": {"token_context_window": 128000}}},
                )  # fmt: skip
                assert model.status_code == 200, model.text
                deployment = httpx.post(
                    f"{base_url}/v4/models/{model.json()['id']}/deployments", headers=admin, json={"name": "upstream"}
                )
                assert deployment.status_code == 200, deployment.text
            yield base_url, upstream
    finally:
        upstream.close()


def run_codex(base_url: str, model: str, home: Path, prompt: str) -> subprocess.CompletedProcess[str]:
    """`codex exec PROMPT` with modelport as its provider, configured as the Codex docs say."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "modelport"\n'
        "[model_providers.modelport]\n"
        'name = "modelport"\n'
        f'base_url = "{base_url}/v1"\n'
        'env_key = "MODELPORT_API_KEY"\n'
        'wire_api = "responses"\n'
    )
    env = {**os.environ, "CODEX_HOME": str(home), "HOME": str(home), "MODELPORT_API_KEY": KEY, "NO_COLOR": "1"}
    return subprocess.run(
        [str(agent_cli(CODEX)), "exec", "--skip-git-repo-check", prompt],
        env=env,
        cwd=home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.parametrize("model", ["codex-openai", "codex-compatible"])
def test_codex_answers_through_a_chat_completions_upstream(
    gateway: tuple[str, ChatUpstream], model: str, tmp_path: Path
) -> None:
    base_url, upstream = gateway
    upstream.bodies.clear()
    done = run_codex(base_url, model, tmp_path / "codex-home", "Say hello.")
    assert done.returncode == 0, f"codex failed:\n{done.stdout}\n{done.stderr}"
    assert ANSWER in done.stdout, done.stdout + done.stderr
    [sent] = [body for body in upstream.bodies if body.get("stream")]  # its one turn
    roles = [message["role"] for message in sent["messages"]]
    assert roles[0] == "system" and "user" in roles  # its developer instructions, then the prompt
    assert any("Say hello." in json.dumps(message) for message in sent["messages"] if message["role"] == "user")
    # Its function tools translate; the tools only OpenAI's servers run (web_search,
    # the namespace of sub-agent tools) are left out, not sent to a server that has none.
    names = {tool["function"]["name"] for tool in sent.get("tools", [])}
    assert "exec_command" in names
    assert all(tool["type"] == "function" for tool in sent.get("tools", []))
