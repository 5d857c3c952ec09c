"""The Anthropic Messages surface of a real `modelport serve`, driven by the `anthropic`
SDK, on the embedded model (any deployment answers in Anthropic's shapes)."""

from __future__ import annotations

import anthropic
import pytest
from anthropic import Anthropic
from anthropic.types import Usage

from tests.conftest import E2E_KEY

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m-instruct"
SYSTEM = "You are terse."
MESSAGES = [{"role": "user", "content": "Tell me a fact about the sea."}]
# Sent as older clients send it (this SDK version no longer names sampling parameters).
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def client(server: str) -> Anthropic:
    return Anthropic(base_url=server, api_key=E2E_KEY, max_retries=0)


def test_a_message_streamed_and_not(client: Anthropic) -> None:
    whole = client.messages.create(
        model=MODEL,
        system=SYSTEM,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=30,
        extra_body=GREEDY,
    )
    assert whole.type == "message" and whole.role == "assistant" and whole.model == MODEL
    [block] = whole.content
    assert block.type == "text" and block.text
    assert whole.stop_reason in ("end_turn", "max_tokens")
    assert whole.usage.input_tokens > 0 and whole.usage.output_tokens > 0

    with client.messages.stream(
        model=MODEL,
        system=SYSTEM,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=30,
        extra_body=GREEDY,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(kinds)
    assert final.content[0].type == "text" and final.content[0].text == block.text
    assert final.stop_reason == whole.stop_reason
    # The second call may read the first one's prompt from the engine's prefix cache:
    # the same input in all, split differently between input_tokens and the cache reads.
    assert all_input(final.usage) == all_input(whole.usage)
    assert final.usage.output_tokens == whole.usage.output_tokens


def all_input(usage: Usage) -> int:
    """Every input token of an answer, cached or not (Anthropic reports them apart)."""
    return usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)


def test_stop_sequences_end_with_stop_reason_stop_sequence(client: Anthropic) -> None:
    free = client.messages.create(model=MODEL, messages=MESSAGES, max_tokens=30, extra_body=GREEDY)  # type: ignore[arg-type]
    text = free.content[0].text  # type: ignore[union-attr]
    stop = text.split()[len(text.split()) // 2]
    cut = client.messages.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=30,
        extra_body=GREEDY,
        stop_sequences=[stop],
    )
    assert cut.content[0].text == text[: text.index(stop)]  # type: ignore[union-attr]
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop


def test_count_tokens_matches_the_usage_of_a_message(client: Anthropic) -> None:
    counted = client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=MESSAGES)  # type: ignore[arg-type]
    used = client.messages.create(model=MODEL, system=SYSTEM, messages=MESSAGES, max_tokens=5, extra_body=GREEDY)  # type: ignore[arg-type]
    # count_tokens counts every input token; the answer's input_tokens is only the part
    # not read from (nor written to) the cache, as Anthropic counts it.
    assert counted.input_tokens == all_input(used.usage) > 0


def test_errors_are_the_sdks_typed_exceptions(client: Anthropic, server: str) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        Anthropic(base_url=server, api_key="wrong", max_retries=0).messages.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=5,
        )
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model="no-such-model", messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
    assert isinstance(unknown.value.body, dict) and unknown.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as missing:  # the SDK checks it too: sent raw
        client.post("/v1/messages", body={"model": MODEL, "messages": MESSAGES}, cast_to=object)
    assert "max_tokens" in missing.value.message
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, messages=MESSAGES, max_tokens=5, extra_body={"temperature": 1.5})  # type: ignore[arg-type]
