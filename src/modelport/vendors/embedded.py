"""The embedded engine as a vendor: LLM Engine deployments with a local GGUF file."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from modelport.engine.client import EngineClient, EngineInfo
from modelport.engine.control_tokens import neutralise_messages
from modelport.engine.embedding import check_input_ids
from modelport.engine.grammar import DEFAULT_BOUNDS, GrammarBounds, grammar_for
from modelport.engine.pool import EnginePool
from modelport.engine.protocol import EnginePrompt, ModelLoadError, TextPrompt, TokenPrompt
from modelport.engine.sampler import check_token_ids
from modelport.engine.vocabulary import check_prompt_ids
from modelport.errors import DeploymentUnavailable, InvalidRequest
from modelport.generation import GenerationCall, GenerationChunk, Sampling
from modelport.prompts.templates import render_chat_async
from modelport.schemas.inference import MAX_SURFACE_STOP_SEQUENCES
from modelport.vendors.base import (
    OPTIONAL_PARAMETERS,
    TOKEN_PROMPT,
    Capabilities,
    ChunkStream,
    EmbeddingInput,
    Embeddings,
    Target,
    collect,
)
from modelport.vendors.embedded_tools import (
    as_tool_call,
    auto_sampling,
    call_sampling,
    decided_tool_call,
    forced_function_names,
    offered_function_names,
    tool_messages,
)

# LLM Engine's family default (SPEC 3.1), on the v4 routes only: elsewhere the engine
# fills what the window leaves, counted with the prompt's real tokens. The engine
# honours every sampling parameter, and response_format (a grammar), seed, logit_bias,
# and tools (vendors/embedded_tools.py), one call per answer (so parallel_tool_calls
# is honoured, whatever its value). Not n > 1: a GenerationChunk carries one choice.
# No hint it could act on: a reasoning effort is left out (the model does not think).
# A legacy completion's prompt as token ids is evaluated as given (`engine_prompt`).
CAPABILITIES = Capabilities(
    vendor="LLMENGINE",
    parameters=(OPTIONAL_PARAMETERS - {"n"}) | {"parallel_tool_calls"},
    max_temperature=2.0,
    default_max_tokens=100,
    platform_default=True,
    accepts_images=False,
    stops_at_stop_sequences=True,
    max_stop_sequences=MAX_SURFACE_STOP_SEQUENCES,
    content_kinds=frozenset({TOKEN_PROMPT}),
)

# Used only for a GGUF file that carries no chat template of its own.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class EmbeddedVendor:
    def __init__(self, pool: EnginePool, grammar_bounds: GrammarBounds = DEFAULT_BOUNDS) -> None:
        self._pool = pool
        self._grammar_bounds = grammar_bounds

    def capabilities(self, target: Target) -> Capabilities:
        return CAPABILITIES

    async def _model(self, target: Target) -> EngineClient:
        path = target.checkpoint
        if not path:
            raise DeploymentUnavailable(f"deployment {target.deployment_id} names no checkpoint_path")
        model = self._pool.get(str(path))
        if model is None:
            # READY in the database but unknown here: another worker process attached
            # it (`serve --workers N`). The supervisor has it loaded; connect to it.
            try:
                model = await self._pool.attach(target.deployment_id, str(path))
            except ModelLoadError as exc:
                raise DeploymentUnavailable(f"deployment {target.deployment_id} could not be loaded: {exc}") from exc
        return model

    async def stream(self, target: Target, call: GenerationCall) -> ChunkStream:
        sampling = engine_sampling(call, self._grammar_bounds)
        forced = forced_function_names(call)
        offered = None if forced else offered_function_names(call)
        if call.tools and call.messages is None:
            raise InvalidRequest("tools need a chat (messages), not a plain prompt", param="tools")
        if (forced or offered) and sampling.grammar is not None:
            raise InvalidRequest(
                "response_format and tools the model may call would both constrain the answer; give one "
                '(or tool_choice "none")',
                param="response_format",
            )
        if forced:
            sampling = call_sampling(sampling, call, forced, self._grammar_bounds)
        elif offered:
            sampling = auto_sampling(sampling, call, offered, self._grammar_bounds)
        engine = await self._model(target)
        info = engine.info
        if info.vocabulary is not None:
            # Checked here too (the engine checks again), so a bad id is a 400 before streaming.
            check_token_ids(sampling.logit_bias, info.vocabulary)
        prompt = await engine_prompt(call, info, describe_tools=bool(forced or offered))
        # The engine tokenizes and checks that the prompt and max_tokens fit its window:
        # it has the vocabulary, and one message there costs less than a round trip to ask.
        # Closing the stream cancels the generation in the engine.
        chunks = engine.generate(prompt=prompt, sampling=sampling, account=target.account_id)
        if forced:
            return as_tool_call(chunks)
        return decided_tool_call(chunks, offered) if offered else chunks

    async def complete(self, target: Target, call: GenerationCall) -> GenerationChunk:
        return await collect(await self.stream(target, call))

    async def count_prompt(self, target: Target, call: GenerationCall) -> int:
        """The prompt's tokens as `stream` would send them (vendors/counting.py)."""
        engine = await self._model(target)
        prompt = await engine_prompt(call, engine.info, describe_tools=bool(forced_function_names(call)))
        if isinstance(prompt, TokenPrompt):
            return len(prompt.ids)  # evaluated as given: each id is a prompt token
        return await engine.count(prompt.text, special=prompt.special)

    async def embed(self, target: Target, texts: list[str]) -> Embeddings:
        """Mean-pooled unit vectors from the deployment's GGUF file (engine/embedding.py)."""
        engine = await self._model(target)
        answer = await engine.embed(texts)
        return Embeddings(vectors=answer.vectors, tokens=answer.tokens)

    async def embed_input(self, target: Target, given: EmbeddingInput) -> Embeddings:
        """Token-id inputs are this model's own ids, embedded as they are; its vectors
        have the model's width, so `dimensions` is refused."""
        if given.dimensions is not None:
            raise InvalidRequest(
                "`dimensions`: the embedded model's vectors have its own width and cannot be shortened",
                param="dimensions",
            )
        if given.token_ids is None:
            return await self.embed(target, given.texts or [])
        engine = await self._model(target)
        vocabulary = engine.info.vocabulary
        if vocabulary is not None:
            # Checked here too (the engine checks again): a 400 before the engine's queue.
            check_input_ids(given.token_ids, vocabulary)
        answer = await engine.embed(tokens=given.token_ids)
        return Embeddings(vectors=answer.vectors, tokens=answer.tokens)

    async def aclose(self) -> None:
        await self._pool.close()


async def engine_prompt(call: GenerationCall, info: EngineInfo, *, describe_tools: bool) -> EnginePrompt:
    """What the engine evaluates: a legacy completion's token ids as given (400 naming
    `prompt` for one outside the vocabulary, checked here too so that it comes before
    any streaming; the engine checks again), else the text it tokenizes."""
    if call.prompt_token_ids is not None:
        if info.vocabulary is not None:
            check_prompt_ids(call.prompt_token_ids, info.vocabulary)
        return TokenPrompt(call.prompt_token_ids)
    text = await prompt_text(call, info, describe_tools=describe_tools)
    return TextPrompt(text, special=call.messages is not None)


async def prompt_text(call: GenerationCall, info: EngineInfo, *, describe_tools: bool) -> str:
    """The text the engine tokenizes: the rendered chat (control tokens allowed), or the raw prompt."""
    if call.messages is None:
        return call.prompt or ""
    return await render_chat_async(
        call.chat_template or info.chat_template or FALLBACK_CHAT_TEMPLATE,
        chat_turns(call, describe_tools=describe_tools, control_tokens=info.control_tokens),
        bos_token=info.bos_token,
        eos_token=info.eos_token,
        extra=call.chat_template_kwargs,
    )


def chat_turns(
    call: GenerationCall, *, describe_tools: bool, control_tokens: tuple[str, ...]
) -> tuple[dict[str, Any], ...]:
    """The turns the chat template renders: tool turns as text, for any template
    (vendors/embedded_tools.py), and no control token written by the caller. The
    rendered text is tokenized with control tokens allowed, for the template's own role
    markers; a `<|im_end|>` inside a message would end that turn for real.

    Everything the caller sent inside the messages is neutralised (contents, text parts,
    tool calls and results, the described tools), but not the template nor
    `chat_template_kwargs`: those are the template's own code and variables, written by
    the same caller who may send a whole `chat_template`, and meant to produce control
    tokens. Message contents are where other people's text (end users, documents, tool
    results) reaches the prompt."""
    return neutralise_messages(tool_messages(call, describe_tools=describe_tools), control_tokens)


def engine_sampling(call: GenerationCall, grammar_bounds: GrammarBounds = DEFAULT_BOUNDS) -> Sampling:
    """The call's sampling with what the engine itself must apply: the seed, the
    logit bias (token ids checked against the vocabulary by the engine) and the
    grammar for response_format (400 here if the schema cannot be one)."""
    return replace(
        call.sampling,
        seed=call.seed,
        logit_bias=_logit_bias(call.logit_bias),
        grammar=grammar_for(call.response_format, grammar_bounds),
    )


def _logit_bias(logit_bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    entries: list[tuple[int, float]] = []
    for token, bias in (logit_bias or {}).items():
        try:
            token_id = int(token)
        except ValueError:
            raise InvalidRequest(
                f"logit_bias keys are token ids; {token!r} is not an integer", param="logit_bias"
            ) from None
        if not -100 <= bias <= 100:
            raise InvalidRequest(f"logit_bias values lie in [-100, 100]; token {token} has {bias}", param="logit_bias")
        entries.append((token_id, float(bias)))
    return tuple(entries)
