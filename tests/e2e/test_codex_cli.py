"""The real Codex CLI (npm `@openai/codex`, pinned in `tests/agent_clis.py`) pointed at
modelport as a custom provider with `wire_api = "responses"`, as its users configure it.
Its first request (about 40 KB: developer and user messages, function, namespace and
web_search tools, reasoning, include, prompt_cache_key, client_metadata, streamed) goes
whole to an OPENAI deployment's upstream (which serves the Responses API), and is
translated onto an OpenAI-compatible deployment whose upstream speaks only chat
completions; either way the CLI prints the upstream's answer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
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


def responses_events(model: str) -> bytes:
    """OpenAI's events for a streamed response that says ANSWER."""
    created = int(time.time())
    response = {
        "id": "resp_up",
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "model": model,
        "output": [],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    message = {
        "id": "msg_up",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": ANSWER, "annotations": []}],
    }
    usage = {
        "input_tokens": 900,
        "output_tokens": 7,
        "total_tokens": 907,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    events = [
        {"type": "response.created", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": {**message, "content": [],
                                                                            "status": "in_progress"}},
        {"type": "response.output_text.delta", "item_id": "msg_up", "output_index": 0, "content_index": 0,
         "delta": ANSWER, "logprobs": []},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed", "response": {**response, "status": "completed", "output": [message],
                                                    "usage": usage}},
    ]  # fmt: skip
    return b"".join(
        f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': number})}\n\n".encode()
        for number, event in enumerate(events)
    )


class Upstream:
    """An upstream on loopback that serves /v1/responses and /v1/chat/completions
    (streamed), and records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                upstream.requests.append((self.path, body))
                if self.path == "/v1/responses":
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    self.wfile.write(responses_events(body["model"]))
                    return
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
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Upstream]]:
    """modelport (no embedded engine) with two models on the recording upstream: an
    OPENAI one (relayed) and an OpenAI-compatible LLMENGINE one (translated)."""
    data = tmp_path_factory.mktemp("codex")
    upstream = Upstream()
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


def test_codex_through_an_openai_deployment_sends_its_request_whole(
    gateway: tuple[str, Upstream], tmp_path: Path
) -> None:
    base_url, upstream = gateway
    upstream.requests.clear()
    done = run_codex(base_url, "codex-openai", tmp_path / "codex-home", "Say hello.")
    assert done.returncode == 0, f"codex failed:\n{done.stdout}\n{done.stderr}"
    assert ANSWER in done.stdout, done.stdout + done.stderr
    [(path, sent)] = [(path, body) for path, body in upstream.requests if body.get("stream")]  # its one turn
    assert path == "/v1/responses" and sent["model"] == "upstream-model"
    # Whole: its built-in tools, reasoning and cache hints reach OpenAI, which runs them.
    kinds = {tool["type"] for tool in sent["tools"]}
    assert {"function", "namespace", "web_search"} <= kinds
    assert sent["reasoning"] == {"summary": "auto"} and sent["include"] == ["reasoning.encrypted_content"]
    assert sent["prompt_cache_key"] and sent["client_metadata"] and sent["store"] is False
    assert any("Say hello." in json.dumps(item) for item in sent["input"])


def test_codex_through_a_chat_completions_server_is_translated(gateway: tuple[str, Upstream], tmp_path: Path) -> None:
    base_url, upstream = gateway
    upstream.requests.clear()
    done = run_codex(base_url, "codex-compatible", tmp_path / "codex-home", "Say hello.")
    assert done.returncode == 0, f"codex failed:\n{done.stdout}\n{done.stderr}"
    assert ANSWER in done.stdout, done.stdout + done.stderr
    [(path, sent)] = [(path, body) for path, body in upstream.requests if body.get("stream")]
    assert path == "/v1/chat/completions"
    roles = [message["role"] for message in sent["messages"]]
    assert roles[0] == "system" and "user" in roles  # its developer instructions, then the prompt
    assert any("Say hello." in json.dumps(message) for message in sent["messages"] if message["role"] == "user")
    # Its function tools translate; the tools only OpenAI's servers run (web_search,
    # the namespace of sub-agent tools) are left out, not sent to a server that has none.
    names = {tool["function"]["name"] for tool in sent.get("tools", [])}
    assert "exec_command" in names
    assert all(tool["type"] == "function" for tool in sent.get("tools", []))
