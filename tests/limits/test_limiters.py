"""The limiters' rules, the same for the in-process one and the Redis one (against a
Redis server the test owns), on a test clock: no sleeps, no timing asserts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from modelport.limits.base import Admission, Demand, Limiter, LimitExceeded, LimitStoreUnavailable
from modelport.limits.memory import MemoryLimiter
from modelport.limits.redis import MAX_CONNECTIONS, RedisLimiter
from modelport.principal import Limits
from tests.redis_server import OwnRedis


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


class Spend:
    """The usage records' side of a budget: what `spend_source` answers."""

    def __init__(self) -> None:
        self.total = 0.0
        self.asked: list[float] = []
        self.owners: list[tuple[str, str]] = []  # (scope, id) of each question
        self.by_owner: dict[str, float] = {}  # an owner's own total, where it differs

    async def __call__(self, scope: str, owner_id: str, since: float) -> float:
        self.asked.append(since)
        self.owners.append((scope, owner_id))
        return self.by_owner.get(owner_id, self.total)


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    # Only the Redis cases start (and need) a Redis server; the in-process ones never do.
    own_redis: OwnRedis | None = request.getfixturevalue("own_redis") if request.param == "redis" else None
    made: list[Limiter] = []
    counter = iter(range(1_000_000))

    def build(clock: Clock, spend: Spend | None = None, **options: object) -> Limiter:
        limiter: Limiter
        if request.param == "memory":
            limiter = MemoryLimiter(clock=clock, spend_source=spend, **options)  # type: ignore[arg-type]
        else:
            assert own_redis is not None
            limiter = RedisLimiter(own_redis.url, clock=clock, spend_source=spend, **options)  # type: ignore[arg-type]
        made.append(limiter)
        return limiter

    build.unique = lambda: f"key-{request.node.name}-{next(counter)}"  # type: ignore[attr-defined]
    yield build
    for limiter in made:
        await limiter.aclose()


_requests = iter(range(10_000_000))


def demand(key_id: str, limits: Limits, *, tokens: int = 10, cost: float = 0.0, **more: object) -> Demand:
    fields: dict[str, object] = {
        "request_id": f"r{next(_requests)}",
        "key_id": key_id,
        "key": limits,
        "deployment_id": "dep",
        "deployment_rpm": None,
        "deployment_tpm": None,
        "tokens": tokens,
        "cost": cost,
        **more,
    }
    return Demand(**fields)  # type: ignore[arg-type]


async def test_rpm_admits_exactly_the_limit_then_429_until_the_window_moves(make: object) -> None:
    clock = Clock()
    limiter = make(clock)  # type: ignore[operator]
    key = make.unique()  # type: ignore[attr-defined]
    limits = Limits(rpm_limit=5)
    remaining = []
    for _ in range(5):
        admission = await limiter.admit(demand(key, limits))
        remaining.append(admission.remaining_requests)
        clock.now += 1
    assert remaining == [4, 3, 2, 1, 0]
    with pytest.raises(LimitExceeded) as refused:
        await limiter.admit(demand(key, limits))
    assert refused.value.status_code == 429
    assert refused.value.limit == "rpm_limit"
    assert "rpm_limit" in refused.value.detail
    # The first request leaves the 60 s window 55 s from now (it was 5 s ago).
    assert refused.value.headers() == {"Retry-After": "55"}
    clock.now += 55
    await limiter.admit(demand(key, limits))  # one slot back
    with pytest.raises(LimitExceeded):
        await limiter.admit(demand(key, limits))


async def test_tpm_reserves_then_settles_the_real_count(make: object) -> None:
    clock = Clock()
    limiter = make(clock)  # type: ignore[operator]
    key = make.unique()  # type: ignore[attr-defined]
    limits = Limits(tpm_limit=1000)
    first = await limiter.admit(demand(key, limits, tokens=900))
    assert first.remaining_tokens == 100
    second = await limiter.admit(demand(key, limits, tokens=900))  # 900 < 1000: admitted, window now over
    assert second.remaining_tokens == 0
    with pytest.raises(LimitExceeded) as refused:
        await limiter.admit(demand(key, limits, tokens=1))
    assert refused.value.limit == "tpm_limit"
    # The two really used 100 tokens each: settlement gives the rest back.
    await limiter.settle(first, tokens=100, cost=0)
    await limiter.settle(second, tokens=100, cost=0)
    third = await limiter.admit(demand(key, limits, tokens=50))
    assert third.remaining_tokens == 1000 - 250


async def test_parallel_slots_are_held_until_settled(make: object) -> None:
    clock = Clock()
    limiter = make(clock, parallel_lease_seconds=600)  # type: ignore[operator]
    key = make.unique()  # type: ignore[attr-defined]
    limits = Limits(max_parallel_requests=2)
    one = await limiter.admit(demand(key, limits))
    await limiter.admit(demand(key, limits))
    with pytest.raises(LimitExceeded) as refused:
        await limiter.admit(demand(key, limits))
    assert refused.value.limit == "max_parallel_requests"
    await limiter.settle(one, tokens=0, cost=0)
    await limiter.settle(one, tokens=0, cost=0)  # settling twice frees one slot, not two
    await limiter.admit(demand(key, limits))
    with pytest.raises(LimitExceeded):
        await limiter.admit(demand(key, limits))
    # A slot whose holder died is freed when its lease ends.
    clock.now += 601
    await limiter.admit(demand(key, limits))


async def test_budget_overspend_is_bounded_by_one_reservation(make: object) -> None:
    """Admission needs spend + reservations < budget; a burst of parallel requests that
    each cost at most their reservation ends below budget + one reservation."""
    clock = Clock()
    limiter = make(clock, Spend())  # type: ignore[operator]
    key = make.unique()  # type: ignore[attr-defined]
    limits = Limits(max_budget=1.0, budget_duration="1d", budget_anchor=clock.now)
    reservation = 0.3
    admitted: list[Admission] = []
    for _ in range(10):  # all in flight at once: none settled yet
        try:
            admitted.append(await limiter.admit(demand(key, limits, cost=reservation)))
        except LimitExceeded as refused:
            assert refused.limit == "max_budget"
    assert len(admitted) == 4  # 0, 0.3, 0.6, 0.9 are below 1.0; 1.2 is not
    for admission in admitted:  # each really cost all it reserved: the worst case
        await limiter.settle(admission, tokens=0, cost=reservation)
    spent = reservation * len(admitted)
    assert 1.0 <= spent < 1.0 + reservation
    with pytest.raises(LimitExceeded) as refused:
        await limiter.admit(demand(key, limits, cost=0.01))
    assert refused.value.headers() == {"Retry-After": str(86400)}


async def test_budget_settles_real_cost_and_resets_after_its_duration(make: object) -> None:
    clock = Clock()
    limiter = make(clock, Spend())  # type: ignore[operator]
    key = make.unique()  # type: ignore[attr-defined]
    limits = Limits(max_budget=1.0, budget_duration="1h", budget_anchor=clock.now)
    admission = await limiter.admit(demand(key, limits, cost=5.0))  # reserves far more than the budget
    with pytest.raises(LimitExceeded):
        await limiter.admit(demand(key, limits, cost=0.1))
    await limiter.settle(admission, tokens=0, cost=0.25)  # it really cost 0.25
    for _ in range(3):
        await limiter.settle(await limiter.admit(demand(key, limits, cost=0.25)), tokens=0, cost=0.25)
    with pytest.raises(LimitExceeded) as refused:
        await limiter.admit(demand(key, limits, cost=0.25))
    assert refused.value.limit == "max_budget"
    clock.now += 1800
    with pytest.raises(LimitExceeded):  # half an hour on: still the same window
        await limiter.admit(demand(key, limits, cost=0.25))
    clock.now += 1800  # the hour is over: a fresh budget
    await limiter.admit(demand(key, limits, cost=0.25))


async def test_budget_count_is_seeded_from_the_usage_records(make: object) -> None:
    """A process (or Redis) that starts afresh does not hand out the budget again."""
    clock = Clock()
    spend = Spend()
    spend.total = 0.99
    limiter = make(clock, spend)  # type: ignore[operator]
    key = make.unique()  # type: ignore[attr-defined]
    limits = Limits(max_budget=1.0, budget_duration="30d", budget_anchor=clock.now - 86400 * 45)
    await limiter.admit(demand(key, limits, cost=0.5))
    with pytest.raises(LimitExceeded):
        await limiter.admit(demand(key, limits, cost=0.5))
    # Asked once, for the spend since the current window began (30 days after the anchor).
    assert spend.asked == [clock.now - 86400 * 15]


async def test_an_accounts_limits_count_all_its_keys_beside_each_keys_own(make: object) -> None:
    """Four keys of one account, each with room of its own: the account's rpm and
    parallel limits hold for them together, and a refusal says it was the account's."""
    clock = Clock()
    limiter = make(clock)  # type: ignore[operator]
    account = make.unique()  # type: ignore[attr-defined]
    keys = [make.unique() for _ in range(4)]  # type: ignore[attr-defined]
    shared = Limits(rpm_limit=6, max_parallel_requests=3)
    own = Limits(rpm_limit=100)
    held = [await limiter.admit(demand(keys[i], own, account_id=account, account=shared)) for i in range(3)]
    with pytest.raises(LimitExceeded) as refused:
        await limiter.admit(demand(keys[3], own, account_id=account, account=shared))
    assert (refused.value.limit, refused.value.scope) == ("max_parallel_requests", "account")
    assert refused.value.holds_everywhere
    for admission in held:
        await limiter.settle(admission, tokens=0, cost=0.0)
    for i in range(3):  # 3 more requests: 6 in the minute
        await limiter.settle(
            await limiter.admit(demand(keys[i], own, account_id=account, account=shared)), tokens=0, cost=0.0
        )
    with pytest.raises(LimitExceeded) as refused:
        await limiter.admit(demand(keys[3], own, account_id=account, account=shared))
    assert (refused.value.limit, refused.value.scope) == ("rpm_limit", "account")
    # Another account's keys are not counted with these.
    await limiter.admit(demand(keys[3], own, account_id=make.unique(), account=shared))  # type: ignore[attr-defined]


async def test_an_accounts_budget_is_shared_and_its_overspend_bounded_by_one_reservation(make: object) -> None:
    """Forty requests from four keys in flight at once against an account budget of
    $1: those admitted reserved less than budget + one reservation, whatever the keys'
    own (larger) budgets; the count is seeded from the account's own recorded spend."""
    clock = Clock()
    spend = Spend()
    account = make.unique()  # type: ignore[attr-defined]
    spend.by_owner[account] = 0.25  # spent before this limiter counted
    limiter = make(clock, spend)  # type: ignore[operator]
    keys = [make.unique() for _ in range(4)]  # type: ignore[attr-defined]
    shared = Limits(max_budget=1.0, budget_duration="1d", budget_anchor=clock.now)
    own = Limits(max_budget=100.0, budget_duration="1d", budget_anchor=clock.now)
    reservation = 0.1
    admitted: list[Admission] = []
    refusals: list[LimitExceeded] = []
    for index in range(40):
        try:
            admitted.append(
                await limiter.admit(demand(keys[index % 4], own, cost=reservation, account_id=account, account=shared))
            )
        except LimitExceeded as refused:
            refusals.append(refused)
    assert {(refused.limit, refused.scope) for refused in refusals} == {("max_budget", "account")}
    assert 1.0 <= 0.25 + reservation * len(admitted) < 1.0 + reservation
    assert len(admitted) == 8  # 0.25 + 0.1 * 7 = 0.95 < 1.0 lets the eighth in
    assert ("account", account) in spend.owners
    for admission in admitted:  # they cost half their reservation: room again
        await limiter.settle(admission, tokens=0, cost=reservation / 2)
    await limiter.admit(demand(keys[0], own, cost=reservation, account_id=account, account=shared))


async def test_deployment_rpm_counts_every_key(make: object) -> None:
    clock = Clock()
    limiter = make(clock)  # type: ignore[operator]
    deployment = make.unique()  # type: ignore[attr-defined]
    for index in range(3):
        await limiter.admit(demand(f"k{index}", Limits(), deployment_id=deployment, deployment_rpm=3))
    with pytest.raises(LimitExceeded) as refused:
        await limiter.admit(demand("k9", Limits(), deployment_id=deployment, deployment_rpm=3))
    assert refused.value.scope == "deployment"


async def test_a_refused_request_takes_nothing(make: object) -> None:
    clock = Clock()
    limiter = make(clock)  # type: ignore[operator]
    key = make.unique()  # type: ignore[attr-defined]
    await limiter.admit(demand(key, Limits(max_parallel_requests=1)))
    both = Limits(rpm_limit=2, max_parallel_requests=1)
    for _ in range(3):
        with pytest.raises(LimitExceeded):
            await limiter.admit(demand(key, both))  # parallel refuses: rpm must not count it
    fresh = make.unique()  # type: ignore[attr-defined]
    assert (await limiter.admit(demand(fresh, Limits(rpm_limit=2)))).remaining_requests == 1


async def test_redis_down_fails_open_or_closed_and_recovers(tmp_path: Path) -> None:
    server = OwnRedis(tmp_path)
    server.start()
    clock = Clock()
    limiter = RedisLimiter(server.url, clock=clock, fail_closed=["max_budget"], timeout=0.2, retry_seconds=0.0)
    try:
        rpm = Limits(rpm_limit=1)
        budget = Limits(max_budget=10.0)
        await limiter.admit(demand("k", rpm))
        with pytest.raises(LimitExceeded):
            await limiter.admit(demand("k", rpm))
        server.stop()
        # rpm fails open: admitted, uncounted (nothing to settle, no headers).
        admitted = await limiter.admit(demand("k", rpm))
        assert admitted.taken == frozenset() and admitted.headers() == {}
        await limiter.settle(admitted, tokens=1, cost=0)
        # max_budget fails closed: 503, not a hang.
        with pytest.raises(LimitStoreUnavailable) as closed:
            await limiter.admit(demand("k", budget))
        assert closed.value.status_code == 503 and "max_budget" in closed.value.detail
        server.start()  # an empty Redis on the same port: enforcement resumes by itself
        await limiter.admit(demand("k", rpm))
        with pytest.raises(LimitExceeded):
            await limiter.admit(demand("k", rpm))
        await limiter.admit(demand("k", budget))
    finally:
        await limiter.aclose()
        server.stop()


async def test_more_concurrent_requests_than_redis_connections_wait_for_one(own_redis: OwnRedis) -> None:
    """A request beyond the connection pool's size waits for a connection; it is not
    told that Redis is unreachable (which fails a fail-closed limit with 503)."""
    limiter = RedisLimiter(own_redis.url, clock=Clock(), fail_closed=["max_budget"], timeout=10.0)
    budget = Limits(max_budget=1e9)
    try:
        admitted = await asyncio.gather(
            *(limiter.admit(demand("pool-key", budget, cost=0.01)) for _ in range(MAX_CONNECTIONS + 44))
        )
        assert all(admission.taken for admission in admitted)
        await asyncio.gather(*(limiter.settle(admission, tokens=10, cost=0.01) for admission in admitted))
    finally:
        await limiter.aclose()


@pytest.mark.parametrize("text", ["soon", "0d", "-1h", "1w", "3651d", "99999999999999999999d", ""])
def test_budget_durations_outside_the_rules_are_refused(text: str) -> None:
    from modelport.principal import parse_duration

    with pytest.raises(ValueError, match="budget_duration"):
        parse_duration(text)


def test_budget_durations() -> None:
    from modelport.principal import parse_duration

    assert [parse_duration(text) for text in ("90s", "15m", "1h", "30d", "3650d")] == [
        90,
        900,
        3600,
        2592000,
        315360000,
    ]


async def test_the_gate_reports_each_refusal_and_counts_nothing_for_unlimited_keys() -> None:
    from modelport.errors import ModelportError
    from modelport.generation import GenerationCall, Sampling
    from modelport.inference.admission import LimitGate
    from modelport.principal import Principal
    from modelport.vendors.base import Target

    refusals: list[ModelportError] = []
    gate = LimitGate(MemoryLimiter(clock=Clock()), on_rejection=refusals.append)
    target = Target(deployment_id="d", model_type="CHAT_COMPLETION", model_vendor="OPENAI")
    call = GenerationCall(sampling=Sampling(temperature=0.0, max_tokens=5), prompt="hi")

    def principal(limits: Limits | None) -> Principal:
        return Principal("i", "user", "a", "member", key_id="k", key_limits=limits)

    assert await gate.admit(principal(None), target, call, "r0") is None  # nothing to count
    admitted = await gate.admit(principal(Limits(rpm_limit=1)), target, call, "r1")
    assert admitted is not None and admitted.headers() == {"x-ratelimit-remaining-requests": "0"}
    with pytest.raises(LimitExceeded):
        await gate.admit(principal(Limits(rpm_limit=1)), target, call, "r2")
    assert [refusal.status_code for refusal in refusals] == [429]
    gate.settle(admitted, tokens=3, cost=0.0)
    await gate.aclose()
    assert admitted.settled
