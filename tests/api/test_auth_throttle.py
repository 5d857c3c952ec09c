"""Wrong API keys are throttled per client address (issue 24, 5): after
MODELPORT_AUTH_FAILURES_PER_MINUTE of them an address gets 429 with Retry-After until
the minute is over, whatever key it sends, except one already accepted from it; the
count is shared by replicas through Redis; behind a proxy named in
MODELPORT_TRUSTED_PROXIES each client is counted by the address the proxy gives, and
X-Forwarded-For from anyone else is ignored. Through the real application."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from modelport.api.app import create_app
from modelport.limits.auth_throttle import WINDOW_SECONDS, AuthThrottle, counted_address
from tests.conftest import ADMIN_KEY, sqlite_settings
from tests.redis_server import OwnRedis

LIMIT = 5


class Clock:
    """A clock at the start of a minute window, moved by the tests."""

    def __init__(self) -> None:
        self.now = (math.floor(1_900_000_000 / WINDOW_SECONDS) + 1) * WINDOW_SECONDS + 1.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def _app(data: Path, clock: Clock, **settings: object) -> AsyncIterator[FastAPI]:
    application = create_app(sqlite_settings(data, auth_failures_per_minute=LIMIT, **settings), limits_clock=clock)
    async with application.router.lifespan_context(application):
        yield application


def _client(application: FastAPI, forwarded_for: str | None = None) -> httpx.AsyncClient:
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://modelport.test", headers=headers
    )


async def _as(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.get("/v4/models", headers={"x-api-key": key})


async def _member_key(client: httpx.AsyncClient) -> str:
    created = await client.post("/v4/api-keys", json={"role": "member"}, headers={"x-api-key": ADMIN_KEY})
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


async def _guess(client: httpx.AsyncClient, times: int) -> list[int]:
    return [(await _as(client, f"mp_wrong_{n}")).status_code for n in range(times)]


async def test_an_address_that_guesses_is_refused_until_the_minute_is_over(tmp_path: Path) -> None:
    clock = Clock()
    async with _app(tmp_path, clock) as application, _client(application) as client:
        member = await _member_key(client)  # the admin key is now accepted from this address
        assert await _guess(client, LIMIT) == [401] * LIMIT
        refused = await _as(client, "mp_wrong_again")
        assert refused.status_code == 429 and "too many wrong API keys" in refused.json()["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= WINDOW_SECONDS
        # A right key not yet accepted from here is refused as well: a guess that is right
        # gets no answer either.
        assert (await _as(client, member)).status_code == 429
        # The key that was working goes on working.
        assert (await _as(client, ADMIN_KEY)).status_code == 200
        clock.now += WINDOW_SECONDS
        assert (await _as(client, member)).status_code == 200
        assert (await _as(client, "mp_wrong")).status_code == 401


async def test_behind_a_trusted_proxy_each_client_is_counted_by_its_own_address(tmp_path: Path) -> None:
    clock = Clock()
    # The in-process client connects from 127.0.0.1: the proxy here.
    async with _app(tmp_path, clock, trusted_proxies=["127.0.0.1"]) as application:
        async with _client(application) as admin:
            member = await _member_key(admin)
        async with (
            _client(application, "203.0.113.5") as guesser,
            _client(application, "198.51.100.7, 203.0.113.5") as spoofing,  # the proxy appended the real one
            _client(application, "198.51.100.7") as worker,
        ):
            assert await _guess(guesser, LIMIT) == [401] * LIMIT
            assert (await _as(guesser, member)).status_code == 429
            assert (await _as(spoofing, member)).status_code == 429  # a forged first entry is not believed
            assert (await _as(worker, member)).status_code == 200  # another client behind the same proxy


async def test_x_forwarded_for_is_ignored_without_trusted_proxies(tmp_path: Path) -> None:
    async with _app(tmp_path, Clock()) as application:
        async with _client(application) as admin:
            member = await _member_key(admin)
        async with _client(application, "203.0.113.5") as one, _client(application, "198.51.100.7") as other:
            assert await _guess(one, LIMIT) == [401] * LIMIT
            # Both are the connection's address, 127.0.0.1: counted together.
            assert (await _as(other, member)).status_code == 429


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


async def test_replicas_share_the_count_through_redis(tmp_path: Path, own_redis: OwnRedis) -> None:
    clock = Clock()
    async with (
        _app(tmp_path, clock, redis_url=own_redis.url) as first,
        _app(tmp_path, clock, redis_url=own_redis.url, bootstrap=False) as second,
        _client(first) as one,
        _client(second) as other,
    ):
        member = await _member_key(one)
        assert await _guess(one, LIMIT - 2) == [401] * (LIMIT - 2)
        assert await _guess(other, 2) == [401, 401]
        assert (await _as(one, member)).status_code == 429
        assert (await _as(other, member)).status_code == 429


async def test_without_redis_reachable_each_process_still_counts(tmp_path: Path) -> None:
    clock = Clock()
    dead = "redis://127.0.0.1:9/0"  # the discard port: nothing listens
    async with _app(tmp_path, clock, redis_url=dead) as application, _client(application) as client:
        member = await _member_key(client)
        assert await _guess(client, LIMIT) == [401] * LIMIT
        assert (await _as(client, member)).status_code == 429


def test_ipv6_clients_are_counted_by_their_64_network() -> None:
    assert counted_address("2001:db8:1:2:aaaa::1") == counted_address("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert counted_address("2001:db8:1:3::1") != counted_address("2001:db8:1:2::1")
    assert counted_address("::ffff:203.0.113.5") == "203.0.113.5"
    assert counted_address("203.0.113.5") == "203.0.113.5"


async def test_the_counts_in_a_process_are_bounded() -> None:
    clock = Clock()
    throttle = AuthThrottle(per_minute=1, max_addresses=2, clock=clock)
    for host in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        await throttle.failed(host)
    assert await throttle.retry_after("203.0.113.1", "k") == WINDOW_SECONDS - 1
    assert await throttle.retry_after("203.0.113.2", "k") is not None
    assert await throttle.retry_after("203.0.113.3", "k") is None  # past the bound: not counted
    clock.now += WINDOW_SECONDS
    assert await throttle.retry_after("203.0.113.1", "k") is None
