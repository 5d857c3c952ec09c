"""One GGUF model in llama.cpp, generating for many requests at once.

This runs inside an engine process (`engine/process.py`), never in the gateway: a
native crash here ends that process, not the server. The process drives it from one
thread, so it has no locks: `submit` and `cancel` queue work, and each `step` runs
one round of *continuous batching*. Every running request is a sequence in one
shared KV cache; a step evaluates one llama.cpp batch holding the next token of
every running sequence (plus as much of newly admitted prompts as fits), samples
each sequence's next token with its own sampler, and returns what every sequence
produced. Decoding one token for eight sequences costs far less than eight
single-token steps (the weights are read once per step), which is where the
throughput comes from (`benchmarks/engine.py` measures it against llama.cpp's ceiling).

*Prefix reuse*: a finished sequence's prompt cells stay in the KV cache, remembered
by the tokens they hold (see `engine/prefix.py`). A new request whose prompt starts
with tokens already in the cache, from a finished or a running sequence, shares those
cells (`llama_memory_seq_cp`: no copy, no evaluation) and evaluates only the rest,
as vLLM's automatic prefix caching does. Only prompt cells are shared, never those of
generated tokens: those were computed one row at a time, and llama.cpp's one-row
kernels round differently from the many-row ones that evaluate a prompt, so reusing
them would change a later greedy answer in its last bits (measured: it did). Kept
prefixes are dropped, least recently used first, when running sequences need cells.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.config import EngineSettings
from modelport.engine.cpu import unsafe_repacking_off
from modelport.engine.embedding import TextEmbedder, check_input_ids
from modelport.engine.logprobs import token_logprob
from modelport.engine.prefix import PrefixCache
from modelport.engine.protocol import EnginePrompt, ModelLoadError, TokenPrompt
from modelport.engine.sampler import build_sampler, free_sampler
from modelport.engine.sequences import Job, Sequence
from modelport.engine.vocabulary import Vocabulary, check_prompt_ids
from modelport.errors import (
    ContextWindowExceeded,
    DeploymentUnavailable,
    EngineOverloaded,
    InvalidRequest,
    ModelportError,
)
from modelport.generation import FinishReason, GenerationChunk, Sampling
from modelport.stops import StopSequenceFilter

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# Tokens one step evaluates at most: the next token of every running sequence first,
# then as much of new prompts as fits (a longer prompt takes several steps, so running
# streams keep flowing while it is read: chunked prefill). Kept small on purpose:
# llama.cpp's CPU kernels compute each row of a batch of up to 63 rows exactly as they
# would alone, but round differently in larger batches (measured on the x86-64 build:
# the same prompt's logits moved by up to 0.56 between one 76-row batch and any split
# of it into batches of 1 to 63 rows). At 32 rows, a request's greedy output does not
# depend on which other requests share its steps, nor on whether its prompt prefix was
# reused, at the price of slower evaluation of long prompts (benchmarks/README.md).
# (EngineSettings.step_tokens, MODELPORT_EMBEDDED_STEP_TOKENS, defaults to 32.)

Event = GenerationChunk | ModelportError


class BatchEngine:
    """A loaded GGUF file, its multi-sequence context and the scheduler that batches requests."""

    def __init__(self, path: Path, settings: EngineSettings = EngineSettings()) -> None:
        import llama_cpp
        from llama_cpp import Llama

        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path.name}")
        started = time.perf_counter()
        threads = settings.threads or os.cpu_count() or 1
        max_sequences, share = settings.max_sequences, settings.max_sequence_kv_share
        try:
            # Llama loads the weights and the tokenizer; its own small context is not
            # used for generation, which gets a multi-sequence context below.
            with unsafe_repacking_off():
                self._llm = Llama(model_path=str(path), n_ctx=512, n_batch=512, n_threads=threads, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            # The file's name, not its path: reasons reach API users.
            detail = str(exc).replace(str(path), path.name)
            raise ModelLoadError(f"llama.cpp could not load {path.name}: {detail}") from exc
        trained = self._llm._model.n_ctx_train()
        self.context_window = min(settings.n_ctx, trained) if settings.n_ctx else trained
        self.max_sequences = max_sequences
        self.max_queue = settings.max_queue
        # One KV cache shared by all sequences; each request reserves prompt +
        # max_tokens cells when admitted, so a running sequence never runs out. Left
        # unset, it is sized so that one request may still use a whole context window
        # within its share (max_tokens 4096 is a common client default), rather than
        # refusing requests that fit the window.
        self.kv_tokens = max(settings.kv_tokens or math.ceil(self.context_window / share), self.context_window)
        # Fair sharing: one sequence reserves at most this many cells (so one request
        # with max_tokens near the window cannot hold the whole cache while others
        # wait), and one account runs at most `sequences_per_account` sequences at once.
        self.sequence_cells = max(1, min(self.context_window, int(self.kv_tokens * share)))
        self.sequences_per_account = settings.sequences_per_account or max_sequences
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.kv_tokens
        # Every running sequence's next token always fits in one step.
        self.step_tokens = max(settings.step_tokens, max_sequences)
        params.n_batch = params.n_ubatch = self.step_tokens
        # Twice the running sequences: the other half are kept prefixes.
        params.n_seq_max = 2 * max_sequences if settings.prefix_cache else max_sequences
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = threads
        self._ctx = llama_cpp.llama_init_from_model(self._llm._model.model, params)
        if not self._ctx:
            self._llm.close()
            raise ModelLoadError(f"llama.cpp could not create a context for {path.name} ({self.kv_tokens} KV cells)")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.step_tokens, 0, 1)
        self.path = path
        self.vocabulary = Vocabulary(self._llm)
        metadata = self._llm.metadata
        self.chat_template: str | None = metadata.get("tokenizer.chat_template")
        # An encoder such as BERT (engine/convert.py) sees the whole text at once: it
        # computes sentence embeddings and cannot generate.
        architecture = metadata.get("general.architecture", "")
        self.embedding_only = metadata.get(f"{architecture}.attention.causal") == "false"
        self._waiting: deque[Job] = deque()
        self._running: list[Sequence] = []
        self._by_key: dict[Hashable, Job | Sequence] = {}
        self._reserved = 0
        self._prefixes = PrefixCache(
            self._memory, seq_ids=params.n_seq_max, keep=max_sequences if settings.prefix_cache else 0, llama=llama_cpp
        )
        self.steps = 0
        self.reused_tokens = 0
        self._threads = threads
        self._embedder: TextEmbedder | None = None  # created by the first embed request
        log.info(
            "loaded %s in %.2fs (context %d tokens, %d sequences sharing %d KV cells, vocabulary %d)",
            path.name,
            time.perf_counter() - started,
            self.context_window,
            max_sequences,
            self.kv_tokens,
            self.vocabulary.size,
        )

    def info(self) -> dict[str, Any]:
        """What a gateway needs to know to send requests here."""
        return {
            "model": self.path.name,
            "context_window": self.context_window,
            "chat_template": self.chat_template,
            "bos_token": self.vocabulary.bos_token,
            "eos_token": self.vocabulary.eos_token,
            "max_sequences": self.max_sequences,
            "kv_tokens": self.kv_tokens,
            "embedding_only": self.embedding_only,
            "vocabulary": self.vocabulary.size,
            # The gateway neutralises these in caller text (engine/control_tokens.py).
            "control_tokens": list(self.vocabulary.control_token_texts),
        }

    def stats(self) -> dict[str, Any]:
        return {
            "waiting": len(self._waiting),
            "running": len(self._running),
            "kv_reserved": self._reserved,
            "kv_tokens": self.kv_tokens,
            "kv_kept": self._prefixes.cells,
            "steps": self.steps,
            "reused_tokens": self.reused_tokens,
        }

    def forget_kept_prefixes(self) -> None:
        """Drop the prompt cells kept for reuse (engine/prefix.py)."""
        self._prefixes.clear()

    # --- tokens -----------------------------------------------------------------------

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Tokenize a prompt. `special=True` for rendered chat templates, so their
        control tokens (`<|im_start|>`) become single tokens rather than text."""
        return self.vocabulary.tokenize(text, special=special)

    def embed(self, text: str) -> tuple[list[float], int]:
        """One text's sentence vector (see `engine/embedding.py`) and its token count."""
        return self.embed_tokens(self.tokenize(text, special=False))

    def embed_tokens(self, tokens: list[int]) -> tuple[list[float], int]:
        """The vector of one input given as this model's token ids (400 for an id outside
        the vocabulary): a text's ids give that text's vector."""
        check_input_ids([tokens], self.vocabulary.size)
        if self._embedder is None:
            self._embedder = TextEmbedder(self._llm, threads=self._threads)
        return self._embedder.embed(tokens), len(tokens)

    # --- requests ---------------------------------------------------------------------

    def submit_prompt(
        self, key: Hashable, prompt: EnginePrompt, *, sampling: Sampling, account: str | None = None
    ) -> ModelportError | None:
        """Queue a request, its prompt as text (tokenized here) or as this model's token
        ids (evaluated as given, each checked against the vocabulary); the error that
        refuses it, if any. max_tokens is the caller's to choose (the service resolves
        it, once, for every vendor); this checks only that it fits the window with the
        prompt. Left unset (a caller other than the service), it is the rest of the
        window, within one request's share of the cache."""
        if self.embedding_only:
            return InvalidRequest(f"{self.path.name} is an embedding model: it computes embeddings, not text")
        if isinstance(prompt, TokenPrompt):
            try:
                check_prompt_ids(prompt.ids, self.vocabulary.size)
            except InvalidRequest as exc:
                return exc
            tokens = list(prompt.ids)
        else:
            longest = self.vocabulary.longest_token_bytes
            most_bytes = self.context_window * longest
            size = len(prompt.text.encode("utf-8", "surrogatepass"))  # about a millisecond for 4 MB
            if size > most_bytes:
                return ContextWindowExceeded(
                    f"the prompt is {size} bytes; this model's context window of {self.context_window} tokens "
                    f"holds at most {most_bytes} bytes (its longest token is {longest} bytes)",
                    context_window=self.context_window,
                )
            tokens = self.tokenize(prompt.text, special=prompt.special)
        refused = self._outside_window(len(tokens), sampling.max_tokens)
        if refused is not None:
            return refused
        if sampling.max_tokens is None:  # the rest of the window, trimmed to the sequence's share
            sampling = replace(sampling, max_tokens=max(1, self.sequence_cells - len(tokens)))
        return self.submit(key, tokens, sampling, account=account)

    def _outside_window(self, prompt_tokens: int, max_tokens: int | None) -> ContextWindowExceeded | None:
        """The refusal of a prompt that, with max_tokens, does not fit the context window."""
        window = self.context_window
        if max_tokens is not None and prompt_tokens + max_tokens > window:
            return ContextWindowExceeded(
                f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: together "
                f"{prompt_tokens + max_tokens}, more than the context window of {window} tokens",
                prompt_tokens=prompt_tokens,
                max_tokens=max_tokens,
                context_window=window,
            )
        if max_tokens is None and prompt_tokens >= window:
            return ContextWindowExceeded(
                f"the prompt has {prompt_tokens} tokens, which leaves no room in the context window of {window} tokens",
                prompt_tokens=prompt_tokens,
                context_window=window,
            )
        return None

    def submit(
        self, key: Hashable, prompt_tokens: list[int], sampling: Sampling, *, account: str | None = None
    ) -> ModelportError | None:
        if not prompt_tokens:
            return InvalidRequest("the prompt is empty: give at least one token of text")
        if len(prompt_tokens) >= self.context_window:
            return InvalidRequest(
                f"the prompt is {len(prompt_tokens)} tokens; this model's context window is {self.context_window}"
            )
        need = self._reservation(len(prompt_tokens), sampling.max_tokens)
        if need > self.sequence_cells:
            return InvalidRequest(
                f"the prompt ({len(prompt_tokens)} tokens) and max_tokens ({sampling.max_tokens}) need {need} KV "
                f"cells; one request may hold at most {self.sequence_cells} of this engine's {self.kv_tokens} "
                "(MODELPORT_EMBEDDED_MAX_SEQUENCE_KV_SHARE of MODELPORT_EMBEDDED_KV_TOKENS): lower max_tokens",
                param="max_tokens",
            )
        if len(self._waiting) >= self.max_queue:
            return EngineOverloaded(f"the embedded engine has {self.max_queue} requests waiting; try again shortly")
        try:
            sampler = build_sampler(
                sampling, sampling.max_tokens or self.context_window, self.vocabulary.handle, self.vocabulary.size
            )
        except InvalidRequest as exc:
            return exc
        job = Job(key=key, prompt_tokens=prompt_tokens, sampling=sampling, sampler=sampler, account=account)
        self._waiting.append(job)
        self._by_key[key] = job
        return None

    def cancel(self, key: Hashable) -> None:
        """Forget a request: waiting, it never starts; running, it leaves before the next step."""
        item = self._by_key.pop(key, None)
        if isinstance(item, Job):
            self._waiting.remove(item)
            free_sampler(item.sampler)
        elif isinstance(item, Sequence):
            item.cancelled = True

    @property
    def busy(self) -> bool:
        return bool(self._running or self._waiting)

    def close(self) -> None:
        import llama_cpp

        for sequence in self._running:
            self._release(sequence, keep=False)
        for job in self._waiting:
            free_sampler(job.sampler)
        self._prefixes.clear()
        if self._embedder is not None:
            self._embedder.close()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        self._llm.close()

    # --- one step ---------------------------------------------------------------------

    def step(self) -> list[tuple[Hashable, Event]]:
        """Admit what fits, evaluate one batch, sample; every request's new output."""
        self._admit()
        out: list[tuple[Hashable, Event]] = []
        keep = True
        try:
            finished = self._decode(out)
        except Exception as exc:  # the step failed: its sequences fail, the engine lives on
            log.exception("embedded generation failed")
            finished, keep = list(self._running), False  # what their cells hold is unknown now
            failure = DeploymentUnavailable(f"the embedded engine could not evaluate this step: {exc}")
            out += [(sequence.job.key, failure) for sequence in finished if not sequence.cancelled]
        self.steps += 1
        for sequence in finished:
            self._running.remove(sequence)
            self._by_key.pop(sequence.job.key, None)
            self._reserved -= sequence.reserved
            self._release(sequence, keep=keep)
        return out

    def _reservation(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """The KV cells a request reserves: its prompt and max_tokens (the rest of the
        window when unset). Generation ends at the context window anyway, so a
        reservation never exceeds one window (and so always fits an empty cache)."""
        room = self.context_window - prompt_tokens
        return prompt_tokens + min(max_tokens or room, room)

    def _admit(self) -> None:
        """Start waiting jobs, first come first served, while sequences and KV cells allow.
        A job of an account that already runs `sequences_per_account` sequences is passed
        over (it keeps its place) for the next one of another account: one tenant's flood
        waits behind itself, not in front of everyone."""
        if not self._waiting:
            return  # the common step: nothing to admit, nothing to count
        running = Counter(sequence.job.account for sequence in self._running if sequence.job.account is not None)
        index = 0
        while index < len(self._waiting) and len(self._running) < self.max_sequences:
            job = self._waiting[index]
            if job.account is not None and running[job.account] >= self.sequences_per_account:
                index += 1
                continue
            prompt = job.prompt_tokens
            need = self._reservation(len(prompt), job.sampling.max_tokens)
            sources = {
                sequence.seq_id: sequence.evaluated[: len(sequence.job.prompt_tokens)] for sequence in self._running
            }
            slot = self._prefixes.claim(prompt, sources, free_cells=self.kv_tokens - self._reserved - need)
            if slot is None:
                break  # no room yet: wait for running sequences to finish
            del self._waiting[index]
            if job.account is not None:
                running[job.account] += 1
            reused = slot.reused
            self.reused_tokens += reused
            sequence = Sequence(
                job=job,
                seq_id=slot.seq_id,
                sampler=job.sampler,
                max_tokens=need - len(prompt),
                reserved=need,
                unevaluated=prompt[reused:],
                stops=StopSequenceFilter(job.sampling.stop_sequences),
                evaluated=prompt[:reused],
                reused=reused,
            )
            self._running.append(sequence)
            self._by_key[job.key] = sequence
            self._reserved += need

    def _release(self, sequence: Sequence, *, keep: bool) -> None:

        kept = sequence.evaluated[: len(sequence.job.prompt_tokens)] if keep else []
        self._prefixes.keep(sequence.seq_id, kept)
        free_sampler(sequence.sampler)
        sequence.sampler = None

    def _decode(self, out: list[tuple[Hashable, Event]]) -> list[Sequence]:
        """One llama_decode for every running sequence; returns those that finished."""
        import llama_cpp

        finished = [sequence for sequence in self._running if sequence.cancelled]
        batch = self._batch
        size = 0
        sampled_at: list[tuple[Sequence, int]] = []

        def add(sequence: Sequence, token: int, logits: bool) -> None:
            nonlocal size
            batch.token[size] = token
            batch.pos[size] = len(sequence.evaluated)
            batch.n_seq_id[size] = 1
            batch.seq_id[size][0] = sequence.seq_id
            batch.logits[size] = logits
            sequence.evaluated.append(token)
            size += 1

        active = [sequence for sequence in self._running if not sequence.cancelled]
        # Running sequences first, one token each, so a long new prompt never stalls them.
        for sequence in active:
            if not sequence.unevaluated:
                add(sequence, sequence.last_token, True)
                sampled_at.append((sequence, size - 1))
        for sequence in active:
            if sequence.unevaluated and size < self.step_tokens:
                chunk = sequence.unevaluated[: self.step_tokens - size]
                del sequence.unevaluated[: len(chunk)]
                for token in chunk:
                    add(sequence, token, False)
                if not sequence.unevaluated:  # the prompt's last token: sample from here
                    batch.logits[size - 1] = True
                    sampled_at.append((sequence, size - 1))
        if size == 0:
            return finished
        batch.n_tokens = size
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        for sequence, index in sampled_at:
            if self._advance(sequence, index, out):
                finished.append(sequence)
        return finished

    def _advance(self, sequence: Sequence, index: int, out: list[tuple[Hashable, Event]]) -> bool:
        """Sample the sequence's next token from row `index`, hand it to the caller;
        True when the sequence is done."""
        import llama_cpp

        job = sequence.job
        if sequence.sampler is None:
            token = int(self._logits(index).argmax())
        else:
            token = llama_cpp.llama_sampler_sample(sequence.sampler, self._ctx, index)
        finish: FinishReason | None = None
        if self.vocabulary.is_end_of_generation(token):
            finish = "stop"
        else:
            sequence.generated += 1
            sequence.last_token = token
            piece = self.vocabulary.piece(token)
            text = sequence.decoder.decode(piece)
            sampling = job.sampling
            logprobs = (
                [token_logprob(self._logits(index), token, text, piece, sampling.top_logprobs, self.vocabulary.piece)]
                if sampling.logprobs
                else None
            )
            chunk = GenerationChunk(text=text, logprobs=logprobs)
            if sequence.generated == 1:
                # The prompt was tokenized before the first token: its count goes out with
                # it, for a surface that reports it at the start (Anthropic's message_start).
                chunk.prompt_tokens, chunk.cached_prompt_tokens = len(job.prompt_tokens), sequence.reused
            out.append((job.key, chunk))
            sequence.stops.feed(text)
            if sequence.stops.stopped:
                finish = "stop"
            # The next step evaluates this token: it must still fit in the context.
            elif sequence.generated >= sequence.max_tokens or len(sequence.evaluated) + 1 >= self.context_window:
                finish = "length"
        if finish is None:
            return False
        out.append(
            (
                job.key,
                GenerationChunk(
                    text=sequence.decoder.decode(b"", final=True),
                    finish_reason=finish,
                    prompt_tokens=len(job.prompt_tokens),
                    response_tokens=sequence.generated,
                    # The reused prefix: the prompt cache's hit, reported as cached tokens.
                    cached_prompt_tokens=sequence.reused,
                ),
            )
        )
        return True

    def _logits(self, index: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Row `index` of the last step's logits, as a view (no copy)."""
        import llama_cpp
        import numpy as np  # here, not at the top: only an engine process needs it

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, index), shape=(self.vocabulary.size,))
