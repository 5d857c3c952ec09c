"""The async database engine, sessions, and schema migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, UOWTransaction

# Its after_flush listener writes the audit log for every session this module makes.
import modelport.store.audit  # noqa: F401
from modelport.store.tables import (
    Account,
    AccountSecret,
    ApiKey,
    CatalogueGeneration,
    Deployment,
    Identity,
    Membership,
    Model,
)

if TYPE_CHECKING:
    from alembic.config import Config

    from modelport.config import Settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers proceed while a write is in progress (several workers,
            # usage batches); foreign keys are off in SQLite unless asked for.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def make_sessions(
    engine: AsyncEngine, *, on_catalogue_change: Callable[[], None] | None = None
) -> async_sessionmaker[Any]:
    """Sessions for `engine`. `on_catalogue_change` is called after every commit that
    changed what `modelport.store.cache` holds (this process's cache drops its entries)."""
    info = {_LISTENERS: [on_catalogue_change] if on_catalogue_change else []}
    return async_sessionmaker(engine, expire_on_commit=False, info=info)


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[tuple[AsyncEngine, async_sessionmaker[Any]]]:
    """The configured database's engine and sessions, for a command that opens it by
    hand (the CLI, `modelport.cli.prepare`); the engine is disposed on leaving. An
    SQLite file's directory is made first: on a first run it does not exist yet."""
    if settings.sqlite_path is not None:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    try:
        yield engine, make_sessions(engine)
    finally:
        await engine.dispose()


# --- catalogue change tracking -----------------------------------------------------
# Written by hand in one place rather than at every write site, so no write can forget
# it: any flush that touches these tables bumps the shared generation counter in the
# same transaction, and a commit tells this process's listeners.

# Accounts: their limits are read with every request (the cached AccountAccess).
_CATALOGUE_TABLES = (Account, ApiKey, Identity, Membership, Model, Deployment, AccountSecret)
_CHANGED = "modelport_catalogue_changed"
_LISTENERS = "modelport_catalogue_listeners"


@event.listens_for(Session, "after_flush")
def _bump_generation(session: Session, _flush: UOWTransaction) -> None:
    # In after_flush, new/dirty/deleted still list what this flush wrote.
    touched = (*session.new, *session.dirty, *session.deleted)
    if session.info.get(_CHANGED) or not any(isinstance(row, _CATALOGUE_TABLES) for row in touched):
        return
    session.info[_CHANGED] = True
    session.connection().execute(
        update(CatalogueGeneration).where(CatalogueGeneration.id == 1).values(value=CatalogueGeneration.value + 1)
    )


@event.listens_for(Session, "after_commit")
def _notify_listeners(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        for listener in session.info.get(_LISTENERS, ()):
            listener()


@event.listens_for(Session, "after_rollback")
def _forget_change(session: Session) -> None:
    session.info.pop(_CHANGED, None)


_READ_GENERATION = select(CatalogueGeneration.value).where(CatalogueGeneration.id == 1)


async def read_generation(engine: AsyncEngine) -> int:
    # A bare connection rather than an ORM session: this runs twice a second forever.
    async with engine.connect() as connection:
        value = await connection.scalar(_READ_GENERATION)
    return int(value or 0)


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration's revision. Migrations are linear and each file is named
    after its revision (`0007_limits_and_spend.py` is revision "0007"), so this needs
    no Alembic; a test checks it against Alembic's own graph."""
    newest = max(path.name for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    return newest[:4]


async def schema_is_current(engine: AsyncEngine) -> bool:
    """Whether the database is already at the newest revision. Asked at every start
    before migrating: loading Alembic and its scripts to find nothing to do took a
    quarter of the start-up time and 10 MB of resident memory (benchmarks/README.md)."""
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    except DBAPIError:  # no such table yet: a new database
        return False
    return bool(found == head_revision())


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (Alembic), in the engine's own database."""

    # Alembic (and Mako, Pygments) are imported only when migrating: about 10 MB of
    # resident memory that a worker serving requests does not need.
    from alembic import command

    def _run(connection: Connection) -> None:
        command.upgrade(_alembic_config(connection), revision)

    async with engine.begin() as connection:
        await connection.run_sync(_run)


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def _read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(_read)
