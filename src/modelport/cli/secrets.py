"""`modelport secrets rotate`: every stored account secret sealed again with the newest
key of MODELPORT_SECRET_KEY, so that the older keys can be dropped (the steps are in the
README, "Rotating the secret key")."""

from __future__ import annotations

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.cli.common import command_group, fail, settings_or_exit, with_database

secrets_app = command_group("Account secrets (vendor keys, stored encrypted).")


@secrets_app.command("rotate")
def rotate() -> None:
    """Seal every stored secret again with the newest key in MODELPORT_SECRET_KEY
    (comma-separated, newest first); all or nothing."""
    from modelport.catalogue.secrets import SecretBox, rotate_secrets
    from modelport.config import secret_keys
    from modelport.errors import DeploymentUnavailable

    setting = settings_or_exit().secret_key
    if not setting:
        fail("MODELPORT_SECRET_KEY is not set: give the new key first, then the old ones, comma-separated")
    box = SecretBox(setting)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> int:
        return await rotate_secrets(sessions, box)

    try:
        count = with_database(work)
    except DeploymentUnavailable as exc:
        fail(f"{exc}; nothing was changed")
    older = len(secret_keys(setting)) - 1
    typer.echo(f"sealed {count} secret(s) again with the newest key; the {older} older key(s) can now be dropped")


def register(app: typer.Typer) -> None:
    """Add these commands to the `modelport` command."""
    app.add_typer(secrets_app, name="secrets")


__all__ = ["register"]
