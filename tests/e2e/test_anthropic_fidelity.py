"""Anthropic fidelity through a real `modelport serve`, driven by the `anthropic` SDK: an
ANTHROPIC deployment on a fake upstream (tests/fake_anthropic.py) gets thinking and the
other Anthropic-only fields as sent, returns thinking blocks with their signatures
(whole and streamed) that go back in the next turn unchanged; `citations: null` is
taken back; `models.list()`/`retrieve()` validate; count_tokens asks the upstream's
count endpoint, or estimates (and says so) for a vendor that cannot count; an unknown
field is a 400 naming it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic import Anthropic

from tests.conftest import E2E_KEY
from tests.fake_anthropic import ANSWER, COUNTED_TOKENS, SIGNATURE, THINKING, FakeAnthropic, deploy, fake_anthropic
from tests.servers import modelport_serving

pytestmark = pytest.mark.e2e

MODEL = "claude-fidelity"
OTHER_MODEL = "not-claude"  # an OpenAI-compatible deployment: Anthropic's fields are hints there
HELLO = [{"role": "user", "content": "Hello?"}]
THINK = {"type": "enabled", "budget_tokens": 1024}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeAnthropic]]:
    data = tmp_path_factory.mktemp("anthropic-fidelity")
    with (
        fake_anthropic() as upstream,
        modelport_serving(data, api_key=E2E_KEY, embedded_engine="false", upstream_attempts="1") as base_url,
    ):
        deploy(base_url, E2E_KEY, name=MODEL, vendor="ANTHROPIC",
               parameters={"base_url": upstream.base_url, "model": "claude-upstream"})  # fmt: skip
        # Never called: count_tokens estimates for this vendor.
        deploy(base_url, E2E_KEY, name=OTHER_MODEL, vendor="OPENAI",
               parameters={"base_url": f"{upstream.base_url}/v1", "model": "gpt-upstream"})  # fmt: skip
        yield base_url, upstream


@pytest.fixture(scope="module")
def client(stack: tuple[str, FakeAnthropic]) -> Anthropic:
    return Anthropic(base_url=stack[0], api_key=E2E_KEY, max_retries=0)


def test_thinking_blocks_come_back_signed_and_go_back_unchanged(
    client: Anthropic, stack: tuple[str, FakeAnthropic]
) -> None:
    _, upstream = stack
    whole = client.messages.create(model=MODEL, max_tokens=2048, thinking=THINK, messages=HELLO)  # type: ignore[arg-type]
    thinking, text = whole.content
    assert thinking.type == "thinking" and (thinking.thinking, thinking.signature) == (THINKING, SIGNATURE)
    assert text.type == "text" and text.text == ANSWER
    assert upstream.messages()[-1].body["thinking"] == THINK

    with client.messages.stream(model=MODEL, max_tokens=2048, thinking=THINK, messages=HELLO) as stream:  # type: ignore[arg-type]
        events = list(stream)
        final = stream.get_final_message()
    deltas = [(event.index, event.delta.type) for event in events if event.type == "content_block_delta"]
    assert (0, "thinking_delta") in deltas and (0, "signature_delta") in deltas and (1, "text_delta") in deltas
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].signature == SIGNATURE and final.content[0].thinking == THINKING  # type: ignore[union-attr]

    # The next turn sends the answer back as Claude returned it (citations: null included).
    sent_back: list[dict[str, Any]] = [
        {"type": "thinking", "thinking": THINKING, "signature": SIGNATURE},
        {"type": "text", "text": ANSWER, "citations": None},
    ]
    history = [*HELLO, {"role": "assistant", "content": sent_back}, {"role": "user", "content": "And again?"}]
    again = client.messages.create(model=MODEL, max_tokens=2048, thinking=THINK, messages=history)  # type: ignore[arg-type]
    assert again.content[-1].text == ANSWER  # type: ignore[union-attr]
    forwarded = upstream.messages()[-1].body["messages"]
    assert forwarded[1] == {"role": "assistant", "content": sent_back}


def test_anthropic_only_fields_and_the_beta_header_reach_the_upstream(
    client: Anthropic, stack: tuple[str, FakeAnthropic]
) -> None:
    _, upstream = stack
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    tools = [
        {"name": "lookup", "description": "Look up.", "input_schema": {"type": "object"}, "strict": True,
         "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
    ]  # fmt: skip
    extra = {
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "thinking": {"type": "adaptive"},
    }
    client.messages.create(
        model=MODEL,
        max_tokens=512,
        system=system,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        metadata={"user_id": "someone"},
        messages=HELLO,  # type: ignore[arg-type]
        extra_body=extra,
        extra_headers={"anthropic-beta": "context-management-2025-06-27,effort-2025-11-24"},
        extra_query={"beta": "true"},
    )
    received = upstream.messages()[-1]
    body = received.body
    assert (body["system"], body["tools"], body["metadata"]) == (system, tools, {"user_id": "someone"})
    assert {name: body[name] for name in extra} == extra
    assert received.headers["anthropic-beta"] == "context-management-2025-06-27,effort-2025-11-24"
    assert E2E_KEY not in str(received.headers)


def test_models_list_and_retrieve_validate_in_anthropics_shape(
    client: Anthropic, stack: tuple[str, FakeAnthropic]
) -> None:
    listed = {model.id: model for model in client.models.list()}
    assert {MODEL, OTHER_MODEL} <= set(listed)
    assert listed[MODEL].type == "model" and listed[MODEL].display_name and listed[MODEL].created_at.year >= 2025
    retrieved = client.models.retrieve(MODEL)
    assert (retrieved.id, retrieved.created_at) == (MODEL, listed[MODEL].created_at)
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("no-such-model")
    # Without anthropic-version, the same route answers in OpenAI's shape.
    openai_shaped = httpx.get(f"{stack[0]}/v1/models", headers={"authorization": f"Bearer {E2E_KEY}"}).json()
    assert openai_shaped["object"] == "list" and "owned_by" in openai_shaped["data"][0]


def test_count_tokens_asks_the_upstream_or_says_it_estimated(
    client: Anthropic, stack: tuple[str, FakeAnthropic]
) -> None:
    _, upstream = stack
    generations = len(upstream.messages())
    counted = client.messages.count_tokens(model=MODEL, messages=HELLO, thinking=THINK)  # type: ignore[arg-type]
    assert counted.input_tokens == COUNTED_TOKENS
    asked = upstream.received[-1]
    assert asked.path == "/v1/messages/count_tokens" and asked.body["thinking"] == THINK
    assert "max_tokens" not in asked.body and len(upstream.messages()) == generations  # nothing generated

    raw = client.messages.with_raw_response.count_tokens(model=OTHER_MODEL, messages=HELLO)  # type: ignore[arg-type]
    assert raw.headers.get("x-modelport-estimated") == "true" and raw.parse().input_tokens > 0
    exact = client.messages.with_raw_response.count_tokens(model=MODEL, messages=HELLO)  # type: ignore[arg-type]
    assert "x-modelport-estimated" not in exact.headers


def test_an_unknown_field_is_a_400_naming_it(client: Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="frobnicate"):
        client.messages.create(model=MODEL, max_tokens=16, messages=HELLO, extra_body={"frobnicate": 1})  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        client.messages.create(
            model=MODEL,
            max_tokens=16,
            messages=HELLO,
            extra_body={"thinking": {"type": "enabled", "budget_tokens": "x"}},  # type: ignore[arg-type]
        )
