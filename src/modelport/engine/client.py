"""The gateway's side of an engine process: submit, stream, cancel.

Each gateway process keeps one connection per engine. A reader task takes the
engine's step messages and hands every sequence's events to the request waiting for
them. When the connection ends (the engine died or was stopped), every request in
flight fails at once with 503, or an `error` event if its stream had started; the
next request connects again, to the engine the supervisor has restarted by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.engine.crashes import CrashLedger, grammar_fingerprint
from modelport.engine.protocol import (
    EnginePrompt,
    ProtocolError,
    chunk_from_wire,
    encode,
    encode_request,
    error_from_wire,
    is_error,
    prompt_to_wire,
    read_message,
    sampling_to_wire,
)
from modelport.errors import DeploymentUnavailable
from modelport.generation import GenerationChunk, Sampling

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmbeddedTexts:
    """An `embed` request's answer: one unit vector per text, and the tokens read."""

    vectors: list[list[float]]
    tokens: int


@dataclass(frozen=True, slots=True)
class CountedTokens:
    """A `count` request's answer."""

    tokens: int


_Item = GenerationChunk | EmbeddedTexts | CountedTokens | BaseException


@dataclass(frozen=True, slots=True)
class EngineInfo:
    model: str
    context_window: int
    chat_template: str | None
    bos_token: str
    eos_token: str
    vocabulary: int | None = None  # token ids are 0 .. vocabulary - 1 (None: an older engine)
    # Texts the engine tokenizes as control tokens in a rendered template, neutralised in
    # caller text (engine/control_tokens.py); empty from an engine older than this field.
    control_tokens: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> EngineInfo:
        return cls(
            model=str(data["model"]),
            context_window=int(data["context_window"]),
            chat_template=data.get("chat_template"),
            bos_token=str(data.get("bos_token") or ""),
            eos_token=str(data.get("eos_token") or ""),
            vocabulary=int(data["vocabulary"]) if data.get("vocabulary") else None,
            control_tokens=tuple(str(text) for text in data.get("control_tokens") or ()),
        )


class _Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        name: str,
        stall_seconds: float,
        crashes: CrashLedger | None = None,
    ) -> None:
        self.writer = writer
        self.name = name
        self.stall_seconds = stall_seconds
        self.crashes = crashes or CrashLedger()
        self.grammars: dict[int, str] = {}  # request id -> its grammar's fingerprint, while in flight
        self.closing = False  # closed by this side: its end says nothing about the requests
        self.last_heard = asyncio.get_running_loop().time()
        self.waiting: dict[int, asyncio.Queue[_Item]] = {}
        self.stats: asyncio.Future[dict[str, Any]] | None = None
        self.closed = False
        self.stalled = False
        self._reader = reader
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read(), name=f"engine-reader:{self.name}")
        self._watchdog = asyncio.create_task(self._watch(), name=f"engine-watchdog:{self.name}")

    async def _watch(self) -> None:
        """An engine that is alive but stuck (stopped, or in an endless kernel) never
        closes the connection: with requests waiting, silence past `stall_seconds`
        (the engine sends something every second while it works) ends them."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(min(1.0, self.stall_seconds / 4))
            if self.waiting and loop.time() - self.last_heard > self.stall_seconds:
                self.stalled = True
                self.writer.close()  # the reader sees the end and fails every waiting request
                return

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (message := await read_message(self._reader)) is not None:
                self.last_heard = loop.time()
                if message.get("op") == "step":
                    for event in message["events"]:
                        queue = self.waiting.get(event[0])
                        if queue is not None:
                            queue.put_nowait(error_from_wire(event) if is_error(event) else chunk_from_wire(event))
                elif message.get("op") == "embedded":
                    queue = self.waiting.get(message["id"])
                    if queue is not None:
                        queue.put_nowait(EmbeddedTexts(message["vectors"], int(message["tokens"])))
                elif message.get("op") == "counted":
                    queue = self.waiting.get(message["id"])
                    if queue is not None:
                        queue.put_nowait(CountedTokens(int(message["tokens"])))
                elif message.get("op") == "stats" and self.stats is not None and not self.stats.done():
                    self.stats.set_result(message["stats"])
        except Exception:
            log.exception("reading from the engine for %s failed", self.name)
        finally:
            self._lost()

    def _lost(self) -> None:
        self.closed = True
        self.writer.close()
        if self.waiting:
            log.error("the engine for %s stopped with %d requests in flight", self.name, len(self.waiting))
        if self.stalled:
            reason = f"the embedded engine for {self.name} has not answered for {self.stall_seconds:g} s"
        else:
            reason = f"the embedded engine for {self.name} stopped while generating; it is being restarted"
            if not self.closing:  # it died: what it was parsing or stepping is not sent again
                self.crashes.crashed(self.grammars.values())
        self.grammars.clear()
        for queue in self.waiting.values():
            queue.put_nowait(DeploymentUnavailable(reason))
        self.waiting.clear()
        if self.stats is not None and not self.stats.done():
            self.stats.set_exception(DeploymentUnavailable(f"the embedded engine for {self.name} stopped"))

    def send(self, message: dict[str, Any]) -> None:
        self.send_frame(encode(message))

    def send_frame(self, frame: bytes) -> None:
        if not self.closed:
            self.writer.write(frame)

    async def close(self) -> None:
        self.closing = True
        self.writer.close()
        for task in (self._task, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class EngineClient:
    """Requests to one engine process, from this gateway process."""

    def __init__(self, name: str, socket_path: Path, info: EngineInfo, *, stall_seconds: float = 60.0) -> None:
        self.name = name
        self.socket_path = socket_path
        self.info = info
        self.stall_seconds = stall_seconds
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._ids = itertools.count(1)
        self.crashes = CrashLedger()  # grammars in flight when this engine died, kept across reconnects

    async def _connect(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        async with self._connecting:
            if self._connection is not None and not self._connection.closed:
                return self._connection
            unavailable = f"the embedded engine for {self.name} is not running (it may be restarting)"
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
            except OSError as exc:
                raise DeploymentUnavailable(f"{unavailable}: {exc}") from exc
            try:
                hello = await asyncio.wait_for(read_message(reader), timeout=10)
                if hello is None or hello.get("op") != "hello":
                    raise ProtocolError("no greeting")
                self.info = EngineInfo.from_wire(hello["info"])
            except (OSError, TimeoutError, ProtocolError, ValueError, KeyError) as exc:
                writer.close()
                raise DeploymentUnavailable(f"{unavailable}: {exc!r}") from exc
            self._connection = _Connection(reader, writer, self.name, self.stall_seconds, self.crashes)
            self._connection.start()
            return self._connection

    async def generate(
        self,
        *,
        prompt: EnginePrompt,
        sampling: Sampling,
        account: str | None = None,
    ) -> AsyncGenerator[GenerationChunk, None]:
        """Stream a generation of `prompt` (text the engine tokenizes, or token ids it
        evaluates as given). Closing the generator early cancels it in the engine.
        400 for a request too large to send, or whose grammar was in flight when this
        engine died (engine/crashes.py)."""
        fingerprint = grammar_fingerprint(sampling.grammar) if sampling.grammar else None
        if fingerprint is not None:
            self.crashes.check(fingerprint, self.name)
        connection = await self._connect()
        request_id = next(self._ids)
        frame = encode_request(
            {
                "op": "submit",
                "id": request_id,
                **prompt_to_wire(prompt),
                "sampling": sampling_to_wire(sampling),
                "account": account,  # the engine caps each account's running sequences
            },
            "the prompt with its grammar",
        )
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        if not connection.waiting:  # an idle connection's silence so far says nothing
            connection.last_heard = asyncio.get_running_loop().time()
        connection.waiting[request_id] = queue
        if fingerprint is not None:
            connection.grammars[request_id] = fingerprint
        connection.send_frame(frame)
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                if not isinstance(item, GenerationChunk):
                    raise DeploymentUnavailable("the embedded engine answered a generation out of turn")
                yield item
                if item.finish_reason is not None:
                    finished = True
                    if fingerprint is not None:
                        self.crashes.finished(fingerprint)
                    return
        finally:
            connection.waiting.pop(request_id, None)
            connection.grammars.pop(request_id, None)
            if not finished:
                connection.send({"op": "cancel", "id": request_id})

    async def embed(self, texts: list[str] | None = None, *, tokens: list[list[int]] | None = None) -> EmbeddedTexts:
        """Sentence vectors for `texts` (or for inputs given as token ids), in order.
        Abandoning the wait cancels the work."""
        connection = await self._connect()
        request_id = next(self._ids)
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        if not connection.waiting:
            connection.last_heard = asyncio.get_running_loop().time()
        message: dict[str, Any] = {"op": "embed", "id": request_id, "texts": texts or []}
        if tokens is not None:
            message["tokens"] = tokens
        frame = encode_request(message, "the embedding request")
        connection.waiting[request_id] = queue
        connection.send_frame(frame)
        finished = False
        try:
            item = await queue.get()
            finished = True
        finally:
            connection.waiting.pop(request_id, None)
            if not finished:
                connection.send({"op": "cancel", "id": request_id})
        if isinstance(item, BaseException):
            raise item
        if not isinstance(item, EmbeddedTexts):
            raise DeploymentUnavailable("the embedded engine answered an embed request with a generation")
        return item

    async def count(self, text: str, *, special: bool) -> int:
        """How many tokens `text` is to this model (what a generation reports as its
        prompt tokens), without generating anything."""
        connection = await self._connect()
        request_id = next(self._ids)
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        if not connection.waiting:
            connection.last_heard = asyncio.get_running_loop().time()
        frame = encode_request({"op": "count", "id": request_id, "text": text, "special": special}, "the prompt")
        connection.waiting[request_id] = queue
        connection.send_frame(frame)
        try:
            item = await queue.get()
        finally:
            connection.waiting.pop(request_id, None)
        if isinstance(item, BaseException):
            raise item
        if not isinstance(item, CountedTokens):
            raise DeploymentUnavailable("the embedded engine answered a count request with something else")
        return item.tokens

    async def stats(self, answer_within: float = 2.0) -> dict[str, Any]:
        """The engine's counters: queue, running sequences, KV cells, steps."""
        connection = await self._connect()
        loop = asyncio.get_running_loop()
        if connection.stats is None or connection.stats.done():
            connection.stats = loop.create_future()
            connection.send({"op": "stats"})
        return await asyncio.wait_for(asyncio.shield(connection.stats), answer_within)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
