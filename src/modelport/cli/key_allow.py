"""`--model` and `--deployment`: the allow-lists of `modelport keys create` and `keys update`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelport.cli.common import fail
from modelport.errors import ValidationFailed

# A key's allow-lists (SPEC 10): repeatable; left out, the key may use every model.
ModelsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        metavar="NAME",
        help="Limit the key to this model (name or vendor/name; repeatable; replaces the key's list).",
    ),
]
DeploymentsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--deployment",
        metavar="ID",
        help="Limit the key to this deployment (repeatable; replaces the key's list).",
    ),
]


def allow_lists(models: list[str] | None, deployments: list[str] | None) -> dict[str, Any]:
    """`--model` and `--deployment`, checked as the API checks its `models` and
    `deployments` (their shape here; that they exist, in the account, when stored)."""
    from pydantic import ValidationError

    from modelport.schemas.catalogue import KeyAllowFields

    given = {field: value for field, value in (("models", models), ("deployments", deployments)) if value}
    try:
        return KeyAllowFields.model_validate(given).model_dump(exclude_unset=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        fail(f"--{str(error['loc'][0]).rstrip('s')}: {error['msg']}")


def refusal(exc: ValidationFailed) -> str:
    """A 422 of the allow-list check, in the CLI's option names."""
    options = {"models": "--model", "deployments": "--deployment"}
    errors = exc.extra.get("errors") or []
    return "; ".join(f"{options.get(str(error['loc'][-1]), '')}: {error['msg']}" for error in errors) or exc.detail
