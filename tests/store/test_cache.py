"""The per-process catalogue cache: what it keeps, and when it lets go."""

from __future__ import annotations

import asyncio

from modelport.store.cache import CatalogueCache


async def owner() -> str:
    return "owner"


async def revoked() -> None:
    return None


async def test_found_values_are_kept_and_missing_ones_are_asked_again() -> None:
    cache = CatalogueCache()
    calls: list[str] = []

    async def load(value: str | None) -> str | None:
        calls.append(str(value))
        return value

    assert await cache.get_or_load("a", lambda: load("owner")) == "owner"
    assert await cache.get_or_load("a", lambda: load("changed")) == "owner"
    # Something missing may be created by another process at any time: never cached.
    assert await cache.get_or_load("b", lambda: load(None)) is None
    assert await cache.get_or_load("b", lambda: load("created")) == "created"
    assert calls == ["owner", "None", "created"]


async def test_a_change_elsewhere_empties_the_cache() -> None:
    cache = CatalogueCache()
    cache.observe_generation(7)

    await cache.get_or_load("key", owner)
    cache.observe_generation(7)  # nothing changed
    assert await cache.get_or_load("key", revoked) == "owner"
    cache.observe_generation(8)  # another process wrote to the catalogue
    assert await cache.get_or_load("key", revoked) is None


async def test_an_unreadable_counter_empties_the_cache() -> None:
    cache = CatalogueCache()
    cache.observe_generation(1)

    await cache.get_or_load("key", owner)
    cache.observe_generation(None)  # database unreachable: fail closed
    assert await cache.get_or_load("key", revoked) is None


async def test_a_lookup_that_raced_a_change_is_not_stored() -> None:
    cache = CatalogueCache()
    reading = asyncio.Event()
    release = asyncio.Event()

    async def slow_old_value() -> str:
        reading.set()
        await release.wait()
        return "read before the change"

    lookup = asyncio.create_task(cache.get_or_load("key", slow_old_value))
    await reading.wait()
    cache.clear()  # the change commits while the old value is in flight
    release.set()
    assert await lookup == "read before the change"

    async def fresh() -> str:
        return "after the change"

    assert await cache.get_or_load("key", fresh) == "after the change"


async def test_entries_expire_after_their_ttl() -> None:
    cache = CatalogueCache(ttl_seconds=0.05)

    async def first() -> str:
        return "first"

    async def second() -> str:
        return "second"

    await cache.get_or_load("key", first)
    await asyncio.sleep(0.1)
    assert await cache.get_or_load("key", second) == "second"


async def test_poll_watches_the_counter_until_cancelled() -> None:
    cache = CatalogueCache(refresh_seconds=0.01)
    generations = iter([1, 1, 2])
    seen = asyncio.Event()

    async def read() -> int:
        try:
            return next(generations)
        except StopIteration:
            seen.set()
            return 2

    cache.observe_generation(1)
    await cache.get_or_load("key", owner)
    poller = asyncio.create_task(cache.poll(read))
    await asyncio.wait_for(seen.wait(), timeout=5)
    poller.cancel()
    assert await cache.get_or_load("key", revoked) is None


async def test_requests_that_miss_the_same_entry_at_once_share_one_lookup() -> None:
    cache = CatalogueCache()
    release = asyncio.Event()
    lookups = 0

    async def load() -> str:
        nonlocal lookups
        lookups += 1
        await release.wait()
        return "owner"

    waiting = [asyncio.create_task(cache.get_or_load("key", load)) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == ["owner"] * 50
    assert lookups == 1


async def test_a_request_that_goes_away_does_not_cancel_the_lookup_it_shares() -> None:
    cache = CatalogueCache()
    release = asyncio.Event()

    async def load() -> str:
        await release.wait()
        return "owner"

    first = asyncio.create_task(cache.get_or_load("key", load))
    second = asyncio.create_task(cache.get_or_load("key", load))
    await asyncio.sleep(0)
    first.cancel()  # its client disconnected
    release.set()
    assert await second == "owner"
    assert await cache.get_or_load("key", revoked) == "owner"  # and it was stored


async def test_a_request_after_a_change_does_not_join_a_lookup_begun_before_it() -> None:
    cache = CatalogueCache()
    release = asyncio.Event()

    async def old_value() -> str:
        await release.wait()
        return "owner"

    before = asyncio.create_task(cache.get_or_load("key", old_value))
    await asyncio.sleep(0)
    cache.clear()  # the key was revoked meanwhile
    after = asyncio.create_task(cache.get_or_load("key", revoked))
    release.set()
    assert await before == "owner"
    assert await after is None
