"""One GGUF model loaded in llama.cpp, served by one worker thread.

A llama.cpp context is not thread-safe, so every generation for a model runs on that
model's own thread, one job at a time, in arrival order. The event loop never waits on
llama.cpp: tokens are handed back with `call_soon_threadsafe`, and a job is cancelled
by setting its event, which the worker checks before every token.
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

import numpy as np

from modelport.errors import DeploymentUnavailable, EngineOverloaded
from modelport.generation import FinishReason, GenerationChunk, Sampling, TokenAlternative, TokenLogprob
from modelport.stopseq import StopSequenceFilter

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    pass


@dataclass(eq=False)
class _Job:
    prompt_tokens: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[GenerationChunk | BaseException] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: GenerationChunk | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


_SHUTDOWN = object()


class EmbeddedModel:
    """A loaded GGUF file and the thread that runs its generations."""

    def __init__(self, path: Path, *, n_ctx: int | None = None, max_queue: int = 256) -> None:
        from llama_cpp import Llama

        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        started = time.perf_counter()
        log.info("loading embedded model %s", path)
        try:
            self._llm = Llama(
                model_path=str(path),
                n_ctx=n_ctx or 0,  # 0: the context length the model was trained with
                n_threads=os.cpu_count() or 1,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from exc
        self.path = path
        self._vocab = self._llm._model.vocab
        self._pieces: dict[int, bytes] = {}
        self.context_window = self._llm.n_ctx()
        self._n_vocab = self._llm.n_vocab()
        metadata = self._llm.metadata
        self.chat_template: str | None = metadata.get("tokenizer.chat_template")
        self.bos_token = self._token_text(self._llm.token_bos())
        self.eos_token = self._token_text(self._llm.token_eos())
        self._add_bos = metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self._jobs: queue.Queue[_Job | object] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._work, name=f"engine:{path.name}", daemon=True)
        self._thread.start()
        log.info(
            "loaded %s in %.2fs (context %d tokens, vocabulary %d)",
            path.name,
            time.perf_counter() - started,
            self.context_window,
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
        self._jobs.put(_SHUTDOWN)
        self._thread.join(timeout=10)
        self._llm.close()

    # --- the worker thread ------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _SHUTDOWN:
                return
            assert isinstance(job, _Job)
            if job.cancelled.is_set():
                continue
            try:
                self._run(job)
            except Exception as exc:  # the job fails, the engine lives on
                log.exception("embedded generation failed")
                job.emit(DeploymentUnavailable(f"the embedded engine failed: {exc}"))

    def _run(self, job: _Job) -> None:
        llm = self._llm
        sampling = job.sampling
        max_tokens = sampling.max_tokens or (self.context_window - len(job.prompt_tokens))
        stop_watch = StopSequenceFilter(sampling.stop_sequences)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        # Always start from an empty cache: reusing a cached prefix evaluates the prompt
        # in different batch shapes, which can change greedy output in the last bits.
        llm.reset()  # type: ignore[no-untyped-call]
        tokens = llm.generate(
            job.prompt_tokens,
            temp=sampling.temperature,
            top_k=sampling.top_k or 0,
            top_p=sampling.top_p if sampling.top_p is not None else 1.0,
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=1.0,
            frequency_penalty=sampling.frequency_penalty or 0.0,
            presence_penalty=sampling.presence_penalty or 0.0,
            reset=False,
        )
        generated = 0
        finish: FinishReason = "stop"
        for token in tokens:
            if job.cancelled.is_set():
                tokens.close()
                return
            if self._is_end_of_generation(token):
                break
            generated += 1
            piece = self._piece(token)
            text = decoder.decode(piece)
            logprobs = [self._logprob(token, text, piece, sampling.top_logprobs)] if sampling.logprobs else None
            job.emit(GenerationChunk(text=text, logprobs=logprobs))
            stop_watch.feed(text)
            if stop_watch.stopped:
                break
            # The next step evaluates this token: it must still fit in the context.
            if generated >= max_tokens or llm.n_tokens + 1 >= self.context_window:
                finish = "length"
                break
        tokens.close()
        job.emit(
            GenerationChunk(
                text=decoder.decode(b"", final=True),
                finish_reason=finish,
                prompt_tokens=len(job.prompt_tokens),
                response_tokens=generated,
            )
        )

    def _logprob(self, token: int, text: str, piece: bytes, top_n: int) -> TokenLogprob:
        import llama_cpp

        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(self._llm.ctx, -1), shape=(self._n_vocab,)
        ).astype(np.float64)
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
