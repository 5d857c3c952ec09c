"""The service's side of the limits: turn a prepared request into a `Demand`, admit it,
and settle it when it ends. Settlement runs as its own task: it must happen even when
the request's own task is being cancelled (a client that went away mid-stream)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextvars import ContextVar

from modelport.auth import Principal
from modelport.errors import ModelportError
from modelport.generation import GenerationCall
from modelport.limits.base import Admission, Demand, KeyLimits, Limiter, LimitExceeded, LimitStoreUnavailable
from modelport.limits.pricing import cost_of, prompt_token_bound, response_token_bound
from modelport.vendors.base import Target

log = logging.getLogger(__name__)

NO_LIMITS = KeyLimits()

# Set by the HTTP layer for each request (observability/middleware.py): admission writes
# the x-ratelimit-remaining-* headers of the answer here.
response_headers: ContextVar[dict[str, str] | None] = ContextVar("modelport_ratelimit_headers", default=None)


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


class LimitGate:
    def __init__(
        self,
        limiter: Limiter,
        *,
        default_max_tokens: int = 4096,
        on_rejection: Callable[[ModelportError], None] | None = None,
    ) -> None:
        self._limiter = limiter
        self._default_max_tokens = default_max_tokens
        # Called with every refusal (429, or 503 while the store is down and a limit
        # fails closed): where a limit-rejection metric plugs in.
        self._on_rejection = on_rejection
        self._settling: set[asyncio.Task[None]] = set()

    async def admit(
        self, principal: Principal, target: Target, call: GenerationCall, request_id: str
    ) -> Admission | None:
        """None when no limit applies to this key and deployment (nothing to count)."""
        key = principal.key_limits or NO_LIMITS
        # A deployment's own limits protect its upstream: `rpm_limit` / `tpm_limit` in
        # its (or its model's) model_creation_parameters.
        deployment_rpm = _positive_int(target.parameters.get("rpm_limit"))
        deployment_tpm = _positive_int(target.parameters.get("tpm_limit"))
        prompt_bound = prompt_token_bound(call)
        response_bound = response_token_bound(call, target.context_window, self._default_max_tokens)
        demand = Demand(
            request_id=request_id,
            key_id=principal.key_id,
            key=key,
            deployment_id=target.deployment_id,
            deployment_rpm=deployment_rpm,
            deployment_tpm=deployment_tpm,
            tokens=prompt_bound + response_bound,
            cost=cost_of(target.parameters, prompt_bound, response_bound),
        )
        if not demand.limited:
            return None
        try:
            admission = await self._limiter.admit(demand)
        except (LimitExceeded, LimitStoreUnavailable) as refused:
            if self._on_rejection is not None:
                self._on_rejection(refused)
            raise
        headers = response_headers.get()
        if headers is not None:
            headers.update(admission.headers())
        return admission

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
        except Exception:
            log.exception("limits: settling request %s failed", admission.demand.request_id)

    async def drain(self) -> None:
        """Wait for the settlements under way."""
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    async def aclose(self) -> None:
        """Finish the settlements under way, then close the limiter."""
        await self.drain()
        await self._limiter.aclose()


__all__ = ["LimitGate", "response_headers"]
