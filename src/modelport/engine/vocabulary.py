"""A loaded model's tokens: text to token ids and back, and what the vocabulary holds.

Part of the engine process (`engine/model.py` owns one per model). llama-cpp-python's
own helpers return a padded 32-byte buffer for a token's text, so this asks llama.cpp
directly, and keeps the pieces it has looked up: every generated token needs one.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

from modelport.errors import InvalidRequest


def check_prompt_ids(ids: Sequence[int], vocabulary: int) -> None:
    """A 400 naming `prompt` when a prompt given as token ids holds ids a model of
    `vocabulary` tokens lacks (checked as `logit_bias` ids and embedding inputs are:
    by the gateway before sending, which knows the size from the engine's greeting, and
    again by the engine, which evaluates them)."""
    outside = sorted({token for token in ids if not 0 <= token < vocabulary})
    if outside:
        raise InvalidRequest(
            f"prompt names token ids outside this model's vocabulary of {vocabulary}: "
            + ", ".join(map(str, outside[:10])),
            param="prompt",
        )


class Vocabulary:
    """The tokenizer of one loaded `llama_cpp.Llama`."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        # llama.cpp's vocabulary handle, for samplers and token attributes.
        self.handle = llm._model.vocab
        self.size: int = llm.n_vocab()
        self._pieces: dict[int, bytes] = {}
        metadata = llm.metadata
        self.bos_token = self.token_text(llm.token_bos())
        self.eos_token = self.token_text(llm.token_eos())
        self._add_bos = metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self.longest_token_bytes, self.control_token_texts = self._scan()

    def _scan(self) -> tuple[int, tuple[str, ...]]:
        """One walk over the vocabulary, at load, for two facts about it:

        - the longest token's bytes: no token covers more text, so a prompt longer than a
          context window of such tokens cannot fit, and is refused before tokenizing it
          (which takes about a second for 4 MB);
        - the texts of the tokens llama.cpp matches only when control tokens are allowed
          (`special=True`, for a rendered chat template): CONTROL and UNKNOWN, as its
          tokenizer decides. The gateway keeps callers from writing them
          (engine/control_tokens.py). Their text is the vocabulary's, which is what the
          tokenizer matches; a piece may differ (SPM writes `<unk>` as "▅").
        """
        import llama_cpp

        matched_only_as_special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        longest = 0
        control: list[str] = []
        for token in range(self.size):
            longest = max(longest, len(self.piece(token, special=True)))
            if llama_cpp.llama_vocab_get_attr(self.handle, token) & matched_only_as_special:
                text = llama_cpp.llama_vocab_get_text(self.handle, token)
                if text:
                    control.append(text.decode("utf-8", "replace"))
        return longest, tuple(control)

    def token_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return self.piece(token_id, special=True).decode("utf-8", "replace")

    def piece(self, token_id: int, *, special: bool = False) -> bytes:
        """The bytes of one token (a control token's text only with `special`)."""
        import llama_cpp

        cached = self._pieces.get(token_id) if not special else None
        if cached is not None:
            return cached
        size = 64
        buffer = ctypes.create_string_buffer(size)
        length = llama_cpp.llama_token_to_piece(self.handle, token_id, buffer, size, 0, special)
        if length < 0:  # longer than the buffer: ask again with the size it needs
            buffer = ctypes.create_string_buffer(-length)
            length = llama_cpp.llama_token_to_piece(self.handle, token_id, buffer, -length, 0, special)
        piece = buffer.raw[:length]
        if not special:
            self._pieces[token_id] = piece
        return piece

    def is_end_of_generation(self, token_id: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.handle, token_id))

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Tokenize a prompt. `special=True` for rendered chat templates, so their
        control tokens (`<|im_start|>`) become single tokens rather than text."""
        add_bos = self._add_bos and not (self.bos_token and text.startswith(self.bos_token))
        tokens: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)
        return tokens
