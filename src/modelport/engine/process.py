"""The engine process: one GGUF file, served to every gateway worker on one socket.

`python -m modelport.engine.process --socket PATH --model FILE --settings JSON` is started by the
supervisor (`engine/supervisor.py`). It loads the model, runs the start-up self-check,
listens on the socket and then prints one line of JSON on standard output: `{"ready":
info}`, or `{"error": reason}` for a file it cannot serve. Logs go to standard error.

One thread does everything, so the llama.cpp context needs no lock: between two engine
steps it reads what the gateways sent (new requests, cancellations), then runs a step
and sends each connection one message with every one of its sequences' new tokens.
Standard input is the supervisor's pipe: when it closes, the supervisor is gone and
the engine exits rather than live on as an orphan.
"""

from __future__ import annotations

import argparse
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from modelport.config import EngineSettings
from modelport.engine.convert import gguf_path
from modelport.engine.model import BatchEngine, Event
from modelport.engine.protocol import (
    HEADER,
    MAX_MESSAGE_BYTES,
    MessageBuffer,
    ModelLoadError,
    RefusedFrame,
    chunk_to_wire,
    encode,
    error_to_wire,
    prompt_from_wire,
    sampling_from_wire,
)
from modelport.engine.self_check import self_check
from modelport.errors import DeploymentUnavailable, InvalidRequest, ModelportError
from modelport.generation import GenerationChunk

log = logging.getLogger("modelport.engine")

# A gateway that does not read for this long is dropped (its requests are cancelled),
# so that one stuck worker cannot stall every other worker's generations.
SEND_TIMEOUT_SECONDS = 10.0
# A gateway with requests in flight hears from the engine at least this often, even
# while its prompts are still being read: silence means a stuck engine (engine/client.py).
HEARTBEAT_SECONDS = 1.0
# A refused message's reason, as logged and answered: a bounded line, whatever was sent.
LOGGED_REASON_CHARS = 300
# Exit status for a model that cannot be served: restarting would not help.
EXIT_UNSERVABLE = 3


class _Gateway:
    """One connected gateway process and the requests it has in flight."""

    def __init__(self, sock: socket.socket, number: int) -> None:
        self.sock = sock
        self.number = number
        self.buffer = MessageBuffer()
        self.requests: set[int] = set()
        self.last_sent = time.monotonic()

    def key(self, request_id: int) -> Hashable:
        return (self.number, request_id)


@dataclass(eq=False)
class _EmbedJob:
    """An `embed` request: its texts are embedded one per loop turn, between generation
    steps, so a request of 2,048 texts never stalls the streams being generated."""

    gateway: _Gateway
    request_id: int
    texts: list[str] | list[list[int]]  # texts, or inputs given as token ids
    vectors: list[list[float]] = field(default_factory=list)
    tokens: int = 0


class EngineServer:
    def __init__(self, engine: BatchEngine, listener: socket.socket) -> None:
        self._engine = engine
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(sys.stdin.buffer, selectors.EVENT_READ, "supervisor")
        self._gateways: dict[int, _Gateway] = {}
        self._owners: dict[Hashable, _Gateway] = {}
        self._connections = 0
        self._pending: dict[_Gateway, list[list[Any]]] = {}
        self._embeddings: deque[_EmbedJob] = deque()
        self.max_gateways_in_one_step = 0

    def serve_forever(self) -> None:
        while True:
            # Block only when there is nothing to generate.
            busy = self._engine.busy or bool(self._embeddings)
            for key, _ in self._selector.select(timeout=0 if busy else None):
                if key.data == "supervisor":
                    if not os.read(sys.stdin.fileno(), 4096):
                        log.info("the supervisor has gone; the engine stops")
                        return
                elif key.data is None:
                    self._accept()
                else:
                    self._receive(key.data)
            if self._engine.busy:
                self._deliver(self._engine.step())
            if self._embeddings:
                self._embed_next()
            self._flush()

    def _accept(self) -> None:
        sock, _ = self._listener.accept()
        sock.settimeout(SEND_TIMEOUT_SECONDS)
        self._connections += 1
        gateway = _Gateway(sock, self._connections)
        self._gateways[gateway.number] = gateway
        self._selector.register(sock, selectors.EVENT_READ, gateway)
        self._send(gateway, {"op": "hello", "info": self._engine.info(), "pid": os.getpid()})

    def _receive(self, gateway: _Gateway) -> None:
        try:
            data = gateway.sock.recv(1 << 16)
        except OSError as exc:
            log.warning("dropping gateway connection %d: %s", gateway.number, exc)
            data = b""
        if not data:
            self._drop(gateway)
            return
        # A message this engine cannot take fails its own request only (issue 21: one
        # oversized grammar used to end the connection, and every stream on it).
        for message in gateway.buffer.feed(data):
            if isinstance(message, RefusedFrame):
                self._refuse(gateway, message.request_id, message.reason)
                continue
            try:
                self._handle(gateway, message)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a gateway of another version, or a bug
                request_id = message.get("id")
                reason = f"a malformed {str(message.get('op'))[:20]!r} message: {exc!r}"
                self._refuse(gateway, request_id if isinstance(request_id, int) else None, reason)

    def _refuse(self, gateway: _Gateway, request_id: int | None, reason: str) -> None:
        reason = reason[:LOGGED_REASON_CHARS]
        log.warning("gateway connection %d, request %s: refused %s", gateway.number, request_id, reason)
        if request_id is not None:
            failure = InvalidRequest(f"the embedded engine refused this request: {reason}")
            self._pending.setdefault(gateway, []).append(error_to_wire(request_id, failure))

    def _handle(self, gateway: _Gateway, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "submit":
            self._submit(gateway, message)
        elif op == "embed":
            inputs: list[str] | list[list[int]]
            if message.get("tokens") is not None:
                inputs = [[int(token) for token in tokens] for tokens in message["tokens"]]
            else:
                inputs = [str(text) for text in message["texts"]]
            self._embeddings.append(_EmbedJob(gateway, int(message["id"]), inputs))
            gateway.requests.add(int(message["id"]))
        elif op == "count":  # tokenizing is quick: answered at once, between steps
            tokens = self._engine.tokenize(str(message["text"]), special=bool(message.get("special")))
            self._send(gateway, {"op": "counted", "id": int(message["id"]), "tokens": len(tokens)})
        elif op == "cancel":
            request_id = int(message["id"])
            self._forget_embeddings(gateway, request_id)
            gateway.requests.discard(request_id)
            self._owners.pop(gateway.key(request_id), None)
            self._engine.cancel(gateway.key(request_id))
        elif op == "stats":
            stats = self._engine.stats() | {
                "gateways": len(self._gateways),
                "max_gateways_in_one_step": self.max_gateways_in_one_step,
            }
            self._send(gateway, {"op": "stats", "stats": stats})
        else:
            raise ValueError(f"unknown operation {op!r}")

    def _submit(self, gateway: _Gateway, message: dict[str, Any]) -> None:
        request_id = int(message["id"])
        key = gateway.key(request_id)
        refused = self._engine.submit_prompt(
            key,
            prompt_from_wire(message),
            sampling=sampling_from_wire(message["sampling"]),
            account=message.get("account"),
        )
        if refused is not None:
            self._pending.setdefault(gateway, []).append(error_to_wire(request_id, refused))
            return
        gateway.requests.add(request_id)
        self._owners[key] = gateway

    def _embed_next(self) -> None:
        """Embed the next text of the oldest embed request; answer it once all are done."""
        job = self._embeddings[0]
        try:
            given = job.texts[len(job.vectors)]
            vector, tokens = self._engine.embed(given) if isinstance(given, str) else self._engine.embed_tokens(given)
        except ModelportError as exc:
            self._embeddings.popleft()
            job.gateway.requests.discard(job.request_id)
            self._pending.setdefault(job.gateway, []).append(error_to_wire(job.request_id, exc))
            return
        except RuntimeError as exc:  # llama.cpp failed on this text: the request fails, the engine lives on
            log.exception("embedding failed")
            self._embeddings.popleft()
            job.gateway.requests.discard(job.request_id)
            failure = DeploymentUnavailable(f"the embedded engine could not embed a text: {exc}")
            self._pending.setdefault(job.gateway, []).append(error_to_wire(job.request_id, failure))
            return
        job.vectors.append(vector)
        job.tokens += tokens
        if len(job.vectors) == len(job.texts):
            self._embeddings.popleft()
            job.gateway.requests.discard(job.request_id)
            self._send(job.gateway, {"op": "embedded", "id": job.request_id, "vectors": job.vectors,
                                     "tokens": job.tokens})  # fmt: skip

    def _forget_embeddings(self, gateway: _Gateway, request_id: int | None = None) -> None:
        self._embeddings = deque(
            job
            for job in self._embeddings
            if job.gateway is not gateway or (request_id is not None and job.request_id != request_id)
        )

    def _deliver(self, events: list[tuple[Hashable, Event]]) -> None:
        for key, event in events:
            gateway = self._owners.get(key)
            if gateway is None:
                continue  # cancelled, or its gateway has gone
            request_id = key[1]  # type: ignore[index]
            if isinstance(event, GenerationChunk):
                self._pending.setdefault(gateway, []).append(chunk_to_wire(request_id, event))
                done = event.finish_reason is not None
            else:
                self._pending.setdefault(gateway, []).append(error_to_wire(request_id, event))
                done = True
            if done:
                gateway.requests.discard(request_id)
                del self._owners[key]
        self.max_gateways_in_one_step = max(self.max_gateways_in_one_step, len(self._pending))

    def _flush(self) -> None:
        """One message per gateway per step, with all of its sequences' events."""
        pending, self._pending = self._pending, {}
        for gateway, events in pending.items():
            self._send(gateway, {"op": "step", "events": events})
        now = time.monotonic()
        for gateway in list(self._gateways.values()):
            if gateway.requests and gateway not in pending and now - gateway.last_sent >= HEARTBEAT_SECONDS:
                self._send(gateway, {"op": "step", "events": []})

    def _send(self, gateway: _Gateway, message: dict[str, Any]) -> None:
        if gateway.number not in self._gateways:
            return
        frame = encode(message)
        if len(frame) - HEADER.size > MAX_MESSAGE_BYTES and "id" in message:
            # An answer too large to travel (thousands of long vectors) fails its request,
            # not the connection the gateway reads every other answer from.
            failure = InvalidRequest(
                f"the answer comes to {len(frame)} bytes, over the engine protocol's limit of {MAX_MESSAGE_BYTES}; "
                "ask for fewer at once"
            )
            frame = encode({"op": "step", "events": [error_to_wire(message["id"], failure)]})
        try:
            gateway.sock.sendall(frame)
            gateway.last_sent = time.monotonic()
        except OSError as exc:
            log.warning("dropping gateway connection %d: %s", gateway.number, exc)
            self._drop(gateway)

    def _drop(self, gateway: _Gateway) -> None:
        """A gateway has gone (closed, crashed or stuck): cancel what it asked for."""
        if self._gateways.pop(gateway.number, None) is None:
            return
        self._forget_embeddings(gateway)
        for request_id in gateway.requests:
            self._owners.pop(gateway.key(request_id), None)
            self._engine.cancel(gateway.key(request_id))
        self._selector.unregister(gateway.sock)
        gateway.sock.close()
        self._pending.pop(gateway, None)


def _listen(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)  # left by an engine that died
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    return listener


def _report(message: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(message).decode() + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    # The engine's life is its supervisor's pipe (standard input), not a signal: a
    # Ctrl-C in the server's terminal, or a service manager's SIGTERM to the whole group,
    # must not end generations that the gateway is still draining.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="modelport-engine", description=__doc__)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--settings", default="{}", help="the EngineSettings, as JSON")
    args = parser.parse_args(argv)
    settings = EngineSettings(**orjson.loads(args.settings))
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}]: %(message)s",
        stream=sys.stderr,
    )
    try:
        engine = BatchEngine(gguf_path(args.model), settings)
        self_check(engine)
    except ModelLoadError as exc:
        log.error("%s", exc)
        _report({"error": str(exc)})
        return EXIT_UNSERVABLE
    listener = _listen(args.socket)
    _report({"ready": engine.info(), "pid": os.getpid()})
    try:
        EngineServer(engine, listener).serve_forever()
    finally:
        listener.close()
        args.socket.unlink(missing_ok=True)
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
