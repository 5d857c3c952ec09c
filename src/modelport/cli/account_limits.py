"""`modelport accounts limits`: an account's own limits, for all its keys together
(SPEC 10), shown or set by the operator at the server's database."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.cli import console, limit_options
from modelport.cli.common import argument, fail, with_database
from modelport.schemas.limits import AccountLimitsOut, BudgetStatus, LimitFields


def accounts_limits(
    account: Annotated[str, argument("ACCOUNT")],
    rpm_limit: limit_options.RpmOption = None,
    tpm_limit: limit_options.TpmOption = None,
    max_parallel_requests: limit_options.ParallelOption = None,
    max_budget: limit_options.BudgetOption = None,
    budget_duration: limit_options.DurationOption = None,
    clear: Annotated[
        list[str] | None,
        typer.Option("--clear", metavar="LIMIT", help="Remove a limit, e.g. --clear rpm_limit (repeatable)."),
    ] = None,
) -> None:
    """Show or set ACCOUNT's own limits (its name, id or unique id prefix): they hold
    for all its keys together, in addition to each key's own. Without options, shows them."""
    from modelport.catalogue.access import account_limits_out, apply_limit_changes
    from modelport.store.tables import Account

    account_id = console.resolve_account(account)
    fields = limit_options.limit_fields()
    given = (rpm_limit, tpm_limit, max_parallel_requests, max_budget, budget_duration)
    changes = limit_options.checked(LimitFields, dict(zip(fields, given, strict=True)))
    for name in clear or []:
        field = name.replace("-", "_")
        if field not in fields:
            fail(f"--clear {name}: not a limit; one of {', '.join(fields)}")
        changes[field] = None

    async def work(sessions: async_sessionmaker[AsyncSession]) -> AccountLimitsOut:
        async with sessions() as session, session.begin():
            found = await session.get(Account, account_id)
            assert found is not None  # resolved just above
            apply_limit_changes(found, changes)
            await session.flush()
            return await account_limits_out(session, found)

    shown = with_database(work)
    limits = {name: getattr(shown, name) for name in fields if getattr(shown, name) is not None}
    described = ", ".join(f"{name}={value}" for name, value in limits.items())
    typer.echo(f"account {account_id}: {described or 'no limits'}")
    if shown.budget is not None:
        budget = shown.budget
        typer.echo(f"  budget: ${budget.spent:.6f} spent of ${budget.max_budget:.6f}, {window_text(budget)}")


def window_text(budget: BudgetStatus) -> str:
    start = f"{budget.window_start:%Y-%m-%d %H:%M}Z" if budget.window_start else "the beginning"
    end = f"{budget.window_end:%Y-%m-%d %H:%M}Z" if budget.window_end else "never"
    return f"from {start} to {end}"


def register(accounts_app: typer.Typer) -> None:
    accounts_app.command("limits")(accounts_limits)
