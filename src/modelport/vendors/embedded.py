"""The embedded engine as a vendor: LLM Engine deployments with a local GGUF file."""

from __future__ import annotations

from collections.abc import AsyncIterator

from modelport.engine.client import EngineClient
from modelport.engine.pool import EnginePool
from modelport.engine.protocol import ModelLoadError
from modelport.errors import DeploymentUnavailable
from modelport.generation import GenerationCall, GenerationChunk
from modelport.templates import render_chat_async
from modelport.vendors.base import OPTIONAL_PARAMETERS, Capabilities, Embeddings, Target, collect

# LLM Engine's family default (SPEC 3.1); the engine honours every sampling parameter.
CAPABILITIES = Capabilities(
    vendor="LLMENGINE",
    parameters=OPTIONAL_PARAMETERS - {"reasoning_effort"},
    max_temperature=2.0,
    default_max_tokens=100,
    accepts_images=False,
    stops_at_stop_sequences=True,
)

# Used only for a GGUF file that carries no chat template of its own.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class EmbeddedVendor:
    def __init__(self, pool: EnginePool) -> None:
        self._pool = pool

    def capabilities(self, target: Target) -> Capabilities:
        return CAPABILITIES

    async def _model(self, target: Target) -> EngineClient:
        path = target.vendor_configuration.get("checkpoint_path")
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

    async def stream(self, target: Target, call: GenerationCall) -> AsyncIterator[GenerationChunk]:
        engine = await self._model(target)
        info = engine.info
        if call.messages is not None:
            text = await render_chat_async(
                call.chat_template or info.chat_template or FALLBACK_CHAT_TEMPLATE,
                call.messages,
                bos_token=info.bos_token,
                eos_token=info.eos_token,
                extra=call.chat_template_kwargs,
            )
        else:
            text = call.prompt or ""
        # The engine tokenizes and fits max_tokens to the context window: it has the
        # vocabulary, and one message there costs less than a round trip to ask.
        return engine.generate(
            text=text,
            special=call.messages is not None,
            sampling=call.sampling,
            default_max_tokens=CAPABILITIES.default_max_tokens,
        )

    async def complete(self, target: Target, call: GenerationCall) -> GenerationChunk:
        chunks = await self.stream(target, call)
        try:
            return await collect(chunks)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    async def embed(self, target: Target, texts: list[str]) -> Embeddings:
        """Mean-pooled unit vectors from the deployment's GGUF file (engine/embedding.py)."""
        engine = await self._model(target)
        answer = await engine.embed(texts)
        return Embeddings(vectors=answer.vectors, tokens=answer.tokens)

    async def aclose(self) -> None:
        await self._pool.close()
