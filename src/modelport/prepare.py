"""`python -m modelport.prepare`: migrate the database and, when it is empty, do the
first-start setup (the default account, the admin key from MODELPORT_API_KEY, the
embedded model), then exit.

Deployments with several gateways run this once per release (a Kubernetes Job, a
compose service) and start the gateways with MODELPORT_MIGRATE_ON_START=false and
MODELPORT_BOOTSTRAP=false, so that replicas never race each other to migrate or to
create the first account, and a new release's schema is in place before any of its
gateways serves."""

from __future__ import annotations

import asyncio

from modelport.api.app import prepare_database
from modelport.config import Settings
from modelport.store import db


async def prepare(settings: Settings) -> str | None:
    """Migrate to the newest revision and set up an empty database; the revision reached."""
    if settings.sqlite_path is not None:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(settings.database_url)
    try:
        await prepare_database(settings, engine, db.make_sessions(engine))
        return await db.current_revision(engine)
    finally:
        await engine.dispose()


def main() -> None:
    # Whatever the gateways' environment says: this job exists to do both.
    settings = Settings(migrate_on_start=True, bootstrap=True)
    print(f"modelport: database prepared, at revision {asyncio.run(prepare(settings))}", flush=True)


if __name__ == "__main__":
    main()
