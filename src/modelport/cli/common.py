"""What every `modelport` command shares: the settings, the database, and failing with
a one-line message rather than a traceback.

The command modules (`cli/main.py`, `cli/console.py`) import this, never each other's
helpers: main imports console to register its commands, and nothing imports main.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.config import Settings

T = TypeVar("T")


def command_group(help: str) -> typer.Typer:
    """A `modelport` command or group of commands. Its --help is Click's plain text, not
    Typer's Rich panels: those label a flag `<bool>` (even --help), and cut their table
    at the terminal's width; plain help names each option with its label (`--account
    NAME|ID`), leaves flags bare, and wraps the help text between words."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


def argument(metavar: str) -> Any:
    """A positional argument shown as `metavar` in the usage line. Typer would list it
    again under "Arguments:" with its Python type (`DEPLOYMENT_ID <str>`): the command's
    own help says what it is instead, by that name."""
    return typer.Argument(metavar=metavar, hidden=True)


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def settings_or_exit() -> Settings:
    """The settings, or a one-line error naming the bad setting (not a traceback)."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "MODELPORT_" + "_".join(str(part) for part in first["loc"]).upper()
        fail(f"{name}: {first['msg'].removeprefix('Value error, ')}")


def with_database(work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    """Run `work` against the configured database, schema upgraded first: the CLI's
    one way to open it."""
    from modelport.store import audit, db

    settings = settings_or_exit()

    from sqlalchemy.exc import SQLAlchemyError

    from modelport.cli.preflight import database_problem

    async def run() -> T:
        # What a command changes is audited as done at the server's terminal, by its user.
        audit.acting.set(audit.Actor(kind="cli", name=getpass.getuser()))
        async with db.opened(settings) as (engine, sessions):
            try:
                await db.upgrade(engine)
            except (SQLAlchemyError, OSError) as exc:
                fail(database_problem(settings, exc))
            return await work(sessions)

    return asyncio.run(run())
