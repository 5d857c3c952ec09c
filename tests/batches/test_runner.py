"""The batch runner against a scripted `LineCall` (no app, no HTTP), on SQLite and
PostgreSQL: leases between runners that race for one batch, a dead runner's batch taken
over only once its lease ran out, a lost lease, a revoked key, an expired batch, and
the sweep of expired files (bounded, once across replicas)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

import orjson
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.batches.files import FileStore
from modelport.batches.lines import LineAnswer
from modelport.batches.runner import BatchRunner
from modelport.batches.service import Batches, owner_of
from modelport.principal import IdentityType, Principal, Role
from modelport.schemas import batches as wire
from modelport.store import accounts, db
from modelport.store import batches as store
from modelport.store.tables import ApiKey, Batch
from tests.conftest import own_database

T = TypeVar("T")


@dataclass
class Calls:
    """A LineCall that answers 200 with the body's prompt, counting the calls per
    prompt; it waits for `gate` when one is set."""

    counts: Counter[str] = field(default_factory=Counter)
    gate: asyncio.Event | None = None

    async def __call__(self, principal: Principal, path: str, body: bytes) -> LineAnswer:
        prompt = orjson.loads(body)["messages"][0]["content"]
        self.counts[prompt] += 1
        if self.gate is not None:
            await self.gate.wait()
        return LineAnswer(200, "req", {"echo": prompt, "as": principal.key_id})


@dataclass
class World:
    sessions: async_sessionmaker[AsyncSession]
    files: FileStore
    batches: Batches
    principal: Principal


@pytest.fixture(params=["sqlite", "postgresql"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    async with own_database(request.param, tmp_path, prefix="modelport_runner") as url:
        engine = db.make_engine(url)
        await db.upgrade(engine)
        sessions = db.make_sessions(engine)
        async with sessions() as session, session.begin():
            account = await accounts.create_account(session, name="team")
            identity = await accounts.create_identity(
                session, name="ci", identity_type=IdentityType.SERVICE_ACCOUNT, default_account_id=account.id
            )
            await accounts.add_membership(session, identity_id=identity.id, account_id=account.id, role=Role.MEMBER)
            key = await accounts.create_api_key(session, identity_id=identity.id, key_hash="h", display_prefix="mp_")
        principal = Principal(
            identity_id=identity.id,
            identity_type=IdentityType.SERVICE_ACCOUNT,
            account_id=account.id,
            role=Role.MEMBER,
            key_id=key.id,
        )
        files = FileStore(sessions)
        try:
            yield World(sessions, files, Batches(sessions, files), principal)
        finally:
            await engine.dispose()


def _runner(world: World, calls: Calls, owner: str, lease: float = 30.0) -> BatchRunner:
    return BatchRunner(
        world.sessions, world.files, calls, concurrency=2, lease_seconds=lease, poll_seconds=0.02, owner=owner
    )


async def _batch(world: World, lines: int, tag: str = "p") -> str:
    content = b"".join(
        orjson.dumps({"custom_id": f"c{n}", "url": "/v1/chat/completions",
                      "body": {"model": "m", "messages": [{"role": "user", "content": f"{tag}{n}"}]}}) + b"\n"
        for n in range(lines)
    )  # fmt: skip
    chunks = iter([content])

    async def read(_: int) -> bytes:
        return next(chunks, b"")

    source = await world.files.save(owner_of(world.principal), purpose="batch", filename="in.jsonl", read=read)
    body = wire.BatchCreate(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
    return (await world.batches.create_openai(world.principal, body)).batch.id


async def _until(read: Callable[[], Awaitable[T]], done: Callable[[T], bool], seconds: float = 60) -> T:
    deadline = time.monotonic() + seconds
    while True:
        value = await read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"not done in {seconds} s: {value}"
        await asyncio.sleep(0.02)


async def _status(world: World, batch_id: str) -> Batch:
    async with world.sessions() as session:
        found = await store.get_batch(session, batch_id=batch_id)
    assert found is not None
    return found


@asynccontextmanager
async def _running(*runners: BatchRunner) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(runner.run()) for runner in runners]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_runners_racing_for_batches_run_each_line_once(world: World) -> None:
    calls = Calls()
    batch_ids = [await _batch(world, 30, tag=f"b{n}-") for n in range(3)]
    runners = [_runner(world, calls, owner) for owner in ("one", "two", "three")]
    async with _running(*runners):
        for batch_id in batch_ids:
            done = await _until(partial(_status, world, batch_id), lambda found: found.status == "completed")
            assert done.completed == 30 and done.lease_owner is None
    assert len(calls.counts) == 90 and set(calls.counts.values()) == {1}


async def test_a_dead_runners_batch_is_taken_over_once_its_lease_ran_out(world: World) -> None:
    calls = Calls()
    batch_id = await _batch(world, 5)
    now = datetime.now(UTC)
    async with world.sessions() as session, session.begin():
        assert await store.take_lease(
            session, batch_id=batch_id, owner="dead", now=now, until=now + timedelta(seconds=1.5)
        )
    async with _running(_runner(world, calls, "alive")):
        found = await _until(lambda: _status(world, batch_id), lambda found: found.status == "completed")
        assert found.completed == 5
    # Not before the dead one's lease ran out.
    assert found.in_progress_at is not None
    assert store_time(found.in_progress_at) >= now + timedelta(seconds=1.5)


async def test_a_runner_that_lost_its_lease_starts_no_more_lines(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls(gate=asyncio.Event())
    batch_id = await _batch(world, 10)
    runner = _runner(world, calls, "first", lease=0.3)
    async with _running(runner):
        await _until(lambda: _counted(calls), lambda count: count == 2)
        async with world.sessions() as session, session.begin():  # another replica took it
            later = datetime.now(UTC) + timedelta(seconds=60)
            await session.execute(
                update(Batch).where(Batch.id == batch_id).values(lease_owner="other", lease_expires_at=later)
            )
        await _until(_returned(lambda: caplog.text), lambda text: "the lease was lost" in text)
        calls.gate.set()  # the two lines running finish
        await _until(_returned(lambda: runner.running), lambda running: batch_id not in running)
    assert sum(calls.counts.values()) == 2
    assert (await _status(world, batch_id)).status == "in_progress"  # the other replica's to finish


async def test_a_revoked_key_fails_the_batch_and_an_expired_one_expires(world: World) -> None:
    calls = Calls()
    revoked = await _batch(world, 3, tag="r")
    async with world.sessions() as session, session.begin():
        await session.execute(update(ApiKey).values(revoked_at=datetime.now(UTC)))
    async with _running(_runner(world, calls, "one")):
        failed = await _until(lambda: _status(world, revoked), lambda found: found.status == "failed")
    assert failed.errors and failed.errors[0]["code"] == "invalid_api_key" and failed.failed == 3
    assert not calls.counts

    async with world.sessions() as session, session.begin():
        await session.execute(update(ApiKey).values(revoked_at=None))
    late = await _batch(world, 2, tag="e")
    async with world.sessions() as session, session.begin():
        await session.execute(
            update(Batch).where(Batch.id == late).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    async with _running(_runner(world, calls, "two")):
        expired = await _until(lambda: _status(world, late), lambda found: found.status == "expired")
    assert expired.expired_at is not None and not calls.counts
    async with world.sessions() as session:
        assert await store.line_counts(session, batch_id=late) == {"expired": 2}


def _returned(read: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def value() -> T:
        return read()

    return value


async def _counted(calls: Calls) -> int:
    return sum(calls.counts.values())


def store_time(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


async def test_a_cancel_told_while_the_runner_reads_the_status_is_kept(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel route tells this replica's runner at once (`cancelled`), and the
    runner also reads the status from the database every poll. A read that began before
    the cancel was stored says "in_progress": it must not undo the cancel it was told,
    or the lines waiting start as soon as the running ones end."""
    calls = Calls(gate=asyncio.Event())
    batch_id = await _batch(world, 10)
    # One look at the database a second: the stale read's answer would stand that long.
    runner = BatchRunner(world.sessions, world.files, calls, concurrency=2, lease_seconds=30, poll_seconds=1.0)
    read = store.get_batch
    armed = asyncio.Event()

    async def stale_then_cancelled(session: AsyncSession, *, batch_id: str) -> Batch | None:
        found = await read(session, batch_id=batch_id)  # read before the cancel is stored
        reader = asyncio.current_task()
        by_runner = reader is not None and reader.get_name() == f"lease {batch_id}"  # its look every poll
        if by_runner and armed.is_set() and found is not None and found.status == "in_progress":
            armed.clear()
            async with world.sessions() as other, other.begin():
                assert await store.ask_cancel(other, batch_id=batch_id, now=datetime.now(UTC))
            runner.cancelled(batch_id)  # as the cancel route tells it
            # The two lines running end just after this stale answer is taken in (well
            # before the runner's next look, a second later).
            asyncio.get_running_loop().call_later(0.2, calls.gate.set)
        return found

    monkeypatch.setattr(store, "get_batch", stale_then_cancelled)
    async with _running(runner):
        await _until(lambda: _counted(calls), lambda count: count == 2)
        armed.set()
        found = await _until(lambda: _status(world, batch_id), lambda found: found.status == "cancelled")
    assert sum(calls.counts.values()) == 2  # no line started after the cancel
    assert found.completed == 2


async def test_expired_files_are_swept_a_bounded_pass_at_a_time_once_across_replicas(
    world: World, tmp_path: Path
) -> None:
    """`sweep_expired` deletes at most its bound a pass, oldest expiry first; two
    replicas sweeping at once delete each file once (rows, chunks, directory file) and
    leave alone the files not expired."""
    directory = tmp_path / "files"
    replicas = [FileStore(world.sessions, directory=directory) for _ in range(2)]
    past = datetime.now(UTC) - timedelta(minutes=1)

    async def saved(expires_at: datetime | None) -> str:
        chunks = iter([b"{}\n"])

        async def read(_: int) -> bytes:
            return next(chunks, b"")

        file = await replicas[0].save(
            owner_of(world.principal), purpose="user_data", filename="f", read=read, expires_at=expires_at
        )
        return file.id

    expired = [await saved(past + timedelta(seconds=n)) for n in range(5)]
    kept = [await saved(None), await saved(datetime.now(UTC) + timedelta(hours=1))]
    assert await replicas[0].sweep_expired(limit=2) == 2
    assert {path.name for path in directory.iterdir()} == {*expired[2:], *kept}  # the two that expired first went
    swept = await asyncio.gather(*(replica.sweep_expired(limit=10) for replica in replicas))
    assert sum(swept) == 3
    assert {path.name for path in directory.iterdir()} == set(kept)
    async with world.sessions() as session:
        for file_id in expired:
            assert (
                await store.get_file(
                    session, account_id=world.principal.account_id, file_id=file_id, include_expired=True
                )
                is None
            )
    assert await replicas[1].sweep_expired() == 0
