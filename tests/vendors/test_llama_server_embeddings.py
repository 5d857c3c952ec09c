"""A real llama.cpp server started with `--embedding` as an OpenAI-compatible upstream.

For a decoder model such as SmolLM2, which declares no pooling, that server answers one
vector per *token* of each input. modelport mean-pools them into one unit vector per
text (README, "llama.cpp's server with `--embedding`").
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers import free_port, running
from tests.vendors.conftest import GGUF, deploy

TEXTS = ["The cat sat on the mat.", "A kitten was sitting on the rug.", "Stock markets fell sharply on Tuesday."]


@pytest.fixture(scope="module")
def embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(GGUF), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2", "--embedding", "true"]  # fmt: skip
    log_path = tmp_path_factory.mktemp("llama-embedding-server") / "server.log"
    with running(command, ready_url=f"{base}/models", log_path=log_path):
        yield base


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_per_token_vectors_are_mean_pooled_into_one_unit_vector_per_text(
    vendor_app: Any, embedding_server: str
) -> None:
    _app, client = vendor_app
    deployment = await deploy(client, vendor="LLMENGINE", model_type="EMBEDDING", model="smollm2",
                              base_url=embedding_server)  # fmt: skip
    response = await client.post(f"/v4/models/{deployment}/embeddings", json={"texts": TEXTS})
    assert response.status_code == 200, response.text
    answer = response.json()
    cat, kitten, stocks = answer["embeddings"]
    assert [len(vector) for vector in answer["embeddings"]] == [576, 576, 576]
    assert all(abs(math.sqrt(dot(vector, vector)) - 1) < 1e-6 for vector in answer["embeddings"])
    assert dot(cat, kitten) > dot(cat, stocks) + 0.05
    assert answer["tokens_used"] > 0

    # Asked alone, each text gets the vector it got in the batch (the server's batched
    # per-token answers are not trusted: modelport asks one text at a time).
    alone = await client.post(f"/v4/models/{deployment}/embeddings", json={"texts": [TEXTS[2]]})
    assert max(abs(x - y) for x, y in zip(alone.json()["embeddings"][0], stocks, strict=True)) < 1e-6
