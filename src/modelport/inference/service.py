"""Inference orchestration. Knows no HTTP, and no surface's wire shapes (`compat/`).

Every request, whatever the surface and the vendor, takes one path: resolve the
deployment (`resolve`: by id, or one of a model's deployments through `routing`),
check the parameters against what the vendor can do and build the call (`params`,
`calls`), then one metered call (`metering`: admit, call, filter stop sequences,
settle, record). The entries below differ only in what they call: a whole answer, a
stream, embeddings or scores.

A text request the response cache answers (`response_cache`: on for the key or the
model, deterministic, asked before) takes the same path up to the call, then is admitted
as a hit instead (`Meter.cache_hit`: a request at the hit's price, no tokens) and answered
with the kept generation, whole or streamed as the request asks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.catalogue.secrets import SecretBox
from modelport.errors import InvalidRequest
from modelport.generation import GenerationCall, Sampling, UsageSink
from modelport.inference import relay
from modelport.inference.admission import LimitGate
from modelport.inference.calls import TEXT_TYPES, WindowRules, text_call
from modelport.inference.metering import Generated, GeneratedStream, Meter, Metered, Priced, first_then_rest, joined
from modelport.inference.params import CallBounds, check_supported, effective_sampling
from modelport.inference.relay import Relayed
from modelport.inference.resolve import Resolver
from modelport.inference.response_cache import CacheEntry, CacheState, ResponseCache, replay
from modelport.inference.routing import Router
from modelport.observability.requests import leaving_out
from modelport.policy import DEFAULT_KEY_ENVS, ServerPolicy
from modelport.principal import Principal
from modelport.schemas.inference import ChatCompletionRequest, CompletionRequest
from modelport.schemas.retrieval import (
    EmbeddingRequest,
    EmbeddingResponse,
    RerankingRequest,
    RerankingResponse,
    TokenEmbeddingRequest,
)
from modelport.store.cache import CatalogueCache
from modelport.vendors.adapters import VendorRegistry
from modelport.vendors.base import (
    Capabilities,
    Embedder,
    EmbeddingInput,
    InputEmbedder,
    Reranker,
    ResponsesRelay,
    Vendor,
)
from modelport.vendors.counting import PromptCount, count_prompt
from modelport.vendors.http_vendor import HttpVendor

# Text the model does not generate: what a deployment of another type is told.
_NOT_TEXT = ", which does not generate text"
_GENERIC = frozenset({"GENERIC"})

COMPATIBLE_WINDOW = WindowRules(clamp=True)
CHAT_WINDOW = WindowRules(fill=True, clamp=True)


@dataclass(frozen=True, slots=True)
class TextRequest:
    """A text request, whatever its surface: the v4 request (sampling, stop sequences,
    request parameters), a chat's turns as OpenAI-style dicts (None: the prompt is sent
    as raw text), and GenerationCall-level options (tools, response_format, ...)."""

    request: CompletionRequest
    messages: tuple[dict[str, Any], ...] | None = None
    options: dict[str, Any] | None = None
    # What the surface left out of the call because it is only a hint no deployment here
    # acts on (e.g. "tools.web_search"): named to the caller (x-modelport-dropped), never
    # a silent change of meaning.
    dropped: tuple[str, ...] = ()
    # How max_tokens meets the context window (`calls.WindowRules`): a compatible
    # surface's by default (a max_tokens no prompt fits with is clamped); the SGP v4
    # routes pass `V4_WINDOW`, OpenAI's chat `CHAT_WINDOW` (no max_tokens: the window).
    window: WindowRules = COMPATIBLE_WINDOW
    # The caller sent `cache-control: no-cache`: the response cache is not read (its
    # fresh answer may still be kept).
    skip_cache_lookup: bool = False


@dataclass(slots=True)
class _Prepared:
    """A text request resolved, checked and admitted (`metered`), or answered from the
    response cache (`hit`); with what was left out of its call (`dropped`) and where its
    answer is kept (`cache`, None when it is not cached)."""

    metered: Metered | None
    vendor: Vendor
    capabilities: Capabilities
    dropped: tuple[str, ...]
    cache: CacheEntry | None = None
    hit: Generated | None = None


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
        default_max_tokens: int = 4096,
        response_cache: ResponseCache | None = None,
    ) -> None:
        # Without a shared cache (tests, scripts) every lookup goes to the database.
        cache = cache or CatalogueCache(ttl_seconds=0)
        self._resolver = Resolver(
            sessions,
            vendors,
            secrets=secrets or SecretBox(None),
            cache=cache,
            policy=policy or ServerPolicy(key_envs=frozenset(DEFAULT_KEY_ENVS)),
        )
        self._router = router or Router(sessions, cache)
        self._meter = Meter(limits, usage)
        self._call_bounds = call_bounds or CallBounds()
        # max_tokens for a request that sets none, to a vendor with no default of its own
        # and a model with no known context window (see `calls.max_tokens_for`).
        self._default_max_tokens = default_max_tokens
        # None: nothing is cached (tests, scripts); the server always has one.
        self._response_cache = response_cache

    # --- text, on the deployment the caller named (SGP v4) ------------------------------

    async def generate_at(self, principal: Principal, deployment_id: str, text: TextRequest) -> Generated:
        """The whole answer, with what was left out of the call or changed (`dropped`)
        and what the response cache did (`cache`)."""
        prepared = await self._text(principal, deployment_id, text, time.perf_counter())
        if prepared.hit is not None:
            return prepared.hit
        assert prepared.metered is not None
        generated = await self._meter.answer(prepared.metered, prepared.vendor, prepared.capabilities)
        generated.dropped = prepared.dropped
        if prepared.cache is not None and self._response_cache is not None:
            generated.cache = prepared.cache.state
            await self._response_cache.keep(prepared.cache, generated)
        return generated

    async def generate_stream_at(self, principal: Principal, deployment_id: str, text: TextRequest) -> GeneratedStream:
        """Validate and start; errors known before the first piece are raised here. The
        stream knows what was left out of the call or changed (`dropped`) before its
        first piece, and what the response cache did (`cache`)."""
        prepared = await self._text(principal, deployment_id, text, time.perf_counter())
        if prepared.hit is not None:
            return GeneratedStream(replay(prepared.hit), prepared.dropped, CacheState.HIT)
        assert prepared.metered is not None
        cache, entry = self._response_cache, prepared.cache
        if cache is None or entry is None:
            pieces = await self._meter.stream(prepared.metered, prepared.vendor, prepared.capabilities)
            return GeneratedStream(pieces, prepared.dropped)

        async def keep(seen: list[Generated]) -> None:  # a stream that ended complete
            await cache.keep(entry, joined(seen))

        pieces = await self._meter.stream(prepared.metered, prepared.vendor, prepared.capabilities, complete=keep)
        return GeneratedStream(pieces, prepared.dropped, entry.state)

    # --- text, on one of the deployments a model names (the compatible surfaces) --------

    async def generate(self, principal: Principal, model: str, text: TextRequest) -> Generated:
        """The whole answer from one of the deployments `model` names (see `routing`)."""
        return await self._router.run(
            principal.account_id,
            model,
            lambda deployment_id: self.generate_at(principal, deployment_id, text),
            allow=principal.model_allow,
        )

    async def generate_stream(self, principal: Principal, model: str, text: TextRequest) -> GeneratedStream:
        """Start streaming from one of the deployments `model` names. A deployment that
        fails before its first piece is replaced by the next one, unseen by the caller;
        errors after that end the stream."""

        async def attempt(deployment_id: str) -> GeneratedStream:
            started = await self.generate_stream_at(principal, deployment_id, text)
            return GeneratedStream(await first_then_rest(started), started.dropped, started.cache)

        return await self._router.run(principal.account_id, model, attempt, allow=principal.model_allow)

    async def relay_responses(
        self, principal: Principal, model: str, body: dict[str, Any], *, stream: bool
    ) -> Relayed | None:
        """A Responses API body passed whole to the upstream of one of the deployments
        `model` names, when that upstream serves the Responses API itself (`relay`);
        None when it does not, and the caller translates the body instead."""

        async def attempt(deployment_id: str) -> Relayed | None:
            started = time.perf_counter()
            resolved = await self._resolver.deployment(
                principal, deployment_id, serves=TEXT_TYPES, wrong_type=_NOT_TEXT
            )
            vendor = resolved.vendor
            if not (isinstance(vendor, ResponsesRelay) and vendor.relays_responses(resolved.target)):
                return None
            target = await self._resolver.bound(principal, resolved, {})
            call = relay.reservation(body, target.context_window, self._default_max_tokens)
            metered = await self._meter.admit(principal, deployment_id, target, call, started)
            return await relay.run(self._meter, metered, vendor, body, stream=stream)

        return await self._router.run(principal.account_id, model, attempt, allow=principal.model_allow)

    async def count_tokens(self, principal: Principal, model: str, text: TextRequest) -> PromptCount:
        """The prompt tokens of the call `text` would make to one of `model`'s deployments
        (vendors/counting.py). Nothing is generated, admitted against limits or recorded."""

        async def count(deployment_id: str) -> PromptCount:
            request = text.request
            resolved = await self._resolver.deployment(
                principal, deployment_id, serves=TEXT_TYPES, wrong_type=_NOT_TEXT
            )
            capabilities = resolved.vendor.capabilities(resolved.target)
            target = await self._resolver.bound(principal, resolved, _bindings(request))
            call, _changes = text_call(
                request,
                effective_sampling(request, capabilities, dropped=set()),
                model_type=resolved.model_type,
                capabilities=capabilities,
                target=target,
                dropped=set(),
                messages=text.messages,
                options=text.options,
                bounds=self._call_bounds,
                default_max_tokens=self._default_max_tokens,
                window=text.window,
            )
            return await count_prompt(resolved.vendor, target, call)

        return await self._router.run(principal.account_id, model, count, allow=principal.model_allow)

    async def execute(self, principal: Principal, deployment_id: str, body: dict[str, Any]) -> Priced[Any]:
        """A GENERIC model's deployment called with `body` as it is (SGP's
        `deployments.execute`): under the limits, and metered as one request of no tokens."""
        started = time.perf_counter()
        resolved = await self._resolver.deployment(
            principal, deployment_id, serves=_GENERIC, wrong_type="; execute is for GENERIC models"
        )
        vendor = resolved.vendor
        if not isinstance(vendor, HttpVendor):
            raise InvalidRequest(f"vendor {resolved.target.model_vendor} has no HTTP upstream to execute against")
        target = await self._resolver.bound(principal, resolved, {})
        reserved = GenerationCall(sampling=Sampling(temperature=0.0, max_tokens=0), prompt="")
        metered = await self._meter.admit(principal, deployment_id, target, reserved, started)
        return await self._meter.retrieve(metered, lambda: vendor.execute(target, body), lambda _answer: 0)

    # --- retrieval ------------------------------------------------------------------------

    async def embed(
        self,
        principal: Principal,
        deployment_id: str,
        request: EmbeddingRequest | TokenEmbeddingRequest,
        *,
        dimensions: int | None = None,
    ) -> Priced[EmbeddingResponse]:
        """One vector per input, in order (SPEC 3.5): texts, or (from `/v1/embeddings`)
        token ids, with `dimensions` where the vendor can shorten its vectors."""
        started = time.perf_counter()
        vendor, metered = await self._retrieval(
            principal, deployment_id, request, "EMBEDDING", started, dimensions=dimensions
        )
        if isinstance(request, EmbeddingRequest) and dimensions is None:
            assert isinstance(vendor, Embedder)
            read = await self._meter.retrieve(
                metered, lambda: vendor.embed(metered.target, list(request.texts)), lambda result: result.tokens
            )
        else:
            assert isinstance(vendor, InputEmbedder)
            if isinstance(request, EmbeddingRequest):
                given = EmbeddingInput(texts=list(request.texts), dimensions=dimensions)
            else:
                given = EmbeddingInput(token_ids=[list(ids) for ids in request.token_ids], dimensions=dimensions)
            read = await self._meter.retrieve(
                metered, lambda: vendor.embed_input(metered.target, given), lambda result: result.tokens
            )
        return Priced(EmbeddingResponse(embeddings=read.answer.vectors, tokens_used=read.answer.tokens), read.cost)

    async def embed_model(
        self,
        principal: Principal,
        model: str,
        request: EmbeddingRequest | TokenEmbeddingRequest,
        *,
        dimensions: int | None = None,
    ) -> Priced[EmbeddingResponse]:
        """Embeddings from one of the deployments `model` names (see `routing`), for the
        compatible surfaces."""
        return await self._router.run(
            principal.account_id,
            model,
            lambda deployment_id: self.embed(principal, deployment_id, request, dimensions=dimensions),
            allow=principal.model_allow,
        )

    async def rerank(
        self, principal: Principal, deployment_id: str, request: RerankingRequest
    ) -> Priced[RerankingResponse]:
        """One score per chunk, in the order the chunks were given (SPEC 3.6)."""
        started = time.perf_counter()
        vendor, metered = await self._retrieval(principal, deployment_id, request, "RERANKING", started)
        assert isinstance(vendor, Reranker)
        read = await self._meter.retrieve(
            metered,
            lambda: vendor.rerank(metered.target, request.query, list(request.chunks), request.instruction),
            lambda result: result.tokens,
        )
        return Priced(RerankingResponse(chunk_scores=read.answer.scores, tokens_used=read.answer.tokens), read.cost)

    # --- the steps ------------------------------------------------------------------------

    async def _text(
        self,
        principal: Principal,
        deployment_id: str,
        text: TextRequest,
        started: float,
    ) -> _Prepared:
        """Resolve the deployment, check the request against its vendor, build the call,
        and answer it from the response cache or admit it; with what the surface and the
        call's building left out or changed (the x-modelport-dropped header's names)."""
        request = text.request
        resolved = await self._resolver.deployment(principal, deployment_id, serves=TEXT_TYPES, wrong_type=_NOT_TEXT)
        target = resolved.target
        capabilities = resolved.vendor.capabilities(target)
        is_chat = isinstance(request, ChatCompletionRequest)
        if not is_chat and request.chat_template is not None:
            raise InvalidRequest("chat_template applies to chat-completions only; /completions sends raw text")
        dropped = check_supported(request, capabilities, drop_unsupported=bool(target.settings.drop_unsupported_params))
        target = await self._resolver.bound(principal, resolved, _bindings(request))
        call, changes = text_call(
            request,
            effective_sampling(request, capabilities, dropped=dropped),
            model_type=resolved.model_type,
            capabilities=capabilities,
            target=target,
            dropped=dropped,
            messages=text.messages,
            options=text.options,
            bounds=self._call_bounds,
            default_max_tokens=self._default_max_tokens,
            window=text.window,
        )
        # The surface names its own family's hints as dropped (it cannot know which
        # deployment will serve it); a deployment of that family does take them.
        passthrough = call.passthrough
        honoured = passthrough.hints if passthrough and passthrough.honoured_by(capabilities.vendor) else ()
        left_out = tuple(name for name in dict.fromkeys((*text.dropped, *changes)) if name not in honoured)
        leaving_out(left_out)
        cache = self._response_cache
        entry = cache.entry(principal, target, call, lookup=not text.skip_cache_lookup) if cache else None
        if cache is not None and entry is not None:
            kept = await cache.lookup(entry)
            if kept is not None:
                price = entry.hit_cost
                # Counted as a request at the hit's price, like any other (429 included).
                await self._meter.cache_hit(principal, deployment_id, target, price, started)
                # This request's own copy, decoded for it: filled in rather than copied.
                kept.dropped, kept.cost, kept.cache = left_out, price, CacheState.HIT
                return _Prepared(None, resolved.vendor, capabilities, left_out, entry, kept)
        # Last, once the request is known to be valid: from here on it is counted.
        metered = await self._meter.admit(principal, deployment_id, target, call, started)
        return _Prepared(metered, resolved.vendor, capabilities, left_out, entry)

    async def _retrieval(
        self,
        principal: Principal,
        deployment_id: str,
        request: EmbeddingRequest | TokenEmbeddingRequest | RerankingRequest,
        model_type: str,
        started: float,
        *,
        dimensions: int | None = None,
    ) -> tuple[Vendor, Metered]:
        """Resolve an embeddings or rerankings deployment and admit the call: it generates
        nothing, so its input is all it reserves."""
        serves, wrong_type = frozenset({model_type}), f"; this endpoint needs a {model_type} model"
        resolved = await self._resolver.deployment(principal, deployment_id, serves=serves, wrong_type=wrong_type)
        target = await self._resolver.bound(principal, resolved, _bindings(request))
        able, verb = (Embedder, "embed texts") if model_type == "EMBEDDING" else (Reranker, "rerank")
        if not isinstance(resolved.vendor, able):
            raise InvalidRequest(f"vendor {target.model_vendor} cannot {verb} on this modelport server")
        asks_more = isinstance(request, TokenEmbeddingRequest) or dimensions is not None
        if asks_more and not isinstance(resolved.vendor, InputEmbedder):
            param = "dimensions" if dimensions is not None else "input"
            what = "a `dimensions`" if dimensions is not None else "input as token ids"
            raise InvalidRequest(f"vendor {target.model_vendor} takes no {what} for embeddings", param=param)
        if isinstance(request, EmbeddingRequest):
            text = "\n".join(request.texts)
        elif isinstance(request, TokenEmbeddingRequest):
            # Each id is one token, and the reservation counts a byte as a token: one
            # byte per id reserves exactly the tokens the input holds.
            text = "\n".join("x" * len(ids) for ids in request.token_ids)
        else:
            text = "\n".join([request.query, *request.chunks, request.instruction or ""])
        reserved = GenerationCall(sampling=Sampling(temperature=0.0, max_tokens=0), prompt=text)
        return resolved.vendor, await self._meter.admit(principal, deployment_id, target, reserved, started)


def _bindings(
    request: CompletionRequest | EmbeddingRequest | TokenEmbeddingRequest | RerankingRequest,
) -> dict[str, Any]:
    parameters = request.model_request_parameters
    return parameters.bindings if parameters else {}
