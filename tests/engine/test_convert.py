"""all-MiniLM-L6-v2, converted from the package's safetensors to GGUF (engine/convert.py),
tokenizes as BERT does and computes the vectors of the original model: checked against
a plain numpy forward pass over the same safetensors, written from BERT's definition."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from modelport.catalogue.bootstrap import DEFAULT_EMBEDDING_CHECKPOINT
from modelport.config import EngineSettings
from modelport.engine.convert import gguf_path
from modelport.engine.model import BatchEngine
from modelport.engine.pool import resolve_checkpoint
from modelport.engine.protocol import TextPrompt
from modelport.engine.self_check import self_check
from modelport.errors import InvalidRequest

SOURCE = resolve_checkpoint(DEFAULT_EMBEDDING_CHECKPOINT)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> BatchEngine:
    converted = gguf_path(SOURCE, tmp_path_factory.mktemp("converted"))
    loaded = BatchEngine(converted, EngineSettings(threads=2))
    self_check(loaded)
    return loaded


def reference_vector(tokens: list[int]) -> np.ndarray:
    """sentence-transformers' all-MiniLM-L6-v2: BERT, mean pooling, unit length."""
    w = load_file(str(SOURCE))
    heads, eps = 12, 1e-12

    def norm(x: np.ndarray, name: str) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def dense(x: np.ndarray, name: str) -> np.ndarray:
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    n = len(tokens)
    x = w["embeddings.word_embeddings.weight"][tokens] + w["embeddings.position_embeddings.weight"][:n]
    x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    for layer in range(6):
        p = f"encoder.layer.{layer}"
        q, k, v = (dense(x, f"{p}.attention.self.{m}").reshape(n, heads, -1).transpose(1, 0, 2)
                   for m in ("query", "key", "value"))  # fmt: skip
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        attended = (weights @ v).transpose(1, 0, 2).reshape(n, -1)
        x = norm(dense(attended, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        inner = dense(x, f"{p}.intermediate.dense")
        inner = 0.5 * inner * (1 + np.vectorize(math.erf)(inner / math.sqrt(2)))  # exact GELU
        x = norm(dense(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)  # type: ignore[no-any-return]


def test_it_tokenizes_as_bert_uncased_does(engine: BatchEngine) -> None:
    # [CLS] hello world , em ##bed ##ding ##s ! [SEP] in bert-base-uncased's vocabulary.
    assert engine.tokenize("Hello world, embeddings!", special=False) == [
        101, 7592, 2088, 1010, 7861, 8270, 4667, 2015, 999, 102,
    ]  # fmt: skip


@pytest.mark.parametrize("text", ["The cat sat on the mat.", "Quarterly earnings disappointed investors."])
def test_vectors_match_the_original_model(engine: BatchEngine, text: str) -> None:
    vector, count = engine.embed(text)
    expected = reference_vector(engine.tokenize(text, special=False))
    assert count == len(engine.tokenize(text, special=False))
    assert len(vector) == 384
    # float32 in a different order of operations: agreement to about 1e-5 per component.
    assert float(np.max(np.abs(np.array(vector) - expected))) < 1e-3
    assert float(np.dot(vector, expected)) > 0.99999


def test_it_refuses_to_generate(engine: BatchEngine) -> None:
    assert engine.embedding_only
    from modelport.generation import Sampling

    refused = engine.submit_prompt(
        "k", TextPrompt("Hello", special=False), sampling=Sampling(temperature=0, max_tokens=3)
    )
    assert isinstance(refused, InvalidRequest) and "embedding model" in refused.detail


def test_the_conversion_is_cached(tmp_path: Path) -> None:
    first = gguf_path(SOURCE, tmp_path)
    modified = first.stat().st_mtime_ns
    assert gguf_path(SOURCE, tmp_path) == first
    assert first.stat().st_mtime_ns == modified
    assert [path.name for path in tmp_path.iterdir()] == [first.name]  # no partial file left behind
