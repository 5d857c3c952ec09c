"""The `modelport` command. Thin: it parses options and calls into the package."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.cli import account_limits, console, key_allow, limit_options, listing, secrets
from modelport.cli.common import argument, command_group, fail, settings_or_exit, with_database
from modelport.config import Settings
from modelport.errors import ValidationFailed
from modelport.schemas.catalogue import MAX_ROTATION_GRACE_SECONDS

app = command_group("modelport: a self-hosted gateway for LLM model deployments.")
db_app = command_group("Database schema.")
app.add_typer(db_app, name="db")
accounts_app = command_group("Accounts.")
app.add_typer(accounts_app, name="accounts")
keys_app = command_group("API keys (shown once at creation; stored as hashes).")
app.add_typer(keys_app, name="keys")
console.register(app, accounts_app)  # accounts list, models, deployments, usage, chat
secrets.register(app)  # secrets rotate
account_limits.register(accounts_app)  # accounts limits

# How long a `--workers` process may take to answer its parent's health check (below).
WORKER_HEALTHCHECK_SECONDS = 60


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"modelport {version('modelport')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """modelport: a self-hosted gateway for LLM model deployments."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(metavar="ADDRESS", help="Address to listen on [MODELPORT_HOST].")] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="Port to listen on [MODELPORT_PORT].")] = None,
    database_url: Annotated[
        str | None, typer.Option(metavar="URL", help="Database URL [MODELPORT_DATABASE_URL].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, metavar="COUNT", help="Worker processes [MODELPORT_WORKERS].")
    ] = None,
) -> None:
    """Start the HTTP server (and, on first start, set up the default model)."""
    import uvicorn

    from modelport.api.connections import BODY_TIMEOUT_ENV, HEADER_TIMEOUT_ENV, RequestDeadlineProtocol
    from modelport.observability import logs
    from modelport.observability.multiprocess import multiprocess_dir
    from modelport.observability.shutdown import UVICORN_MARGIN_SECONDS

    # Options become environment settings, so the app factory sees one source of truth.
    for name, value in (("HOST", host), ("PORT", port), ("DATABASE_URL", database_url), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"MODELPORT_{name}"] = str(value)
    settings = settings_or_exit()
    from modelport.cli.preflight import start_problem

    problem = start_problem(settings)  # a port in use, a database or Redis out of reach
    if problem:
        fail(problem)
    # For the protocol uvicorn builds in each worker (api/connections.py).
    os.environ[HEADER_TIMEOUT_ENV] = str(settings.header_timeout_seconds)
    os.environ[BODY_TIMEOUT_ENV] = str(settings.body_timeout_seconds)
    logs.configure(settings.log_level, settings.log_format, settings.log_max_line_bytes)
    supervisor = None
    metrics_files = contextlib.ExitStack()
    if settings.workers > 1:
        # Before anything imports prometheus_client: the workers share one metrics directory.
        metrics_files.enter_context(multiprocess_dir())
        # Migrate and set up once, here, rather than in every worker at the same time.
        _prepare_database(settings)
        os.environ["MODELPORT_MIGRATE_ON_START"] = "false"
        os.environ["MODELPORT_BOOTSTRAP"] = "false"
        if settings.embedded_engine:
            # One engine per GGUF file for all workers: the supervisor lives here.
            from modelport.api.app import start_engine_supervisor

            supervisor = start_engine_supervisor(settings)
            os.environ["MODELPORT_ENGINE_SUPERVISOR"] = str(supervisor.control_path)
    try:
        uvicorn.run(
            "modelport.api.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            log_config=logs.uvicorn_log_config(settings.log_format, settings.log_max_line_bytes),
            # modelport writes its own access line per request (observability/logs.py).
            access_log=False,
            # Past modelport's own grace period, which ends what still runs cleanly.
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds + UVICORN_MARGIN_SECONDS),
            # Idle and half-open connections are closed, and connections are capped:
            # slow clients cannot hold the server.
            timeout_keep_alive=int(settings.keep_alive_seconds),
            # X-Forwarded-For is read by the app, from MODELPORT_TRUSTED_PROXIES only
            # (uvicorn's default would trust it from 127.0.0.1).
            proxy_headers=False,
            limit_concurrency=settings.max_connections,
            # A worker answers its parent's health check from a thread of its own, which
            # cannot run while the worker starts (Python's start-up, then loading native
            # libraries such as llama.cpp's, which hold the GIL): on a busy machine that
            # took longer than uvicorn's 5 s, and the parent killed every worker, start
            # after start, so that `--workers 2` never became ready.
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            http=RequestDeadlineProtocol,
            # One worker accepts every waiting connection at once; workers sharing a
            # socket accept one per turn, which spreads connections (see api/accept.py).
            loop="modelport.api.accept:new_event_loop" if settings.workers == 1 else "auto",
        )
    finally:
        if supervisor is not None:
            supervisor.stop()
        metrics_files.close()


def _prepare_database(settings: Settings) -> None:
    from modelport.api.app import prepare_database
    from modelport.store import db

    async def run() -> None:
        async with db.opened(settings) as (engine, sessions):
            await prepare_database(settings, engine, sessions)

    asyncio.run(run())


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, argument("REVISION")] = "head") -> None:
    """Apply schema migrations up to REVISION (an Alembic revision id; default: head)."""
    from modelport.store import db

    settings = Settings()

    async def run() -> str | None:
        async with db.opened(settings) as (engine, _):
            await db.upgrade(engine, revision)
            return await db.current_revision(engine)

    typer.echo(f"database at revision {asyncio.run(run())}")


@accounts_app.command("create")
def accounts_create(name: Annotated[str, argument("NAME")]) -> None:
    """Create an account named NAME; prints its id. Give it an admin with `keys create
    --role admin`."""
    from modelport.errors import Conflict
    from modelport.store import accounts

    async def work(sessions: async_sessionmaker[AsyncSession]) -> str:
        async with sessions() as session, session.begin():
            return (await accounts.create_account(session, name=name)).id

    try:
        typer.echo(with_database(work))
    except Conflict as exc:
        fail(str(exc))


ExpiresOption = Annotated[
    str | None,
    typer.Option(
        "--expires-at",
        metavar="TIME",
        help="When the key stops working: ISO 8601 with a timezone, e.g. 2027-01-31T00:00:00Z.",
    ),
]


def _key_options() -> tuple[str, ...]:
    """The fields a key's limit options set (--rpm-limit ... --budget-duration, --cache-ttl-seconds)."""
    return (*limit_options.limit_fields(), "cache_ttl_seconds")


def _key_limits(
    rpm: int | None,
    tpm: int | None,
    parallel: int | None,
    budget: float | None,
    duration: str | None,
    cache_ttl: int | None = None,
) -> dict[str, Any]:
    """The limit options given, checked as the API checks them."""
    from modelport.schemas.catalogue import KeyLimitFields

    given = zip(_key_options(), (rpm, tpm, parallel, budget, duration, cache_ttl), strict=True)
    return limit_options.checked(KeyLimitFields, dict(given))


def _key_expiry(expires_at: str | None) -> dict[str, Any]:
    """`--expires-at`, checked as the API checks `expires_at` (a future time with a
    timezone); {} when not given."""
    from pydantic import ValidationError

    from modelport.schemas.catalogue import KeyExpiryField

    if expires_at is None:
        return {}
    try:
        return {"expires_at": KeyExpiryField.model_validate({"expires_at": expires_at}).expires_at}
    except ValidationError as exc:
        fail(f"--expires-at: {exc.errors()[0]['msg']}")


@keys_app.command("create")
def keys_create(
    account: Annotated[
        str, typer.Option(metavar="NAME|ID", help="Account (name, id or unique id prefix) the key acts in.")
    ],
    role: Annotated[str, typer.Option(metavar="admin|member", help="The key's role in the account.")] = "member",
    name: Annotated[str, typer.Option(metavar="LABEL", help="A label to tell keys apart.")] = "",
    rpm_limit: limit_options.RpmOption = None,
    tpm_limit: limit_options.TpmOption = None,
    max_parallel_requests: limit_options.ParallelOption = None,
    max_budget: limit_options.BudgetOption = None,
    budget_duration: limit_options.DurationOption = None,
    cache_ttl_seconds: limit_options.CacheTtlOption = None,
    expires_at: ExpiresOption = None,
    model: key_allow.ModelsOption = None,
    deployment: key_allow.DeploymentsOption = None,
) -> None:
    """Create a key (a new service account with ROLE in ACCOUNT). The key is printed once."""
    from modelport.catalogue.access import create_key
    from modelport.errors import NotFound
    from modelport.principal import Role

    if role not in tuple(Role):
        fail("--role must be admin or member")
    account = console.resolve_account(account)
    limits = _key_limits(rpm_limit, tpm_limit, max_parallel_requests, max_budget, budget_duration, cache_ttl_seconds)
    expiry = _key_expiry(expires_at)
    allow = key_allow.allow_lists(model, deployment)
    try:
        created = with_database(
            lambda sessions: create_key(
                sessions, account_id=account, role=Role(role), name=name, limits=limits, **expiry, **allow
            )
        )
    except NotFound as exc:
        fail(exc.detail)
    except ValidationFailed as exc:
        fail(key_allow.refusal(exc))
    typer.echo(f"key id {created.id} ({created.role} in account {account})", err=True)
    typer.echo(created.key)


@keys_app.command("list")
def keys_list(
    account: Annotated[str, typer.Option(metavar="NAME|ID", help="The account's name, id or unique id prefix.")],
    as_json: listing.JsonOption = False,
) -> None:
    """List the keys of an account's members (never the keys themselves)."""
    from modelport.principal import Role
    from modelport.store import accounts

    account = console.resolve_account(account)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[Any, Role]]:
        async with sessions() as session:
            return await accounts.list_keys(session, account_id=account, identity_id="", everyone=True)

    keys = listing.Listing("keys", ("id", "name", "prefix", "role", "created", "expires", "revoked"))
    for key, key_role in with_database(work):
        revoked = f"{key.revoked_at:%Y-%m-%d}" if key.revoked_at else ""
        # To the minute, in UTC: a key may be set to expire within the day.
        expires = f"{key.expires_at:%Y-%m-%d %H:%M}Z" if key.expires_at else ""
        keys.add(key.id, key.name, key.display_prefix + "…", key_role, f"{key.created_at:%Y-%m-%d}", expires, revoked)
    keys.show(as_json)


@keys_app.command("update")
def keys_update(
    key_id: Annotated[str, argument("KEY")],
    rpm_limit: limit_options.RpmOption = None,
    tpm_limit: limit_options.TpmOption = None,
    max_parallel_requests: limit_options.ParallelOption = None,
    max_budget: limit_options.BudgetOption = None,
    budget_duration: limit_options.DurationOption = None,
    cache_ttl_seconds: limit_options.CacheTtlOption = None,
    expires_at: ExpiresOption = None,
    model: key_allow.ModelsOption = None,
    deployment: key_allow.DeploymentsOption = None,
    clear: Annotated[
        list[str] | None,
        typer.Option(
            "--clear",
            metavar="FIELD",
            help="Remove a limit, the expiry or an allow-list, e.g. --clear rpm_limit, --clear expires_at, "
            "--clear models (repeatable).",
        ),
    ] = None,
) -> None:
    """Change the limits, expiry or allow-lists of KEY (the key's name, id or unique id
    prefix); the options left out stay as they are."""
    from modelport.catalogue.access import apply_key_changes, check_allow_lists
    from modelport.store.tables import ApiKey, Identity

    key_id = console.resolve_key(key_id)
    changes = _key_limits(rpm_limit, tpm_limit, max_parallel_requests, max_budget, budget_duration, cache_ttl_seconds)
    changes.update(_key_expiry(expires_at))
    changes.update(key_allow.allow_lists(model, deployment))
    clearable = (*_key_options(), "expires_at", "models", "deployments")
    for name in clear or []:
        field = name.replace("-", "_")
        if field not in clearable:
            fail(f"--clear {name}: not a limit, the expiry or an allow-list; one of {', '.join(clearable)}")
        changes[field] = None
    shown = dict(changes)  # apply_key_changes renames the allow-lists to their columns

    async def work(sessions: async_sessionmaker[AsyncSession]) -> bool:
        async with sessions() as session, session.begin():
            key = await session.get(ApiKey, key_id)
            if key is None:
                return False
            owner = await session.get(Identity, key.identity_id)
            if owner is not None:  # the lists name models of the account the key acts in
                await check_allow_lists(
                    session,
                    account_id=owner.default_account_id,
                    models=changes.get("models"),
                    deployments=changes.get("deployments"),
                )
            apply_key_changes(key, changes)
            return True

    try:
        found = with_database(work)
    except ValidationFailed as exc:
        fail(key_allow.refusal(exc))
    if not found:
        fail(f"no key with id {key_id}")
    typer.echo(f"updated {key_id}: " + (", ".join(f"{name}={value}" for name, value in shown.items()) or "no change"))


@app.command("spend")
def spend(
    account: Annotated[str, typer.Option(metavar="NAME|ID", help="The account's name, id or unique id prefix.")],
) -> None:
    """An account's spend (US dollars): in all, per key and per deployment."""
    from modelport.catalogue.spend import account_spend

    account_id = console.resolve_account(account)  # an unknown one is an error, not $0
    report = with_database(lambda sessions: account_spend(sessions, account_id))
    typer.echo(f"account {account_id}: ${report.spend:.6f}")
    for label, groups in (("key", report.by_key), ("deployment", report.by_deployment)):
        for group, total in sorted(groups.items(), key=lambda item: -item[1]):
            typer.echo(f"  {label} {group or '(none)'}: ${total:.6f}")
    budgets = [("account", account_id, report.budget)] if report.budget is not None else []
    budgets += [("key", key_id, budget) for key_id, budget in report.key_budgets.items()]
    for label, owner, budget in budgets:
        typer.echo(
            f"  budget of {label} {owner}: ${budget.spent:.6f} of ${budget.max_budget:.6f}, "
            + account_limits.window_text(budget)
        )


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, argument("KEY")]) -> None:
    """Revoke KEY (the key's name, id or unique id prefix): it answers 401 from the next
    request on."""
    from modelport.store.tables import ApiKey, utcnow

    key_id = console.resolve_key(key_id)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> bool:
        async with sessions() as session, session.begin():
            key = await session.get(ApiKey, key_id)
            if key is None:
                return False
            key.revoked_at = key.revoked_at or utcnow()
            return True

    if not with_database(work):
        fail(f"no key with id {key_id}")
    typer.echo(f"revoked {key_id}")


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, argument("KEY")],
    grace: Annotated[
        int,
        typer.Option(
            "--grace",
            min=0,
            max=MAX_ROTATION_GRACE_SECONDS,
            metavar="SECONDS",
            help="How long the old secret keeps working (at most 30 days; default 0: it stops at once).",
        ),
    ] = 0,
) -> None:
    """Give KEY (the key's name, id or unique id prefix) a new secret, printed once; its
    id, limits and spend stay. Running servers stop taking the old secret within a
    second of the end of the grace."""
    from modelport.catalogue.access import rotate_secret
    from modelport.errors import Conflict
    from modelport.store.tables import ApiKey

    key_id = console.resolve_key(key_id)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> str | None:
        async with sessions() as session, session.begin():
            key = await session.get(ApiKey, key_id)
            return None if key is None else rotate_secret(key, grace_seconds=grace)

    try:
        secret = with_database(work)
    except Conflict as exc:
        fail(exc.detail)
    if secret is None:
        fail(f"no key with id {key_id}")
    until = f"for {grace} s more" if grace else "no more"
    typer.echo(f"rotated {key_id}: the old secret works {until}", err=True)
    typer.echo(secret)


@console.deployments_app.command("reset")
def deployments_reset(
    deployment_id: Annotated[str, argument("DEPLOYMENT_ID")],
) -> None:
    """Load the FAILED deployment DEPLOYMENT_ID (its id, from `deployments list`) again:
    it is PENDING until a running server has loaded it (within a second or so; an engine
    waiting out its crash-loop backoff starts at once), or until the next start."""
    from modelport.inference.loader import reset_deployment

    deployment = with_database(lambda sessions: reset_deployment(sessions, deployment_id))
    if deployment is None:
        fail(f"no deployment with id {deployment_id}")
    typer.echo(f"reset {deployment_id}: {deployment.status}")


if __name__ == "__main__":
    app()
