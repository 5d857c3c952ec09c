"""What model groups and model templates share: rows an account owns, created by its
admins, read by its members, and kept while a model still points at them."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.access import check_account, check_account_filter, creator, require_admin
from modelport.catalogue.listing import page_of
from modelport.errors import Conflict, NotFound
from modelport.principal import Principal
from modelport.schemas.catalogue import Page
from modelport.store import repo
from modelport.store.tables import ModelGroup, ModelTemplate

RowT = TypeVar("RowT", ModelGroup, ModelTemplate)
OutT = TypeVar("OutT", bound=BaseModel)


class OwnedRows(Generic[RowT, OutT]):
    """Create, get, list and delete one kind of owned row; a subclass names the kind."""

    table: type[RowT]
    shown_as: type[OutT]
    noun: str  # "model group": in errors
    # The models column that points at a row of this kind: a row in use is kept (409).
    link: str

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def _create(self, principal: Principal, account_id: str | None, **fields: Any) -> OutT:
        require_admin(principal)
        check_account(principal, account_id)
        async with self._sessions() as session, session.begin():
            row = await repo.add_row(
                session, self.table(account_id=principal.account_id, **fields, **creator(principal))
            )
            return self.shown_as.model_validate(row)

    async def get(self, principal: Principal, row_id: str) -> OutT:
        async with self._sessions() as session:
            return self.shown_as.model_validate(await self._row(session, principal, row_id))

    async def list(self, principal: Principal, *, page: int, limit: int, account_id: str | None = None) -> Page[OutT]:
        """The selected account's rows; an `account_id` naming another account is a 422
        (the SDK's filter), never silently ignored."""
        check_account_filter(principal, account_id)
        async with self._sessions() as session:
            rows, total = await repo.list_owned(
                session, self.table, account_id=principal.account_id, page=page, limit=limit
            )
        return page_of(rows, self.shown_as.model_validate, page=page, limit=limit, total=total)

    async def delete(self, principal: Principal, row_id: str) -> None:
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            row = await self._row(session, principal, row_id)
            count = await repo.count_models_with(session, account_id=principal.account_id, **{self.link: row_id})
            if count:
                raise Conflict(self._in_use(row_id, count))
            await repo.delete_row(session, row)

    def _in_use(self, row_id: str, count: int) -> str:
        return f"{self.noun} {row_id} is used by {count} model(s)"

    async def _row(self, session: AsyncSession, principal: Principal, row_id: str) -> RowT:
        row = await repo.get_owned(session, self.table, account_id=principal.account_id, row_id=row_id)
        if row is None:
            raise NotFound(f"{self.noun} {row_id} not found")
        return row
