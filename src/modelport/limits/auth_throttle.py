"""Failed key attempts, throttled per client address: after `per_minute` wrong keys from
one address in a minute, that address gets 429 until the minute is over, so that keys
cannot be guessed at wire speed. The refusal comes before the key is looked up (a guess
costs no database query), and applies to every key but one already accepted from that
address this minute: someone else's wrong keys behind the same address (a NAT, a proxy
not named in MODELPORT_TRUSTED_PROXIES) do not lock out a client that is working.
That exception also keeps the check off the hot path: a key accepted from an address
is not checked again, in Redis or here, until the next minute.

Counted in fixed windows of 60 s (`floor(now / 60)`): one number per address per
window, which is all a check needs. A window's start is when its counts begin: an
address refused at 0:59 may try again at 1:00. IPv6 addresses are counted by their /64
network, which one host is given whole, so that it cannot take a fresh address per try.

In Redis when `MODELPORT_REDIS_URL` is set (one `INCR` per failure, one `GET` per
check, keys that expire with their window), so every worker and replica sees the same
counts; otherwise in this process. Redis trouble never blocks a request: after a
failed call the counts go on in this process until Redis answers again.

The in-process counts, and the keys accepted per address, are bounded by
`max_addresses` entries per window each: past it, a new address is not counted (its
failures go unthrottled, as they would with that many addresses anyway) and a new
accepted key is checked again next time, rather than the memory growing with every
address a flood brings.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
_PREFIX = "modelport:auth-failures:"


@functools.lru_cache(maxsize=4096)
def counted_address(host: str) -> str:
    """What failures are counted under: the address, an IPv6 one as its /64 network."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an IP address (a Unix socket, a test client's name): as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:1.2.3.4 is 1.2.3.4
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


class AuthThrottle:
    def __init__(
        self,
        *,
        per_minute: int,
        max_addresses: int,
        redis_url: str | None = None,
        timeout: float = 0.25,
        retry_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_minute = per_minute
        self._max_addresses = max_addresses
        self._clock = clock
        self._window = -1
        self._counts: dict[str, int] = {}
        # (client host, key) pairs accepted this minute, as Python's hash of the pair: keyed
        # with this process's random seed (SipHash), so it is no record of the key, and it
        # costs a tenth of a microsecond on a path every request takes.
        self._accepted: set[int] = set()
        self._redis = (
            Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout) if redis_url else None
        )
        self._retry_seconds = retry_seconds
        self._redis_resting_until = 0.0

    async def retry_after(self, host: str, key: str) -> int | None:
        """Seconds until `host` may try `key`, or None when it may now."""
        if self.per_minute <= 0:
            return None
        now = self._clock()
        window = math.floor(now / WINDOW_SECONDS)
        if hash((host, key)) in self._local_accepted(window):
            return None
        address = counted_address(host)
        count = await self._shared_count(address, window)
        if count is None:
            count = self._local(window).get(address, 0)
        if count < self.per_minute:
            return None
        return max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))

    async def failed(self, host: str) -> None:
        """Count one wrong key from `host`."""
        if self.per_minute <= 0:
            return
        window = math.floor(self._clock() / WINDOW_SECONDS)
        address = counted_address(host)
        if await self._shared_add(address, window):
            return
        counts = self._local(window)
        if address in counts or len(counts) < self._max_addresses:
            counts[address] = counts.get(address, 0) + 1

    def accepted(self, host: str, key: str) -> None:
        """`key` was right, from `host`: not checked again from there this minute."""
        if self.per_minute <= 0:
            return
        accepted = self._local_accepted(math.floor(self._clock() / WINDOW_SECONDS))
        if len(accepted) < self._max_addresses:
            accepted.add(hash((host, key)))

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _local(self, window: int) -> dict[str, int]:
        self._turn(window)
        return self._counts

    def _local_accepted(self, window: int) -> set[int]:
        self._turn(window)
        return self._accepted

    def _turn(self, window: int) -> None:
        if window != self._window:  # a new minute: the last one's counts are done with
            self._window, self._counts, self._accepted = window, {}, set()

    def _redis_usable(self) -> Redis | None:
        if self._redis is None or time.monotonic() < self._redis_resting_until:
            return None
        return self._redis

    def _redis_failed(self, exc: Exception) -> None:
        log.warning("failed key attempts counted in this process for %ss: Redis: %s", self._retry_seconds, exc)
        self._redis_resting_until = time.monotonic() + self._retry_seconds

    async def _shared_count(self, address: str, window: int) -> int | None:
        redis = self._redis_usable()
        if redis is None:
            return None
        try:
            value = await redis.get(f"{_PREFIX}{window}:{address}")
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return None
        return int(value or 0)

    async def _shared_add(self, address: str, window: int) -> bool:
        redis = self._redis_usable()
        if redis is None:
            return False
        key = f"{_PREFIX}{window}:{address}"
        try:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, 2 * WINDOW_SECONDS)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return False
        return True


__all__ = ["WINDOW_SECONDS", "AuthThrottle", "counted_address"]
