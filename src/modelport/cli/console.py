"""The operator's terminal commands beyond serving: `accounts list`, `models list`,
`deployments list`, `usage`, `audit`, and `chat` (an interactive chat with a running server).

The listings read the database directly, like the key commands (the operator at the
terminal holds it); `chat` talks HTTP to the server, as any client would. Things are
named the way people remember them: by name, full id or a unique id prefix.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.cli.common import argument, command_group, fail, with_database
from modelport.cli.listing import JsonOption, Listing
from modelport.store import inventory
from modelport.store.tables import Account, ApiKey

models_app = command_group("Models (every account's, or one's).")
deployments_app = command_group("Model deployments (every account's, or one's).")

AccountOption = Annotated[
    str | None,
    typer.Option("--account", metavar="NAME|ID", help="Account name, id or unique id prefix (default: every account)."),
]


# --- finding things by what people remember ----------------------------------------


def _only(found: list[Any], what: str, reference: str, describe: Any) -> Any:
    if not reference.strip():
        fail(f"name the {what}: its name, id or the start of its id")
    if not found:
        fail(f"no {what} named {reference!r} or with an id starting so")
    if len(found) > 1:
        choices = ", ".join(describe(item) for item in found[:5])
        fail(f"{reference!r} matches {len(found)} {what}s ({choices}): give more of the id")
    return found[0]


async def _account(session: AsyncSession, reference: str) -> Account:
    found = await inventory.find_accounts(session, reference)
    exact = [account for account in found if account.id == reference]
    return _only(exact or found, "account", reference, lambda account: f"{account.name} {account.id}")  # type: ignore[no-any-return]


def resolve_account(reference: str) -> str:
    """The id of the account named `reference` (or with that id or unique id prefix)."""

    async def work(sessions: async_sessionmaker[AsyncSession]) -> str:
        async with sessions() as session:
            return (await _account(session, reference)).id

    return str(with_database(work))


def resolve_key(reference: str) -> str:
    """The id of the key named `reference` (or with that id or unique id prefix)."""

    async def work(sessions: async_sessionmaker[AsyncSession]) -> str:
        async with sessions() as session:
            found = await inventory.find_keys(session, reference)
        exact = [key for key in found if key.id == reference]
        key: ApiKey = _only(exact or found, "key", reference, lambda key: f"{key.name or '-'} {key.id}")
        return key.id

    return str(with_database(work))


def _account_filter(reference: str | None) -> str | None:
    return resolve_account(reference) if reference is not None else None


# --- listings -------------------------------------------------------------------------


def accounts_list(as_json: JsonOption = False) -> None:
    """List accounts: id, name, members, models and deployments."""

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[inventory.AccountRow]:
        async with sessions() as session:
            return await inventory.accounts(session)

    listing = Listing("accounts", ("id", "name", "members", "models", "deployments"))
    for row in with_database(work):
        listing.add(row.account.id, row.account.name, row.members, row.models, row.deployments)
    listing.show(as_json)


@models_app.command("list")
def models_list(account: AccountOption = None, as_json: JsonOption = False) -> None:
    """List models: id, name, type, vendor, deployments."""
    account_id = _account_filter(account)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[Any]:
        async with sessions() as session:
            return await inventory.models(session, account_id=account_id)

    listing = Listing("models", ("id", "name", "type", "vendor", "deployments", "account"))
    for model, account_name, count in with_database(work):
        listing.add(model.id, model.name, model.model_type, model.model_vendor, count, account_name)
    listing.show(as_json)


@deployments_app.command("list")
def deployments_list(account: AccountOption = None, as_json: JsonOption = False) -> None:
    """List deployments: id, name, model, status (and why, when not READY)."""
    account_id = _account_filter(account)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[Any]:
        async with sessions() as session:
            return await inventory.deployments(session, account_id=account_id)

    listing = Listing("deployments", ("id", "name", "model", "status"))
    for deployment, model in with_database(work):
        status = deployment.status + (f": {deployment.status_reason}" if deployment.status_reason else "")
        listing.add(deployment.id, deployment.name, model.name, status)
    listing.show(as_json)


_DURATION = re.compile(r"(\d+)([mhd])")


def _duration(text: str) -> timedelta:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise typer.BadParameter("a number and m, h or d: 30m, 24h, 7d")
    amount, unit = int(match[1]), match[2]
    return (
        timedelta(minutes=amount) if unit == "m" else timedelta(hours=amount) if unit == "h" else timedelta(days=amount)
    )


def usage(
    since: Annotated[str, typer.Option(metavar="DURATION", help="How far back: 30m, 24h, 7d.")] = "24h",
    account: AccountOption = None,
    as_json: JsonOption = False,
) -> None:
    """Requests, failures and tokens per deployment over the last SINCE."""
    start = datetime.now(UTC) - _duration(since)
    account_id = _account_filter(account)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[inventory.UsageRow]:
        async with sessions() as session:
            return await inventory.usage_since(session, since=start, account_id=account_id)

    listing = Listing(
        f"usage since {start:%Y-%m-%d %H:%M} UTC",
        ("deployment", "name", "requests", "failed", "prompt_tokens", "completion_tokens"),
    )
    for row in with_database(work):
        listing.add(
            row.deployment_id, row.deployment_name, row.requests, row.failures, row.prompt_tokens, row.response_tokens
        )
    listing.show(as_json)


def audit(
    since: Annotated[str, typer.Option(metavar="DURATION", help="How far back: 30m, 24h, 7d.")] = "24h",
    account: AccountOption = None,
    limit: Annotated[int, typer.Option(metavar="COUNT", help="At most this many, newest first.", min=1)] = 100,
    as_json: JsonOption = False,
) -> None:
    """Changes to the catalogue over the last SINCE (who, what, when), newest first;
    with --json, each change's before and after too."""
    from modelport.schemas.audit import AuditEventOut
    from modelport.store import audit as audit_log

    start = datetime.now(UTC) - _duration(since)
    given = audit_log.AuditFilter(account_id=_account_filter(account), since=start)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[AuditEventOut]:
        from modelport.catalogue.audit import shown

        async with sessions() as session:
            rows, _total = await audit_log.list_events(session, given, page=1, limit=limit)
        return [shown(row) for row in rows]

    events = with_database(work)
    if as_json:
        typer.echo(json.dumps([event.model_dump(mode="json") for event in events], indent=2))
        return
    listing = Listing(
        f"changes since {start:%Y-%m-%d %H:%M} UTC", ("event", "at", "who", "action", "object", "object_id")
    )
    for event in events:
        who = event.actor.name if event.actor.kind == "cli" else event.actor.key_id or event.actor.kind
        at = f"{event.at:%Y-%m-%d %H:%M:%S}"
        listing.add(event.id, at, f"{event.actor.kind}:{who}", event.action, event.object_type, event.object_id)
    listing.show()


def chat(
    deployment: Annotated[str | None, argument("DEPLOYMENT")] = None,
    system: Annotated[str | None, typer.Option(metavar="PROMPT", help="A system prompt.")] = None,
    temperature: Annotated[
        float | None, typer.Option(metavar="TEMPERATURE", help="Sampling temperature, 0 for greedy.")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(metavar="TOKENS", help="Most tokens per answer.")] = None,
    top_p: Annotated[
        float | None, typer.Option(metavar="P", help="Nucleus sampling: the share of probability mass kept, 0-1.")
    ] = None,
    stop: Annotated[list[str] | None, typer.Option(metavar="SEQUENCE", help="A stop sequence (repeatable).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="MODELPORT_API_KEY", metavar="KEY", help="An API key.")] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            envvar="MODELPORT_URL",
            metavar="URL",
            help="The server's URL (without it: MODELPORT_HOST and MODELPORT_PORT).",
        ),
    ] = None,
) -> None:
    """Chat with a deployment of a running server. DEPLOYMENT is a deployment's id, id
    prefix or name, or a model's name (default: the embedded chat model). The answer
    streams as it comes; the conversation is kept: /reset starts over, /exit (or
    Ctrl-D) ends."""
    from modelport.cli.chat import ChatSession, server_url

    if not api_key:
        fail("no API key: pass --api-key or set MODELPORT_API_KEY")
    chosen = {"temperature": temperature, "max_tokens": max_tokens, "top_p": top_p, "stop_sequences": stop}
    parameters = {name: value for name, value in chosen.items() if value is not None}
    session = ChatSession(base_url or server_url(), api_key, parameters=parameters, system=system)
    try:
        session.run(deployment)
    except RuntimeError as exc:
        fail(str(exc))
    finally:
        session.close()


def register(app: typer.Typer, accounts_app: typer.Typer) -> None:
    """Add these commands to the `modelport` command."""
    accounts_app.command("list")(accounts_list)
    app.add_typer(models_app, name="models")
    app.add_typer(deployments_app, name="deployments")
    app.command("usage")(usage)
    app.command("audit")(audit)
    app.command("chat")(chat)


__all__ = ["register", "resolve_account", "resolve_key"]
