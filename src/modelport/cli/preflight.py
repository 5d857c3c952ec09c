"""What `modelport serve` checks before it starts: the port, the database and Redis.

A server that cannot start should say so in one line naming what failed and what to
do, with a non-zero exit, rather than in a traceback from inside a worker's start-up
(hundreds of lines for a database that does not exist). URLs are shown without their
passwords.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from modelport.config import Settings


def shown_url(url: str) -> str:
    """`url` with its password, if any, replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def database_problem(settings: Settings, exc: BaseException) -> str:
    """One line for a database that cannot be opened."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"cannot open the database at {shown_url(settings.database_url)}: {reason} "
        "(check MODELPORT_DATABASE_URL, and that the database server runs and the database exists)"
    )


def start_problem(settings: Settings) -> str | None:
    """Why the server could not start or serve, in one line; None when nothing is wrong."""
    return _port_problem(settings.host, settings.port) or asyncio.run(_check_services(settings))


def _port_problem(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by the last run is free to use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use by another program (stop it, or start with --port N)"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc} (check MODELPORT_HOST and MODELPORT_PORT)"
    return None


async def _check_services(settings: Settings) -> str | None:
    from modelport.store import db

    try:
        async with db.opened(settings) as (engine, _), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        return database_problem(settings, exc)
    if settings.redis_url:
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        client = Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            return (
                f"cannot reach Redis at {shown_url(settings.redis_url)}: {exc} "
                "(check MODELPORT_REDIS_URL and that Redis runs, or unset it to count limits in this process alone)"
            )
        finally:
            await client.aclose()
    return None
