"""Sequence ids of the shared KV cache, and the prompt prefixes they still hold.

When a request finishes, its sequence's KV cells are not cleared at once: they are
*kept*, remembered by the tokens they hold. A new prompt that starts with tokens some
sequence already holds, a kept one or a running one, gets those cells for free: a
kept sequence is taken over and cut after the shared part, a running one is shared
with `llama_memory_seq_cp` (in a unified KV cache that only tags the cells with one
more sequence id; nothing is copied or evaluated). That is what makes a long system
prompt, or a conversation that grows turn by turn, cost its full evaluation once.

Kept prefixes give way to running requests: the least recently used are cleared
whenever a new request needs their cells.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain
from typing import Any


@dataclass(frozen=True, slots=True)
class Slot:
    seq_id: int
    reused: int  # leading prompt tokens whose KV cells this sequence already has


def common_prefix(held: list[int], prompt: list[int], limit: int) -> int:
    """How many leading tokens of `prompt` are in `held` (at most `limit`)."""
    n = min(len(held), len(prompt), limit)
    if n == 0 or held[0] != prompt[0]:
        return 0
    if held[:n] == prompt[:n]:
        return n
    i = 1
    while held[i] == prompt[i]:
        i += 1
    return i


class PrefixCache:
    def __init__(self, memory: Any, *, seq_ids: int, keep: int, llama: Any) -> None:
        self._memory = memory
        self._llama = llama  # the llama_cpp module
        self._keep_at_most = keep
        self._free = list(range(seq_ids - 1, -1, -1))
        self._kept: OrderedDict[int, list[int]] = OrderedDict()  # least recently used first
        self.cells = 0  # KV cells the kept prefixes hold (at most; they may share some)

    def claim(self, prompt: list[int], running: dict[int, list[int]], *, free_cells: int) -> Slot | None:
        """A sequence id for a new request, holding the longest prefix of `prompt` that
        the cache has. `free_cells`: cells left for kept prefixes once the request's
        own reservation is made; None when that is negative (it must wait)."""
        if free_cells < 0:
            return None
        # The prompt's last token is always evaluated: its logits give the first token.
        limit = len(prompt) - 1
        source, reused = None, 0
        for seq_id, tokens in chain(self._kept.items(), running.items()):
            n = common_prefix(tokens, prompt, limit)
            if n > reused:
                source, reused = seq_id, n
        if source is not None and source in self._kept:
            seq_id = source
            self.cells -= len(self._kept.pop(seq_id))
            self._llama.llama_memory_seq_rm(self._memory, seq_id, reused, -1)
        else:
            if not self._free:
                self._drop(next(iter(self._kept)))
            seq_id = self._free.pop()
            if source is not None:
                self._llama.llama_memory_seq_cp(self._memory, source, seq_id, 0, reused)
        while self.cells > free_cells:
            self._drop(next(iter(self._kept)))
        return Slot(seq_id=seq_id, reused=reused)

    def keep(self, seq_id: int, tokens: list[int]) -> None:
        """A sequence has finished: keep the cells of its first `tokens` for later
        prompts and clear the rest (all of them, and free the id, for no tokens)."""
        if not tokens or self._keep_at_most == 0:
            self._llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            self._free.append(seq_id)
            return
        self._llama.llama_memory_seq_rm(self._memory, seq_id, len(tokens), -1)
        self._kept[seq_id] = tokens
        self.cells += len(tokens)
        while len(self._kept) > self._keep_at_most:
            self._drop(next(iter(self._kept)))

    def clear(self) -> None:
        for seq_id in list(self._kept):
            self._drop(seq_id)

    def _drop(self, seq_id: int) -> None:
        self.cells -= len(self._kept.pop(seq_id))
        self._llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        self._free.append(seq_id)
