"""/v1/embeddings on the embedded embedding model of a fresh install, with input as token
ids: read as the model's own ids, they give the vector of the text they tokenize from."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from modelport.catalogue.bootstrap import DEFAULT_EMBEDDING_CHECKPOINT, DEFAULT_EMBEDDING_MODEL_NAME
from modelport.engine.convert import gguf_path
from modelport.engine.pool import resolve_checkpoint
from modelport.engine.vocabulary import Vocabulary

TEXT = "The cat sat on the mat."


@pytest.fixture(scope="module")
def vocabulary() -> Iterator[Vocabulary]:
    """The embedding model's tokenizer, from the GGUF file the engine loads."""
    import llama_cpp

    path = gguf_path(resolve_checkpoint(DEFAULT_EMBEDDING_CHECKPOINT))
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        yield Vocabulary(llm)
    finally:
        llm.close()


async def _embed(client: httpx.AsyncClient, given: object, **extra: object) -> httpx.Response:
    body = {"model": DEFAULT_EMBEDDING_MODEL_NAME, "input": given, "encoding_format": "float", **extra}
    return await client.post("/v1/embeddings", json=body)


async def test_token_ids_give_the_vector_of_the_text_they_tokenize_from(
    client: httpx.AsyncClient, vocabulary: Vocabulary
) -> None:
    ids = vocabulary.tokenize(TEXT, special=False)
    from_text = await _embed(client, TEXT)
    from_ids = await _embed(client, [ids, ids[:3]])
    assert from_text.status_code == from_ids.status_code == 200, from_ids.text
    assert from_ids.json()["data"][0]["embedding"] == from_text.json()["data"][0]["embedding"]
    assert from_ids.json()["data"][1]["embedding"] != from_text.json()["data"][0]["embedding"]
    # The tokens it read: the ids given, counted as the text's tokens are.
    assert from_ids.json()["usage"]["prompt_tokens"] == len(ids) + 3
    assert from_text.json()["usage"]["prompt_tokens"] == len(ids)


async def test_an_id_outside_the_vocabulary_is_400_naming_input(
    client: httpx.AsyncClient, vocabulary: Vocabulary
) -> None:
    answer = await _embed(client, [[1, vocabulary.size]])
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "input" and str(vocabulary.size) in error["message"]


async def test_dimensions_are_refused_by_the_embedded_model(client: httpx.AsyncClient) -> None:
    answer = await _embed(client, TEXT, dimensions=64)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "dimensions"
