"""Inference orchestration. Knows no HTTP.

For every request, whatever the vendor: find the deployment in the caller's account,
check the parameters against what the vendor can do, apply defaults and clamping,
call the adapter, remove stop sequences from what comes back (streamed or not, by the
same filter, so both give the same text), and shape the SDK's `CompletionResponse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.deployment_settings import target_of, with_parameters
from modelport.catalogue.secrets import SecretBox, resolve_secret
from modelport.errors import DeploymentUnavailable, InvalidRequest, ModelportError, NotFound
from modelport.generation import (
    FinishReason,
    GenerationCall,
    GenerationChunk,
    Sampling,
    TokenLogprob,
    join_tool_calls,
)
from modelport.inference.params import (
    CallBounds,
    check_bindings,
    check_call_bounds,
    check_supported,
    effective_sampling,
    without_parameters,
)
from modelport.inference.routing import Router
from modelport.limits.base import Admission
from modelport.limits.gate import LimitGate
from modelport.limits.pricing import cost_of, prompt_token_bound, prompt_token_guess, rendered_prompt_token_bound
from modelport.observability.requests import calling_vendor
from modelport.observability.shutdown import cut_off_status
from modelport.observability.timing import waiting_for_vendor
from modelport.policy import DEFAULT_KEY_ENVS, ServerPolicy
from modelport.principal import Principal
from modelport.prompts.render_pool import RenderScope, render_scope
from modelport.prompts.templates import render_chat_async, substitute_bindings_async
from modelport.schemas.inference import (
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    CompletionRequest,
    CompletionResponse,
    TopLogprob,
)
from modelport.schemas.inference import TokenLogprob as WireTokenLogprob
from modelport.schemas.retrieval import EmbeddingRequest, EmbeddingResponse, RerankingRequest, RerankingResponse
from modelport.stops import OutputFilter
from modelport.store import repo
from modelport.store.cache import CatalogueCache
from modelport.vendors.adapters import VendorRegistry
from modelport.vendors.base import Capabilities, Embedder, Embeddings, Reranker, Scores, Target, Vendor

CHAT_TYPES = frozenset({"CHAT_COMPLETION"})
TEXT_TYPES = frozenset({"CHAT_COMPLETION", "COMPLETION"})
# What an embeddings or rerankings adapter answers (both carry the tokens used).
InputResultT = TypeVar("InputResultT", Embeddings, Scores)


class UsageSink(Protocol):
    """Called once per finished request: (principal, deployment id, prompt tokens,
    response tokens, HTTP status, latency in ms), its cost in US dollars and its id.
    `estimated`: the vendor reported no counts, so they are modelport's estimate.
    Usage recording plugs in here."""

    def __call__(
        self,
        principal: Principal,
        deployment_id: str,
        prompt_tokens: int,
        response_tokens: int,
        status: int,
        latency_ms: float,
        /,
        *,
        estimated: bool = False,
        cost: float = 0.0,
        request_id: str | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class _DeploymentView:
    """What a request needs of a deployment and its model (cached between requests)."""

    status: str
    status_reason: str | None
    model_type: str
    request_schema: dict[str, Any]
    target: Target


@dataclass(slots=True)
class _Prepared:
    vendor: Vendor
    target: Target
    call: GenerationCall
    capabilities: Capabilities
    prompt: str
    wants_logprobs: bool
    request_id: str = ""
    admission: Admission | None = None  # what the limits counted; settled in _record
    text_deltas: int = 0  # streamed text pieces so far: what an abandoned stream is billed for


@dataclass(slots=True)
class _Piece:
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    response_tokens: int | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI deltas, passed on as they come
    stop_sequence: str | None = None  # on the last piece: the stop sequence that ended it, if seen
    estimated: bool = False


# What the compatible surfaces receive: the service's output before it is shaped into
# the SGP `CompletionResponse` (text, logprobs, and on the last piece the finish reason
# and token counts).
Generated = _Piece


async def _one(chunk: GenerationChunk) -> AsyncIterator[GenerationChunk]:
    yield chunk


class InferenceService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vendors: VendorRegistry,
        usage: UsageSink | None = None,
        secrets: SecretBox | None = None,
        cache: CatalogueCache | None = None,
        policy: ServerPolicy | None = None,
        router: Router | None = None,
        limits: LimitGate | None = None,
        call_bounds: CallBounds | None = None,
    ) -> None:
        self._sessions = sessions
        self._limits = limits
        self._call_bounds = call_bounds or CallBounds()
        self._vendors = vendors
        self._policy = policy or ServerPolicy(key_envs=frozenset(DEFAULT_KEY_ENVS))
        self._usage = usage
        self._secrets = secrets or SecretBox(None)
        # Without a shared cache (tests, scripts) every lookup goes to the database.
        self._cache = cache or CatalogueCache(ttl_seconds=0)
        self._router = router or Router(sessions, self._cache)

    async def complete(
        self, principal: Principal, deployment_id: str, request: CompletionRequest
    ) -> CompletionResponse:
        started = time.perf_counter()
        prepared = await self._prepare(principal, deployment_id, request)
        try:
            with waiting_for_vendor():
                result = await prepared.vendor.complete(prepared.target, prepared.call)
            pieces = [piece async for piece in self._filtered(prepared, _one(result))]
        except BaseException as exc:  # the client gone (cancelled) included: its limits are settled
            self._record(principal, deployment_id, prepared, _Piece(text=""), _failure_status(exc), started)
            raise
        final = pieces[-1]
        response = self._response(
            prepared,
            text="".join(piece.text for piece in pieces),
            logprobs=[entry for piece in pieces for entry in piece.logprobs],
            final=final,
        )
        self._record(principal, deployment_id, prepared, final, 200, started)
        return response

    async def stream(
        self, principal: Principal, deployment_id: str, request: CompletionRequest
    ) -> AsyncIterator[CompletionResponse]:
        """Validate and start; errors known before the first event are raised here."""
        started = time.perf_counter()
        prepared = await self._prepare(principal, deployment_id, request)
        try:
            with waiting_for_vendor():
                chunks = await prepared.vendor.stream(prepared.target, prepared.call)
        except BaseException as exc:
            self._record(principal, deployment_id, prepared, _Piece(text=""), _failure_status(exc), started)
            raise
        return self._stream_events(principal, deployment_id, prepared, chunks, started)

    async def _stream_events(
        self,
        principal: Principal,
        deployment_id: str,
        prepared: _Prepared,
        chunks: AsyncIterator[GenerationChunk],
        started: float,
    ) -> AsyncIterator[CompletionResponse]:
        pieces = self._recorded(principal, deployment_id, prepared, self._filtered(prepared, chunks), started)
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                yield self._response(prepared, text=piece.text, logprobs=piece.logprobs, final=piece)

    async def _recorded(
        self,
        principal: Principal,
        deployment_id: str,
        prepared: _Prepared,
        pieces: AsyncIterator[_Piece],
        started: float,
    ) -> AsyncGenerator[_Piece, None]:
        """The non-empty pieces of a stream; its usage is recorded when it ends, however it ends."""
        status = 499  # the client went away before the end, unless we get there
        final: _Piece | None = None
        try:
            async for piece in pieces:
                if piece.finish_reason is not None:
                    final = piece
                    status = 200
                elif not piece.text and not piece.logprobs and not piece.tool_calls:
                    continue
                yield piece
        except ModelportError as exc:
            status = exc.status_code
            raise
        except asyncio.CancelledError:
            status = cut_off_status()
            raise
        except Exception:
            status = 500
            raise
        finally:
            if final is None and (status == 499 or prepared.text_deltas):
                # Ended early (the client went away, or the vendor failed mid-stream):
                # billed for what was generated, the prompt at a fair guess.
                final = _Piece(
                    text="", prompt_tokens=prompt_token_guess(prepared.call), response_tokens=prepared.text_deltas
                )
            # Recorded before anything is awaited: in a cancelled task (the client gone, or
            # the shutdown's grace period over) every await here raises again, and a record
            # placed after one would be lost.
            self._record(principal, deployment_id, prepared, final or _Piece(text=""), status, started)
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()

    # --- the compatible surfaces: a model named, routed over its deployments -----------

    async def generate(
        self,
        principal: Principal,
        model: str,
        request: CompletionRequest,
        *,
        messages: tuple[dict[str, Any], ...] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Generated:
        """The whole answer from one of the deployments `model` names (see `routing`).
        `messages` (OpenAI-style dicts) replace `chat_history` + `prompt` for chat models;
        `options` are GenerationCall-level parameters (tools, response_format, ...)."""

        async def attempt(deployment_id: str) -> Generated:
            started = time.perf_counter()
            prepared = await self._prepare(principal, deployment_id, request, messages=messages, options=options)
            try:
                with waiting_for_vendor():
                    result = await prepared.vendor.complete(prepared.target, prepared.call)
                pieces = [piece async for piece in self._filtered(prepared, _one(result))]
            except BaseException as exc:  # the client gone (cancelled) included: its limits are settled
                self._record(principal, deployment_id, prepared, _Piece(text=""), _failure_status(exc), started)
                raise
            final = pieces[-1]
            self._record(principal, deployment_id, prepared, final, 200, started)
            tool_calls: list[dict[str, Any]] = []
            for piece in pieces:
                join_tool_calls(tool_calls, piece.tool_calls or [])
            return _Piece(
                text="".join(piece.text for piece in pieces),
                logprobs=[entry for piece in pieces for entry in piece.logprobs],
                tool_calls=tool_calls or None,
                finish_reason=final.finish_reason,
                prompt_tokens=final.prompt_tokens,
                response_tokens=final.response_tokens,
                stop_sequence=final.stop_sequence,
            )

        return await self._router.run(principal.account_id, model, attempt)

    async def generate_stream(
        self,
        principal: Principal,
        model: str,
        request: CompletionRequest,
        *,
        messages: tuple[dict[str, Any], ...] | None = None,
        options: dict[str, Any] | None = None,
    ) -> AsyncIterator[Generated]:
        """Start streaming from one of the deployments `model` names. A deployment that
        fails before its first piece is replaced by the next one, unseen by the caller;
        errors after that end the stream."""

        async def attempt(deployment_id: str) -> AsyncIterator[Generated]:
            started = time.perf_counter()
            prepared = await self._prepare(principal, deployment_id, request, messages=messages, options=options)
            try:
                with waiting_for_vendor():
                    chunks = await prepared.vendor.stream(prepared.target, prepared.call)
                pieces = self._recorded(principal, deployment_id, prepared, self._filtered(prepared, chunks), started)
            except BaseException as exc:
                self._record(principal, deployment_id, prepared, _Piece(text=""), _failure_status(exc), started)
                raise
            try:
                first = await anext(pieces)
            except BaseException:
                await pieces.aclose()
                raise
            return _prepend(first, pieces)

        return await self._router.run(principal.account_id, model, attempt)

    async def _filtered(self, prepared: _Prepared, chunks: AsyncIterator[GenerationChunk]) -> AsyncIterator[_Piece]:
        output = OutputFilter(prepared.call.sampling.stop_sequences)
        finish_reason: FinishReason | None = None
        prompt_tokens: int | None = None
        response_tokens: int | None = None
        estimated = False
        try:
            async for chunk in chunks:
                if chunk.text:
                    prepared.text_deltas += 1
                if not output.stopped:
                    text, entries = output.take(chunk)
                    if text or entries or chunk.tool_calls:
                        yield _Piece(text=text, logprobs=entries, tool_calls=chunk.tool_calls)
                if chunk.finish_reason is not None:
                    finish_reason = chunk.finish_reason
                if chunk.prompt_tokens is not None:
                    prompt_tokens = chunk.prompt_tokens
                if chunk.response_tokens is not None:
                    response_tokens = chunk.response_tokens
                estimated = estimated or chunk.estimated
                # A vendor that stops by itself ends right after the stop sequence and
                # reports its counts; one that does not must be cut off here.
                if output.stopped and not prepared.capabilities.stops_at_stop_sequences:
                    break
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        text, entries = output.finish()
        yield _Piece(
            text=text,
            logprobs=entries,
            finish_reason="stop" if output.stopped else (finish_reason or "stop"),
            prompt_tokens=prompt_tokens,
            response_tokens=response_tokens,
            stop_sequence=output.matched,
            estimated=estimated,
        )

    def _response(
        self, prepared: _Prepared, *, text: str, logprobs: list[TokenLogprob], final: _Piece
    ) -> CompletionResponse:
        choices = None
        if prepared.wants_logprobs:
            content = [
                WireTokenLogprob(
                    token=entry.token,
                    logprob=entry.logprob,
                    bytes=entry.bytes,
                    top_logprobs=[
                        TopLogprob(token=alt.token, logprob=alt.logprob, bytes=alt.bytes) for alt in entry.top_logprobs
                    ],
                )
                for entry in logprobs
            ]
            choices = [Choice(index=0, logprobs=ChoiceLogprobs(content=content))]
        return CompletionResponse(
            completions=[[prepared.prompt, [text]]],
            choices=choices,
            # The v4 response has no "tool_calls" reason (SPEC 3.7: it reads as "stop").
            finish_reason="stop" if final.finish_reason == "tool_calls" else final.finish_reason,
            prompt_tokens=final.prompt_tokens,
            response_tokens=final.response_tokens,
        )

    def _record(
        self, principal: Principal, deployment_id: str, prepared: _Prepared, final: _Piece, status: int, started: float
    ) -> None:
        self._record_usage(
            principal,
            deployment_id,
            prepared.target,
            final,
            status,
            started,
            admission=prepared.admission,
            request_id=prepared.request_id,
        )

    def _record_usage(
        self,
        principal: Principal,
        deployment_id: str,
        target: Target,
        final: _Piece,
        status: int,
        started: float,
        *,
        admission: Admission | None = None,
        request_id: str | None = None,
    ) -> None:
        prompt_tokens, response_tokens = final.prompt_tokens or 0, final.response_tokens or 0
        cost = cost_of(target.parameters, prompt_tokens, response_tokens)
        if self._limits is not None and admission is not None:
            self._limits.settle(admission, tokens=prompt_tokens + response_tokens, cost=cost)
        if self._usage is not None:
            self._usage(
                principal,
                deployment_id,
                prompt_tokens,
                response_tokens,
                status,
                (time.perf_counter() - started) * 1000,
                estimated=final.estimated,
                cost=cost,
                request_id=request_id,
            )

    async def embed(self, principal: Principal, deployment_id: str, request: EmbeddingRequest) -> EmbeddingResponse:
        """One vector per text, in order (SPEC 3.5)."""
        started = time.perf_counter()
        vendor, target = await self._retrieval_target(principal, deployment_id, "EMBEDDING", request)
        if not isinstance(vendor, Embedder):
            raise InvalidRequest(f"vendor {target.model_vendor} cannot embed texts on this modelport server")
        result = await self._input_call(
            principal, deployment_id, target, "\n".join(request.texts), started,
            lambda: vendor.embed(target, list(request.texts)),
        )  # fmt: skip
        return EmbeddingResponse(embeddings=result.vectors, tokens_used=result.tokens)

    async def embed_model(self, principal: Principal, model: str, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeddings from one of the deployments `model` names (see `routing`), for the
        compatible surfaces."""
        return await self._router.run(
            principal.account_id, model, lambda deployment_id: self.embed(principal, deployment_id, request)
        )

    async def rerank(self, principal: Principal, deployment_id: str, request: RerankingRequest) -> RerankingResponse:
        """One score per chunk, in the order the chunks were given (SPEC 3.6)."""
        started = time.perf_counter()
        vendor, target = await self._retrieval_target(principal, deployment_id, "RERANKING", request)
        if not isinstance(vendor, Reranker):
            raise InvalidRequest(f"vendor {target.model_vendor} cannot rerank on this modelport server")
        result = await self._input_call(
            principal, deployment_id, target, "\n".join([request.query, *request.chunks, request.instruction or ""]),
            started, lambda: vendor.rerank(target, request.query, list(request.chunks), request.instruction),
        )  # fmt: skip
        return RerankingResponse(chunk_scores=result.scores, tokens_used=result.tokens)

    async def _input_call(
        self,
        principal: Principal,
        deployment_id: str,
        target: Target,
        text: str,
        started: float,
        call: Callable[[], Awaitable[InputResultT]],
    ) -> InputResultT:
        """An embeddings or rerankings call, admitted, recorded and settled like text.
        It generates nothing, so its input (`text`) is all it can cost."""
        request_id = str(uuid.uuid4())
        admission = None
        if self._limits is not None:
            reserved = GenerationCall(sampling=Sampling(temperature=0.0, max_tokens=0), prompt=text)
            admission = await self._limits.admit(principal, target, reserved, request_id)
        try:
            with waiting_for_vendor():
                result = await call()
        except BaseException as exc:  # the client gone (cancelled) included: its limits are settled
            self._record_usage(
                principal, deployment_id, target, _Piece(text=""), _failure_status(exc), started,
                admission=admission, request_id=request_id,
            )  # fmt: skip
            raise
        self._record_usage(
            principal, deployment_id, target, _Piece(text="", prompt_tokens=result.tokens), 200, started,
            admission=admission, request_id=request_id,
        )  # fmt: skip
        return result

    async def _retrieval_target(
        self, principal: Principal, deployment_id: str, model_type: str, request: EmbeddingRequest | RerankingRequest
    ) -> tuple[Vendor, Target]:
        """The adapter and target of a READY deployment of `model_type`, with the request's
        bindings substituted and its credential resolved (as `_prepare` does for text)."""
        deployment = await self._deployment(principal.account_id, deployment_id)
        if deployment.model_type != model_type:
            raise InvalidRequest(
                f"deployment {deployment_id} serves a {deployment.model_type} model; "
                f"this endpoint needs a {model_type} model"
            )
        if deployment.status != "READY":
            reason = f": {deployment.status_reason}" if deployment.status_reason else ""
            raise DeploymentUnavailable(f"deployment {deployment_id} is {deployment.status}{reason}")
        target = deployment.target
        vendor = self._vendors.for_target(target)
        schema = deployment.request_schema.get("parameters") or []
        bindings = request.model_request_parameters.bindings if request.model_request_parameters else {}
        if schema or bindings:
            check_bindings(schema, bindings)
            parameters = await substitute_bindings_async(target.parameters, bindings, account=principal.account_id)
            target = replace(target, parameters=parameters)
        # The host this request goes to, bindings filled, must be one the server key is tied to.
        self._policy.check_server_key(target.model_vendor, target.parameters)
        secret_name = target.parameters.get("api_key_secret")
        if secret_name:
            target = replace(target, api_key=await self._api_key(principal.account_id, str(secret_name)))
        calling_vendor(target)
        return vendor, target

    async def _deployment(self, account_id: str, deployment_id: str) -> _DeploymentView:
        async def load() -> _DeploymentView | None:
            async with self._sessions() as session:
                found = await repo.get_deployment_with_model(
                    session, account_id=account_id, deployment_id=deployment_id
                )
            if found is None:
                return None
            deployment, model = found
            return _DeploymentView(
                status=deployment.status,
                status_reason=deployment.status_reason,
                model_type=model.model_type,
                request_schema=dict(model.request_schema or {}),
                target=target_of(deployment, model),
            )

        view = await self._cache.get_or_load(("deployment", account_id, deployment_id), load)
        if view is None:
            raise NotFound(f"model deployment {deployment_id} not found")
        return view

    async def _api_key(self, account_id: str, name: str) -> str:
        async def load() -> str:
            return await resolve_secret(self._sessions, self._secrets, account_id=account_id, name=name)

        api_key = await self._cache.get_or_load(("secret", account_id, name), load)
        assert api_key is not None
        return api_key

    async def _prepare(
        self,
        principal: Principal,
        deployment_id: str,
        request: CompletionRequest,
        *,
        messages: tuple[dict[str, Any], ...] | None = None,
        options: dict[str, Any] | None = None,
    ) -> _Prepared:
        deployment = await self._deployment(principal.account_id, deployment_id)
        if deployment.status != "READY":
            reason = f": {deployment.status_reason}" if deployment.status_reason else ""
            raise DeploymentUnavailable(f"deployment {deployment_id} is {deployment.status}{reason}")
        target = deployment.target
        vendor = self._vendors.for_target(target)
        capabilities = vendor.capabilities(target)
        is_chat = isinstance(request, ChatCompletionRequest)

        if deployment.model_type not in TEXT_TYPES:
            raise InvalidRequest(
                f"deployment {deployment_id} serves a {deployment.model_type} model, which does not generate text"
            )
        if not is_chat and request.chat_template is not None:
            raise InvalidRequest("chat_template applies to chat-completions only; /completions sends raw text")
        dropped = check_supported(request, capabilities, drop_unsupported=bool(target.settings.drop_unsupported_params))
        schema = deployment.request_schema.get("parameters") or []
        bindings = request.model_request_parameters.bindings if request.model_request_parameters else {}
        if schema or bindings:
            check_bindings(schema, bindings)
            # Rendered on the render pool, in the account's share, like chat templates.
            parameters = await substitute_bindings_async(target.parameters, bindings, account=principal.account_id)
            target = with_parameters(target, parameters)
        sampling = effective_sampling(request, capabilities, dropped=dropped)
        # Checked again here: the host, bindings filled, and the operator's current list.
        self._policy.check_server_key(target.model_vendor, target.parameters)
        secret_name = target.settings.api_key_secret
        if secret_name:
            api_key = await self._api_key(principal.account_id, secret_name)
            target = replace(target, api_key=api_key)

        if is_chat and deployment.model_type in CHAT_TYPES:
            assert isinstance(request, ChatCompletionRequest)
            if messages is None:
                messages = _messages(request, capabilities)
            else:
                _check_images(messages, capabilities)
            call = GenerationCall(
                sampling=sampling,
                messages=messages,
                chat_template=None if "chat_template" in dropped else request.chat_template,
                chat_template_kwargs=None if "chat_template_kwargs" in dropped else request.chat_template_kwargs,
            )
        else:
            # A completion model called on chat-completions answers the prompt alone
            # (the platform's documented behaviour: history is disregarded).
            call = GenerationCall(sampling=sampling, prompt=request.prompt)
        if options:  # the compatible surfaces' call-level parameters, checked like the others
            call = replace(call, **options)
            drop = bool(target.settings.drop_unsupported_params)
            call = without_parameters(call, check_supported(None, capabilities, drop_unsupported=drop, call=call))
        check_call_bounds(call, self._call_bounds)
        request_id = str(uuid.uuid4())
        # Last, once the request is known to be valid: from here on it is counted, and
        # every way it can end goes through _record, which settles it.
        admission = await self._admit(principal, target, call, request_id)
        calling_vendor(target)
        return _Prepared(
            vendor=vendor,
            target=target,
            call=call,
            capabilities=capabilities,
            prompt=request.prompt,
            wants_logprobs=sampling.logprobs,
            request_id=request_id,
            admission=admission,
        )

    async def _admit(
        self, principal: Principal, target: Target, call: GenerationCall, request_id: str
    ) -> Admission | None:
        """Count the request against its limits, reserving everything that becomes its
        prompt (see `limits/pricing.py`).

        Templates rendered for this request from here on (by this service or a vendor
        adapter, in this task) take the caller's account's share of the render pool, and
        the prompt they make is reserved again before it is sent
        (`LimitGate.reserve_rendered`): the message bytes alone said nothing of what a
        template writes. A `chat_template` in the request may instead be rendered by the
        upstream (vLLM takes one): when a limit counts tokens or cost, the gateway renders
        it here first, to reserve what it makes; when none does, nothing is rendered."""
        render_scope.set(RenderScope(account=principal.account_id))
        limits = self._limits
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


def _failure_status(exc: BaseException) -> int:
    if isinstance(exc, ModelportError):
        return exc.status_code
    # Cancelled: 503 when the shutdown's grace period ended it, 499 when its client left.
    return cut_off_status() if isinstance(exc, asyncio.CancelledError) else 500


def _messages(request: ChatCompletionRequest, capabilities: Capabilities) -> tuple[dict[str, Any], ...]:
    messages: list[dict[str, Any]] = []
    for message in request.chat_history:
        content = message.content
        if isinstance(content, list):
            if any(part.type != "text" for part in content):
                if not capabilities.accepts_images:
                    raise InvalidRequest(
                        f"this deployment's model (vendor {capabilities.vendor}) cannot take images; "
                        "send text content only"
                    )
                messages.append({"role": message.role, "content": [part.model_dump() for part in content]})
                continue
            content = "\n".join(part.text for part in content if part.type == "text")
        messages.append({"role": message.role, "content": content})
    messages.append({"role": "user", "content": request.prompt})
    return tuple(messages)


def _check_images(messages: tuple[dict[str, Any], ...], capabilities: Capabilities) -> None:
    for message in messages:
        content = message.get("content")
        has_images = isinstance(content, list) and any(part.get("type") != "text" for part in content)
        if has_images and not capabilities.accepts_images:
            raise InvalidRequest(
                f"this deployment's model (vendor {capabilities.vendor}) cannot take images; send text content only"
            )


async def _prepend(first: _Piece, rest: AsyncGenerator[_Piece, None]) -> AsyncIterator[_Piece]:
    async with contextlib.aclosing(rest):
        yield first
        async for piece in rest:
            yield piece
