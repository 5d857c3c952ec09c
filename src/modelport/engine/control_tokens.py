"""Caller text that cannot write a model's control tokens.

The embedded vendor renders a chat template and the engine tokenizes the result with
control tokens allowed (`special=True`), so that the template's `<|im_start|>` becomes
the one token the model was trained on. The same rule would turn a `<|im_end|>` that a
user typed into a message into a real end of turn, and the text after it into a turn
of any role they like: a forged system prompt. So every control-token text inside what
the caller sent is *neutralised* before rendering: a WORD JOINER (U+2060) goes after its
first character. llama.cpp then finds no control-token text there and reads it as
ordinary characters, while the text looks exactly as before (the joiner is invisible,
never a line break, and, unlike U+200D ZERO WIDTH JOINER, changes no emoji or script
shaping), so a user who asks about ChatML still gets an answer about ChatML, not a 400.

The texts come from the engine (`BatchEngine.control_token_texts`): those of the tokens
llama.cpp matches only when control tokens are allowed (attributes CONTROL or UNKNOWN).
USER_DEFINED tokens are matched in any text, with or without `special`, so a caller's
text gives them whether or not it is inside a template: nothing to neutralise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

WORD_JOINER = "\u2060"


def neutralise_messages(messages: Iterable[dict[str, Any]], texts: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """The messages with every control-token text in every string neutralised: contents,
    text parts, tool calls, names, at any depth. Not `role`: the gateway writes it from a
    closed set (and templates compare it with fixed names)."""
    if not texts:  # an engine that does not send its control tokens (older than this)
        return tuple(messages)
    pattern = _token_starts(texts)
    return tuple(
        {key: value if key == "role" else _neutralised(value, pattern) for key, value in message.items()}
        for message in messages
    )


def neutralise(text: str, texts: tuple[str, ...]) -> str:
    """One string with every control-token text in it neutralised."""
    return _neutralised(text, _token_starts(texts)) if texts else text


def _neutralised(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(r"\g<1>" + WORD_JOINER, value)
    if isinstance(value, dict):
        return {key: _neutralised(item, pattern) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_neutralised(item, pattern) for item in value]
    return value


@lru_cache(maxsize=16)
def _token_starts(texts: tuple[str, ...]) -> re.Pattern[str]:
    """Matches the first character of every place where a control-token text starts,
    overlapping ones included (a lookahead consumes nothing), so one substitution breaks
    them all. The texts are written as a trie: at each position the regex follows one
    branch per character, whatever the number of tokens (Llama 3 has 256, some models
    thousands), instead of trying every token in turn. A one-character text cannot be
    split, so it is left out."""
    trie: dict[str, Any] = {}
    for text in texts:
        if len(text) < 2:
            continue
        node = trie
        for character in text:
            node = node.setdefault(character, {})
        node[""] = {}  # a token ends here
    if not trie:
        return re.compile(r"(?!)(.)")  # matches nothing
    return re.compile("(?=" + _alternatives(trie) + ")(.)", re.DOTALL)


def _alternatives(node: dict[str, Any]) -> str:
    """The regex for the token texts below a trie node. Any token ending is enough to
    match (the lookahead asks only whether one starts here), so the node's longer
    continuations are dropped; chains of single children become one literal."""
    literal = ""
    while "" not in node and len(node) == 1:
        ((character, node),) = node.items()
        literal += re.escape(character)
    if "" in node:
        return literal
    return (
        literal
        + "(?:"
        + "|".join(re.escape(character) + _alternatives(child) for character, child in node.items())
        + ")"
    )
