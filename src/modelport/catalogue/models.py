"""Models: what an account can deploy and call by name. Knows no HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.access import check_account, check_account_filter, creator, require_admin
from modelport.catalogue.deployment_settings import (
    check_configuration,
    check_deployment,
    check_model,
    check_vendor,
    merged_parameters,
)
from modelport.catalogue.links import check_links, groups_of
from modelport.catalogue.listing import page_of, parse_sort
from modelport.catalogue.usage import UsageStatistics
from modelport.catalogue.views import model_out
from modelport.errors import Conflict, NotFound
from modelport.policy import ServerPolicy
from modelport.principal import Principal
from modelport.schemas.catalogue import ModelCreate, ModelInstanceOut, ModelUpdate, ModelUsage, Page
from modelport.store import repo
from modelport.store.tables import Deployment, Model

# Every deployment of a model, in one page (a model has a handful).
ALL = 10_000


async def find_model(session: AsyncSession, principal: Principal, model_id: str) -> Model:
    """The selected account's model, or 404 (another account's is not found either, nor one
    the caller's key is not allowed: SPEC 10)."""
    model = await repo.get_model(
        session, account_id=principal.account_id, model_id=model_id, allow=principal.model_allow
    )
    if model is None:
        raise NotFound(f"model {model_id} not found")
    return model


async def deployments_of(session: AsyncSession, principal: Principal, model_id: str) -> list[Deployment]:
    deployments, _ = await repo.list_deployments(
        session, account_id=principal.account_id, model_id=model_id, page=1, limit=ALL, allow=principal.model_allow
    )
    return deployments


class Models:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: ServerPolicy,
        adapters: Callable[[str], bool],
        statistics: UsageStatistics,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        # Whether an adapter is registered under a name: a vendor without one is refused.
        self._adapters = adapters
        self._statistics = statistics

    async def create(self, principal: Principal, body: ModelCreate) -> ModelInstanceOut:
        require_admin(principal)
        check_account(principal, body.account_id)
        self._policy.check_model_parameters(body.model_creation_parameters, by_operator=principal.is_operator)
        check_vendor(body.model_vendor, self._adapters)
        check_model(body.model_vendor, body.model_creation_parameters)
        self._policy.check_settings_destination(body.model_vendor, body.model_creation_parameters)
        fields = body.model_dump(exclude={"account_id", "base_model_metadata", "request_schema"})
        fields["model_creation_parameters"] = body.model_creation_parameters or {}
        async with self._sessions() as session, session.begin():
            await self._check_name_free(session, principal, body.name)
            asked = body.request_schema.model_dump() if body.request_schema else {}
            request_schema = await check_links(session, principal.account_id, body, asked)
            model = await repo.create_model(
                session,
                account_id=principal.account_id,
                base_model_metadata=body.base_model_metadata.stored() if body.base_model_metadata else None,
                request_schema=request_schema,
                **fields,
                **creator(principal),
            )
            return model_out(model, deployment_count=0)

    async def get(
        self, principal: Principal, model_id: str, *, with_deployments: bool, with_group: bool = False
    ) -> ModelInstanceOut:
        async with self._sessions() as session:
            model = await find_model(session, principal, model_id)
            deployments, total = await repo.list_deployments(
                session,
                account_id=principal.account_id,
                model_id=model_id,
                page=1,
                limit=ALL,
                allow=principal.model_allow,
            )
            groups = await groups_of(session, principal, [model]) if with_group else {}
        return model_out(
            model,
            deployment_count=total,
            deployments=deployments if with_deployments else None,
            model_group=groups.get(model.model_group_id or ""),
        )

    async def list(
        self,
        principal: Principal,
        *,
        page: int,
        limit: int,
        model_type: str | None,
        sort_by: list[str] | None,
        with_deployments: bool,
        with_group: bool = False,
        model_group_id: str | None = None,
        account_id: str | None = None,
    ) -> Page[ModelInstanceOut]:
        order = parse_sort(sort_by, repo.MODEL_SORT_COLUMNS)
        check_account_filter(principal, account_id)
        async with self._sessions() as session:
            models, total = await repo.list_models(
                session,
                account_id=principal.account_id,
                page=page,
                limit=limit,
                model_type=model_type,
                model_group_id=model_group_id,
                sort_by=order,
                allow=principal.model_allow,
            )
            counts = await repo.deployment_counts(
                session, model_ids=[model.id for model in models], allow=principal.model_allow
            )
            groups = await groups_of(session, principal, models) if with_group else {}
            deployments = {
                model.id: await deployments_of(session, principal, model.id) for model in models if with_deployments
            }
        return page_of(
            models,
            lambda model: model_out(
                model,
                deployment_count=counts.get(model.id, 0),
                deployments=deployments.get(model.id),
                model_group=groups.get(model.model_group_id or ""),
            ),
            page=page,
            limit=limit,
            total=total,
        )

    async def update(self, principal: Principal, model_id: str, body: ModelUpdate) -> ModelInstanceOut:
        require_admin(principal)
        changes = body.model_dump(exclude_unset=True, exclude={"base_model_metadata", "request_schema"})
        self._policy.check_model_parameters(changes.get("model_creation_parameters"), by_operator=principal.is_operator)
        async with self._sessions() as session, session.begin():
            model = await find_model(session, principal, model_id)
            if "name" in changes and changes["name"] != model.name:
                await self._check_name_free(session, principal, changes["name"])
            if "model_vendor" in changes and changes["model_vendor"] != model.model_vendor:
                check_vendor(changes["model_vendor"], self._adapters)
            for name, value in changes.items():
                setattr(model, name, {} if name == "model_creation_parameters" and value is None else value)
            # The changed model as a whole, and each of its deployments with it, must still hold.
            check_model(model.model_vendor, model.model_creation_parameters)
            self._policy.check_settings_destination(model.model_vendor, model.model_creation_parameters)
            for deployment in await deployments_of(session, principal, model_id):
                if "model_vendor" in changes:  # a local checkpoint is for LLM Engine models only
                    check_configuration(model.model_vendor, deployment.vendor_configuration)
                check_deployment(
                    model,
                    parameters=deployment.model_creation_parameters,
                    configuration=deployment.vendor_configuration,
                )
                merged = merged_parameters(model, deployment.model_creation_parameters)
                self._policy.check_settings_destination(model.model_vendor, merged)
            if "base_model_metadata" in body.model_fields_set:
                model.base_model_metadata = body.base_model_metadata.stored() if body.base_model_metadata else None
            if "request_schema" in body.model_fields_set:
                model.request_schema = body.request_schema.model_dump() if body.request_schema else {}
            model.request_schema = await check_links(session, principal.account_id, model, model.request_schema)
            await session.flush()
            count = await repo.count_deployments(session, model_id=model_id)
            return model_out(model, deployment_count=count)

    async def delete(self, principal: Principal, model_id: str) -> None:
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            model = await find_model(session, principal, model_id)
            count = await repo.count_deployments(session, model_id=model_id)
            if count:
                raise Conflict(f"model {model_id} still has {count} deployment(s); delete them first")
            await repo.delete_row(session, model)

    async def usage(
        self, principal: Principal, model_name: str, *, start: datetime, end: datetime, chunks: int
    ) -> ModelUsage:
        """Token usage of every deployment of the account's model with this name (SDK
        `models.usage_statistics(model_name)`)."""
        async with self._sessions() as session:
            allow = principal.model_allow
            if await repo.model_named(session, account_id=principal.account_id, name=model_name, allow=allow) is None:
                raise NotFound(f"model {model_name!r} not found")
            deployment_ids = await repo.deployment_ids_of_models(
                session, account_id=principal.account_id, model_name=model_name, allow=allow
            )
        return await self._statistics.of(principal, deployment_ids, start=start, end=end, chunks=chunks)

    async def _check_name_free(self, session: AsyncSession, principal: Principal, name: str) -> None:
        # Models are called by name (/v1 routes, usage by model name, fallbacks): one per account.
        if await repo.model_named(session, account_id=principal.account_id, name=name) is not None:
            raise Conflict(f"a model named {name!r} already exists in account {principal.account_id}")
