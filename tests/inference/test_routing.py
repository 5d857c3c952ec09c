"""The routing rules without a network: turn order, passive health, what is retried."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.errors import InvalidRequest, NotFound, RateLimited, UpstreamError
from modelport.inference.routing import PassiveHealth, Route, Router
from modelport.limits.base import LimitExceeded
from modelport.store.cache import CatalogueCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ROUTES = {
    "pair": Route(model_id="m1", deployment_ids=("a", "b"), fallback_models=("spare", "missing")),
    "spare": Route(model_id="m2", deployment_ids=("s",)),
}


def router(clock: Clock) -> Router:
    found = Router(sessions=None, cache=CatalogueCache(ttl_seconds=0), health=PassiveHealth(clock=clock))  # type: ignore[arg-type]

    async def resolve(_account_id: str, model: str) -> Route:
        if model not in ROUTES:
            raise NotFound(f"model {model} not found")
        return ROUTES[model]

    found.resolve = resolve  # type: ignore[method-assign]
    return found


async def test_deployments_take_turns_then_fallbacks_follow() -> None:
    routes = router(Clock())
    assert await routes.candidates("acct", "pair") == ["a", "b", "s"]
    assert await routes.candidates("acct", "pair") == ["b", "a", "s"]
    assert await routes.candidates("acct", "pair") == ["a", "b", "s"]


async def test_a_deployment_failing_three_times_is_set_aside_until_its_cooldown_ends() -> None:
    clock = Clock()
    routes = router(clock)
    for _ in range(3):
        routes.health.failed("a")
    assert "a" not in await routes.candidates("acct", "pair")
    clock.now += 29
    assert "a" not in await routes.candidates("acct", "pair")
    clock.now += 2
    assert "a" in await routes.candidates("acct", "pair")
    routes.health.failed("a")  # still failing after the cooldown: set aside again at once
    assert "a" not in await routes.candidates("acct", "pair")
    clock.now += 31
    routes.health.succeeded("a")
    routes.health.failed("a")
    assert "a" in await routes.candidates("acct", "pair")  # a success starts the count again


async def test_when_everything_is_set_aside_everything_is_tried() -> None:
    routes = router(Clock())
    for deployment in ("a", "b", "s"):
        for _ in range(3):
            routes.health.failed(deployment)
    assert sorted(await routes.candidates("acct", "pair")) == ["a", "b", "s"]


async def test_vendor_failures_move_on_and_caller_errors_do_not() -> None:
    routes = router(Clock())
    tried: list[str] = []

    async def failing_until_s(deployment: str) -> str:
        tried.append(deployment)
        if deployment == "a":
            raise UpstreamError("the vendor failed")
        if deployment == "b":
            raise RateLimited("slow down")
        return deployment

    assert await routes.run("acct", "pair", failing_until_s) == "s"
    assert tried == ["a", "b", "s"]
    assert routes.health._states["a"].failures == 1
    assert "b" not in routes.health._states  # a rate limit says nothing about health

    async def refused(deployment: str) -> Any:
        tried.append(deployment)
        raise InvalidRequest("bad parameter")

    tried.clear()
    with pytest.raises(InvalidRequest):
        await routes.run("acct", "pair", refused)
    assert len(tried) == 1


async def test_the_callers_own_limit_is_not_tried_elsewhere_but_a_deployments_limit_is() -> None:
    routes = router(Clock())
    tried: list[str] = []

    async def over_the_keys_limit(deployment: str) -> Any:
        tried.append(deployment)
        raise LimitExceeded("rpm_limit", "API key", "2 of 2 requests in the last 60 s", 30)

    with pytest.raises(LimitExceeded):
        await routes.run("acct", "pair", over_the_keys_limit)
    assert len(tried) == 1  # every deployment would refuse it: one try, one 429
    assert not routes.health._states

    async def over_a_deployments_limit(deployment: str) -> str:
        tried.append(deployment)
        if deployment != "s":
            raise LimitExceeded("rpm_limit", "deployment", "2 of 2 requests in the last 60 s", 30)
        return deployment

    tried.clear()
    assert await routes.run("acct", "pair", over_a_deployments_limit) == "s"
    assert len(tried) == 3


async def test_the_last_failure_is_raised_when_every_candidate_fails() -> None:
    routes = router(Clock())

    async def down(deployment: str) -> Any:
        raise UpstreamError(f"{deployment} is down")

    with pytest.raises(UpstreamError, match="s is down"):
        await routes.run("acct", "pair", down)
    with pytest.raises(NotFound):
        await routes.run("acct", "nothing", down)
