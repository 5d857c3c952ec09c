"""Sentence embeddings from a loaded GGUF model, inside the engine process.

A second llama.cpp context on the same weights, created on the first `embed` request,
with embeddings on and mean pooling: the vector of a text is the mean of its tokens'
last hidden states, scaled to length 1 (so cosine similarity is a dot product). That
is how sentence-embedding models such as all-MiniLM pool; for a decoder model such as
SmolLM2 it is the usual way to get one vector per text out of a model that has no
pooling of its own.

Each text is evaluated alone, one `llama_decode` per text: llama.cpp's kernels round
differently for different batch shapes, so evaluating a text together with others
would make its vector depend on its neighbours. Alone, a text always gets the same
vector, whether it came by itself or in a request of 2,048.
"""

from __future__ import annotations

import math
from typing import Any

from modelport.errors import InvalidRequest

# Tokens one text may have. Embedding inputs are sentences and passages; 512 is the
# limit of the common sentence-embedding models, and it bounds the context's memory.
MAX_TEXT_TOKENS = 512


def check_input_ids(inputs: list[list[int]], vocabulary: int) -> None:
    """A 400 naming `input` when token-id inputs hold ids a model of `vocabulary` tokens lacks."""
    outside = sorted({token for tokens in inputs for token in tokens if not 0 <= token < vocabulary})
    if outside:
        raise InvalidRequest(
            f"input names token ids outside this model's vocabulary of {vocabulary}: "
            + ", ".join(map(str, outside[:10])),
            param="input",
        )


class TextEmbedder:
    def __init__(self, llm: Any, *, threads: int) -> None:
        import llama_cpp

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = MAX_TEXT_TOKENS
        params.n_seq_max = 1
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        params.n_threads = params.n_threads_batch = threads
        self._llama = llama_cpp
        self._ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create an embedding context")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(MAX_TEXT_TOKENS, 0, 1)
        self.width = int(llama_cpp.llama_model_n_embd(llm._model.model))

    def embed(self, tokens: list[int]) -> list[float]:
        """The unit-length mean-pooled vector of one tokenized text."""
        if not tokens:
            raise InvalidRequest("a text to embed is empty: give at least one token of text")
        if len(tokens) > MAX_TEXT_TOKENS:
            raise InvalidRequest(
                f"a text to embed is {len(tokens)} tokens; this embedding model reads at most {MAX_TEXT_TOKENS}"
            )
        llama = self._llama
        llama.llama_memory_clear(self._memory, True)
        batch = self._batch
        for position, token in enumerate(tokens):
            batch.token[position] = token
            batch.pos[position] = position
            batch.n_seq_id[position] = 1
            batch.seq_id[position][0] = 0
            batch.logits[position] = True  # every token is an output that the pooling reads
        batch.n_tokens = len(tokens)
        status = llama.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status} while embedding")
        pooled = llama.llama_get_embeddings_seq(self._ctx, 0)
        if not pooled:
            raise RuntimeError("llama.cpp returned no pooled embedding")
        vector = [float(pooled[i]) for i in range(self.width)]
        norm = math.sqrt(sum(value * value for value in vector))
        return [value / norm for value in vector] if norm > 0 else vector

    def close(self) -> None:
        self._llama.llama_batch_free(self._batch)
        self._llama.llama_free(self._ctx)
