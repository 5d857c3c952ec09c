"""Starts an engine process per GGUF file, watches it, restarts it when it dies.

The supervisor runs on a thread of its own, with its own event loop, in the process
that runs `modelport serve` (the parent of the workers under `--workers N`, so one
engine serves every worker). Gateway processes ask it, over a Unix socket, to load a
file for a deployment (`attach`: it answers with the engine's socket once the model
is loaded and its self-check passed), to let go of one (`detach`: the engine stops
when no deployment uses it), and how its engines are (`status`).

An engine that dies (SIGSEGV, SIGKILL, the OOM killer) is started again after a
backoff that doubles with each crash in a row, up to `restart_backoff_max`. A crash
loop, more than `restart_limit` crashes in a row without `stable_seconds` of uptime
between them, does not end it: the engine is FAILED with the reason meanwhile, and
`on_failed` is told which deployments it served so that they are marked FAILED too,
but it is still started again after each backoff, and once it is ready `on_recovered`
is told, so that they are READY again. A crash that one request causes would
otherwise keep a model down for every account until an operator noticed. An
operator's retry (`attach(retry=True)`) cuts the backoff short. A file llama.cpp
cannot load is FAILED at once and not started again: that would not help.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import orjson

from modelport.config import EngineSettings
from modelport.engine.protocol import encode, read_message

log = logging.getLogger(__name__)

EngineState = Literal["starting", "ready", "restarting", "failed", "stopped"]
FailureCallback = Callable[[list[str], str], Awaitable[None]]
RecoveryCallback = Callable[[list[str]], Awaitable[None]]


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class _Engine:
    """One GGUF file's engine process, through its restarts."""

    def __init__(
        self,
        path: str,
        socket_path: Path,
        settings: EngineSettings,
        on_failed: FailureCallback | None,
        on_recovered: RecoveryCallback | None = None,
    ):
        self.path = path
        self.socket_path = socket_path
        self.users: set[str] = set()
        self.state: EngineState = "starting"
        self.reason: str | None = None
        self.info: dict[str, Any] | None = None
        self.pid: int | None = None
        self.restarts = 0
        self._settings = settings
        self._on_failed = on_failed
        self._on_recovered = on_recovered
        self._process: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._crashes = 0  # in a row, without stable_seconds of uptime between them
        self._unservable = False  # llama.cpp cannot load the file: never started again
        self._reported_failed = False  # on_failed was told; on_recovered is owed
        self._retry_now = asyncio.Event()

    @property
    def restartable(self) -> bool:
        """Still watched and started again (a crash loop in its backoff included)."""
        return self._task is not None and not self._task.done()

    async def retry(self) -> None:
        """An operator asked: start it again now, as if it had not crashed before."""
        await self._set("restarting", self.reason)
        self._retry_now.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"engine-supervisor:{Path(self.path).name}")

    async def settled(self) -> EngineState:
        """Wait until the engine is ready or has failed."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.state in ("ready", "failed", "stopped"))
        return self.state

    def status(self) -> dict[str, Any]:
        return {
            "model": self.path,
            "state": self.state,
            "reason": self.reason,
            "pid": self.pid,
            "restarts": self.restarts,
            "deployments": sorted(self.users),
        }

    async def _set(self, state: EngineState, reason: str | None = None) -> None:
        if self.state == "stopped":
            return  # stopping is final: a late "ready" or crash must not undo it
        self.state, self.reason = state, reason
        async with self._changed:
            self._changed.notify_all()

    async def _run(self) -> None:
        try:
            await self._keep_running()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave attaches waiting on an engine nobody watches
            log.exception("the supervisor of %s failed", Path(self.path).name)
            await self._fail(f"the engine supervisor failed: {exc!r}")

    async def _keep_running(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self._settings
        while True:
            up_since = None
            died = await self._start_once()
            if died is None and self.state != "stopped":  # loaded: now watch it
                up_since = loop.time()
                await self._set("ready")
                await self._recovered()
                assert self._process is not None
                returncode = await self._process.wait()
                died = f"the engine process for {Path(self.path).name} died ({describe_exit(returncode)})"
            if self._unservable or self.state == "stopped":
                return
            stable = up_since is not None and loop.time() - up_since >= settings.stable_seconds
            self._crashes = 1 if stable else self._crashes + 1
            delay = min(settings.restart_backoff * 2 ** min(self._crashes - 1, 32), settings.restart_backoff_max)
            self.pid = None
            if self._crashes > settings.restart_limit:
                await self._fail(
                    f"{died}; it crashed {self._crashes} times in a row, and is started again in {delay:g}s"
                )
            else:
                log.error("%s; starting it again in %.1fs", died, delay)
                await self._set("restarting", died)
            await self._back_off(delay)
            self.restarts += 1

    async def _back_off(self, delay: float) -> None:
        """Wait `delay` seconds, or less if an operator asks for a retry meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._retry_now.wait(), delay)
        if self._retry_now.is_set():
            self._retry_now.clear()
            self._crashes = 0

    async def _recovered(self) -> None:
        if not self._reported_failed:
            return
        self._reported_failed = False
        log.info("engine for %s is ready again", Path(self.path).name)
        if self._on_recovered is not None and self.users:
            try:
                await self._on_recovered(sorted(self.users))
            except Exception:
                log.exception("could not record that deployments %s are ready again", sorted(self.users))

    async def _start_once(self) -> str | None:
        """Start the process and wait for it to be ready: None, or why it is not."""
        settings = self._settings
        command = [
            sys.executable,
            "-m",
            "modelport.engine.process",
            "--socket",
            str(self.socket_path),
            "--model",
            self.path,
            # Every knob, as one value: the process reads them as they are here.
            "--settings",
            orjson.dumps(asdict(settings)).decode(),
        ]
        # stdin is the engine's lifeline: it exits when the pipe closes with us.
        # A session of its own: a Ctrl-C meant for the server does not reach it.
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True
        )
        self._process, self.pid = process, process.pid
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), settings.load_timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            return f"the engine process for {Path(self.path).name} did not start within {settings.load_timeout:.0f}s"
        if not line:
            returncode = await process.wait()
            return (
                f"the engine process for {Path(self.path).name} died while loading the model and running its "
                f"self-check ({describe_exit(returncode)}); this llama.cpp build may not work on this CPU"
            )
        report = orjson.loads(line)
        if "error" in report:
            await process.wait()
            self._unservable = True
            await self._fail(str(report["error"]))
            return str(report["error"])
        self.info = report["ready"]
        log.info("engine for %s ready (pid %d)", Path(self.path).name, process.pid)
        return None

    async def _fail(self, reason: str) -> None:
        log.error("engine for %s FAILED: %s", Path(self.path).name, reason)
        self.pid = None
        await self._set("failed", reason)
        self._reported_failed = True
        if self._on_failed is not None and self.users:
            try:
                await self._on_failed(sorted(self.users), reason)
            except Exception:
                log.exception("could not record that deployments %s failed", sorted(self.users))

    async def stop(self) -> None:
        await self._set("stopped")
        process = self._process
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()  # the engine exits when its lifeline closes
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.socket_path.unlink(missing_ok=True)


class EngineSupervisor:
    def __init__(
        self,
        settings: EngineSettings,
        runtime_dir: Path,
        on_failed: FailureCallback | None = None,
        on_recovered: RecoveryCallback | None = None,
    ):
        self._settings = settings
        self._dir = runtime_dir
        self._on_failed = on_failed
        self._on_recovered = on_recovered
        self._engines: dict[str, _Engine] = {}
        self._lock = asyncio.Lock()

    async def attach(self, deployment_id: str, path: str, *, retry: bool = False) -> dict[str, Any]:
        """Load `path` for a deployment (once for all deployments and workers)."""
        async with self._lock:
            engine = self._engines.get(path)
            users: set[str] = set()
            if engine is not None and engine.state == "failed" and retry:
                if engine.restartable:  # in its crash-loop backoff: start it now
                    await engine.retry()
                else:
                    users = engine.users  # the same deployments, served by a new engine
                    engine = None
            if engine is None:
                name = hashlib.sha256(path.encode()).hexdigest()[:16]
                engine = _Engine(path, self._dir / f"{name}.sock", self._settings, self._on_failed, self._on_recovered)
                engine.users |= users
                self._engines[path] = engine
                engine.start()
            engine.users.add(deployment_id)
        state = await engine.settled()
        if state != "ready":
            return {"ok": False, "error": engine.reason or f"the engine is {state}"}
        return {"ok": True, "socket": str(engine.socket_path), "info": engine.info}

    async def detach(self, deployment_id: str) -> None:
        unused = []
        async with self._lock:
            for path, engine in list(self._engines.items()):
                engine.users.discard(deployment_id)
                if not engine.users:
                    log.info("no deployment uses %s any more: stopping its engine", Path(path).name)
                    unused.append(self._engines.pop(path))
        for engine in unused:  # outside the lock: stopping may take seconds
            await engine.stop()

    def status(self) -> list[dict[str, Any]]:
        return [engine.status() for engine in self._engines.values()]

    async def close(self) -> None:
        async with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        # Stopped together: none is restarted while another one is still stopping.
        await asyncio.gather(*(engine.stop() for engine in engines))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One control request per connection, from a gateway process."""
        try:
            request = await read_message(reader)
            if request is None:
                return
            op = request.get("op")
            if op == "attach":
                reply = await self.attach(
                    str(request["deployment_id"]), str(request["path"]), retry=bool(request.get("retry"))
                )
            elif op == "detach":
                await self.detach(str(request["deployment_id"]))
                reply = {"ok": True}
            elif op == "status":
                reply = {"ok": True, "engines": self.status()}
            else:
                reply = {"ok": False, "error": f"unknown operation {op!r}"}
            writer.write(encode(reply))
            await writer.drain()
        except Exception:
            log.exception("engine supervisor request failed")
        finally:
            writer.close()


class SupervisorThread:
    """An EngineSupervisor on a thread of its own, listening on `control_path`."""

    def __init__(
        self,
        settings: EngineSettings,
        on_failed: FailureCallback | None = None,
        on_recovered: RecoveryCallback | None = None,
    ) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="modelport-engines-"))
        self.control_path = self._dir / "supervisor.sock"
        self._settings = settings
        self._on_failed = on_failed
        self._on_recovered = on_recovered
        self._loop = asyncio.new_event_loop()
        self._supervisor: EngineSupervisor | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="engine-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise RuntimeError(f"the engine supervisor could not start: {self._failure}") from self._failure

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def listen() -> asyncio.Server:
            self._supervisor = EngineSupervisor(self._settings, self._dir, self._on_failed, self._on_recovered)
            return await asyncio.start_unix_server(self._supervisor.handle, path=str(self.control_path))

        try:
            server = self._loop.run_until_complete(listen())
        except BaseException as exc:
            self._failure = exc
            self._loop.close()
            return
        finally:
            self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            if self._supervisor is not None:
                self._loop.run_until_complete(self._supervisor.close())
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    def stop(self) -> None:
        """Stop every engine and the thread (from any other thread)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        shutil.rmtree(self._dir, ignore_errors=True)


class SupervisorClient:
    """A gateway process's way to the supervisor."""

    def __init__(self, control_path: Path) -> None:
        self.control_path = control_path

    async def call(self, request: dict[str, Any], *, answer_within: float) -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(str(self.control_path))
        try:
            writer.write(encode(request))
            await writer.drain()
            reply = await asyncio.wait_for(read_message(reader), answer_within)
        finally:
            writer.close()
        if reply is None:
            raise ConnectionError("the engine supervisor closed the connection without answering")
        return reply
