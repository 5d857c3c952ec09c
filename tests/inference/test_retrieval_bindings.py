"""Request bindings reach an embeddings or rerankings call as they reach a chat call.

The retrieval path once filled a model's placeholders into the deployment's parameters
but not into the typed settings the adapters read: the upstream was sent the unfilled
`{{ tenant }}`, and a header a binding filled with a line break went unchecked. Both
paths now share one resolve step (`inference.resolve`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import in_process, sqlite_settings
from tests.vendors.recorded import Recorded

SCHEMA = {"parameters": [{"name": "tenant", "type": "str"}, {"name": "note", "type": "str"}]}
VECTORS = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.5]}],
           "usage": {"prompt_tokens": 3, "total_tokens": 3}}  # fmt: skip
SCORES = {"results": [{"index": 0, "relevance_score": 0.9}], "usage": {"total_tokens": 5}}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Recorded]]:
    transport = Recorded(handlers={"embedder": lambda _body: VECTORS, "reranker": lambda _body: SCORES})
    async with in_process(sqlite_settings(tmp_path), upstream=transport) as (_app, client):
        yield client, transport


async def _deployment(client: httpx.AsyncClient, vendor: str, model_type: str, model: str) -> str:
    created = await client.post(
        "/v4/models",
        json={"name": model, "model_type": model_type, "model_vendor": vendor, "request_schema": SCHEMA,
              "model_creation_parameters": {"model": model, "base_url": "http://upstream.test/{{ tenant }}/v1",
                                            "headers": {"x-note": "{{ note }}"}}},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    deployment = await client.post(f"/v4/models/{created.json()['id']}/deployments", json={"name": "d"})
    assert deployment.status_code == 200, deployment.text
    return str(deployment.json()["id"])


CALLS: list[tuple[str, str, str, str, dict[str, Any], str]] = [
    ("OTHER", "EMBEDDING", "embedder", "embeddings", {"texts": ["x"]}, "/acme/v1/embeddings"),
    ("LLMENGINE", "RERANKING", "reranker", "rerankings", {"query": "q", "chunks": ["c"]}, "/acme/v1/rerank"),
]


Call = tuple[str, str, str, str, dict[str, Any], str]


async def _bound_call(served: tuple[httpx.AsyncClient, Recorded], call: Call, note: str) -> httpx.Response:
    """The call on a new deployment of its kind, with `tenant` and `note` bound."""
    client, _transport = served
    vendor, model_type, model, endpoint, body, _path = call
    deployment = await _deployment(client, vendor, model_type, model)
    bindings = {"tenant": "acme", "note": note}
    return await client.post(
        f"/v4/models/{deployment}/{endpoint}", json={**body, "model_request_parameters": {"bindings": bindings}}
    )


@pytest.mark.parametrize("call", CALLS, ids=lambda call: call[3])
async def test_bindings_fill_the_settings_an_adapter_reads(
    served: tuple[httpx.AsyncClient, Recorded], call: Call
) -> None:
    response = await _bound_call(served, call, "fine")
    assert response.status_code == 200, response.text
    sent = served[1].sent[-1]
    assert sent.url.path == call[5]
    assert sent.headers["x-note"] == "fine"


@pytest.mark.parametrize("call", CALLS, ids=lambda call: call[3])
async def test_a_line_break_bound_into_a_header_is_refused_before_sending(
    served: tuple[httpx.AsyncClient, Recorded], call: Call
) -> None:
    response = await _bound_call(served, call, "a\r\nx-injected: 1")
    assert response.status_code == 400, response.text
    assert "control character" in response.json()["detail"]
    assert served[1].sent == []
