"""Embeddings and rerankings through answers in the vendors' documented formats:
OpenAI's `/embeddings`, vLLM's `/rerank`, Cohere's `/v2/embed` and `/v2/rerank`, Gemini's
`batchEmbedContents`; and Cohere's `/v2/chat`."""

from __future__ import annotations

import json
from typing import Any

from tests.vendors.conftest import deploy

TEXTS = ["Bananas are rich in potassium.", "Paris is the capital of France.", "France's capital city is Paris."]


async def test_openai_vectors_are_matched_to_inputs_by_index_not_position(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["text-embedding-3-small"] = (200, "documented/openai/embeddings_unordered.json")
    deployment = await deploy(client, vendor="OPENAI", model_type="EMBEDDING", model="text-embedding-3-small")
    response = await client.post(f"/v4/models/{deployment}/embeddings", json={"texts": ["x", "y", "z"]})
    assert response.status_code == 200, response.text
    # The fixture lists index 2 first; each vector goes back to its own input.
    assert response.json() == {"embeddings": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "tokens_used": 9}
    sent = transport.sent[-1]
    assert str(sent.url) == "https://api.openai.com/v1/embeddings"
    assert json.loads(sent.content) == {"model": "text-embedding-3-small", "input": ["x", "y", "z"],
                                        "encoding_format": "float"}  # fmt: skip


async def test_an_answer_that_misses_an_input_is_a_vendor_failure(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["embed-broken"] = (200, "documented/openai/embeddings_missing.json")
    deployment = await deploy(client, vendor="OPENAI", model_type="EMBEDDING", model="embed-broken")
    response = await client.post(f"/v4/models/{deployment}/embeddings", json={"texts": ["x", "y"]})
    assert response.status_code == 502
    assert "index" in response.json()["detail"]


async def test_vllm_rerank_scores_come_back_in_the_order_of_the_chunks(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["BAAI/bge-reranker-base"] = (200, "documented/llmengine/vllm_rerank.json")
    deployment = await deploy(client, vendor="LLMENGINE", model_type="RERANKING", model="BAAI/bge-reranker-base",
                              base_url="http://vllm.internal:8000/v1")  # fmt: skip
    body = {"query": "What is the capital of France?", "chunks": TEXTS}
    response = await client.post(f"/v4/models/{deployment}/rerankings", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"chunk_scores": [0.0004, 0.9987, 0.8123], "tokens_used": 41}
    sent = transport.sent[-1]
    assert str(sent.url) == "http://vllm.internal:8000/v1/rerank"
    assert json.loads(sent.content) == {"model": "BAAI/bge-reranker-base", "query": body["query"],
                                        "documents": TEXTS, "top_n": 3}  # fmt: skip


async def test_cohere_rerank_in_chunk_order_with_bearer_auth(recorded_app: Any, monkeypatch: Any) -> None:
    _app, client, transport = recorded_app
    monkeypatch.setenv("FAKE_VENDOR_KEY", "co-test-key")
    transport.answers["rerank-v3.5"] = (200, "documented/cohere/rerank.json")
    deployment = await deploy(client, vendor="COHERE", model_type="RERANKING", model="rerank-v3.5",
                              api_key_env="FAKE_VENDOR_KEY")  # fmt: skip
    response = await client.post(
        f"/v4/models/{deployment}/rerankings", json={"query": "capital of France", "chunks": TEXTS}
    )
    assert response.status_code == 200, response.text
    assert response.json()["chunk_scores"] == [0.00013, 0.99971, 0.76712]
    sent = transport.sent[-1]
    assert str(sent.url) == "https://api.cohere.com/v2/rerank"
    assert sent.headers["authorization"] == "Bearer co-test-key"
    assert json.loads(sent.content)["top_n"] == 3


async def test_an_instruction_reaches_each_reranker_the_way_it_reads_one(recorded_app: Any) -> None:
    """SGP's `rerankings.create(instruction=...)`: vLLM's rerank API takes it as a field
    (its instruction-aware rerankers read it); Cohere's has none, so it goes before the query."""
    _app, client, transport = recorded_app
    instruction = "Given a question, retrieve passages that answer it."
    body = {"query": "capital of France", "chunks": TEXTS, "instruction": instruction}
    transport.answers["rerank-instr"] = (200, "documented/cohere/rerank.json")
    cohere = await deploy(client, vendor="COHERE", model_type="RERANKING", model="rerank-instr")
    response = await client.post(f"/v4/models/{cohere}/rerankings", json=body)
    assert response.status_code == 200, response.text
    assert json.loads(transport.sent[-1].content)["query"] == f"{instruction}\ncapital of France"
    transport.answers["Qwen/Qwen3-Reranker-0.6B"] = (200, "documented/llmengine/vllm_rerank.json")
    vllm = await deploy(client, vendor="LLMENGINE", model_type="RERANKING", model="Qwen/Qwen3-Reranker-0.6B",
                        base_url="http://vllm.internal:8000/v1")  # fmt: skip
    response = await client.post(f"/v4/models/{vllm}/rerankings", json=body)
    assert response.status_code == 200, response.text
    sent = json.loads(transport.sent[-1].content)
    assert (sent["query"], sent["instruction"]) == ("capital of France", instruction)


async def test_cohere_embed_splits_into_batches_of_96_and_joins_in_order(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    batches: list[list[str]] = []

    def embed(body: dict[str, Any]) -> dict[str, Any]:  # Cohere's documented /v2/embed answer
        batches.append(body["texts"])
        return {
            "id": "da6e531f-54c6-4a73-bf92-f60566d8d753",
            "embeddings": {"float": [[float(text.split()[-1]), 1.0] for text in body["texts"]]},
            "texts": body["texts"],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": len(body["texts"]) * 2}},
        }

    transport.handlers["embed-v4.0"] = embed
    deployment = await deploy(client, vendor="COHERE", model_type="EMBEDDING", model="embed-v4.0")
    texts = [f"text number {index}" for index in range(200)]
    response = await client.post(f"/v4/models/{deployment}/embeddings", json={"texts": texts})
    assert response.status_code == 200, response.text
    assert [len(batch) for batch in batches] == [96, 96, 8]
    assert [vector[0] for vector in response.json()["embeddings"]] == [float(index) for index in range(200)]
    assert response.json()["tokens_used"] == 400
    sent = json.loads(transport.sent[-1].content)
    assert (sent["input_type"], sent["embedding_types"]) == ("search_document", ["float"])


async def test_gemini_batch_embed_contents_in_batches_of_100(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    sizes: list[int] = []

    def batch_embed(body: dict[str, Any]) -> dict[str, Any]:
        sizes.append(len(body["requests"]))
        assert all(request["model"] == "models/text-embedding-004" for request in body["requests"])
        return {"embeddings": [{"values": [float(r["content"]["parts"][0]["text"])]} for r in body["requests"]]}

    transport.handlers["text-embedding-004"] = batch_embed
    deployment = await deploy(client, vendor="GOOGLE", model_type="EMBEDDING", model="text-embedding-004")
    response = await client.post(f"/v4/models/{deployment}/embeddings", json={"texts": [str(n) for n in range(150)]})
    assert response.status_code == 200, response.text
    assert sizes == [100, 50]
    assert response.json() == {"embeddings": [[float(n)] for n in range(150)], "tokens_used": None}
    assert transport.sent[-1].url.path.endswith("/models/text-embedding-004:batchEmbedContents")


async def test_a_vendor_that_cannot_embed_or_a_wrong_model_type_is_400(recorded_app: Any) -> None:
    _app, client, _transport = recorded_app
    anthropic = await deploy(client, vendor="ANTHROPIC", model_type="EMBEDDING", model="claude-embed")
    response = await client.post(f"/v4/models/{anthropic}/embeddings", json={"texts": ["x"]})
    assert response.status_code == 400 and "ANTHROPIC" in response.json()["detail"]
    chat = await deploy(client, vendor="COHERE", model="command-a-03-2025")
    response = await client.post(f"/v4/models/{chat}/embeddings", json={"texts": ["x"]})
    assert response.status_code == 400 and "CHAT_COMPLETION" in response.json()["detail"]
    response = await client.post(f"/v4/models/{chat}/rerankings", json={"query": "q", "chunks": ["x"]})
    assert response.status_code == 400 and "RERANKING" in response.json()["detail"]


async def test_input_bounds_are_422(recorded_app: Any) -> None:
    _app, client, _transport = recorded_app
    deployment = await deploy(client, vendor="OPENAI", model_type="EMBEDDING", model="embed-bounds")
    for texts in ([], [""], ["x"] * 2049, "not a list"):
        response = await client.post(f"/v4/models/{deployment}/embeddings", json={"texts": texts})
        assert response.status_code == 422, texts
        assert "texts" in response.text
    response = await client.post(f"/v4/models/{deployment}/rerankings", json={"query": "q", "chunks": []})
    assert response.status_code == 422 and "chunks" in response.text


async def test_cohere_chat_and_its_stream(recorded_app: Any) -> None:
    _app, client, transport = recorded_app
    transport.answers["command-a"] = (200, "documented/cohere/chat.json")
    deployment = await deploy(client, vendor="COHERE", model="command-a")
    history = [{"role": "system", "content": "Be brief."}]
    body = {"chat_history": history, "prompt": "Capital of France?", "temperature": 0.3, "top_k": 5,
            "max_tokens": 50, "stop_sequences": ["###"]}  # fmt: skip
    response = await client.post(f"/v4/models/{deployment}/chat-completions", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["completions"][0][1] == ["Paris is the capital of France."]
    assert (result["finish_reason"], result["prompt_tokens"], result["response_tokens"]) == ("stop", 212, 8)
    sent = json.loads(transport.sent[-1].content)
    assert str(transport.sent[-1].url) == "https://api.cohere.com/v2/chat"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    assert sent == {"model": "command-a", "stream": False, "temperature": 0.3, "k": 5, "max_tokens": 50,
                    "stop_sequences": ["###"], "messages": messages}  # fmt: skip

    transport.answers["command-a-stream"] = (200, "documented/cohere/chat_stream.sse")
    streamed = await deploy(client, vendor="COHERE", model="command-a-stream")
    async with client.stream(
        "POST", f"/v4/models/{streamed}/chat-completions", json={**body, "stream": True}
    ) as answer:
        assert answer.status_code == 200
        events = [json.loads(line[5:]) async for line in answer.aiter_lines() if line.startswith("data:")]
    assert "".join(event["completions"][0][1][0] for event in events) == "Paris is the capital of France."
    assert (events[-1]["finish_reason"], events[-1]["prompt_tokens"], events[-1]["response_tokens"]) == ("stop", 212, 8)

    transport.answers["command-a-short"] = (200, "documented/cohere/chat_max_tokens.json")
    short = await deploy(client, vendor="COHERE", model="command-a-short")
    response = await client.post(f"/v4/models/{short}/chat-completions", json=body)
    assert response.json()["finish_reason"] == "length"
