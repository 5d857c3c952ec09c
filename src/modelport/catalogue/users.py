"""`GET /user-info`: who the caller is, and one access profile per account it belongs
to, with its role there (how SDK users find their account ids); `GET /users/{id}`: the
same of another user, for an admin of an account they share. Knows no HTTP."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.errors import NotFound, Unauthenticated
from modelport.principal import Principal, Role
from modelport.schemas.groups import AccessProfile, AccessProfileAccount, AccessProfileIdentity, UserInfo
from modelport.store import accounts
from modelport.store.tables import Account, Identity


async def user_info(sessions: async_sessionmaker[AsyncSession], principal: Principal) -> UserInfo:
    async with sessions() as session:
        identity = await accounts.get_identity(session, identity_id=principal.identity_id)
        if identity is None:  # deleted since its key was cached
            raise Unauthenticated("invalid API key")
        memberships = await accounts.memberships_of(session, identity_id=identity.id)
    return _shown(identity, memberships)


async def user_profile(sessions: async_sessionmaker[AsyncSession], principal: Principal, user_id: str) -> UserInfo:
    """Another user (or service account) as `/user-info` shows the caller: for an
    operator, with every account; for an admin, with the accounts where the caller is an
    admin too. Anyone else, and an id that is no one, get the same 404: the answer
    never tells whether a user exists elsewhere."""
    async with sessions() as session:
        identity = await accounts.get_identity(session, identity_id=user_id)
        memberships = await accounts.memberships_of(session, identity_id=user_id) if identity else []
        if identity is not None and not principal.is_operator:
            mine = await accounts.memberships_of(session, identity_id=principal.identity_id)
            administered = {account.id for account, role in mine if role == Role.ADMIN}
            memberships = [(account, role) for account, role in memberships if account.id in administered]
    if identity is None or not (memberships or principal.is_operator):
        raise NotFound(f"user {user_id} not found")
    return _shown(identity, memberships)


def _shown(identity: Identity, memberships: list[tuple[Account, Role]]) -> UserInfo:
    return UserInfo(
        id=identity.id,
        # modelport keeps no e-mail addresses; the SDK's type requires the field.
        email="",
        first_name=identity.name or None,
        is_organization_admin=identity.is_operator,
        is_deployment_admin=identity.is_operator,
        access_profiles=[
            AccessProfile(
                # One membership per (identity, account): their pair names it.
                id=f"{account.id}:{identity.id}",
                account=AccessProfileAccount(id=account.id, name=account.name),
                identity=AccessProfileIdentity(id=identity.id, type=identity.identity_type),
                role=role,
            )
            for account, role in memberships
        ],
    )
