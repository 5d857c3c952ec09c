"""One GGUF model loaded in llama.cpp, generating for many requests at once.

A llama.cpp context is not thread-safe, so one worker thread per model owns it and
runs *continuous batching*: every running request is a sequence in one shared KV
cache, and each step evaluates one llama.cpp batch holding the next token of every
running sequence (plus the prompt of any newly admitted one). A request joins between
two steps and leaves as soon as it finishes or is cancelled; each keeps its own
sampler (temperature, top_k, top_p, penalties), stop sequences and logprobs.

Decoding one token for eight sequences costs far less than eight single-token steps
(the weights are read once per step), which is where the throughput comes from
(`benchmarks/engine.py` measures it against llama.cpp's own ceiling).

The event loop never waits on llama.cpp: tokens are handed back with
`call_soon_threadsafe`, and a request is cancelled by setting its event, which the
worker checks before every step.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.errors import DeploymentUnavailable, EngineOverloaded, InvalidRequest
from modelport.generation import FinishReason, GenerationChunk, Sampling, TokenAlternative, TokenLogprob
from modelport.stopseq import StopSequenceFilter

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# Tokens one step may evaluate (decode tokens of running sequences first, then as much
# of new prompts as fits; a longer prompt is evaluated over several steps).
STEP_TOKENS = 2048


class ModelLoadError(Exception):
    pass


@dataclass(eq=False)
class _Job:
    prompt_tokens: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[GenerationChunk | BaseException] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def deliver(self, item: GenerationChunk | BaseException) -> None:
        """On the event loop: hand one item to the waiting request."""
        self.events.put_nowait(item)


def _deliver_all(items: list[tuple[_Job, GenerationChunk | BaseException]]) -> None:
    for job, item in items:
        job.deliver(item)


@dataclass(eq=False)
class _Sequence:
    """A job while it runs: its place in the shared KV cache and its own sampling state."""

    job: _Job
    seq_id: int
    sampler: Any  # llama_sampler_p, owned by this sequence; None: plain greedy
    max_tokens: int
    reserved: int  # KV cells set aside for it: prompt + max_tokens
    unevaluated: list[int]  # prompt tokens not yet decoded
    stops: StopSequenceFilter
    position: int = 0
    generated: int = 0
    last_token: int = -1
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))


_SHUTDOWN = object()


class EmbeddedModel:
    """A loaded GGUF file and the thread that runs its generations."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int | None = None,
        max_queue: int = 256,
        max_sequences: int = 16,
        kv_tokens: int | None = None,
    ) -> None:
        import llama_cpp
        from llama_cpp import Llama

        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        started = time.perf_counter()
        log.info("loading embedded model %s", path)
        threads = os.cpu_count() or 1
        try:
            # Llama loads the weights and the tokenizer; its own small context is not
            # used for generation, which gets a multi-sequence context below.
            self._llm = Llama(model_path=str(path), n_ctx=512, n_batch=512, n_threads=threads, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from exc
        trained = self._llm._model.n_ctx_train()
        self.context_window = min(n_ctx, trained) if n_ctx else trained
        self.max_sequences = max_sequences
        # One KV cache shared by all sequences; each request reserves prompt +
        # max_tokens cells when admitted, so a running sequence never runs out.
        self.kv_tokens = max(kv_tokens or 0, self.context_window)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.kv_tokens
        params.n_batch = STEP_TOKENS
        params.n_seq_max = max_sequences
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = threads
        self._ctx = llama_cpp.llama_init_from_model(self._llm._model.model, params)
        if not self._ctx:
            self._llm.close()
            raise ModelLoadError(f"llama.cpp could not create a context for {path} ({self.kv_tokens} KV cells)")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(STEP_TOKENS, 0, 1)
        self.path = path
        self._vocab = self._llm._model.vocab
        self._pieces: dict[int, bytes] = {}
        self._n_vocab = self._llm.n_vocab()
        metadata = self._llm.metadata
        self.chat_template: str | None = metadata.get("tokenizer.chat_template")
        self.bos_token = self._token_text(self._llm.token_bos())
        self.eos_token = self._token_text(self._llm.token_eos())
        self._add_bos = metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self._jobs: queue.Queue[_Job | object] = queue.Queue(maxsize=max_queue)
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Job, GenerationChunk | BaseException]]] = {}
        self._thread = threading.Thread(target=self._work, name=f"engine:{path.name}", daemon=True)
        self._thread.start()
        log.info(
            "loaded %s in %.2fs (context %d tokens, %d sequences sharing %d KV cells, vocabulary %d)",
            path.name,
            time.perf_counter() - started,
            self.context_window,
            max_sequences,
            self.kv_tokens,
            self._n_vocab,
        )

    def _token_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return self._piece(token_id, special=True).decode("utf-8", "replace")

    def _piece(self, token_id: int, *, special: bool = False) -> bytes:
        """The bytes of one token. (llama-cpp-python's own helper returns a padded
        32-byte buffer, so this asks llama.cpp for the length too.)"""
        import llama_cpp

        cached = self._pieces.get(token_id) if not special else None
        if cached is not None:
            return cached
        size = 64
        buffer = ctypes.create_string_buffer(size)
        length = llama_cpp.llama_token_to_piece(self._vocab, token_id, buffer, size, 0, special)
        if length < 0:  # longer than the buffer: ask again with the size it needs
            buffer = ctypes.create_string_buffer(-length)
            length = llama_cpp.llama_token_to_piece(self._vocab, token_id, buffer, -length, 0, special)
        piece = buffer.raw[:length]
        if not special:
            self._pieces[token_id] = piece
        return piece

    def _is_end_of_generation(self, token_id: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token_id))

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Tokenize a prompt. `special=True` for rendered chat templates, so their
        control tokens (`<|im_start|>`) become single tokens rather than text."""
        add_bos = self._add_bos and not (self.bos_token and text.startswith(self.bos_token))
        tokens: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)
        return tokens

    async def generate(self, prompt_tokens: list[int], sampling: Sampling) -> AsyncIterator[GenerationChunk]:
        """Stream a generation. Closing the iterator early cancels the job."""
        if len(prompt_tokens) >= self.context_window:
            raise InvalidRequest(
                f"the prompt is {len(prompt_tokens)} tokens; this model's context window is {self.context_window}"
            )
        job = _Job(prompt_tokens=prompt_tokens, sampling=sampling, loop=asyncio.get_running_loop())
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise EngineOverloaded(
                f"the embedded engine has {self._jobs.maxsize} requests waiting; try again shortly"
            ) from None
        try:
            while True:
                item = await job.events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            job.cancelled.set()

    def close(self) -> None:
        import llama_cpp

        self._jobs.put(_SHUTDOWN)
        self._thread.join(timeout=10)
        if self._thread.is_alive():  # never free a context a thread may still be using
            log.error("the engine thread for %s did not stop; leaving its memory allocated", self.path.name)
            return
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        self._llm.close()

    # --- the worker thread ------------------------------------------------------

    def _work(self) -> None:
        running: list[_Sequence] = []
        free_ids = list(range(self.max_sequences - 1, -1, -1))
        waiting: _Job | None = None  # admitted next, once there is room (FIFO: no overtaking)
        reserved = 0
        while True:
            # Admit new jobs between steps: block only when there is nothing to run.
            while True:
                if waiting is None:
                    try:
                        item = self._jobs.get(block=not running)
                    except queue.Empty:
                        break
                    if item is _SHUTDOWN:
                        for sequence in running:
                            self._post(sequence.job, DeploymentUnavailable("the embedded engine is shutting down"))
                            self._release(sequence)
                        self._flush()
                        return
                    assert isinstance(item, _Job)
                    waiting = item
                if waiting.cancelled.is_set():
                    waiting = None
                    continue
                # Generation ends at the context window anyway, so a reservation never
                # exceeds one window (and so always fits once the cache is empty).
                room = self.context_window - len(waiting.prompt_tokens)
                max_tokens = min(waiting.sampling.max_tokens or room, room)
                need = len(waiting.prompt_tokens) + max_tokens
                if not free_ids or reserved + need > self.kv_tokens:
                    break
                running.append(self._start(waiting, free_ids.pop(), max_tokens, need))
                reserved += need
                waiting = None
            try:
                finished = self._step(running)
            except Exception as exc:  # the step failed: its sequences fail, the engine lives on
                log.exception("embedded generation failed")
                finished = list(running)
                for sequence in finished:
                    self._post(sequence.job, DeploymentUnavailable(f"the embedded engine failed: {exc}"))
            self._flush()
            for sequence in finished:
                running.remove(sequence)
                self._release(sequence)
                free_ids.append(sequence.seq_id)
                reserved -= sequence.reserved

    def _post(self, job: _Job, item: GenerationChunk | BaseException) -> None:
        self._outbox.setdefault(job.loop, []).append((job, item))

    def _flush(self) -> None:
        """Hand a step's tokens to the event loop in one wake-up rather than one per
        token: with 16 sequences that is 16 times fewer cross-thread calls."""
        for loop, items in self._outbox.items():
            loop.call_soon_threadsafe(_deliver_all, items)
        self._outbox = {}

    def _start(self, job: _Job, seq_id: int, max_tokens: int, reserved: int) -> _Sequence:
        return _Sequence(
            job=job,
            seq_id=seq_id,
            sampler=self._sampler(job.sampling, max_tokens),
            max_tokens=max_tokens,
            reserved=reserved,
            unevaluated=list(job.prompt_tokens),
            stops=StopSequenceFilter(job.sampling.stop_sequences),
        )

    def _sampler(self, sampling: Sampling, max_tokens: int) -> Any:
        """A llama.cpp sampler chain with this request's settings (same order as
        llama-cpp-python's own: penalties, top_k, top_p, temperature, then the draw),
        or None for greedy decoding without penalties."""
        import llama_cpp

        penalised = bool(sampling.frequency_penalty or sampling.presence_penalty)
        if sampling.temperature <= 0 and not penalised:
            return None  # plain argmax: 5 µs with numpy against 45 µs through a sampler chain
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if penalised:
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    self._n_vocab,
                    max_tokens,  # every generated token counts
                    1.0,
                    sampling.frequency_penalty or 0.0,
                    sampling.presence_penalty or 0.0,
                ),
            )
        if sampling.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if sampling.top_k:
            add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
        if sampling.top_p is not None and sampling.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(llama_cpp.LLAMA_DEFAULT_SEED))
        return chain

    def _release(self, sequence: _Sequence) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
        if sequence.sampler is not None:
            llama_cpp.llama_sampler_free(sequence.sampler)

    def _step(self, running: list[_Sequence]) -> list[_Sequence]:
        """One llama_decode for every running sequence; returns those that finished."""
        import llama_cpp

        finished = [sequence for sequence in running if sequence.job.cancelled.is_set()]
        batch = self._batch
        size = 0
        sampled_at: list[tuple[_Sequence, int]] = []

        def add(sequence: _Sequence, token: int, logits: bool) -> None:
            nonlocal size
            batch.token[size] = token
            batch.pos[size] = sequence.position
            batch.n_seq_id[size] = 1
            batch.seq_id[size][0] = sequence.seq_id
            batch.logits[size] = logits
            sequence.position += 1
            size += 1

        active = [sequence for sequence in running if not sequence.job.cancelled.is_set()]
        # Running sequences first, one token each, so a long new prompt never stalls them.
        for sequence in active:
            if not sequence.unevaluated:
                add(sequence, sequence.last_token, True)
                sampled_at.append((sequence, size - 1))
        for sequence in active:
            if sequence.unevaluated and size < STEP_TOKENS:
                chunk = sequence.unevaluated[: STEP_TOKENS - size]
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
            if self._advance(sequence, index):
                finished.append(sequence)
        return finished

    def _advance(self, sequence: _Sequence, index: int) -> bool:
        """Sample the sequence's next token from row `index`, hand it to the caller;
        True when the sequence is done."""
        import llama_cpp

        job = sequence.job
        if sequence.sampler is None:
            token = int(self._logits(index).argmax())
        else:
            token = llama_cpp.llama_sampler_sample(sequence.sampler, self._ctx, index)
        finish: FinishReason | None = None
        if self._is_end_of_generation(token):
            finish = "stop"
        else:
            sequence.generated += 1
            sequence.last_token = token
            piece = self._piece(token)
            text = sequence.decoder.decode(piece)
            sampling = job.sampling
            logprobs = [self._logprob(index, token, text, piece, sampling.top_logprobs)] if sampling.logprobs else None
            self._post(job, GenerationChunk(text=text, logprobs=logprobs))
            sequence.stops.feed(text)
            if sequence.stops.stopped:
                finish = "stop"
            # The next step evaluates this token: it must still fit in the context.
            elif sequence.generated >= sequence.max_tokens or sequence.position + 1 >= self.context_window:
                finish = "length"
        if finish is None:
            return False
        self._post(
            job,
            GenerationChunk(
                text=sequence.decoder.decode(b"", final=True),
                finish_reason=finish,
                prompt_tokens=len(job.prompt_tokens),
                response_tokens=sequence.generated,
            ),
        )
        return True

    def _logits(self, index: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Row `index` of the last step's logits, as a view (no copy)."""
        import llama_cpp
        import numpy as np  # here, not at the top: a gateway without an embedded model never needs it

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, index), shape=(self._n_vocab,))

    def _logprob(self, index: int, token: int, text: str, piece: bytes, top_n: int) -> TokenLogprob:
        """Log-probabilities from the model's raw logits (before temperature and penalties)."""
        import numpy as np

        logits = self._logits(index).astype(np.float64)
        peak = logits.max()
        log_norm = peak + np.log(np.exp(logits - peak).sum())
        alternatives: list[TokenAlternative] = []
        if top_n > 0:
            best = np.argpartition(-logits, top_n)[:top_n]
            for alt in best[np.argsort(-logits[best])]:
                alt_piece = self._piece(int(alt))
                alternatives.append(
                    TokenAlternative(
                        token=alt_piece.decode("utf-8", "replace"),
                        logprob=float(logits[alt] - log_norm),
                        bytes=list(alt_piece),
                    )
                )
        return TokenLogprob(
            token=text, logprob=float(logits[token] - log_norm), bytes=list(piece), top_logprobs=alternatives
        )
