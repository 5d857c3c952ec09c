"""Deployments of a model: where its calls go. Knows no HTTP, and loads nothing itself:
an embedded deployment's file is loaded, and its status moved on, by the
`DeploymentLoads` it is given (`inference.loader.DeploymentLoader`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.access import check_account, check_account_filter, creator, require_admin
from modelport.catalogue.deployment_settings import (
    check_configuration,
    check_deployment,
    check_vendor,
    embedded_checkpoint,
    merged_parameters,
)
from modelport.catalogue.listing import page_of, parse_sort
from modelport.catalogue.models import find_model
from modelport.catalogue.usage import UsageStatistics
from modelport.catalogue.views import deployment_out
from modelport.errors import InvalidRequest, NotFound, ValidationFailed, field_error
from modelport.policy import ServerPolicy
from modelport.principal import Principal
from modelport.schemas.catalogue import (
    DeploymentCreate,
    DeploymentOut,
    DeploymentStatus,
    DeploymentUpdate,
    ModelUsage,
    Page,
)
from modelport.store import repo
from modelport.store.tables import Deployment, Model


class DeploymentLoads(Protocol):
    """Whoever loads embedded deployments' files and decides their status."""

    def initial_status(self, checkpoint: str | None) -> DeploymentStatus:
        """The status of a deployment created (or given a new file) with this checkpoint."""
        ...

    async def load(self, deployment_id: str, checkpoint: str, *, wait: bool) -> None:
        """Load the file, then record READY or FAILED; `wait=False` returns at once."""
        ...

    async def unload(self, deployment_id: str) -> None: ...


class Deployments:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: ServerPolicy,
        adapters: Callable[[str], bool],
        loads: DeploymentLoads,
        statistics: UsageStatistics,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._adapters = adapters
        self._loads = loads
        self._statistics = statistics

    async def create(self, principal: Principal, model_id: str, body: DeploymentCreate) -> DeploymentOut:
        require_admin(principal)
        check_account(principal, body.account_id)
        self._policy.check_model_parameters(body.model_creation_parameters, by_operator=principal.is_operator)
        async with self._sessions() as session, session.begin():
            model = await find_model(session, principal, model_id)
            _check_deployable(model, self._adapters)
            configuration = check_configuration(model.model_vendor, body.vendor_configuration)
            check_deployment(model, parameters=body.model_creation_parameters, configuration=configuration)
            merged = merged_parameters(model, body.model_creation_parameters)
            self._policy.check_settings_destination(model.model_vendor, merged)
            embedded = embedded_checkpoint(model.model_vendor, configuration)
            if embedded:
                self._check_checkpoint(embedded)
            deployment = await repo.create_deployment(
                session,
                account_id=principal.account_id,
                model_id=model.id,
                name=body.name,
                status=self._loads.initial_status(embedded),
                vendor_configuration=configuration,
                model_creation_parameters=body.model_creation_parameters,
                deployment_metadata=body.deployment_metadata,
                **creator(principal),
            )
        if embedded:
            await self._loads.load(deployment.id, embedded, wait=body.wait_for_ready)
        return await self.get(principal, model_id, deployment.id)

    async def get(self, principal: Principal, model_id: str, deployment_id: str) -> DeploymentOut:
        async with self._sessions() as session:
            return deployment_out(await self._deployment(session, principal, model_id, deployment_id))

    async def list(
        self,
        principal: Principal,
        *,
        model_id: str | None,
        page: int,
        limit: int,
        sort_by: list[str] | None = None,
        account_id: str | None = None,
    ) -> Page[DeploymentOut]:
        order = parse_sort(sort_by, repo.DEPLOYMENT_SORT_COLUMNS)
        check_account_filter(principal, account_id)
        async with self._sessions() as session:
            if model_id is not None:
                await find_model(session, principal, model_id)
            rows, total = await repo.list_deployments(
                session,
                account_id=principal.account_id,
                model_id=model_id,
                page=page,
                limit=limit,
                sort_by=order,
                allow=principal.model_allow,
            )
        return page_of(rows, deployment_out, page=page, limit=limit, total=total)

    async def update(
        self, principal: Principal, model_id: str, deployment_id: str, body: DeploymentUpdate
    ) -> DeploymentOut:
        require_admin(principal)
        changes = body.model_dump(exclude_unset=True, exclude={"wait_for_ready"})
        self._policy.check_model_parameters(changes.get("model_creation_parameters"), by_operator=principal.is_operator)
        async with self._sessions() as session, session.begin():
            deployment = await self._deployment(session, principal, model_id, deployment_id)
            model = await find_model(session, principal, model_id)
            before = embedded_checkpoint(model.model_vendor, deployment.vendor_configuration)
            if "vendor_configuration" in changes:
                changes["vendor_configuration"] = check_configuration(
                    model.model_vendor, changes["vendor_configuration"]
                )
            for name, value in changes.items():
                setattr(deployment, name, value)
            check_deployment(
                model, parameters=deployment.model_creation_parameters, configuration=deployment.vendor_configuration
            )
            merged = merged_parameters(model, deployment.model_creation_parameters)
            self._policy.check_settings_destination(model.model_vendor, merged)
            after = embedded_checkpoint(model.model_vendor, deployment.vendor_configuration)
            if after != before and after:
                self._check_checkpoint(after)
                deployment.status, deployment.status_reason = self._loads.initial_status(after), None
        if after != before:
            await self._loads.unload(deployment_id)
            if after:
                await self._loads.load(deployment_id, after, wait=body.wait_for_ready)
        return await self.get(principal, model_id, deployment_id)

    async def delete(self, principal: Principal, model_id: str, deployment_id: str) -> None:
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            deployment = await self._deployment(session, principal, model_id, deployment_id)
            await repo.delete_row(session, deployment)
        await self._loads.unload(deployment_id)

    async def usage(
        self, principal: Principal, deployment_id: str, *, start: datetime, end: datetime, chunks: int
    ) -> ModelUsage:
        """Token usage of one deployment of the account, per chunk of [start, end)."""
        async with self._sessions() as session:
            found = await repo.get_deployment(
                session, account_id=principal.account_id, deployment_id=deployment_id, allow=principal.model_allow
            )
            if found is None:
                raise NotFound(f"model deployment {deployment_id} not found")
        return await self._statistics.of(principal, deployment_id, start=start, end=end, chunks=chunks)

    def _check_checkpoint(self, checkpoint: str) -> None:
        try:
            self._policy.resolve_checkpoint(checkpoint)
        except InvalidRequest as exc:
            raise ValidationFailed(f"vendor_configuration.checkpoint_path: {exc.detail}") from exc

    async def _deployment(
        self, session: AsyncSession, principal: Principal, model_id: str, deployment_id: str
    ) -> Deployment:
        deployment = await repo.get_deployment(
            session, account_id=principal.account_id, deployment_id=deployment_id, allow=principal.model_allow
        )
        if deployment is None or deployment.model_id != model_id:
            raise NotFound(f"deployment {deployment_id} of model {model_id} not found")
        return deployment


def _check_deployable(model: Model, adapters: Callable[[str], bool]) -> None:
    if model.model_vendor is None:
        raise field_error(
            ["body", "model_vendor"],
            f"model {model.id} names no model_vendor; set one (PATCH the model) to deploy it",
            "missing",
        )
    check_vendor(model.model_vendor, adapters)  # a model stored before vendors were checked
