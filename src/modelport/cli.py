"""The `modelport` command. Thin: it parses options and calls into the package."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated

import typer

from modelport.config import Settings

app = typer.Typer(help="modelport: a self-hosted gateway for LLM model deployments.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [MODELPORT_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [MODELPORT_PORT].")] = None,
    database_url: Annotated[str | None, typer.Option(help="[MODELPORT_DATABASE_URL]")] = None,
) -> None:
    """Start the HTTP server (and, on first start, set up the default model)."""
    import uvicorn

    # Options become environment settings, so the app factory sees one source of truth.
    for name, value in (("HOST", host), ("PORT", port), ("DATABASE_URL", database_url)):
        if value is not None:
            os.environ[f"MODELPORT_{name}"] = str(value)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        "modelport.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply schema migrations up to REVISION."""
    from modelport.store import db

    settings = Settings()
    if settings.sqlite_path is not None:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)

    async def run() -> str | None:
        engine = db.make_engine(settings.database_url)
        try:
            await db.upgrade(engine, revision)
            return await db.current_revision(engine)
        finally:
            await engine.dispose()

    typer.echo(f"database at revision {asyncio.run(run())}")


if __name__ == "__main__":
    app()
