"""The registry: accounts, keys, models and deployments. Knows no HTTP.

Reads are open to every member of the selected account; changes need its admin role.
A resource of another account is not found, exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.deployment_settings import (
    check_configuration,
    check_deployment,
    check_model,
    check_vendor,
    embedded_checkpoint,
    merged_parameters,
)
from modelport.catalogue.keys import display_prefix, generate_key, hash_key
from modelport.catalogue.links import check_links, groups_of
from modelport.engine.pool import EnginePool
from modelport.engine.protocol import ModelLoadError
from modelport.engine.supervisor import FailureCallback, RecoveryCallback
from modelport.errors import Conflict, Forbidden, InvalidRequest, NotFound, ValidationFailed, field_error
from modelport.policy import ServerPolicy
from modelport.principal import Principal
from modelport.schemas.catalogue import (
    DeploymentCreate,
    DeploymentOut,
    DeploymentUpdate,
    KeyCreated,
    KeyOut,
    KeyUpdate,
    ModelCreate,
    ModelInstanceOut,
    ModelUpdate,
    Page,
)
from modelport.store import db, repo
from modelport.store.tables import ApiKey, Deployment, Model, utcnow

log = logging.getLogger(__name__)


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden(f"this needs the admin role in account {principal.account_id}; the key's role is member")


def parse_sort(values: list[str] | None, allowed: frozenset[str]) -> list[tuple[str, bool]]:
    """`["name:asc", "created_at:desc"]` (the SDK sends them comma-joined) -> columns."""
    order: list[tuple[str, bool]] = []
    for value in (part for item in values or [] for part in item.split(",") if part):
        column, _, direction = value.partition(":")
        if column not in allowed or direction not in {"asc", "desc"}:
            raise field_error(
                ["query", "sort_by"],
                f"cannot sort by {value!r}; sortable: {', '.join(sorted(allowed))} with :asc or :desc",
                "sort_by",
            )
        order.append((column, direction == "desc"))
    return order


def _creator(principal: Principal) -> dict[str, str]:
    return {"created_by_user_id": principal.identity_id, "created_by_identity_type": principal.identity_type}


def _check_account(principal: Principal, account_id: str | None) -> None:
    # The SDK's create calls may name an account; it must be the selected one.
    if account_id is not None and account_id != principal.account_id:
        raise Forbidden(f"account_id {account_id} is not the selected account {principal.account_id}")


def _check_account_filter(principal: Principal, account_id: str | None) -> None:
    """Lists are of the selected account; an `account_id` filter naming another one
    is refused rather than answered with that account's resources or an empty page."""
    if account_id is not None and account_id != principal.account_id:
        raise field_error(
            ["query", "account_id"],
            f"{account_id} is not the selected account {principal.account_id}; "
            "select it with the x-selected-account-id header",
            "account_filter",
        )


class Catalogue:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pool: EnginePool | None,
        policy: ServerPolicy | None = None,
        *,
        adapters: Callable[[str], bool] = lambda _name: True,
    ) -> None:
        self._sessions = sessions
        self._pool = pool
        self._policy = policy or ServerPolicy()
        # Whether an adapter is registered under a name: a vendor without one is refused.
        self._adapters = adapters
        self._loads: set[asyncio.Task[None]] = set()

    # --- accounts and keys --------------------------------------------------------

    async def create_account(self, principal: Principal, *, name: str) -> str:
        if not (principal.is_operator or self._policy.account_self_service):
            # Its creator becomes the new account's admin, with everything an admin may
            # point the server at: that is the operator's to hand out.
            raise Forbidden("only the server's operators may create accounts (MODELPORT_ACCOUNT_SELF_SERVICE is off)")
        async with self._sessions() as session, session.begin():
            account = await repo.create_account(session, name=name)
            await repo.add_membership(session, identity_id=principal.identity_id, account_id=account.id, role="admin")
            return account.id

    async def create_key(
        self, principal: Principal, *, role: str, name: str, limits: dict[str, Any] | None = None
    ) -> KeyCreated:
        require_admin(principal)
        return await create_key(self._sessions, account_id=principal.account_id, role=role, name=name, limits=limits)

    async def list_keys(self, principal: Principal) -> list[KeyOut]:
        require_admin(principal)
        async with self._sessions() as session:
            keys = await repo.list_keys(
                session,
                account_id=principal.account_id,
                identity_id=principal.identity_id,
                everyone=principal.is_operator,
            )
            spend = await repo.spend_by_key(session, key_ids=[key.id for key, _ in keys])
            return [_key_out(key, role, spend.get(key.id, 0.0)) for key, role in keys]

    async def revoke_key(self, principal: Principal, key_id: str) -> KeyOut:
        """An admin revokes the account's service-account keys and their own; another
        user's key only that user or an operator (a user may belong to many accounts,
        and no admin of one of them may lock them out of the others)."""
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            found = await repo.get_key_in_account(
                session,
                account_id=principal.account_id,
                key_id=key_id,
                identity_id=principal.identity_id,
                everyone=principal.is_operator,
            )
            if found is None:
                raise NotFound(f"API key {key_id} not found")
            key, role = found
            if key.revoked_at is None:
                key.revoked_at = utcnow()
            return _key_out(key, role)

    async def update_key(self, principal: Principal, key_id: str, body: KeyUpdate) -> KeyOut:
        """Change a key's name or limits (the keys an admin may revoke, they may change)."""
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            found = await repo.get_key_in_account(
                session,
                account_id=principal.account_id,
                key_id=key_id,
                identity_id=principal.identity_id,
                everyone=principal.is_operator,
            )
            if found is None:
                raise NotFound(f"API key {key_id} not found")
            key, role = found
            apply_key_changes(key, body.model_dump(exclude_unset=True))
            spend = await repo.spend_by_key(session, key_ids=[key.id])
            return _key_out(key, role, spend.get(key.id, 0.0))

    # --- models -------------------------------------------------------------------

    async def create_model(self, principal: Principal, body: ModelCreate) -> ModelInstanceOut:
        require_admin(principal)
        _check_account(principal, body.account_id)
        self._policy.check_model_parameters(body.model_creation_parameters, by_operator=principal.is_operator)
        check_vendor(body.model_vendor, self._adapters)
        check_model(body.model_vendor, body.model_creation_parameters)
        self._policy.check_settings_destination(body.model_vendor, body.model_creation_parameters)
        fields = body.model_dump(exclude={"account_id", "base_model_metadata", "request_schema"})
        fields["model_creation_parameters"] = body.model_creation_parameters or {}
        async with self._sessions() as session, session.begin():
            await self._check_name_free(session, principal, body.name)
            request_schema = await check_links(
                session,
                principal.account_id,
                model_type=body.model_type,
                model_group_id=body.model_group_id,
                model_template_id=body.model_template_id,
                parameters=body.model_creation_parameters,
                request_schema=body.request_schema.model_dump() if body.request_schema else {},
            )
            model = await repo.create_model(
                session,
                account_id=principal.account_id,
                base_model_metadata=body.base_model_metadata.stored() if body.base_model_metadata else None,
                request_schema=request_schema,
                **fields,
                **_creator(principal),
            )
            return ModelInstanceOut.of(model, deployment_count=0)

    async def get_model(
        self, principal: Principal, model_id: str, *, with_deployments: bool, with_group: bool = False
    ) -> ModelInstanceOut:
        async with self._sessions() as session:
            model = await self._model(session, principal, model_id)
            deployments, total = await repo.list_deployments(
                session, account_id=principal.account_id, model_id=model_id, page=1, limit=10_000
            )
            groups = await groups_of(session, principal, [model]) if with_group else {}
        return ModelInstanceOut.of(
            model,
            deployment_count=total,
            deployments=deployments if with_deployments else None,
            model_group=groups.get(model.model_group_id or ""),
        )

    async def list_models(
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
        _check_account_filter(principal, account_id)
        async with self._sessions() as session:
            models, total = await repo.list_models(
                session,
                account_id=principal.account_id,
                page=page,
                limit=limit,
                model_type=model_type,
                model_group_id=model_group_id,
                sort_by=order,
            )
            counts = await repo.deployment_counts(session, model_ids=[model.id for model in models])
            groups = await groups_of(session, principal, models) if with_group else {}
            items = []
            for model in models:
                deployments = None
                if with_deployments:
                    deployments, _ = await repo.list_deployments(
                        session, account_id=principal.account_id, model_id=model.id, page=1, limit=10_000
                    )
                items.append(
                    ModelInstanceOut.of(
                        model,
                        deployment_count=counts.get(model.id, 0),
                        deployments=deployments,
                        model_group=groups.get(model.model_group_id or ""),
                    )
                )
        return Page(items=items, current_page=page, items_per_page=limit, total_item_count=total)

    async def update_model(self, principal: Principal, model_id: str, body: ModelUpdate) -> ModelInstanceOut:
        require_admin(principal)
        changes = body.model_dump(exclude_unset=True, exclude={"base_model_metadata", "request_schema"})
        self._policy.check_model_parameters(changes.get("model_creation_parameters"), by_operator=principal.is_operator)
        async with self._sessions() as session, session.begin():
            model = await self._model(session, principal, model_id)
            if "name" in changes and changes["name"] != model.name:
                await self._check_name_free(session, principal, changes["name"])
            if "model_vendor" in changes and changes["model_vendor"] != model.model_vendor:
                check_vendor(changes["model_vendor"], self._adapters)
            for name, value in changes.items():
                setattr(model, name, {} if name == "model_creation_parameters" and value is None else value)
            # The changed model as a whole, and each of its deployments with it, must still hold.
            check_model(model.model_vendor, model.model_creation_parameters)
            self._policy.check_settings_destination(model.model_vendor, model.model_creation_parameters)
            deployments, _ = await repo.list_deployments(
                session, account_id=principal.account_id, model_id=model_id, page=1, limit=10_000
            )
            for deployment in deployments:
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
            model.request_schema = await check_links(
                session,
                principal.account_id,
                model_type=model.model_type,
                model_group_id=model.model_group_id,
                model_template_id=model.model_template_id,
                parameters=model.model_creation_parameters,
                request_schema=model.request_schema,
            )
            await session.flush()
            count = await repo.count_deployments(session, model_id=model_id)
            return ModelInstanceOut.of(model, deployment_count=count)

    async def delete_model(self, principal: Principal, model_id: str) -> None:
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            model = await self._model(session, principal, model_id)
            count = await repo.count_deployments(session, model_id=model_id)
            if count:
                raise Conflict(f"model {model_id} still has {count} deployment(s); delete them first")
            await repo.delete_row(session, model)

    # --- deployments ----------------------------------------------------------------

    async def create_deployment(self, principal: Principal, model_id: str, body: DeploymentCreate) -> DeploymentOut:
        require_admin(principal)
        _check_account(principal, body.account_id)
        self._policy.check_model_parameters(body.model_creation_parameters, by_operator=principal.is_operator)
        async with self._sessions() as session, session.begin():
            model = await self._model(session, principal, model_id)
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
                status="PENDING" if embedded else "READY",
                vendor_configuration=configuration,
                model_creation_parameters=body.model_creation_parameters,
                deployment_metadata=body.deployment_metadata,
                **_creator(principal),
            )
        if embedded:
            await self._load(deployment, embedded, wait=body.wait_for_ready)
        return await self.get_deployment(principal, model_id, deployment.id)

    async def get_deployment(self, principal: Principal, model_id: str, deployment_id: str) -> DeploymentOut:
        async with self._sessions() as session:
            return DeploymentOut.of(await self._deployment(session, principal, model_id, deployment_id))

    async def list_deployments(
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
        _check_account_filter(principal, account_id)
        async with self._sessions() as session:
            if model_id is not None:
                await self._model(session, principal, model_id)
            rows, total = await repo.list_deployments(
                session, account_id=principal.account_id, model_id=model_id, page=page, limit=limit, sort_by=order
            )
        return Page(
            items=[DeploymentOut.of(row) for row in rows],
            current_page=page,
            items_per_page=limit,
            total_item_count=total,
        )

    async def update_deployment(
        self, principal: Principal, model_id: str, deployment_id: str, body: DeploymentUpdate
    ) -> DeploymentOut:
        require_admin(principal)
        changes = body.model_dump(exclude_unset=True, exclude={"wait_for_ready"})
        self._policy.check_model_parameters(changes.get("model_creation_parameters"), by_operator=principal.is_operator)
        async with self._sessions() as session, session.begin():
            deployment = await self._deployment(session, principal, model_id, deployment_id)
            model = await self._model(session, principal, model_id)
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
                deployment.status, deployment.status_reason = "PENDING", None
        if after != before:
            if self._pool is not None:
                await self._pool.detach(deployment_id)
            if after:
                await self._load(deployment, after, wait=body.wait_for_ready)
        return await self.get_deployment(principal, model_id, deployment_id)

    async def delete_deployment(self, principal: Principal, model_id: str, deployment_id: str) -> None:
        require_admin(principal)
        async with self._sessions() as session, session.begin():
            deployment = await self._deployment(session, principal, model_id, deployment_id)
            await repo.delete_row(session, deployment)
        if self._pool is not None:
            await self._pool.detach(deployment_id)

    async def deployment_exists(self, principal: Principal, deployment_id: str) -> None:
        async with self._sessions() as session:
            if await repo.get_deployment(session, account_id=principal.account_id, deployment_id=deployment_id) is None:
                raise NotFound(f"model deployment {deployment_id} not found")

    # --- helpers ------------------------------------------------------------------

    def _check_checkpoint(self, checkpoint: str) -> None:
        try:
            self._policy.resolve_checkpoint(checkpoint)
        except InvalidRequest as exc:
            raise ValidationFailed(f"vendor_configuration.checkpoint_path: {exc.detail}") from exc

    async def _check_name_free(self, session: AsyncSession, principal: Principal, name: str) -> None:
        # Models are called by name (/v1 routes, usage by model name, fallbacks): one per account.
        if await repo.model_named(session, account_id=principal.account_id, name=name) is not None:
            raise Conflict(f"a model named {name!r} already exists in account {principal.account_id}")

    async def _model(self, session: AsyncSession, principal: Principal, model_id: str) -> Model:
        model = await repo.get_model(session, account_id=principal.account_id, model_id=model_id)
        if model is None:
            raise NotFound(f"model {model_id} not found")
        return model

    async def _deployment(
        self, session: AsyncSession, principal: Principal, model_id: str, deployment_id: str
    ) -> Deployment:
        deployment = await repo.get_deployment(session, account_id=principal.account_id, deployment_id=deployment_id)
        if deployment is None or deployment.model_id != model_id:
            raise NotFound(f"deployment {deployment_id} of model {model_id} not found")
        return deployment

    async def watch_resets(self, read_generation: Callable[[], Awaitable[int]], every: float) -> None:
        """Run until cancelled: each time the registry changes, load the embedded
        deployments that are PENDING and not being loaded here, such as one an operator
        reset (`modelport deployments reset`, which only writes the database)."""
        if self._pool is None:
            return
        seen: int | None = None
        while True:
            try:
                generation = await read_generation()
                if generation != seen:
                    seen = generation
                    await self._load_pending()
            except Exception as exc:  # the database is down: try again at the next turn
                log.warning("could not look for deployments to load (%s)", exc)
            await asyncio.sleep(every)

    async def _load_pending(self) -> None:
        if self._pool is None:
            return
        loading = {task.get_name() for task in self._loads}
        async with self._sessions() as session:
            pending = await repo.live_deployments(session, ("PENDING",))
        for deployment, model_vendor in pending:
            checkpoint = embedded_checkpoint(model_vendor, deployment.vendor_configuration)
            if checkpoint and f"load:{deployment.id}" not in loading:
                log.info("loading deployment %s (PENDING)", deployment.id)
                await self._load(deployment, checkpoint, wait=False)

    async def _load(self, deployment: Deployment, checkpoint: str, *, wait: bool) -> None:
        """Load a GGUF file for a deployment: PENDING -> READY, or FAILED with the reason."""

        async def load() -> None:
            if self._pool is None:
                status, reason = "FAILED", "the embedded engine is disabled on this server (MODELPORT_EMBEDDED_ENGINE)"
            else:
                try:
                    await self._pool.attach(deployment.id, checkpoint, retry=True)
                    status, reason = "READY", None
                except ModelLoadError as exc:
                    log.warning("deployment %s failed to load: %s", deployment.id, exc)
                    status, reason = "FAILED", str(exc)
            async with self._sessions() as session, session.begin():
                await repo.set_deployment_status(session, deployment_id=deployment.id, status=status, reason=reason)

        if wait:
            await load()
        else:
            task = asyncio.create_task(load(), name=f"load:{deployment.id}")
            self._loads.add(task)
            task.add_done_callback(self._loads.discard)


def deployment_status_recorders(database_url: str) -> tuple[FailureCallback, RecoveryCallback]:
    """For the engine supervisor: one marks FAILED, with the reason, the deployments of
    an engine in a crash loop (or that cannot load its file), the other marks them READY
    again once it runs. They open their own database connection on first use, on the
    supervisor's event loop."""
    sessions: async_sessionmaker[AsyncSession] | None = None

    def opened() -> async_sessionmaker[AsyncSession]:
        nonlocal sessions
        if sessions is None:
            sessions = db.make_sessions(db.make_engine(database_url))
        return sessions

    async def failed(deployment_ids: list[str], reason: str) -> None:
        async with opened()() as session, session.begin():
            for deployment_id in deployment_ids:
                await repo.set_deployment_status(session, deployment_id=deployment_id, status="FAILED", reason=reason)

    async def recovered(deployment_ids: list[str]) -> None:
        async with opened()() as session, session.begin():
            for deployment_id in deployment_ids:
                deployment = await session.get(Deployment, deployment_id)
                if deployment is not None and deployment.status == "FAILED":  # not one an admin is changing
                    deployment.status, deployment.status_reason = "READY", None

    return failed, recovered


async def reset_deployment(sessions: async_sessionmaker[AsyncSession], deployment_id: str) -> Deployment | None:
    """An operator's reset (`modelport deployments reset`): the deployment is PENDING
    again, without a reason, and a running server loads it within a moment
    (`Catalogue.watch_resets`; an engine in its crash-loop backoff is started at once),
    a stopped one at its next start. A deployment of an upstream vendor has nothing to
    load: it is READY at once. None when there is no such deployment."""
    async with sessions() as session, session.begin():
        deployment = await session.get(Deployment, deployment_id)
        if deployment is None:
            return None
        model = await session.get(Model, deployment.model_id)
        embedded = model is not None and embedded_checkpoint(model.model_vendor, deployment.vendor_configuration)
        deployment.status, deployment.status_reason = ("PENDING" if embedded else "READY"), None
        return deployment


def _check_deployable(model: Model, adapters: Callable[[str], bool]) -> None:
    if model.model_vendor is None:
        raise field_error(
            ["body", "model_vendor"],
            f"model {model.id} names no model_vendor; set one (PATCH the model) to deploy it",
            "missing",
        )
    check_vendor(model.model_vendor, adapters)  # a model stored before vendors were checked


def _key_out(key: ApiKey, role: str, spend: float = 0.0) -> KeyOut:
    return KeyOut(
        id=key.id,
        name=key.name,
        display_prefix=key.display_prefix,
        role=role,
        identity_id=key.identity_id,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        max_parallel_requests=key.max_parallel_requests,
        max_budget=key.max_budget,
        budget_duration=key.budget_duration,
        spend=spend,
    )


def apply_key_changes(key: ApiKey, changes: dict[str, Any]) -> None:
    """Set a key's name and limits (the API's PATCH and `modelport keys update`)."""
    if "name" in changes and changes["name"] is None:
        del changes["name"]
    if "budget_duration" in changes and changes["budget_duration"] != key.budget_duration:
        key.budget_started_at = utcnow()  # a new kind of window starts counting now
    for field, value in changes.items():
        setattr(key, field, value)


async def create_key(
    sessions: async_sessionmaker[AsyncSession],
    *,
    account_id: str,
    role: str,
    name: str,
    limits: dict[str, Any] | None = None,
) -> KeyCreated:
    """A new service-account identity in `account_id` with `role`, and its key (shown once)."""
    async with sessions() as session, session.begin():
        if await repo.get_account(session, account_id=account_id) is None:
            raise NotFound(f"account {account_id} not found")
        identity = await repo.create_identity(
            session, name=name or "service account", identity_type="service_account", default_account_id=account_id
        )
        await repo.add_membership(session, identity_id=identity.id, account_id=account_id, role=role)
        secret = generate_key()
        key = await repo.create_api_key(
            session,
            identity_id=identity.id,
            key_hash=hash_key(secret),
            display_prefix=display_prefix(secret),
            name=name,
            limits=limits,
        )
        return KeyCreated(**_key_out(key, role).model_dump(), key=secret)
