"""The inference routes without FastAPI's per-request machinery (issue 27).

A request to an inference route (`POST /v4/models/{id}/chat-completions`,
`/v1/chat/completions`, `/v1/messages`, ...) spends most of the gateway's own CPU in the
model call, but under FastAPI about a fifth of it went to routing through every
included router, the exception and exit-stack middlewares, and resolving the
endpoint's dependencies with their signatures each time. `HotPath` serves these routes
where those would begin (in `api/front.py`, past the request guard): one match of the path,
then the route's own endpoint function called with what it asks for, worked out once at
start-up from the route's dependencies. Everything else goes on to FastAPI.

Nothing a client sees differs: it is the same endpoint, the same dependency functions
(`api.deps`: the key from the raw header, the service), the same exception handlers
(`api.app`, looked up as Starlette's exception middleware looks them up), and the same
route in the scope (the metrics' and logs' route label). FastAPI keeps the routes'
declarations, so the OpenAPI document still describes them, and serves any route whose
endpoint asks for something this path cannot give (a query, a header, a body parsed by
FastAPI): such a route is refused at start-up, never served half-way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from modelport.api import deps
from modelport.observability.observation import Observation

Resolver = Callable[[Request], Awaitable[Any]]


async def _principal(request: Request) -> Any:
    # What FastAPI passes `current_principal`: the x-api-key header (`APIKeyHeader`).
    return await deps.current_principal(request, request.headers.get("x-api-key"))


# The dependencies an endpoint on this path may ask for, each resolved from the request
# as FastAPI would resolve it.
_RESOLVERS: dict[Callable[..., Any], Resolver] = {
    deps.current_principal: _principal,
    deps.inference_service: deps.inference_service,
    deps.catalogue: deps.catalogue,
    deps.batches_service: deps.batches_service,
}


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to call one route's endpoint: its dependencies in the order FastAPI resolves
    them, then its path parameters and the request."""

    route: APIRoute
    dependencies: tuple[tuple[str, Resolver], ...]
    path_params: tuple[str, ...]
    request_param: str | None


def plan_for(route: APIRoute) -> _Plan:
    """The call plan of `route`; a ValueError naming what it asks for that this path
    cannot give."""
    dependant = route.dependant
    # What only FastAPI resolves or gives an endpoint: any of it, and the route is not planned.
    only_fastapi = {
        "query parameters": dependant.query_params,
        "header parameters": dependant.header_params,
        "cookie parameters": dependant.cookie_params,
        "body parameters": dependant.body_params,
        "a Response to change": dependant.response_param_name,
        "background tasks": dependant.background_tasks_param_name,
        "an HTTP connection": dependant.http_connection_param_name,
        "security scopes": dependant.security_scopes_param_name,
    }
    for what, asked in only_fastapi.items():
        if asked:
            raise ValueError(f"{route.path}: the endpoint takes {what}, which only FastAPI gives")
    dependencies = []
    for dependency in dependant.dependencies:
        resolver = _RESOLVERS.get(dependency.call) if dependency.call is not None else None
        if resolver is None or dependency.name is None:
            raise ValueError(f"{route.path}: no resolver for the dependency {dependency.call!r}")
        dependencies.append((dependency.name, resolver))
    return _Plan(
        route=route,
        dependencies=tuple(dependencies),
        path_params=tuple(param.name for param in dependant.path_params),
        request_param=dependant.request_param_name,
    )


def _by_path(plans: tuple[_Plan, ...]) -> dict[str, _Plan]:
    """The plans of routes without path parameters, by path: `/v1/messages` was matched
    after a dozen other routes' patterns. A path an earlier route's pattern also matches
    is left to the matching in turn, where that route comes first."""
    found: dict[str, _Plan] = {}
    for at, plan in enumerate(plans):
        path = plan.route.path
        if plan.route.param_convertors or path in found:
            continue
        if not any(earlier.route.path_regex.match(path) for earlier in plans[:at]):
            found[path] = plan
    return found


class HotPath:
    """Serves `routes` (each a POST route planned by `plan_for`) itself, past the
    request guard (`api/front.py` asks `route` of every request the guard let through
    with its body read). `exception_handlers` are the application's
    (`FastAPI.exception_handlers`): those Starlette's exception middleware would apply
    are applied here; the rest (`Exception`, 500) belong to the outermost middleware,
    which an unhandled error still reaches."""

    def __init__(self, routes: Iterable[APIRoute], exception_handlers: Mapping[Any, Callable[..., Any]]) -> None:
        self._plans = tuple(plan_for(route) for route in routes)
        self._by_path = _by_path(self._plans)
        # Split as Starlette splits them (`Starlette.build_middleware_stack`).
        handled = {key: value for key, value in exception_handlers.items() if key not in (500, Exception)}
        self._status_handlers = {key: value for key, value in handled.items() if isinstance(key, int)}
        self._handlers = {key: value for key, value in handled.items() if not isinstance(key, int)}

    def route(self, scope: Scope) -> _Plan | None:
        """The plan of the route this request is for, its route and path parameters put
        in the scope (as Starlette's router puts them); None for a request not served here."""
        if scope["method"] == "POST":
            # A route without path parameters is found by its path, then matched once
            # (the root path, the method); the rest are matched in turn, as Starlette does.
            candidate = self._by_path.get(scope["path"])
            if candidate is not None:
                match, child_scope = candidate.route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    return candidate
            for plan in self._plans:
                match, child_scope = plan.route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    return plan
        return None

    async def serve(
        self, plan: _Plan, scope: Scope, receive: Receive, send: Send, body: bytes, observed: Observation
    ) -> None:
        """The request, answered on `send` by its route's endpoint; `body` is what the
        guard read (and `receive` what the client sends after it); `observed` knows
        whether the answer has begun."""
        request = Request(scope, receive, send)
        # Starlette's own cache of a read body: `request.body()` (and `stream()`, `json()`)
        # hand it back, as they would after reading it from `receive`.
        request._body = body
        try:
            arguments: dict[str, Any] = {}
            # Each dependency once a request, however many parameters ask for it (as FastAPI caches it).
            resolved: dict[Resolver, Any] = {}
            for name, resolve in plan.dependencies:
                if resolve not in resolved:
                    resolved[resolve] = await resolve(request)
                arguments[name] = resolved[resolve]
            path_params = scope["path_params"]
            for name in plan.path_params:
                arguments[name] = path_params[name]
            if plan.request_param is not None:
                arguments[plan.request_param] = request
            response = await plan.route.endpoint(**arguments)
            if not isinstance(response, Response):
                raise TypeError(f"{plan.route.path}: the endpoint answered {type(response).__name__}, not a Response")
            await response(scope, receive, send)
        except Exception as error:
            handler = self._handler_for(error)
            if handler is None:
                raise
            if observed.started:
                raise RuntimeError("an error after the answer began cannot be answered") from error
            answer = await handler(request, error)
            await answer(scope, receive, send)
            # A reused exception would otherwise gather a traceback per request.
            error.__traceback__ = None

    def _handler_for(self, error: Exception) -> Callable[..., Any] | None:
        """The handler Starlette's exception middleware would pick for `error`."""
        if isinstance(error, HTTPException) and error.status_code in self._status_handlers:
            return self._status_handlers[error.status_code]
        for kind in type(error).__mro__:
            if kind in self._handlers:
                return self._handlers[kind]
        return None
