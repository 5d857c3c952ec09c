"""Database URLs as people write them, mapped to the async drivers modelport uses.

`postgresql://…` (and Heroku's `postgres://…`) is what every PostgreSQL tool prints;
SQLAlchemy reads it as "the psycopg2 driver", which is not installed. Both become
`postgresql+asyncpg://…`, and `sqlite:///…` becomes `sqlite+aiosqlite:///…`.
"""

from __future__ import annotations

_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def normalise_database_url(url: str) -> str:
    """The URL with its scheme replaced by the async driver's; ValueError, naming the
    schemes that work, for any other scheme (a sync driver such as psycopg2 included)."""
    scheme, separator, rest = url.strip().partition("://")
    driver = _DRIVERS.get(scheme.lower()) if separator else None
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {scheme.split('@')[0][:40]!r}: use postgresql://… "
            "(or postgresql+asyncpg://…) or sqlite:///path/to/file.db"
        )
    return f"{driver}://{rest}"
