"""/v1/embeddings with token-id inputs and `dimensions`, through the `openai` SDK, to a
recording OpenAI-compatible upstream and to OpenAI itself: passed through as OpenAI
takes them, or refused with a 400 that names the field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import ADMIN_KEY
from tests.vendors.conftest import deploy


def _echo_widths(body: dict[str, Any]) -> dict[str, Any]:
    """An upstream that answers each input with [its length, its first id or 0] (in reverse
    order, as a server may), so a test can see which input each vector came from."""
    inputs = body["input"]
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": [float(len(item)), float(item[0]) if isinstance(item, list) else 0.0],
        }
        for index, item in reversed(list(enumerate(inputs)))
    ]
    used = sum(len(item) for item in inputs)
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }


@pytest.fixture(scope="module")
async def sdk(recorded_app: Any) -> AsyncIterator[tuple[AsyncOpenAI, Any, httpx.AsyncClient]]:
    app, client, transport = recorded_app
    for upstream in ("vllm-e5", "vllm-matryoshka", "text-embedding-3-large"):
        transport.handlers[upstream] = _echo_widths
    await deploy(client, vendor="OTHER", model_type="EMBEDDING", model="vllm-e5", model_name="vllm-e5",
                 base_url="http://vllm.internal:8000/v1")  # fmt: skip
    await deploy(client, vendor="OTHER", model_type="EMBEDDING", model="vllm-matryoshka", model_name="vllm-matryoshka",
                 base_url="http://vllm.internal:8000/v1", embedding_dimensions=True)  # fmt: skip
    await deploy(client, vendor="OPENAI", model_type="EMBEDDING", model="text-embedding-3-large",
                 model_name="text-embedding-3-large")  # fmt: skip
    await deploy(client, vendor="GOOGLE", model_type="EMBEDDING", model="gemini-embedding-001",
                 model_name="gemini-embedding-001")  # fmt: skip
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=60)
    async with http:
        yield (
            AsyncOpenAI(base_url="http://modelport.test/v1", api_key=ADMIN_KEY, http_client=http, max_retries=0),
            transport,
            client,
        )


async def test_token_id_inputs_pass_through_to_a_compatible_upstream(sdk: Any) -> None:
    client, transport, _ = sdk
    answer = await client.embeddings.create(model="vllm-e5", input=[[101, 7592, 102], [101, 2088, 2003, 102]],
                                            encoding_format="float")  # fmt: skip
    assert transport.last_body()["input"] == [[101, 7592, 102], [101, 2088, 2003, 102]]
    assert "dimensions" not in transport.last_body()
    # Each vector is its own input's, in the caller's order, and the upstream's count is kept.
    assert [item.embedding for item in answer.data] == [[3.0, 101.0], [4.0, 101.0]]
    assert answer.usage.prompt_tokens == 7


async def test_one_input_of_token_ids_is_one_input(sdk: Any) -> None:
    client, transport, _ = sdk
    answer = await client.embeddings.create(model="vllm-e5", input=[9, 8, 7], encoding_format="float")
    assert transport.last_body()["input"] == [[9, 8, 7]]
    assert [item.embedding for item in answer.data] == [[3.0, 9.0]]


async def test_dimensions_reach_openai_and_a_compatible_server_that_takes_them(sdk: Any) -> None:
    client, transport, _ = sdk
    await client.embeddings.create(model="text-embedding-3-large", input="hello", dimensions=256)
    assert transport.last_body()["dimensions"] == 256
    await client.embeddings.create(model="vllm-matryoshka", input=[[1, 2]], dimensions=64)
    assert (transport.last_body()["dimensions"], transport.last_body()["input"]) == (64, [[1, 2]])


async def test_dimensions_where_the_model_cannot_shorten_are_refused_naming_it(sdk: Any) -> None:
    client, transport, _ = sdk
    sent = len(transport.sent)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.embeddings.create(model="vllm-e5", input="hello", dimensions=64)
    assert refused.value.param == "dimensions" and "dimensions" in refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        await client.embeddings.create(model="gemini-embedding-001", input="hello", dimensions=64)
    assert refused.value.param == "dimensions"
    assert len(transport.sent) == sent  # refused before any upstream call


async def test_token_ids_to_a_vendor_without_them_are_refused_naming_input(sdk: Any) -> None:
    client, _, _ = sdk
    with pytest.raises(openai.BadRequestError) as refused:
        await client.embeddings.create(model="gemini-embedding-001", input=[[1, 2, 3]])
    assert refused.value.param == "input" and "token ids" in refused.value.message


@pytest.mark.parametrize(
    "bad_input",
    [[], [[]], [-1, 2], [[1, 2], "text"], [1, "2"], [[1.5]], [2**40]],
    ids=["empty", "empty-ids", "negative", "mixed", "mixed-flat", "float", "huge"],
)
async def test_malformed_inputs_are_400_naming_input(sdk: Any, bad_input: Any) -> None:
    _, _, client = sdk
    answer = await client.post("/v1/embeddings", json={"model": "vllm-e5", "input": bad_input})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"].startswith("input")
