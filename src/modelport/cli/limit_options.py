"""The limit options of `keys create`, `keys update` (a key's limits and response cache)
and `accounts limits` (an account's own), checked as the API checks them (SPEC 7, 10)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError

from modelport.cli.common import fail

RpmOption = Annotated[int | None, typer.Option("--rpm-limit", metavar="REQUESTS", help="Requests a minute.")]
TpmOption = Annotated[int | None, typer.Option("--tpm-limit", metavar="TOKENS", help="Tokens a minute.")]
ParallelOption = Annotated[
    int | None, typer.Option("--max-parallel-requests", metavar="REQUESTS", help="Requests in flight at once.")
]
BudgetOption = Annotated[
    float | None, typer.Option("--max-budget", metavar="DOLLARS", help="US dollars per budget duration.")
]
DurationOption = Annotated[
    str | None, typer.Option("--budget-duration", metavar="DURATION", help="When the budget resets: 1h, 1d, 30d.")
]
CacheTtlOption = Annotated[
    int | None,
    typer.Option(
        "--cache-ttl-seconds",
        metavar="SECONDS",
        help="Keep the key's deterministic answers in the response cache this long (1 to 2592000); "
        "wins over the model's setting.",
    ),
]


def limit_fields() -> tuple[str, ...]:
    """The five limits, in the order of their options (--rpm-limit ... --budget-duration)."""
    from modelport.limits.base import LIMIT_NAMES

    return (*LIMIT_NAMES, "budget_duration")


def checked(schema: type[BaseModel], given: dict[str, Any]) -> dict[str, Any]:
    """The options given (None: not given) as `schema` takes them; a clear error naming
    the option otherwise."""
    try:
        values = schema.model_validate({name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        fail(
            "; ".join(
                f"--{'-'.join(map(str, error['loc'])).replace('_', '-')}: {error['msg']}" for error in exc.errors()
            )
        )
    return values.model_dump(exclude_unset=True)
