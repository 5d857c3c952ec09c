"""A Responses API body for an upstream that serves the Responses API itself, and its
answer back: the body goes as the client wrote it, with two changes, and the
upstream's response objects come back with the same two undone.

modelport keeps every account's responses itself (`catalogue/responses.py`), relayed
or translated alike, so the upstream is sent `store: false` and no
`previous_response_id`: the conversation continued is sent as `input` instead. An
upstream's store is shared by every account the operator's credential serves; a
`previous_response_id` passed to it could read another account's conversation, and a
conversation begun on a translated deployment would be unknown there.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from modelport.observability.ids import hex_id
from modelport.vendors.base import RelayedEvents

Item = dict[str, Any]

# What modelport decides itself, never the upstream (see the module docstring).
_KEPT_HERE = ("previous_response_id", "store")


def upstream_body(raw: dict[str, Any], earlier: list[Item], items: list[Item]) -> dict[str, Any]:
    """The client's body as the upstream gets it. Without a conversation to continue, its
    `input` is sent as written; with one, the conversation's items then the new ones."""
    body = {name: value for name, value in raw.items() if name not in _KEPT_HERE}
    body["store"] = False
    if earlier:
        body["input"] = [_sendable(item) for item in [*earlier, *items]]
    return body


def _sendable(item: Item) -> Item:
    """A stored item as an input item: an input message has no `id` in OpenAI's input
    shapes (ids made here would be refused); the model's own items keep theirs."""
    if item.get("type") == "message" and item.get("role") != "assistant":
        return {name: value for name, value in item.items() if name not in ("id", "status")}
    return item


class RelayedAnswer:
    """The upstream's response objects, given back as this request made them
    (`previous_response_id`, `store`); the finished one is kept through `save` when
    the client asked it to be stored.

    Its `id` and `created_at` are modelport's own: the response is kept here, under
    the account, and an upstream's id could collide with another account's response
    (a careless or hostile upstream), its time put it past or beyond the retention."""

    def __init__(
        self, previous_response_id: str | None, store: bool, save: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        self._previous = previous_response_id
        self._store = store
        self._save = save
        self._identity = {"id": f"resp_{hex_id()}", "created_at": int(time.time())}
        self.last_sequence_number = -1  # of the events relayed so far

    def shown(self, response: dict[str, Any]) -> dict[str, Any]:
        return {**response, **self._identity, "previous_response_id": self._previous, "store": self._store}

    async def whole(self, response: dict[str, Any]) -> dict[str, Any]:
        shown = self.shown(response)
        if self._store:
            await self._save(shown)
        return shown

    async def events(self, events: RelayedEvents) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async for name, payload in events:
            if isinstance(payload.get("sequence_number"), int):
                self.last_sequence_number = payload["sequence_number"]
            response = payload.get("response")
            if isinstance(response, dict):
                payload = {**payload, "response": self.shown(response)}
                if name in ("response.completed", "response.incomplete") and self._store:
                    # Kept before the client sees the end: it may ask for it at once.
                    await self._save(payload["response"])
            yield name, payload
