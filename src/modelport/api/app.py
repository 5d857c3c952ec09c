"""create_app(settings): the ASGI application, with everything it needs built in its
lifespan (database, migrations, first-start setup, engine, vendors, service)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from modelport import __version__
from modelport.api import batch_calls, error_shapes, openapi_bodies, welcome
from modelport.api.deps import SELECTED_ACCOUNT_HEADER
from modelport.api.front import Front
from modelport.api.limits import Upload
from modelport.api.routes import (
    accounts,
    anthropic_compat,
    catalogue,
    deployments,
    execute,
    health,
    inference,
    models,
    openai_compat,
    retrieval,
    secrets,
    sgp_legacy,
    spend,
    web,
)
from modelport.api.routes import audit as audit_route
from modelport.api.routes import batches as batches_route
from modelport.api.routes import message_batches as message_batches_route
from modelport.api.routes import metrics as metrics_route
from modelport.api.routes import responses as responses_route
from modelport.api.routes import sgp_files as sgp_files_route
from modelport.catalogue.bootstrap import bootstrap_if_empty
from modelport.catalogue.catalogue import Catalogue
from modelport.catalogue.responses import ResponseStoreBounds
from modelport.catalogue.secrets import SecretBox
from modelport.catalogue.usage import UsageRecorder
from modelport.config import Settings
from modelport.engine.grammar import GrammarBounds
from modelport.engine.pool import EnginePool, resolve_checkpoint
from modelport.engine.protocol import ModelLoadError
from modelport.engine.supervisor import SupervisorClient, SupervisorThread
from modelport.errors import ModelportError
from modelport.inference.admission import LimitGate
from modelport.inference.loader import DeploymentLoader, status_recorders
from modelport.inference.params import CallBounds
from modelport.inference.response_cache import ResponseCache, build_store
from modelport.inference.routing import PassiveHealth, Router
from modelport.inference.service import InferenceService
from modelport.limits import build_limiter
from modelport.limits.auth_throttle import AuthThrottle
from modelport.limits.base import Clock, Scope, wall_clock
from modelport.observability import logs, metrics, tracing
from modelport.observability.heap import freeze_startup_heap
from modelport.observability.requests import observed_usage
from modelport.observability.shutdown import gate
from modelport.prompts.render_pool import configure_render_pool
from modelport.schemas.errors import ErrorResponse, ValidationErrorResponse, validation_detail
from modelport.store import db, usage
from modelport.store.cache import CatalogueCache
from modelport.vendors.adapters import EMBEDDED, VendorRegistry
from modelport.vendors.embedded import EmbeddedVendor
from modelport.vendors.wire import Transport
from modelport.vendors.wiring import register_upstream_vendors

log = logging.getLogger(__name__)


def _shown_loading(checkpoint: str, settings: Settings) -> contextlib.AbstractContextManager[object]:
    """What the terminal shows around loading a deployment's file at start-up. A file
    the server does not allow (MODELPORT_MODEL_DIRS changed since it was registered)
    shows nothing here: its load fails, and its deployment alone is FAILED saying why."""
    try:
        path = resolve_checkpoint(checkpoint, settings.policy)
    except ModelLoadError:
        return contextlib.nullcontext()
    # A worker of `--workers N` shows no spinner: N of them would garble the terminal.
    return welcome.loading(path, show_progress=not settings.engine_supervisor)


def start_engine_supervisor(settings: Settings) -> SupervisorThread:
    """The engine supervisor for this server (the parent's, under `--workers N`)."""
    failed, recovered = status_recorders(settings.database_url)
    supervisor = SupervisorThread(settings.engine, on_failed=failed, on_recovered=recovered)
    supervisor.start()
    return supervisor


async def prepare_database(settings: Settings, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> None:
    """Migrations and first-start setup, as the settings ask. `serve --workers N` runs
    this once before starting the workers, so they do not race each other for it."""
    if settings.migrate_on_start and not await db.schema_is_current(engine):
        await db.upgrade(engine)
    if settings.bootstrap:
        first = await bootstrap_if_empty(sessions, api_key=settings.api_key, context_window=settings.embedded_n_ctx)
        if first is not None:
            # Shown once; a generated key is never stored in clear: the database keeps its hash.
            print(welcome.first_start_message(first, settings), file=sys.stderr, flush=True)
        else:
            await welcome.warn_if_api_key_is_stale(sessions, settings.api_key)


async def _sweep_audit_hourly(catalogue: Catalogue) -> None:
    """Audit events past their retention are deleted now and every hour after."""
    while True:
        try:
            await catalogue.audit.sweep()
        except Exception:  # a database hiccup: the next hour's sweep will do it
            log.warning("the audit log's retention sweep failed", exc_info=True)
        await asyncio.sleep(3600)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.sqlite_path is not None:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(settings.database_url)
    app.state.db_engine = engine  # the readiness probe reads from it
    cache = CatalogueCache(ttl_seconds=settings.cache_ttl_seconds, refresh_seconds=settings.cache_refresh_seconds)
    app.state.cache = cache
    app.state.sessions = db.make_sessions(engine, on_catalogue_change=cache.clear)
    await prepare_database(settings, engine, app.state.sessions)
    cache.observe_generation(await db.read_generation(engine))
    vendors = VendorRegistry()
    app.state.engine_pool = None
    own_supervisor: SupervisorThread | None = None
    if settings.embedded_engine:
        if settings.engine_supervisor:
            control = Path(settings.engine_supervisor)
        else:
            own_supervisor = start_engine_supervisor(settings)
            control = own_supervisor.control_path
        pool = EnginePool(SupervisorClient(control), settings.policy, stall_seconds=settings.engine.stall_seconds)
        app.state.engine_pool = pool
        vendors.register(EMBEDDED, EmbeddedVendor(pool, GrammarBounds.from_settings(settings)))
    loader = DeploymentLoader(app.state.sessions, app.state.engine_pool)
    try:
        await loader.load_at_start(lambda checkpoint: _shown_loading(checkpoint, settings))
    except BaseException:
        if own_supervisor is not None:  # no engine outlives a start-up that failed
            await asyncio.to_thread(own_supervisor.stop)
        raise
    register_upstream_vendors(vendors, settings, app.state.upstream_transport)
    app.state.vendors = vendors
    recorder = UsageRecorder(app.state.sessions, interval=settings.usage_flush_seconds)
    recorder.start()
    app.state.usage = recorder
    box = SecretBox(settings.secret_key)
    app.state.catalogue = Catalogue(
        app.state.sessions,
        cache=cache,
        loads=loader,
        usage=recorder,
        box=box,
        policy=settings.policy,
        adapters=vendors.has,
        responses=ResponseStoreBounds(
            max_bytes=settings.responses_max_stored_bytes, retention_seconds=settings.responses_retention_seconds
        ),
        audit_retention=timedelta(days=settings.audit_retention_days),
    )
    health = PassiveHealth(
        failures_to_set_aside=settings.routing_failures_to_set_aside,
        cooldown_seconds=settings.routing_cooldown_seconds,
    )
    limits = _limit_gate(settings, app.state.sessions, app.state.limits_clock)
    app.state.limits = limits
    throttle = AuthThrottle(
        per_minute=settings.auth_failures_per_minute,
        max_addresses=settings.auth_failures_max_addresses,
        redis_url=settings.redis_url,
        timeout=settings.limits_redis_timeout_seconds,
        retry_seconds=settings.limits_redis_retry_seconds,
        clock=app.state.limits_clock,
    )
    app.state.auth_throttle = throttle
    configure_render_pool(
        threads=settings.template_render_threads,
        per_account=settings.template_renders_per_account,
        queue=settings.template_render_queue,
    )
    response_cache = ResponseCache(
        build_store(
            redis_url=settings.redis_url,
            max_bytes=settings.response_cache_max_bytes,
            max_entry_bytes=settings.response_cache_max_entry_bytes,
            timeout=settings.limits_redis_timeout_seconds,
            retry_seconds=settings.limits_redis_retry_seconds,
        )
    )
    app.state.response_cache = response_cache
    app.state.service = InferenceService(
        app.state.sessions,
        vendors,
        usage=observed_usage(recorder.record),
        secrets=box,
        cache=cache,
        policy=settings.policy,
        router=Router(app.state.sessions, cache, health),
        limits=limits,
        call_bounds=CallBounds(max_messages=settings.max_messages, max_tools=settings.max_tools),
        default_max_tokens=settings.limits_default_max_tokens,
        response_cache=response_cache,
    )
    app.state.batches, runner, line_calls = batch_calls.batches(app, settings, app.state.sessions)
    batch_runs = asyncio.create_task(runner.run(), name="batch-runner")
    poller = asyncio.create_task(cache.poll(lambda: db.read_generation(engine)), name="catalogue-cache")
    audit_sweeps = asyncio.create_task(_sweep_audit_hourly(app.state.catalogue), name="audit-retention")
    resets = asyncio.create_task(
        loader.watch_resets(lambda: db.read_generation(engine), settings.cache_refresh_seconds),
        name="deployment-resets",
    )
    freeze_startup_heap()
    try:
        with gate.watching_signals(settings.shutdown_grace_seconds):
            yield
    finally:
        await runner.drain(settings.shutdown_grace_seconds)  # the lines running finish first
        for task in (batch_runs, poller, resets, audit_sweeps):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await line_calls.aclose()
        await limits.aclose()
        await response_cache.aclose()
        await throttle.close()
        await recorder.close()
        await vendors.aclose()
        if own_supervisor is not None:
            await asyncio.to_thread(own_supervisor.stop)
        await engine.dispose()
        tracing.shutdown()


# The response headers a browser page may read: the request id, the limits' state,
# modelport's own notes (overhead, dropped hints, cost) and when to retry.
CORS_EXPOSED_HEADERS = [
    "x-request-id",
    "retry-after",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-modelport-overhead-ms",
    "x-modelport-dropped",
    "x-modelport-cost",
    "x-modelport-cache",
]


def _limit_gate(settings: Settings, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> LimitGate:
    async def spend_since(scope: Scope, owner_id: str, since: float) -> float:
        async with sessions() as session:
            moment = datetime.fromtimestamp(since, UTC)
            return await usage.spend_since(session, scope=scope, owner_id=owner_id, since=moment)

    limiter = build_limiter(
        redis_url=settings.redis_url,
        fail_closed=settings.limits_fail_closed,
        timeout=settings.limits_redis_timeout_seconds,
        retry_seconds=settings.limits_redis_retry_seconds,
        parallel_lease_seconds=settings.limits_parallel_lease_seconds,
        spend_source=spend_since,
        clock=clock,
    )
    return LimitGate(
        limiter,
        on_rejection=lambda refused: metrics.limit_rejected(getattr(refused, "limit", "limits_unavailable")),
    )


def _complete_openapi(document: dict[str, Any]) -> None:
    """What FastAPI cannot see for itself: the bodies of the inference routes (parsed by
    hand, see `api.deps.parse_body`), the headers `api.deps.current_principal` reads by
    hand, and the error bodies modelport really sends."""
    components: dict[str, Any] = document.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    components.setdefault("securitySchemes", {})["HTTPBearer"] = {"type": "http", "scheme": "bearer"}
    models: list[type[BaseModel]] = [
        *inference.BODY_MODELS,
        *responses_route.BODY_MODELS,
        ValidationErrorResponse,
        ErrorResponse,
    ]
    for model in models:
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, schema in {**found.pop("$defs", {}), model.__name__: found}.items():
            schemas.setdefault(name, schema)
    openapi_bodies.add_schemas(schemas)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "422" in responses:
                responses["422"] = _error_response("Validation Error", ValidationErrorResponse)
            if "requestBody" in operation:
                responses.setdefault("415", _error_response("Unsupported Media Type (not JSON)", ErrorResponse))
            if operation.get("security"):  # it authenticates: with either header, in an account
                operation["security"] = [{"APIKeyHeader": []}, {"HTTPBearer": []}]
                operation.setdefault("parameters", []).append(_SELECTED_ACCOUNT_PARAMETER)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


_SELECTED_ACCOUNT_PARAMETER = {
    "name": SELECTED_ACCOUNT_HEADER,
    "in": "header",
    "required": False,
    "description": "The account to act in; without it, the API key's default account.",
    "schema": {"type": "string"},
}


def _error_response(description: str, model: type[BaseModel]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
    }


def create_app(
    settings: Settings | None = None,
    *,
    upstream_transport: Transport | httpx.AsyncBaseTransport | None = None,
    limits_clock: Clock = wall_clock,
) -> FastAPI:
    settings = settings or Settings()
    # Here rather than in `serve`: each `--workers` process builds its own app.
    logs.configure(settings.log_level, settings.log_format, settings.log_max_line_bytes)
    tracing.configure_from_environment()
    app = FastAPI(
        title="modelport",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served by api/routes/web.py from packaged assets, not a CDN
        redoc_url=None,  # likewise
        # FastAPI's own OpenTelemetry spans and metrics, which it adds when a global
        # provider is set: modelport's observer and tracing already measure each request
        # (observability/), and checking the providers cost each request about 5 µs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.upstream_transport = upstream_transport
    app.state.limits_clock = limits_clock  # tests move time forward (budget windows)

    def error_answer(request: Request, status: int, body: dict[str, Any], headers: Any = None) -> JSONResponse:
        # The OpenAI and Anthropic surfaces answer in their vendor's error shape.
        status, body = error_shapes.reshape(request.url.path, status, body)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ModelportError)
    async def _modelport_error(request: Request, exc: ModelportError) -> JSONResponse:
        return error_answer(request, exc.status_code, exc.body(), exc.headers())

    @app.exception_handler(StarletteHTTPException)
    async def _no_route(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # A path or method modelport does not serve: in the surface's own shape too, so an
        # OpenAI or Anthropic client reads the reason where it looks for one.
        detail = f"no such route: {request.method} {request.url.path}" if exc.status_code == 404 else exc.detail
        return error_answer(request, exc.status_code, {"detail": detail}, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_answer(request, 422, validation_detail(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _body_invalid(request: Request, exc: ValidationError) -> JSONResponse:
        errors = [dict(error) for error in exc.errors(include_url=False, include_input=False)]
        for error in errors:
            error["loc"] = ("body", *error.get("loc", ()))  # type: ignore[misc]
        return error_answer(request, 422, validation_detail(errors))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        # Starlette raises the error on after this answer, and uvicorn then closes the
        # connection: `connection: close` tells a keep-alive client not to send its next
        # request on it (which would be reset).
        return error_answer(request, 500, {"detail": "internal server error"}, {"connection": "close"})

    app.include_router(health.router)
    app.include_router(inference.router)
    app.include_router(sgp_legacy.router)
    app.include_router(execute.router)
    app.include_router(retrieval.router)
    app.include_router(models.router)
    app.include_router(deployments.router)
    app.include_router(accounts.router)
    app.include_router(secrets.router)
    app.include_router(openai_compat.router)
    app.include_router(anthropic_compat.router)
    app.include_router(responses_route.router)
    app.include_router(catalogue.router)
    app.include_router(spend.router)
    app.include_router(audit_route.router)
    app.include_router(batches_route.router)
    app.include_router(message_batches_route.router)
    app.include_router(sgp_files_route.router)
    if settings.metrics:
        app.include_router(metrics_route.router)
    web.install(app)
    file_upload = Upload(settings.files_max_bytes, "MODELPORT_FILES_MAX_BYTES")
    uploads = {batches_route.FILES_PATH: file_upload, sgp_files_route.SGP_FILES_PATH: file_upload}
    # The inference routes, served past the guard's checks without FastAPI's routing and
    # dependency resolution (api/hot_path.py).
    hot_routers = (
        inference.router,
        retrieval.router,
        sgp_legacy.router,
        openai_compat.router,
        anthropic_compat.router,
        responses_route.router,
    )
    hot_routes = [
        route
        for router in hot_routers
        for route in router.routes
        if isinstance(route, APIRoute) and route.methods == {"POST"}
    ]
    # Keys travel in headers, never cookies: no credentials mode.
    cors = {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["*"],
        "allow_headers": ["*"],
        "expose_headers": CORS_EXPOSED_HEADERS,
        "max_age": 600,
    }
    # One middleware (api/front.py): the observer (its clock starts before any of
    # modelport's work), CORS (a browser's preflight answered before any check), the
    # guard and the hot path, as steps of one function rather than a layer each.
    app.add_middleware(
        Front,
        routes=hot_routes,
        exception_handlers=app.exception_handlers,
        max_bytes=settings.max_body_bytes,
        uploads=uploads,
        access_log=settings.access_log,
        cors=cors if settings.cors_origins else None,
    )
    if settings.trusted_proxies:
        # Around everything: the client's address is known before anything reads it (the
        # auth throttle). uvicorn's own proxy handling is off (`modelport serve`), so this
        # setting is the only one that decides whom X-Forwarded-For is taken from.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        document = app.openapi_schema
        if document is None:
            document = build_openapi()  # FastAPI keeps it in app.openapi_schema
            _complete_openapi(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return app
