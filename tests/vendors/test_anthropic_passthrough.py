"""Anthropic's Messages surface onto the deployments behind it, against answers in the
vendors' documented shapes: an ANTHROPIC deployment gets the request as its client sent
it (blocks with `cache_control`, thinking blocks with signatures, server tools,
`thinking`, `context_management`, ..., and the `anthropic-beta` header, under the
operator's headers and the credential), and its thinking and redacted thinking blocks
come back whole and streamed; any other vendor gets none of Anthropic's hints, and they
are named as dropped (its server tools are no hint: tests/api/test_anthropic_content.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelport.catalogue.deployment_settings import with_parameters
from modelport.compat import anthropic as translate
from modelport.generation import GenerationCall, Sampling, VendorPassthrough
from modelport.schemas import anthropic as wire
from modelport.vendors.anthropic import AnthropicVendor
from modelport.vendors.base import Target
from modelport.vendors.client import UpstreamClient
from modelport.vendors.upstream import RetryPolicy
from tests.vendors.conftest import deploy
from tests.vendors.recorded import Recorded

SECRET = "sk-ant-test-secret-0000"
SIGNED = {"type": "thinking", "thinking": "Let me add them.", "signature": "EuYBCkQYAiJAsig1"}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"}
# What Claude Code sends, in small: cached system blocks, a mid-conversation system
# turn, a signed thinking block and a cited text block sent back, tools of both kinds.
CLAUDE_CODE_BODY: dict[str, Any] = {
    "max_tokens": 32000,
    "system": [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Be careful.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "2 + 2?", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [SIGNED, REDACTED, {"type": "text", "text": "4.", "citations": None}]},
        {"role": "system", "content": "Answer tersely."},
        {"role": "user", "content": "And 3 + 3?"},
    ],
    "tools": [
        {"name": "Bash", "description": "Run a command.", "strict": True,
         "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
         "cache_control": {"type": "ephemeral"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
    "metadata": {"user_id": "someone"},
}  # fmt: skip
HINTS = ("thinking", "context_management", "metadata", "output_config.effort", "cache_control",
         "messages.thinking", "messages.redacted_thinking")  # fmt: skip
# The body without its server tool, which no other vendor takes (a 400, not a hint).
WITHOUT_SERVER_TOOLS = {**CLAUDE_CODE_BODY, "tools": CLAUDE_CODE_BODY["tools"][:1]}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", SECRET)


async def _deployed(recorded_app: Any, vendor: str, upstream_model: str, **parameters: Any) -> str:
    _app, client, _transport = recorded_app
    name = f"{vendor.lower()}-{upstream_model}"
    await deploy(client, vendor=vendor, model_name=name, model=upstream_model, **parameters)
    return name


async def test_an_anthropic_deployment_gets_the_request_as_sent(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["claude-pass"] = (200, "documented/anthropic/message_redacted_thinking.json")
    model = await _deployed(recorded_app, "ANTHROPIC", "claude-pass", api_key_env="ANTHROPIC_TEST_KEY")
    answer = await client.post(
        "/v1/messages?beta=true",
        json={"model": model, **CLAUDE_CODE_BODY},
        headers={"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"},
    )
    assert answer.status_code == 200, answer.text
    sent = transport.last_body()
    for name in ("system", "messages", "tools", "thinking", "context_management", "output_config", "metadata"):
        assert sent[name] == CLAUDE_CODE_BODY[name], name
    assert (sent["model"], sent["max_tokens"], sent["stream"]) == ("claude-pass", 32000, False)
    headers = transport.sent[-1].headers
    assert headers["anthropic-beta"] == "claude-code-20250219,interleaved-thinking-2025-05-14"
    assert headers["x-api-key"] == SECRET and headers["anthropic-version"] == "2023-06-01"
    # The answer's reasoning comes back first, whole, with its signature.
    content = answer.json()["content"]
    assert content[:2] == [SIGNED, REDACTED]
    assert content[2]["type"] == "text" and content[2]["text"] == "2 + 2 = 4."


async def test_streamed_thinking_keeps_its_blocks_and_signature(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["claude-stream"] = (200, "documented/anthropic/stream_redacted_thinking.sse")
    model = await _deployed(recorded_app, "ANTHROPIC", "claude-stream", api_key_env="ANTHROPIC_TEST_KEY")
    answer = await client.post("/v1/messages", json={"model": model, "stream": True, **CLAUDE_CODE_BODY})
    assert answer.status_code == 200, answer.text
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    starts = [(event["index"], event["content_block"]) for event in events if event["type"] == "content_block_start"]
    assert starts == [(0, {"type": "thinking", "thinking": "", "signature": ""}), (1, REDACTED),
                      (2, {"type": "text", "text": ""})]  # fmt: skip
    deltas = [(event["index"], event["delta"]) for event in events if event["type"] == "content_block_delta"]
    assert deltas == [
        (0, {"type": "thinking_delta", "thinking": "Let me "}),
        (0, {"type": "thinking_delta", "thinking": "add them."}),
        (0, {"type": "signature_delta", "signature": "EuYBCkQYAiJAsig1"}),
        (2, {"type": "text_delta", "text": "2 + 2 = 4."}),
    ]
    stops = [event["index"] for event in events if event["type"] == "content_block_stop"]
    assert stops == [0, 1, 2]
    assert transport.last_body()["stream"] is True


async def test_operator_headers_and_the_credential_win_over_the_clients(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["claude-headers"] = (200, "documented/anthropic/message.json")
    model = await _deployed(
        recorded_app, "ANTHROPIC", "claude-headers", api_key_env="ANTHROPIC_TEST_KEY",
        headers={"anthropic-beta": "operator-chosen"},
    )  # fmt: skip
    answer = await client.post(
        "/v1/messages",
        json={"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"anthropic-beta": "client-chosen"},
    )
    assert answer.status_code == 200, answer.text
    assert transport.sent[-1].headers["anthropic-beta"] == "operator-chosen"


async def test_the_adapter_sends_no_client_header_but_anthropic_beta() -> None:
    transport = Recorded()
    transport.answers["claude-x"] = (200, "documented/anthropic/message.json")
    vendor = AnthropicVendor(UpstreamClient(transport), RetryPolicy(attempts=1))
    target = with_parameters(
        Target(deployment_id="dep", model_type="CHAT_COMPLETION", model_vendor="ANTHROPIC"), {"model": "claude-x"}
    )
    passthrough = VendorPassthrough(
        "ANTHROPIC", body={"thinking": {"type": "adaptive"}},
        headers={"anthropic-beta": "b1", "x-api-key": "stolen", "host": "evil.example", "anthropic-version": "1999"},
    )  # fmt: skip
    call = GenerationCall(
        sampling=Sampling(temperature=1.0, max_tokens=16),
        messages=({"role": "user", "content": "Hi"},),
        passthrough=passthrough,
    )
    await vendor.complete(target, call)
    sent = transport.sent[-1]
    assert sent.headers["anthropic-beta"] == "b1" and sent.headers["anthropic-version"] == "2023-06-01"
    assert "x-api-key" not in sent.headers and sent.url.host == "api.anthropic.com"
    assert transport.last_body()["thinking"] == {"type": "adaptive"}
    # Another family's passthrough is not this adapter's to read.
    other = VendorPassthrough("OPENAI", body={"store": True})
    await vendor.complete(target, GenerationCall(sampling=call.sampling, messages=call.messages, passthrough=other))
    assert "store" not in transport.last_body()


async def test_another_vendor_gets_none_of_anthropics_hints(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["gpt-hints"] = (200, "documented/openai/chat_after_tool.json")
    model = await _deployed(recorded_app, "OPENAI", "gpt-hints")
    answer = await client.post("/v1/messages", json={"model": model, **WITHOUT_SERVER_TOOLS})
    assert answer.status_code == 200, answer.text
    assert [block["type"] for block in answer.json()["content"]] == ["text"]  # no thinking here
    sent = transport.last_body()
    text = json.dumps(sent)
    for hint in ("thinking", "context_management", "cache_control", "metadata", "effort", "web_search", "signature"):
        assert hint not in text, hint
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["Bash"]
    assert sent["tools"][0]["function"]["strict"] is True  # strict changes what is sampled: kept
    # The conversation still reads the same: the cached text, the earlier answer, the mid-turn instruction.
    roles = [message["role"] for message in sent["messages"]]
    assert roles == ["system", "user", "assistant", "system", "user"]


def test_the_hints_are_named_as_dropped() -> None:
    body = wire.MessagesBody.model_validate({"model": "m", **CLAUDE_CODE_BODY})
    text = translate.message_request(body)
    assert text.dropped == HINTS
    assert text.options and text.options["content_needs"] == {"server_tools": "server tools (web_search_20250305)"}
    passthrough = text.options and text.options["passthrough"]
    assert isinstance(passthrough, VendorPassthrough)
    assert passthrough.vendor == "ANTHROPIC" and passthrough.hints == HINTS
    plain = wire.MessagesBody.model_validate(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert translate.message_request(plain).dropped == ()
