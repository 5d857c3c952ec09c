"""What every request reads, kept in memory: key owners, roles, deployments, secrets.

Without it each inference request costs three or four database round trips before the
vendor is even called. Entries stay valid until the catalogue changes:

- every transaction that writes keys, memberships, models, deployments or secrets also
  bumps the one-row `registry_generation` counter (see `store/db.py`);
- this process drops its entries as soon as such a transaction commits here;
- other processes (`serve --workers N`, the `modelport keys revoke` CLI) are noticed by
  polling the counter every `refresh_seconds`, so a key revoked elsewhere stops
  working within that interval (0.5 s by default) without a query per request;
- if the poll fails (database unreachable), the cache empties and requests go back to
  the database, so an outage never extends the life of a revoked key;
- `ttl_seconds` bounds the life of any entry regardless.

Only things that exist are cached: an unknown key or deployment is looked up again
every time, so something created in another process is found at once.

Requests that miss the same entry at once share one lookup. Entries are read by every
request, so they all expire together: without this, the 64 requests in flight when a
key's entry expired each read it again, in one queue to the database, and the last of
them waited 0.2 s (a p99 spike every `ttl_seconds` in the gateway benchmark).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class CatalogueCache:
    def __init__(self, *, ttl_seconds: float = 30.0, refresh_seconds: float = 0.5, max_entries: int = 50_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.refresh_seconds = refresh_seconds
        self._max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        # Goes up on every clear; a lookup that started before a clear must not store
        # what it read, since that may predate the change that caused the clear.
        self._epoch = 0
        self._generation: int | None = None
        # Lookups under way, shared by the requests that want the same entry. A task of
        # its own, so that a request that goes away does not cancel the others' lookup.
        self._loading: dict[Hashable, asyncio.Task[Any]] = {}

    def clear(self) -> None:
        self._entries.clear()
        self._loading.clear()  # a lookup begun before a change must not serve requests after it
        self._epoch += 1

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[T | None]]) -> T | None:
        """The cached value for `key`, or `load()`'s answer (stored unless None)."""
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            value: T = entry[1]
            return value
        lookup = self._loading.get(key)
        if lookup is None:
            lookup = asyncio.ensure_future(self._load(key, load, now, self._epoch))
            # Its failure reaches every waiter; this only keeps asyncio from reporting it
            # as unseen when every waiter went away first.
            lookup.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._loading[key] = lookup
        loaded: T | None = await asyncio.shield(lookup)
        return loaded

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[T | None]], now: float, epoch: int) -> T | None:
        try:
            loaded = await load()
        finally:
            if epoch == self._epoch:
                self._loading.pop(key, None)
        if loaded is not None and epoch == self._epoch and self.ttl_seconds > 0:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()  # crude but bounded; a full cache refills in one pass
            self._entries[key] = (now + self.ttl_seconds, loaded)
        return loaded

    def observe_generation(self, generation: int | None) -> None:
        """Drop everything when the shared counter moved (or could not be read)."""
        if generation is None or generation != self._generation:
            self.clear()
        self._generation = generation

    async def poll(self, read_generation: Callable[[], Awaitable[int]]) -> None:
        """Run until cancelled: watch the shared counter."""
        while True:
            try:
                generation: int | None = await read_generation()
            except Exception as exc:  # the database is down: fail closed, keep polling
                log.warning("could not read the catalogue generation (%s); cache emptied", exc)
                generation = None
            self.observe_generation(generation)
            await asyncio.sleep(self.refresh_seconds)
