"""The catalogue: one object for everything an account keeps (who may call, models,
deployments, groups, templates, secrets, spend, usage, stored responses). Knows no HTTP.

Each part is its own module; this one builds them over one database, so the server
keeps one `Catalogue` (on `app.state.catalogue`) and routes reach every part through it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.access import Access
from modelport.catalogue.audit import AuditLog
from modelport.catalogue.deployments import DeploymentLoads, Deployments
from modelport.catalogue.groups import ModelGroups
from modelport.catalogue.models import Models
from modelport.catalogue.responses import ResponseStoreBounds, StoredResponses
from modelport.catalogue.secrets import SecretBox, Secrets
from modelport.catalogue.spend import spend_report
from modelport.catalogue.templates import ModelTemplates
from modelport.catalogue.usage import UsageRecorder, UsageStatistics
from modelport.catalogue.users import user_info, user_profile
from modelport.policy import ServerPolicy
from modelport.principal import Principal
from modelport.schemas.catalogue import SpendReport, UsageSummary
from modelport.schemas.groups import UserInfo
from modelport.store.cache import CatalogueCache


class Catalogue:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        cache: CatalogueCache,
        loads: DeploymentLoads,
        usage: UsageRecorder,
        box: SecretBox,
        policy: ServerPolicy | None = None,
        adapters: Callable[[str], bool] = lambda _name: True,
        responses: ResponseStoreBounds | None = None,
        audit_retention: timedelta = timedelta(days=365),
    ) -> None:
        policy = policy or ServerPolicy()
        self._sessions = sessions
        statistics = UsageStatistics(sessions, usage)
        self._statistics = statistics
        self.access = Access(sessions, cache, policy)
        self.models = Models(sessions, policy, adapters, statistics)
        self.deployments = Deployments(sessions, policy, adapters, loads, statistics)
        self.groups = ModelGroups(sessions, statistics)
        self.templates = ModelTemplates(sessions)
        self.secrets = Secrets(sessions, box)
        self.responses = StoredResponses(sessions, responses)
        self.audit = AuditLog(sessions, retention=audit_retention)

    async def user_info(self, principal: Principal) -> UserInfo:
        return await user_info(self._sessions, principal)

    async def user_profile(self, principal: Principal, user_id: str) -> UserInfo:
        return await user_profile(self._sessions, principal, user_id)

    async def spend(self, principal: Principal) -> SpendReport:
        return await spend_report(self._sessions, principal)

    async def usage_summary(self, principal: Principal, *, start: datetime, end: datetime) -> UsageSummary:
        return await self._statistics.summary(principal, start=start, end=end)
