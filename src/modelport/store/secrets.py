"""An account's secrets, stored sealed (`catalogue.secrets` seals and opens them)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from modelport.store.tables import AccountSecret, utcnow


async def get_secret(session: AsyncSession, *, account_id: str, name: str) -> AccountSecret | None:
    secret: AccountSecret | None = await session.scalar(
        select(AccountSecret).where(AccountSecret.account_id == account_id, AccountSecret.name == name)
    )
    return secret


async def put_secret(session: AsyncSession, *, account_id: str, name: str, ciphertext: bytes) -> AccountSecret:
    secret = await get_secret(session, account_id=account_id, name=name)
    if secret is None:
        secret = AccountSecret(account_id=account_id, name=name, ciphertext=ciphertext)
        session.add(secret)
    else:
        secret.ciphertext = ciphertext
        secret.updated_at = utcnow()
    await session.flush()
    return secret


async def list_secrets(session: AsyncSession, *, account_id: str) -> list[AccountSecret]:
    rows = await session.scalars(
        select(AccountSecret).where(AccountSecret.account_id == account_id).order_by(AccountSecret.name)
    )
    return list(rows)


async def all_secrets(session: AsyncSession) -> list[AccountSecret]:
    """Every account's secrets, for sealing them again with a new key."""
    return list(await session.scalars(select(AccountSecret).order_by(AccountSecret.account_id, AccountSecret.name)))


async def delete_secret(session: AsyncSession, *, account_id: str, name: str) -> bool:
    secret = await get_secret(session, account_id=account_id, name=name)
    if secret is None:
        return False
    await session.delete(secret)
    return True
