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

import codecs
import ctypes
import logging
import math
import os
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.engine.cpu import unsafe_repacking_off
from modelport.engine.prefix import PrefixCache
from modelport.engine.protocol import ModelLoadError
from modelport.errors import DeploymentUnavailable, EngineOverloaded, InvalidRequest, ModelportError
from modelport.generation import FinishReason, GenerationChunk, Sampling, TokenAlternative, TokenLogprob
from modelport.params import resolve_max_tokens
from modelport.stopseq import StopSequenceFilter

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
STEP_TOKENS = 32

Event = GenerationChunk | ModelportError


@dataclass(eq=False)
class _Job:
    key: Hashable  # the caller's handle for this request
    prompt_tokens: list[int]
    sampling: Sampling  # max_tokens resolved
    # Built at submit, so that a grammar llama.cpp cannot parse refuses the request
    # before it waits; owned by the job, then by its sequence.
    sampler: Any = None


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
    evaluated: list[int]  # tokens whose KV cells this sequence holds, in order
    generated: int = 0
    last_token: int = -1
    cancelled: bool = False
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))


class BatchEngine:
    """A loaded GGUF file, its multi-sequence context and the scheduler that batches requests."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int | None = None,
        max_queue: int = 256,
        max_sequences: int = 16,
        kv_tokens: int | None = None,
        prefix_cache: bool = True,
        step_tokens: int = STEP_TOKENS,
        threads: int | None = None,
    ) -> None:
        import llama_cpp
        from llama_cpp import Llama

        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path.name}")
        started = time.perf_counter()
        threads = threads or os.cpu_count() or 1
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
        self.context_window = min(n_ctx, trained) if n_ctx else trained
        self.max_sequences = max_sequences
        self.max_queue = max_queue
        # One KV cache shared by all sequences; each request reserves prompt +
        # max_tokens cells when admitted, so a running sequence never runs out.
        self.kv_tokens = max(kv_tokens or 0, self.context_window)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.kv_tokens
        # Every running sequence's next token always fits in one step.
        self.step_tokens = max(step_tokens, max_sequences)
        params.n_batch = params.n_ubatch = self.step_tokens
        # Twice the running sequences: the other half are kept prefixes.
        params.n_seq_max = 2 * max_sequences if prefix_cache else max_sequences
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = threads
        self._ctx = llama_cpp.llama_init_from_model(self._llm._model.model, params)
        if not self._ctx:
            self._llm.close()
            raise ModelLoadError(f"llama.cpp could not create a context for {path.name} ({self.kv_tokens} KV cells)")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.step_tokens, 0, 1)
        self.path = path
        self._vocab = self._llm._model.vocab
        self._pieces: dict[int, bytes] = {}
        self._n_vocab = self._llm.n_vocab()
        metadata = self._llm.metadata
        self.chat_template: str | None = metadata.get("tokenizer.chat_template")
        self.bos_token = self._token_text(self._llm.token_bos())
        self.eos_token = self._token_text(self._llm.token_eos())
        self._add_bos = metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self._waiting: deque[_Job] = deque()
        self._running: list[_Sequence] = []
        self._by_key: dict[Hashable, _Job | _Sequence] = {}
        self._reserved = 0
        self._prefixes = PrefixCache(
            self._memory, seq_ids=params.n_seq_max, keep=max_sequences if prefix_cache else 0, llama=llama_cpp
        )
        self.steps = 0
        self.reused_tokens = 0
        log.info(
            "loaded %s in %.2fs (context %d tokens, %d sequences sharing %d KV cells, vocabulary %d)",
            path.name,
            time.perf_counter() - started,
            self.context_window,
            max_sequences,
            self.kv_tokens,
            self._n_vocab,
        )

    def info(self) -> dict[str, Any]:
        """What a gateway needs to know to send requests here."""
        return {
            "model": self.path.name,
            "context_window": self.context_window,
            "chat_template": self.chat_template,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "max_sequences": self.max_sequences,
            "kv_tokens": self.kv_tokens,
            "vocabulary": self._n_vocab,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "waiting": len(self._waiting),
            "running": len(self._running),
            "kv_reserved": self._reserved,
            "kv_kept": self._prefixes.cells,
            "steps": self.steps,
            "reused_tokens": self.reused_tokens,
        }

    def self_check(self) -> None:
        """Decode a few tokens and look at the logits: a build whose kernels do not
        work on this CPU crashes here, at start-up, or computes garbage, which this
        refuses. Either way no user request ever reaches it."""
        tokens = self.tokenize("The capital of France is", special=False)
        key = object()
        self.submit(key, tokens, Sampling(temperature=0.0, max_tokens=2, logprobs=True))
        events: list[Event] = []
        while self.busy:
            events += [event for owner, event in self.step() if owner is key]
        errors = [event for event in events if isinstance(event, ModelportError)]
        if errors:
            raise ModelLoadError(f"the start-up self-check failed: {errors[0].detail}")
        chunks = [event for event in events if isinstance(event, GenerationChunk)]
        logprobs = [entry.logprob for chunk in chunks for entry in chunk.logprobs or []]
        if len(logprobs) != 2 or not all(math.isfinite(value) and value <= 0 for value in logprobs):
            raise ModelLoadError(f"the start-up self-check computed invalid log-probabilities {logprobs}")
        self._prefixes.clear()

    # --- tokens -----------------------------------------------------------------------

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

    # --- requests ---------------------------------------------------------------------

    def submit_text(
        self, key: Hashable, text: str, *, special: bool, sampling: Sampling, default_max_tokens: int | None
    ) -> ModelportError | None:
        """Tokenize and queue a request; the error that refuses it, if any."""
        tokens = self.tokenize(text, special=special)
        try:
            max_tokens = resolve_max_tokens(
                sampling.max_tokens,
                prompt_tokens=len(tokens),
                context_window=self.context_window,
                default=default_max_tokens,
            )
        except InvalidRequest as exc:
            return exc
        return self.submit(key, tokens, replace(sampling, max_tokens=max_tokens))

    def submit(self, key: Hashable, prompt_tokens: list[int], sampling: Sampling) -> ModelportError | None:
        if not prompt_tokens:
            return InvalidRequest("the prompt is empty: give at least one token of text")
        if len(prompt_tokens) >= self.context_window:
            return InvalidRequest(
                f"the prompt is {len(prompt_tokens)} tokens; this model's context window is {self.context_window}"
            )
        if len(self._waiting) >= self.max_queue:
            return EngineOverloaded(f"the embedded engine has {self.max_queue} requests waiting; try again shortly")
        try:
            sampler = self._sampler(sampling, sampling.max_tokens or self.context_window)
        except InvalidRequest as exc:
            return exc
        job = _Job(key=key, prompt_tokens=prompt_tokens, sampling=sampling, sampler=sampler)
        self._waiting.append(job)
        self._by_key[key] = job
        return None

    def cancel(self, key: Hashable) -> None:
        """Forget a request: waiting, it never starts; running, it leaves before the next step."""
        item = self._by_key.pop(key, None)
        if isinstance(item, _Job):
            self._waiting.remove(item)
            _free_sampler(item.sampler)
        elif isinstance(item, _Sequence):
            item.cancelled = True

    @property
    def busy(self) -> bool:
        return bool(self._running or self._waiting)

    def close(self) -> None:
        import llama_cpp

        for sequence in self._running:
            self._release(sequence, keep=False)
        for job in self._waiting:
            _free_sampler(job.sampler)
        self._prefixes.clear()
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

    def _admit(self) -> None:
        """Start waiting jobs, first come first served, while sequences and KV cells allow."""
        while self._waiting and len(self._running) < self.max_sequences:
            job = self._waiting[0]
            prompt = job.prompt_tokens
            # Generation ends at the context window anyway, so a reservation never
            # exceeds one window (and so always fits once the cache is empty).
            room = self.context_window - len(prompt)
            max_tokens = min(job.sampling.max_tokens or room, room)
            need = len(prompt) + max_tokens
            sources = {
                sequence.seq_id: sequence.evaluated[: len(sequence.job.prompt_tokens)] for sequence in self._running
            }
            slot = self._prefixes.claim(prompt, sources, free_cells=self.kv_tokens - self._reserved - need)
            if slot is None:
                break  # no room yet: wait for running sequences to finish
            self._waiting.popleft()
            reused = slot.reused
            self.reused_tokens += reused
            sequence = _Sequence(
                job=job,
                seq_id=slot.seq_id,
                sampler=job.sampler,
                max_tokens=max_tokens,
                reserved=need,
                unevaluated=prompt[reused:],
                stops=StopSequenceFilter(job.sampling.stop_sequences),
                evaluated=prompt[:reused],
            )
            self._running.append(sequence)
            self._by_key[job.key] = sequence
            self._reserved += need

    def _sampler(self, sampling: Sampling, max_tokens: int) -> Any:
        """A llama.cpp sampler chain with this request's settings (same order as
        llama-cpp-python's own: logit bias, penalties, top_k, top_p, temperature, then
        the draw; a grammar masks what it forbids before any of the choosing), or None
        for plain greedy decoding. InvalidRequest for a grammar or bias it cannot take."""
        import llama_cpp

        penalised = bool(sampling.frequency_penalty or sampling.presence_penalty)
        if sampling.temperature <= 0 and not penalised and not sampling.grammar and not sampling.logit_bias:
            return None  # plain argmax: 5 µs with numpy against 45 µs through a sampler chain
        bias = self._logit_bias_sampler(sampling.logit_bias) if sampling.logit_bias else None
        try:
            grammar = self._grammar_sampler(sampling.grammar) if sampling.grammar else None
        except InvalidRequest:
            _free_sampler(bias)
            raise
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if bias is not None:
            add(chain, bias)
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
        if grammar is not None:
            add(chain, grammar)
        if sampling.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if sampling.top_k:
            add(chain, llama_cpp.llama_sampler_init_top_k(sampling.top_k))
        if sampling.top_p is not None and sampling.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(sampling.temperature))
        # LLAMA_DEFAULT_SEED (0xFFFFFFFF) asks llama.cpp for a random seed; a caller's
        # seed is folded below it, so the same seed always draws the same tokens.
        seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed % 0xFFFFFFFF
        add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def _grammar_sampler(self, grammar: str) -> Any:
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            raise InvalidRequest("llama.cpp could not parse the grammar built from response_format")
        return sampler

    def _logit_bias_sampler(self, logit_bias: tuple[tuple[int, float], ...]) -> Any:
        import llama_cpp

        outside = sorted(token for token, _ in logit_bias if not 0 <= token < self._n_vocab)
        if outside:
            raise InvalidRequest(
                f"logit_bias names token ids outside this model's vocabulary of {self._n_vocab}: "
                + ", ".join(map(str, outside[:10])),
                param="logit_bias",
            )
        entries = (llama_cpp.llama_logit_bias * len(logit_bias))()
        for entry, (token, bias) in zip(entries, logit_bias, strict=True):
            entry.token = token
            # OpenAI: -100 bans a token, 100 makes it the only choice.
            entry.bias = -math.inf if bias <= -100 else bias
        return llama_cpp.llama_sampler_init_logit_bias(self._n_vocab, len(logit_bias), entries)

    def _release(self, sequence: _Sequence, *, keep: bool) -> None:

        kept = sequence.evaluated[: len(sequence.job.prompt_tokens)] if keep else []
        self._prefixes.keep(sequence.seq_id, kept)
        _free_sampler(sequence.sampler)
        sequence.sampler = None

    def _decode(self, out: list[tuple[Hashable, Event]]) -> list[_Sequence]:
        """One llama_decode for every running sequence; returns those that finished."""
        import llama_cpp

        finished = [sequence for sequence in self._running if sequence.cancelled]
        batch = self._batch
        size = 0
        sampled_at: list[tuple[_Sequence, int]] = []

        def add(sequence: _Sequence, token: int, logits: bool) -> None:
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

    def _advance(self, sequence: _Sequence, index: int, out: list[tuple[Hashable, Event]]) -> bool:
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
            out.append((job.key, GenerationChunk(text=text, logprobs=logprobs)))
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
                ),
            )
        )
        return True

    def _logits(self, index: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Row `index` of the last step's logits, as a view (no copy)."""
        import llama_cpp
        import numpy as np  # here, not at the top: only an engine process needs it

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


def _free_sampler(sampler: Any) -> None:
    if sampler is not None:
        import llama_cpp

        llama_cpp.llama_sampler_free(sampler)
