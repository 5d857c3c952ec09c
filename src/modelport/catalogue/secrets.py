"""Account secrets (vendor API keys): encrypted at rest, referenced by name, never shown.

The encryption key comes from MODELPORT_SECRET_KEY. Any string works; it is stretched
to a Fernet key with SHA-256, so use a long random value (`python -c "import secrets;
print(secrets.token_urlsafe(32))"`). Losing it makes the stored secrets unreadable.

To rotate it, the setting holds several keys separated by commas, newest first (as
Fernet's `MultiFernet` takes them): secrets are sealed with the newest and opened with
whichever key sealed them, and `rotate_secrets` (`modelport secrets rotate`) seals every
stored secret again with the newest, after which the older keys can be dropped.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.access import require_admin
from modelport.config import secret_keys
from modelport.errors import DeploymentUnavailable, MissingCredential, NotFound
from modelport.principal import Principal
from modelport.schemas.catalogue import SecretOut
from modelport.store import secrets


def _fernet(key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode("utf-8")).digest()))


class SecretBox:
    def __init__(self, secret_key: str | None) -> None:
        self._fernet = MultiFernet([_fernet(key) for key in secret_keys(secret_key)]) if secret_key else None

    def _require(self) -> MultiFernet:
        if self._fernet is None:
            raise DeploymentUnavailable("account secrets need MODELPORT_SECRET_KEY to be set on the modelport server")
        return self._fernet

    def seal(self, value: str) -> bytes:
        return self._require().encrypt(value.encode("utf-8"))

    def open(self, sealed: bytes, *, name: str) -> str:
        try:
            return self._require().decrypt(sealed).decode("utf-8")
        except InvalidToken:
            raise DeploymentUnavailable(
                f"secret {name!r} cannot be decrypted: MODELPORT_SECRET_KEY differs from the one it was stored with"
            ) from None

    def reseal(self, sealed: bytes, *, name: str) -> bytes:
        """`sealed` sealed again with the newest key."""
        try:
            return self._require().rotate(sealed)
        except InvalidToken:
            raise DeploymentUnavailable(
                f"secret {name!r} cannot be decrypted with any key in MODELPORT_SECRET_KEY"
            ) from None


async def rotate_secrets(sessions: async_sessionmaker[AsyncSession], box: SecretBox) -> int:
    """Seal every stored secret of every account again with the newest key, in one
    transaction: a secret that no key opens fails it before anything is written.
    Returns how many were sealed again."""
    async with sessions() as session, session.begin():
        stored = await secrets.all_secrets(session)
        for secret in stored:
            secret.ciphertext = box.reseal(secret.ciphertext, name=f"{secret.account_id}/{secret.name}")
        return len(stored)


async def resolve_secret(
    sessions: async_sessionmaker[AsyncSession], box: SecretBox, *, account_id: str, name: str
) -> str:
    async with sessions() as session:
        stored = await secrets.get_secret(session, account_id=account_id, name=name)
    if stored is None:
        raise MissingCredential(f"the credential is missing: this account has no secret named {name!r}")
    return box.open(stored.ciphertext, name=name)


class Secrets:
    """An account's secrets, an admin's to write, list (names only) and delete."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], box: SecretBox) -> None:
        self._sessions = sessions
        self.box = box

    async def put(self, principal: Principal, name: str, value: str) -> SecretOut:
        require_admin(principal)
        sealed = self.box.seal(value)
        async with self._sessions() as session, session.begin():
            secret = await secrets.put_secret(session, account_id=principal.account_id, name=name, ciphertext=sealed)
            return SecretOut(name=secret.name, created_at=secret.created_at, updated_at=secret.updated_at)

    async def list(self, principal: Principal) -> list[SecretOut]:
        require_admin(principal)
        async with self._sessions() as session:
            rows = await secrets.list_secrets(session, account_id=principal.account_id)
        return [SecretOut(name=row.name, created_at=row.created_at, updated_at=row.updated_at) for row in rows]

    async def delete(self, principal: Principal, name: str) -> None:
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            if not await secrets.delete_secret(session, account_id=principal.account_id, name=name):
                raise NotFound(f"secret {name} not found")
