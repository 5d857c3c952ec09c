"""`GET /user-info`: who the caller is, and one access profile per account it belongs
to, with its role there (how SDK users find their account ids). Knows no HTTP."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.errors import Unauthenticated
from modelport.principal import Principal
from modelport.schemas.groups import AccessProfile, AccessProfileAccount, AccessProfileIdentity, UserInfo
from modelport.store import accounts


async def user_info(sessions: async_sessionmaker[AsyncSession], principal: Principal) -> UserInfo:
    async with sessions() as session:
        identity = await accounts.get_identity(session, identity_id=principal.identity_id)
        if identity is None:  # deleted since its key was cached
            raise Unauthenticated("invalid API key")
        memberships = await accounts.memberships_of(session, identity_id=identity.id)
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
