"""The resolve step: a deployment id in the caller's account -> the adapter that serves
it and the `Target` to call, with the request's bindings filled and its credential found.

Every request the service serves (text, embeddings, rerankings; by deployment, or by
model through `routing`) resolves here, in two halves: `deployment` (it exists, it is
READY, it serves the kind of model the endpoint needs) and `bound` (the request's
`model_request_parameters` filled in, the settings read again from the filled
parameters, the server key's host checked, the account secret resolved). The text path
checks the parameters against the vendor's abilities in between, so its 400s keep their
order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.deployment_settings import target_of, with_parameters
from modelport.catalogue.secrets import SecretBox, resolve_secret
from modelport.errors import DeploymentUnavailable, InvalidRequest, NotFound
from modelport.inference.params import check_bindings
from modelport.policy import ServerPolicy
from modelport.principal import Principal
from modelport.prompts.templates import substitute_bindings_async
from modelport.schemas.catalogue import DeploymentStatus
from modelport.store import repo
from modelport.store.cache import CatalogueCache
from modelport.vendors.adapters import VendorRegistry
from modelport.vendors.base import Target, Vendor


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """What a request needs of a deployment and its model (cached between requests)."""

    status: str
    status_reason: str | None
    model_type: str
    request_schema: dict[str, Any]
    target: Target


@dataclass(frozen=True, slots=True)
class Resolved:
    """A READY deployment of the right kind, and the adapter that serves it."""

    deployment_id: str
    model_type: str
    request_schema: dict[str, Any]
    vendor: Vendor
    target: Target


def deployment_not_found(deployment_id: str) -> NotFound:
    """The one answer for a deployment that is missing or that the key may not use."""
    return NotFound(
        f"model deployment {deployment_id} not found: this route takes a deployment's id "
        "(GET /v4/model-deployments lists them); to call a model by its name, use /v1/chat/completions"
    )


class Resolver:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vendors: VendorRegistry,
        *,
        secrets: SecretBox,
        cache: CatalogueCache,
        policy: ServerPolicy,
    ) -> None:
        self._sessions = sessions
        self._vendors = vendors
        self._secrets = secrets
        self._cache = cache
        self._policy = policy

    async def deployment(
        self, principal: Principal, deployment_id: str, *, serves: frozenset[str], wrong_type: str
    ) -> Resolved:
        """The deployment, READY and of a model type in `serves`; else 404, 503, or 400
        ending with `wrong_type` (what the endpoint needs, for the caller to read)."""
        view = await self._view(principal.account_id, deployment_id)
        allow = principal.model_allow
        if allow is not None and not allow.allows(deployment_id, view.target.model_name, view.target.model_vendor):
            # Exactly an unknown id's answer: a key limited to some models must not learn
            # which others exist (SPEC 10). Checked here, where every request resolves.
            raise deployment_not_found(deployment_id)
        if view.status != DeploymentStatus.READY:
            reason = f": {view.status_reason}" if view.status_reason else ""
            raise DeploymentUnavailable(f"deployment {deployment_id} is {view.status}{reason}")
        if view.model_type not in serves:
            raise InvalidRequest(f"deployment {deployment_id} serves a {view.model_type} model{wrong_type}")
        return Resolved(
            deployment_id=deployment_id,
            model_type=view.model_type,
            request_schema=view.request_schema,
            vendor=self._vendors.for_target(view.target),
            target=view.target,
        )

    async def bound(self, principal: Principal, resolved: Resolved, bindings: dict[str, Any]) -> Target:
        """The target as this request calls it: bindings checked against the model's
        schema (422) and substituted, settings read again from what they filled (an
        `api_key_secret` or a `base_url` may be a placeholder), the server key's host
        checked, and the account secret resolved."""
        target = resolved.target
        schema = resolved.request_schema.get("parameters") or []
        if schema or bindings:
            check_bindings(schema, bindings)
            # Rendered on the render pool, in the account's share, like chat templates.
            parameters = await substitute_bindings_async(target.parameters, bindings, account=principal.account_id)
            target = with_parameters(target, parameters)
        # Checked again here: the host, bindings filled, and the operator's current list.
        self._policy.check_server_key(target.model_vendor, target.parameters)
        secret_name = target.settings.api_key_secret
        if secret_name:
            target = replace(target, api_key=await self._api_key(principal.account_id, secret_name))
        return target

    async def _view(self, account_id: str, deployment_id: str) -> DeploymentView:
        async def load() -> DeploymentView | None:
            async with self._sessions() as session:
                found = await repo.get_deployment_with_model(
                    session, account_id=account_id, deployment_id=deployment_id
                )
            if found is None:
                return None
            deployment, model = found
            return DeploymentView(
                status=deployment.status,
                status_reason=deployment.status_reason,
                model_type=model.model_type,
                request_schema=dict(model.request_schema or {}),
                target=target_of(deployment, model),
            )

        view = await self._cache.get_or_load(("deployment", account_id, deployment_id), load)
        if view is None:
            raise deployment_not_found(deployment_id)
        return view

    async def _api_key(self, account_id: str, name: str) -> str:
        async def load() -> str:
            return await resolve_secret(self._sessions, self._secrets, account_id=account_id, name=name)

        api_key = await self._cache.get_or_load(("secret", account_id, name), load)
        assert api_key is not None
        return api_key
