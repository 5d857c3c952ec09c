"""A sampled token's log-probability and its best alternatives, from one row of logits.

Computed from the model's raw logits, before temperature and penalties, as OpenAI
reports them; part of the engine process (`engine/model.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelport.generation import TokenAlternative, TokenLogprob

if TYPE_CHECKING:
    import numpy as np


def token_logprob(
    row: np.ndarray[Any, np.dtype[np.float32]],
    token: int,
    text: str,
    piece: bytes,
    top_n: int,
    piece_of: Callable[[int], bytes],
) -> TokenLogprob:
    """`token`'s entry (its `text` and `piece` as generated), with the `top_n` likeliest
    tokens of `row` as alternatives, each written out by `piece_of`."""
    import numpy as np  # here, not at the top: only an engine process needs it

    logits = row.astype(np.float64)
    peak = logits.max()
    log_norm = peak + np.log(np.exp(logits - peak).sum())
    alternatives: list[TokenAlternative] = []
    if top_n > 0:
        best = np.argpartition(-logits, top_n)[:top_n]
        for alt in best[np.argsort(-logits[best])]:
            alt_piece = piece_of(int(alt))
            alternatives.append(
                TokenAlternative(
                    token=alt_piece.decode("utf-8", "replace"),
                    logprob=float(logits[alt] - log_norm),
                    bytes=list(alt_piece),
                )
            )
    return TokenLogprob(
        token=text, logprob=float(logits[token] - log_norm), bytes=list(piece), top_logprobs=alternatives
    )
