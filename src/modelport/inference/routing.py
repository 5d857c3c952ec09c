"""Which deployment serves a request that names a *model*, and what to try when it fails.

The compatible surfaces (`/v1/...`, `/v4/beta/...`) name a model rather than a
deployment. `model` resolves, in the selected account, to:

1. a deployment id: exactly that deployment (no spreading, no fallbacks: the caller chose);
2. a model name (what `GET /v1/models` lists);
3. `vendor/name` with the vendor in lowercase (`llmengine/smollm2-135m-instruct`).

If several models share a name, the oldest is used (`vendor/name` or a deployment id
picks another).

**Spreading.** A model's READY deployments take its requests in turn (round-robin, one
counter per model). Round-robin rather than least-in-flight because a gateway replica
sees only its own in-flight requests, and with N replicas round-robin spreads as evenly.

**Passive health.** A deployment whose calls fail with 502, 503 or 504 (connection
errors and vendor timeouts become these) `failures_to_set_aside` times in a row is set
aside for `cooldown_seconds`; after that it is tried again, and one more failure sets it
aside again, while a success clears it. This state is per process: each gateway worker
and replica learns by itself, which costs at most a few failed attempts each (and the
client does not see them, see below).

**Retry and fallback.** A failure before the first byte of the answer is retried on the
next candidate: the model's other deployments, then the deployments of each of its
`fallback_models` (names resolved as above, one level: a fallback's own fallbacks are
not followed, so no cycle can form). A 429 from a vendor moves on too, without counting
against the deployment's health. Errors that are the caller's (400, 404, 422) are raised
at once. If every candidate is set aside, they are all tried anyway: a deployment that
may have recovered beats a certain failure.

A route is cached with the catalogue cache (`store/cache.py`), so the per-request cost is a
dictionary lookup and a counter.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.errors import (
    DeploymentUnavailable,
    InvalidRequest,
    ModelportError,
    NotFound,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from modelport.limits.base import LimitExceeded
from modelport.principal import ModelAllowList
from modelport.store import repo
from modelport.store.cache import CatalogueCache

log = logging.getLogger(__name__)

T = TypeVar("T")

# Failures that say "this deployment is unwell" (count against its health) and those
# that only say "try elsewhere" (an upstream's rate limit).
_UNHEALTHY = (UpstreamError, UpstreamTimeout, DeploymentUnavailable)
_TRY_ELSEWHERE = (*_UNHEALTHY, RateLimited)


@dataclass(frozen=True, slots=True)
class Route:
    """What a `model` reference names: its deployments and the models to fall back on."""

    model_id: str
    deployment_ids: tuple[str, ...]  # the READY ones
    # The model's name and vendor, for a key's allow-list (principal.ModelAllowList).
    model_name: str = ""
    model_vendor: str | None = None
    fallback_models: tuple[str, ...] = ()
    # Whether the model has any deployment, READY or not: with none, no retry can help.
    has_deployments: bool = True


@dataclass(slots=True)
class _Health:
    failures: int = 0
    set_aside_until: float = 0.0


class PassiveHealth:
    """Consecutive failures per deployment, and which are set aside (this process only)."""

    def __init__(
        self,
        *,
        failures_to_set_aside: int = 3,
        cooldown_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_to_set_aside = failures_to_set_aside
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._states: dict[str, _Health] = {}

    def is_set_aside(self, deployment_id: str) -> bool:
        state = self._states.get(deployment_id)
        return state is not None and state.set_aside_until > self._clock()

    def failed(self, deployment_id: str) -> None:
        state = self._states.setdefault(deployment_id, _Health())
        state.failures += 1
        if state.failures >= self.failures_to_set_aside:
            state.set_aside_until = self._clock() + self.cooldown_seconds
            log.warning(
                "deployment %s failed %d times in a row; set aside for %.0f s",
                deployment_id,
                state.failures,
                self.cooldown_seconds,
            )

    def succeeded(self, deployment_id: str) -> None:
        self._states.pop(deployment_id, None)


class Router:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cache: CatalogueCache,
        health: PassiveHealth | None = None,
    ) -> None:
        self._sessions = sessions
        self._cache = cache
        self.health = health or PassiveHealth()
        self._turns: dict[str, itertools.count[int]] = {}

    async def resolve(self, account_id: str, model: str) -> Route:
        """The route `model` names in this account, or 404."""

        async def load() -> Route | None:
            async with self._sessions() as session:
                return await _load_route(session, account_id=account_id, model=model)

        route = await self._cache.get_or_load(("route", account_id, model), load)
        if route is None:
            raise _model_not_found(model)
        return route

    async def allowed(self, account_id: str, model: str, allow: ModelAllowList | None) -> Route:
        """The route `model` names, cut to what a key's `allow` list lets it use; 404, as
        for an unknown name, when that is nothing (SPEC 10: the key must not learn more)."""
        route = await self.resolve(account_id, model)
        if allow is None:
            return route
        part = _allowed_part(route, allow)
        if part is None:
            raise _model_not_found(model)
        return part

    async def candidates(self, account_id: str, model: str, *, allow: ModelAllowList | None = None) -> list[str]:
        """Deployment ids to try, in order: the model's (its turn first), then its fallbacks'."""
        route = await self.allowed(account_id, model, allow)
        ordered = self._in_turn(route)
        for fallback in route.fallback_models:
            try:
                ordered.extend(self._in_turn(await self.allowed(account_id, fallback, allow)))
            except NotFound:
                log.warning("model %s names fallback model %r, which does not exist", model, fallback)
        healthy = [deployment for deployment in ordered if not self.health.is_set_aside(deployment)]
        return list(dict.fromkeys(healthy or ordered))

    async def run(
        self,
        account_id: str,
        model: str,
        attempt: Callable[[str], Awaitable[T]],
        *,
        allow: ModelAllowList | None = None,
    ) -> T:
        """Call `attempt(deployment_id)` on each candidate until one answers (only those
        the key's `allow` list lets it use)."""
        candidates = await self.candidates(account_id, model, allow=allow)
        if not candidates:
            route = await self.allowed(account_id, model, allow)
            if not route.has_deployments and not route.fallback_models:
                # A client error, not a 503: waiting would not make one appear.
                raise InvalidRequest(
                    f"model {model!r} has no deployment: create one (POST /v4/models/{route.model_id}/deployments)",
                    param="model",
                )
            raise DeploymentUnavailable(f"model {model!r} has no READY deployment")
        last: ModelportError | None = None
        for deployment_id in candidates:
            try:
                result = await attempt(deployment_id)
            except _TRY_ELSEWHERE as exc:
                if isinstance(exc, LimitExceeded) and exc.holds_everywhere:
                    raise  # the caller's own limit: no deployment of the model would take it
                if isinstance(exc, _UNHEALTHY):
                    self.health.failed(deployment_id)
                log.info("deployment %s of model %s failed (%s); trying the next", deployment_id, model, exc.detail)
                last = exc
                continue
            self.health.succeeded(deployment_id)
            return result
        assert last is not None
        raise last

    def _in_turn(self, route: Route) -> list[str]:
        deployments = list(route.deployment_ids)
        if len(deployments) > 1:
            start = next(self._turns.setdefault(route.model_id, itertools.count())) % len(deployments)
            deployments = deployments[start:] + deployments[:start]
        return deployments


def _model_not_found(model: str) -> NotFound:
    return NotFound(
        f"model {model!r} not found: name a model of this account (GET /v1/models lists them), "
        "vendor/name, or a deployment id"
    )


def _allowed_part(route: Route, allow: ModelAllowList) -> Route | None:
    """The part of `route` a key limited by `allow` may use; None when that is nothing.
    A listed model keeps all of its route (deployments that are not READY yet included);
    otherwise only its listed READY deployments remain."""
    if allow.allows_model(route.model_name, route.model_vendor):
        return route
    deployment_ids = tuple(deployment for deployment in route.deployment_ids if deployment in allow.deployments)
    if not deployment_ids:
        return None
    return replace(route, deployment_ids=deployment_ids)


async def _load_route(session: AsyncSession, *, account_id: str, model: str) -> Route | None:
    found = await repo.get_deployment_with_model(session, account_id=account_id, deployment_id=model)
    if found is not None:
        deployment, its_model = found
        return Route(
            model_id=deployment.model_id,
            deployment_ids=(deployment.id,),
            model_name=its_model.name,
            model_vendor=its_model.model_vendor or "OTHER",
        )
    models = await repo.models_for_routing(session, account_id=account_id, name=model)
    if not models and "/" in model:
        vendor, _, name = model.partition("/")
        models = [
            candidate
            for candidate in await repo.models_for_routing(session, account_id=account_id, name=name)
            if (candidate.model_vendor or "").lower() == vendor.lower()
        ]
    if not models:
        return None
    chosen = models[0]
    deployments = await repo.ready_deployments_of(session, account_id=account_id, model_id=chosen.id)
    fallbacks = (chosen.model_creation_parameters or {}).get("fallback_models") or []
    return Route(
        model_id=chosen.id,
        deployment_ids=tuple(deployments),
        model_name=chosen.name,
        model_vendor=chosen.model_vendor or "OTHER",
        fallback_models=tuple(str(name) for name in fallbacks if str(name) != model),
        has_deployments=bool(deployments) or await repo.count_deployments(session, model_id=chosen.id) > 0,
    )
