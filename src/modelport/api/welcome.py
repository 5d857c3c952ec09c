"""What `modelport serve` tells a person at start: on the first start, the key (when it
was generated), the default deployment's id and a request to paste; on a later start,
that MODELPORT_API_KEY no longer opens anything; and while a GGUF file loads, that it
is loading (it can take a while on a slow disk or a large model)."""

from __future__ import annotations

import contextlib
import logging
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.bootstrap import FirstStart
from modelport.catalogue.keys import hash_key
from modelport.config import Settings
from modelport.store import accounts

log = logging.getLogger("modelport")


def base_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def chat_command(settings: Settings) -> str:
    """`modelport chat`, told where this server listens unless that is where it looks."""
    url = base_url(settings)
    return "modelport chat" if url == "http://127.0.0.1:8080" else f"modelport chat --base-url {url}"


def first_start_message(first: FirstStart, settings: Settings) -> str:
    """Shown once, on the first start: the key (if generated; never stored in clear)
    and a request to paste, against the default deployment."""
    url = f"{base_url(settings)}/v4/models/{first.deployment_id}/chat-completions"
    body = '{"chat_history": [], "prompt": "Say hello in French", "max_tokens": 30}'
    # A key given in MODELPORT_API_KEY is never printed: the shell fills it in, so it is
    # quoted with double quotes (single ones would send the variable's name, a 401).
    header = '"x-api-key: $MODELPORT_API_KEY"'
    if first.key_was_generated:
        header = shlex.quote(f"x-api-key: {first.api_key}")
    curl = f"curl -s {shlex.quote(url)} -H {header}"
    curl = f'{curl} -H "content-type: application/json" \\\n      -d {shlex.quote(body)}'
    lines = ["", "modelport: first start."]
    if first.key_was_generated:
        lines += ["Admin API key (shown only now; store it safely, e.g. as MODELPORT_API_KEY):", ""]
        lines += [f"    {first.api_key}", ""]
    lines += [
        f"Default account:    {first.account_id}",
        f"Default deployment: {first.deployment_id} (SmolLM2 135M, embedded)",
        f"Embeddings:         {first.embedding_deployment_id} (all-MiniLM-L6-v2, embedded)",
        "",
        "Try it:",
        "",
        f"    {curl}",
        "",
        f"or chat in the terminal: {chat_command(settings)}",
        "",
    ]
    return "\n".join(lines)


async def warn_if_api_key_is_stale(sessions: async_sessionmaker[AsyncSession], api_key: str | None) -> None:
    """MODELPORT_API_KEY is used once, on the first start; set later (or revoked since)
    it opens nothing, which is confusing unless said."""
    if not api_key:
        return
    async with sessions() as session:
        owner = await accounts.find_key_owner(session, key_hash=hash_key(api_key))
    if owner is None:
        log.warning(
            "MODELPORT_API_KEY matches no active key: it is only stored on the first start (or it was revoked). "
            "Create a key with `modelport keys create --account default --role admin`."
        )


@contextlib.contextmanager
def loading(path: Path, *, show_progress: bool) -> Iterator[None]:
    """Around loading a GGUF file: a line before and after, and with `show_progress`
    (a terminal), a spinner with the seconds so far."""
    size = f"{path.stat().st_size / 1e6:,.0f} MB" if path.exists() else "size unknown"
    started = time.monotonic()
    log.info("loading %s (%s) into the embedded engine", path.name, size)
    if show_progress and sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (SpinnerColumn(), TextColumn(f"loading {path.name} ({size})"), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            progress.add_task("load", total=None)
            yield
    else:
        yield
    log.info("%s loaded in %.1f s", path.name, time.monotonic() - started)
