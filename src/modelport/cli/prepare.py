"""`python -m modelport.cli.prepare`: migrate the database and, when it is empty, do the
first-start setup (the default account, the admin key from MODELPORT_API_KEY, the
embedded model), then exit. `--wait` instead waits until someone else has done so.

Deployments with several gateways run the first once per release (a Kubernetes Job, a
compose service) and start the gateways with MODELPORT_MIGRATE_ON_START=false and
MODELPORT_BOOTSTRAP=false, each after `--wait` (an init container): replicas never race
each other to migrate or to create the first account, and no gateway of a new release
serves before its schema is in place, whatever order the objects were applied in."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from sqlalchemy.exc import SQLAlchemyError

from modelport.api.app import prepare_database
from modelport.config import Settings
from modelport.store import db


def head_revision() -> str | None:
    """The newest migration this installation ships."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


async def prepare(settings: Settings) -> str | None:
    """Migrate to the newest revision and set up an empty database; the revision reached."""
    async with db.opened(settings) as (engine, sessions):
        await prepare_database(settings, engine, sessions)
        return await db.current_revision(engine)


async def wait_until_prepared(settings: Settings, *, patience: float, interval: float = 2.0) -> bool:
    """True once the database is at this installation's newest revision; False after
    `patience` seconds. A database that cannot be reached yet counts as not ready."""
    wanted = head_revision()
    deadline = time.monotonic() + patience
    async with db.opened(settings) as (engine, _):
        while True:
            try:
                found = await db.current_revision(engine)
            except (OSError, SQLAlchemyError) as exc:  # not up yet, or not created yet
                found = f"unreachable ({type(exc).__name__}: {exc})"
            if found == wanted:
                return True
            if time.monotonic() > deadline:
                print(f"modelport: the database is at {found}, not {wanted}", file=sys.stderr, flush=True)
                return False
            print(f"modelport: waiting for the database to reach revision {wanted} (now {found})", flush=True)
            await asyncio.sleep(interval)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelport.cli.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--wait", action="store_true", help="only wait until the database has been prepared")
    parser.add_argument(
        "--timeout", type=float, default=600.0, metavar="SECONDS", help="how long --wait waits at most (600)"
    )
    arguments = parser.parse_args(argv)
    if arguments.wait:
        sys.exit(0 if asyncio.run(wait_until_prepared(Settings(), patience=arguments.timeout)) else 1)
    # Whatever the gateways' environment says: this step exists to do both.
    settings = Settings(migrate_on_start=True, bootstrap=True)
    print(f"modelport: database prepared, at revision {asyncio.run(prepare(settings))}", flush=True)


if __name__ == "__main__":
    main()
