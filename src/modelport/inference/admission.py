"""The service's admission step: turn a request about to be sent into a `Demand` on the
limits, admit it, and settle it when it ends. Settlement runs as its own task: it must
happen even when the request's own task is being cancelled (a client that went away
mid-stream).

It lives with the service, not in `limits/`, because a demand is read from a vendor
`Target` (a deployment's own limits, its prices, its context window): the limiters below
know keys, deployments and counts, nothing of vendors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from modelport.errors import ModelportError
from modelport.generation import GenerationCall
from modelport.limits.base import (
    NO_LIMITS,
    Admission,
    Demand,
    Limiter,
    LimitExceeded,
    LimitStoreUnavailable,
    response_headers,
)
from modelport.limits.pricing import prompt_token_bound, rendered_prompt_token_bound, reserved_cost_of
from modelport.principal import Limits, Principal
from modelport.prompts.render_pool import RenderScope, render_scope
from modelport.prompts.templates import render_chat_async
from modelport.vendors.base import Target

log = logging.getLogger(__name__)


def _without_tpm(limits: Limits) -> Limits:
    """`limits` with no tpm_limit (a cache hit generates no tokens); most have none."""
    return limits if limits.tpm_limit is None else replace(limits, tpm_limit=None)


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _counting_prompt(limits: Limits) -> Limits:
    """Of `limits`, those a larger prompt takes more of: tokens and budget."""
    return Limits(
        tpm_limit=limits.tpm_limit,
        max_budget=limits.max_budget,
        budget_duration=limits.budget_duration,
        budget_anchor=limits.budget_anchor,
    )


class LimitGate:
    def __init__(
        self,
        limiter: Limiter,
        *,
        on_rejection: Callable[[ModelportError], None] | None = None,
    ) -> None:
        self._limiter = limiter
        # Called with every refusal (429, or 503 while the store is down and a limit
        # fails closed): where a limit-rejection metric plugs in.
        self._on_rejection = on_rejection
        self._settling: set[asyncio.Task[None]] = set()

    def counts_prompt(self, principal: Principal, target: Target) -> bool:
        """Whether a limit counts this request's tokens or cost (a tpm limit or a
        budget): only then is it worth rendering a prompt to reserve it."""
        key = principal.key_limits or NO_LIMITS
        account = principal.account_limits or NO_LIMITS
        by_key = principal.key_id is not None and (key.tpm_limit is not None or key.max_budget is not None)
        by_account = account.tpm_limit is not None or account.max_budget is not None
        return by_key or by_account or _positive_int(target.parameters.get("tpm_limit")) is not None

    async def admit(
        self,
        principal: Principal,
        target: Target,
        call: GenerationCall,
        request_id: str,
        *,
        prompt_tokens: int | None = None,
    ) -> Admission | None:
        """None when no limit applies to this key and deployment (nothing to count).
        `prompt_tokens`: a bound of the prompt known better than the call's bytes (the
        gateway rendered the request's chat template to find it)."""
        key = principal.key_limits or NO_LIMITS
        # A deployment's own limits protect its upstream: `rpm_limit` / `tpm_limit` in
        # its (or its model's) model_creation_parameters.
        deployment_rpm = _positive_int(target.parameters.get("rpm_limit"))
        deployment_tpm = _positive_int(target.parameters.get("tpm_limit"))
        prompt_bound = prompt_tokens if prompt_tokens is not None else prompt_token_bound(call)
        # Decided with max_tokens (inference/calls.py `max_tokens_for`).
        response_bound = call.response_token_bound
        demand = Demand(
            request_id=request_id,
            key_id=principal.key_id,
            key=key,
            deployment_id=target.deployment_id,
            deployment_rpm=deployment_rpm,
            deployment_tpm=deployment_tpm,
            tokens=prompt_bound + response_bound,
            cost=reserved_cost_of(target.parameters, prompt_bound, response_bound),
            prompt_tokens=prompt_bound,
            account_id=principal.account_id,
            account=principal.account_limits or NO_LIMITS,
        )
        if not demand.limited:
            return None
        admission = await self._admit(demand)
        headers = response_headers.get()
        if headers is not None:
            headers.update(admission.headers())
        return admission

    async def admit_cached(
        self, principal: Principal, target: Target, request_id: str, cost: float
    ) -> Admission | None:
        """A request the response cache answers: one request for rpm and
        max_parallel_requests, and `cost` (the hit's price) for the budget. Never
        counted against tpm, by the key, its account or the deployment: it generates no
        tokens."""
        demand = Demand(
            request_id=request_id,
            key_id=principal.key_id,
            key=_without_tpm(principal.key_limits or NO_LIMITS),
            deployment_id=target.deployment_id,
            deployment_rpm=_positive_int(target.parameters.get("rpm_limit")),
            deployment_tpm=None,
            tokens=0,
            cost=cost,
            account_id=principal.account_id,
            account=_without_tpm(principal.account_limits or NO_LIMITS),
        )
        if not demand.limited:
            return None
        admission = await self._admit(demand)
        headers = response_headers.get()
        if headers is not None:
            headers.update(admission.headers())
        return admission

    async def reserve_rendered(self, admission: Admission | None, target: Target, prompt_tokens: int) -> None:
        """The gateway rendered the request's prompt (`prompt_tokens` at most) and is
        about to send it: reserve what that exceeds the reservation by, under the same
        rule as admission (LimitExceeded when the limits have no room left). Only the
        limits that count tokens or cost take part: the request is already counted
        once for rpm and for its parallel slot."""
        if admission is None:
            return
        demand = admission.demand
        reserved = demand.prompt_tokens + sum(top_up.demand.prompt_tokens for top_up in admission.top_ups)
        extra = prompt_tokens - reserved
        if extra <= 0:
            return
        top_up = Demand(
            request_id=f"{demand.request_id}:prompt{len(admission.top_ups) + 1}",
            key_id=demand.key_id,
            key=_counting_prompt(demand.key),
            deployment_id=demand.deployment_id,
            deployment_rpm=None,
            deployment_tpm=demand.deployment_tpm,
            tokens=extra,
            cost=reserved_cost_of(target.parameters, extra, 0),
            prompt_tokens=extra,
            account_id=demand.account_id,
            account=_counting_prompt(demand.account),
        )
        if top_up.limited:
            admission.top_ups.append(await self._admit(top_up))

    async def _admit(self, demand: Demand) -> Admission:
        try:
            return await self._limiter.admit(demand)
        except (LimitExceeded, LimitStoreUnavailable) as refused:
            if self._on_rejection is not None:
                self._on_rejection(refused)
            raise

    def settle(self, admission: Admission | None, *, tokens: int, cost: float) -> None:
        if admission is None or admission.settled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a stream finalized after its loop ended: its lease frees the slot
            return
        task = loop.create_task(self._settle(admission, tokens, cost))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, admission: Admission, tokens: int, cost: float) -> None:
        try:
            await self._limiter.settle(admission, tokens=tokens, cost=cost)
            # The real use is settled against the first admission; its top-ups give
            # back all they reserved.
            for top_up in admission.top_ups:
                await self._limiter.settle(top_up, tokens=0, cost=0.0)
        except Exception:
            log.exception("limits: settling request %s failed", admission.demand.request_id)

    async def drain(self) -> None:
        """Wait for the settlements under way."""
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    async def problem(self) -> str | None:
        """Why the limiter's shared counts cannot be reached now, or None."""
        return await self._limiter.problem()

    async def aclose(self) -> None:
        """Finish the settlements under way, then close the limiter."""
        await self.drain()
        await self._limiter.aclose()


async def admit(
    limits: LimitGate | None, principal: Principal, target: Target, call: GenerationCall, request_id: str
) -> Admission | None:
    """Count the request against its limits, reserving everything that becomes its
    prompt (see `limits/pricing.py`).

    Templates rendered for this request from here on (by the service or a vendor
    adapter, in this task) take the caller's account's share of the render pool, and
    the prompt they make is reserved again before it is sent
    (`LimitGate.reserve_rendered`): the message bytes alone said nothing of what a
    template writes. A `chat_template` in the request may instead be rendered by the
    upstream (vLLM takes one): when a limit counts tokens or cost, the gateway renders
    it here first, to reserve what it makes; when none does, nothing is rendered."""
    render_scope.set(RenderScope(account=principal.account_id))
    if limits is None:
        return None
    prompt_tokens = None
    if call.chat_template is not None and call.messages is not None and limits.counts_prompt(principal, target):
        rendered = await render_chat_async(
            call.chat_template, call.messages, bos_token="", eos_token="", extra=call.chat_template_kwargs
        )
        prompt_tokens = max(prompt_token_bound(call), rendered_prompt_token_bound(rendered, call))
    admission = await limits.admit(principal, target, call, request_id, prompt_tokens=prompt_tokens)
    if admission is not None:

        async def reserve(prompt: str) -> None:
            await limits.reserve_rendered(admission, target, rendered_prompt_token_bound(prompt))

        render_scope.set(RenderScope(account=principal.account_id, on_rendered=reserve))
    return admission
