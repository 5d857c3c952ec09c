"""Batches on the embedded models of a fresh install (a real server, no network), through
the `openai` SDK in strict mode: a chat batch of 100 lines on SmolLM2 (tiny answers: the
machine may have two cores) and an embeddings batch on all-MiniLM-L6-v2, each line as its route
answers it. (Not compared with a request alone: sequences generated together can differ
in their last bits, and so a greedy token.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.conftest import E2E_KEY

CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def sdk(server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        api_key=E2E_KEY, base_url=f"{server}/v1", max_retries=0, timeout=120, _strict_response_validation=True
    ) as client:
        yield client


def _run(sdk: openai.OpenAI, endpoint: Any, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run a batch to its end; its output file's records, by custom_id order."""
    content = "".join(json.dumps({"method": "POST", "url": endpoint, **line}) + "\n" for line in lines).encode()
    uploaded = sdk.files.create(file=("in.jsonl", content), purpose="batch")
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h")
    deadline = time.monotonic() + 300
    while (batch := sdk.batches.retrieve(batch.id)).status != "completed":
        assert batch.status in ("validating", "in_progress", "finalizing"), batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
    assert batch.request_counts is not None and batch.request_counts.completed == len(lines), batch
    assert batch.output_file_id is not None and batch.error_file_id is None
    records = [json.loads(line) for line in sdk.files.content(batch.output_file_id).content.splitlines()]
    return sorted(records, key=lambda record: record["custom_id"])


def test_a_chat_batch_of_100_lines_on_the_embedded_model(sdk: openai.OpenAI) -> None:
    prompts = ["Name a colour.", "Say hi.", "Count to two.", "Name a fruit."]

    def request_line(index: int) -> dict[str, Any]:
        question = {"role": "user", "content": f"{prompts[index % 4]} ({index})"}
        return {"custom_id": f"c{index:03}", "body": {"model": CHAT_MODEL, "messages": [question], "max_tokens": 3}}

    lines = [request_line(index) for index in range(100)]
    records = _run(sdk, "/v1/chat/completions", lines)
    assert [record["custom_id"] for record in records] == [line["custom_id"] for line in lines]
    for record in records:
        response = record["response"]
        assert response["status_code"] == 200 and record["error"] is None
        body = response["body"]
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] <= 3
        assert body["choices"][0]["message"]["role"] == "assistant"
        # Each line's body is the route's answer: the SDK's own type takes it.
        parsed = ChatCompletion.model_validate(body)
        assert parsed.model and parsed.choices[0].finish_reason in ("length", "stop")


def test_an_embeddings_batch_on_the_embedded_model(sdk: openai.OpenAI) -> None:
    lines = [{"custom_id": f"e{index}", "body": {"model": EMBEDDING_MODEL, "input": text}}
             for index, text in enumerate(["a cat", "a dog"])]  # fmt: skip
    records = _run(sdk, "/v1/embeddings", lines)
    for record in records:
        [item] = record["response"]["body"]["data"]
        assert len(item["embedding"]) == 384
