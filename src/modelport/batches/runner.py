"""The batch runner: a background task of every replica (started in the app's lifespan)
that takes each unfinished batch and runs its lines through modelport's own routes
(`LineCall`, api/batch_calls.py), as the key that created the batch.

One replica runs a batch at a time: it holds a lease on the batch's row (`lease_owner`,
`lease_expires_at`), taken by one conditional UPDATE and renewed every third of
`MODELPORT_BATCH_LEASE_SECONDS`; a replica that loses it stops starting lines. A batch
whose replica died is taken over once the lease ran out, and a replica shutting down
gives its leases back at once. Each line's outcome is written as it finishes
(`batch_lines`), so a batch taken over runs only the lines that have none (a line in
flight when its replica died runs again).

Cancelling stops new lines; the lines running finish; those never run are `canceled`.
Past the batch's `expires_at`, the lines never run are `expired`. If the creating key is
revoked or expires, or its identity left the account, the lines not yet run fail and
the batch is `failed`. Each poll also deletes files past their expiry (`FileStore.sweep_expired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.batches import outputs as outputs_of
from modelport.batches.files import ANTHROPIC_REQUESTS, FileStore, split_lines
from modelport.batches.lines import LineAnswer, LineCall, Planned, first_model, plan_anthropic, plan_openai
from modelport.errors import ModelportError
from modelport.observability.shutdown import gate
from modelport.principal import Principal
from modelport.store import accounts
from modelport.store import batches as store
from modelport.store.accounts import as_utc
from modelport.store.tables import Batch, BatchFile, BatchLine

log = logging.getLogger(__name__)

# Batches one replica runs at once (each with its own `MODELPORT_BATCH_CONCURRENCY`).
BATCHES_AT_ONCE = 4
# Lines written per transaction where many are written at once (canceled, expired).
WRITE_GROUP = 500
# A line refused for now (429, 503 with a Retry-After) is sent again this many times at
# most, waiting what it was told to, up to this long each time.
MAX_ATTEMPTS = 100
MAX_RETRY_WAIT_SECONDS = 60.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Held:
    """A batch this replica holds the lease of, and why it should stop starting lines."""

    batch: Batch
    principal: Principal | None
    # The replica is shutting down: what it has not started is left for the next one.
    closing: Callable[[], bool]
    lost: bool = False
    cancel: bool = False
    expired: bool = False
    revoked: bool = False
    finished: bool = False

    def stopping(self) -> bool:
        return self.lost or self.cancel or self.expired or self.revoked or self.closing()


class BatchRunner:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        files: FileStore,
        call: LineCall,
        *,
        concurrency: int = 4,
        lease_seconds: float = 60.0,
        poll_seconds: float = 2.0,
        owner: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._files = files
        self._call = call
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.owner = owner or f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._running: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, _Held] = {}
        self._draining = False

    def _closing(self) -> bool:
        return self._draining or gate.draining

    async def drain(self, grace_seconds: float) -> None:
        """Start no line from now on, and wait (at most `grace_seconds`) for the lines
        running to finish and be written, and for the leases to be given back: the
        shutdown's first step, before `run` is cancelled."""
        self._draining = True
        running = [task for task in self._running.values() if not task.done()]
        if running:
            await asyncio.wait(running, timeout=grace_seconds)

    @property
    def running(self) -> set[str]:
        """The batches this replica is running now."""
        return {batch_id for batch_id, task in self._running.items() if not task.done()}

    def cancelled(self, batch_id: str) -> None:
        """A cancel was asked for on this replica: if it runs the batch, no line starts
        from now on (other replicas see the status at their next look)."""
        held = self._held.get(batch_id)
        if held is not None:
            held.cancel = True

    async def run(self) -> None:
        """Take and run batches until cancelled (the app's shutdown)."""
        try:
            while True:
                if not self._closing():
                    try:
                        await self._take_more()
                        # Files past their expiry go for good (a bounded pass each poll).
                        await self._files.sweep_expired()
                    except Exception:  # a database hiccup: the next poll tries again
                        log.warning("looking for batches to run, or expired files, failed", exc_info=True)
                await asyncio.sleep(self.poll_seconds)
        finally:
            running = list(self._running.values())
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _take_more(self) -> None:
        for batch_id, task in list(self._running.items()):
            if task.done():
                del self._running[batch_id]
        room = BATCHES_AT_ONCE - len(self._running)
        if room <= 0:
            return
        now = utcnow()
        async with self._sessions() as session:
            candidates = await store.claimable(session, now=now, limit=room * 2)
        for batch_id in candidates:
            if len(self._running) >= BATCHES_AT_ONCE or batch_id in self._running:
                continue
            async with self._sessions() as session, session.begin():
                taken = await store.take_lease(
                    session, batch_id=batch_id, owner=self.owner, now=now, until=self._lease_end()
                )
            if taken:
                self._running[batch_id] = asyncio.create_task(self._run_held(batch_id), name=f"batch {batch_id}")

    def _lease_end(self) -> datetime:
        return utcnow() + timedelta(seconds=self.lease_seconds)

    async def _run_held(self, batch_id: str) -> None:
        async with self._sessions() as session:
            batch = await store.get_batch(session, batch_id=batch_id)
        if batch is None:
            return
        held = _Held(batch=batch, principal=await self._principal(batch), closing=self._closing)
        self._held[batch_id] = held
        keeper = asyncio.create_task(self._keep(held), name=f"lease {batch_id}")
        failed = False
        try:
            await self._run(held)
        except Exception:
            # Its lease, no longer renewed, runs out: the batch is tried again then (not
            # at the next poll, which would repeat an error that persists at that pace).
            failed = True
            log.exception("batch %s stopped on an error; it is taken up again after its lease", batch_id)
        finally:
            self._held.pop(batch_id, None)
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if not held.finished and not held.lost and not failed:
                # Shutting down: give the lease back so that a restart or another
                # replica takes the batch up without waiting for it to run out.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release(batch_id))

    async def _release(self, batch_id: str) -> None:
        async with self._sessions() as session, session.begin():
            await store.update_held(
                session, batch_id=batch_id, owner=self.owner, lease_owner=None, lease_expires_at=None
            )

    async def _keep(self, held: _Held) -> None:
        """Renew the lease every third of it; notice a cancel (every poll), the batch's
        expiry, and a key that can no longer call."""
        batch_id = held.batch.id
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(min(self.poll_seconds, self.lease_seconds / 3))
            try:
                await self._notice_cancel(held)
                if time.monotonic() - renewed < self.lease_seconds / 3:
                    continue
                async with self._sessions() as session, session.begin():
                    if not await store.renew_lease(
                        session, batch_id=batch_id, owner=self.owner, until=self._lease_end()
                    ):
                        held.lost = True
                        log.warning("batch %s: the lease was lost; another replica runs it", batch_id)
                        return
                renewed = time.monotonic()
                held.expired = held.expired or _past(held.batch.expires_at)
                principal = await self._principal(held.batch)
                held.revoked = held.revoked or principal is None
                held.principal = principal or held.principal
            except Exception:  # a database hiccup: the lease lasts three times longer
                log.warning("batch %s: renewing the lease failed", batch_id, exc_info=True)

    async def _notice_cancel(self, held: _Held) -> None:
        """Set `held.cancel` when the database says a cancel was asked for. Never cleared
        here: a cancel told in-process (`cancelled`) while the query ran, which read the
        status from before it, must stay (`held.cancel = held.cancel or await ...` read
        the flag before the query, and wrote the old False back over it)."""
        if held.cancel:
            return
        async with self._sessions() as session:
            found = await store.get_batch(session, batch_id=held.batch.id)
        if found is not None and found.status == "cancelling":
            held.cancel = True

    async def _principal(self, batch: Batch) -> Principal | None:
        """Whom the batch runs as: the key that created it, as it is now (its limits,
        allow-list and the account's limits), in the batch's account."""
        if batch.key_id is None:
            return None
        async with self._sessions() as session:
            owner = await store.key_owner_by_id(session, key_id=batch.key_id)
            if owner is None or (owner.expires_at is not None and owner.expires_at <= time.time()):
                return None
            access = await accounts.account_access(session, identity_id=owner.identity_id, account_id=batch.account_id)
        if access is None:
            return None
        return accounts.principal_of(owner, access, batch.account_id)

    async def _set(self, held: _Held, **values: Any) -> None:
        async with self._sessions() as session, session.begin():
            if not await store.update_held(session, batch_id=held.batch.id, owner=self.owner, **values):
                held.lost = True
                return
        for name, value in values.items():
            setattr(held.batch, name, value)

    async def _run(self, held: _Held) -> None:
        batch = held.batch
        held.cancel = held.cancel or batch.status == "cancelling"
        held.expired = _past(batch.expires_at)
        held.revoked = held.principal is None
        source = await self._input(batch)
        if source is None:
            await self._set(
                held,
                status="failed",
                failed_at=utcnow(),
                errors=[{"code": "missing_file", "message": f"the input file {batch.input_file_id} is gone"}],
                lease_owner=None,
                lease_expires_at=None,
            )
            held.finished = True
            return
        if batch.status == "validating":  # the input is read here, as OpenAI's validation does
            model = await first_model(self._planned(batch, source))
            await self._set(held, status="in_progress", in_progress_at=utcnow(), total=source.lines, model=model)
        if batch.status in ("in_progress", "cancelling"):
            await self._run_lines(held, source)
        if held.lost or (held.closing() and not held.cancel):
            return  # another replica, or this one after its restart, finishes it
        await self._finish(held, source)

    async def _input(self, batch: Batch) -> BatchFile | None:
        async with self._sessions() as session:
            # Read even past its expiry: the sweep keeps a running batch's input until it ends.
            return await store.get_file(
                session, account_id=batch.account_id, file_id=batch.input_file_id, include_expired=True
            )

    async def _planned(self, batch: Batch, source: BatchFile) -> AsyncGenerator[Planned, None]:
        """Every non-blank line of the input, checked, in order."""
        seen: set[str] = set()
        index = 0
        async for raw in split_lines(self._files.chunks(source)):
            if not raw.strip():
                continue
            if source.purpose == ANTHROPIC_REQUESTS:
                yield plan_anthropic(index, raw, seen)
            else:
                yield plan_openai(index, raw, batch.endpoint, seen)
            index += 1

    async def _run_lines(self, held: _Held, source: BatchFile) -> None:
        batch = held.batch
        async with self._sessions() as session:
            done = await store.finished_lines(session, batch_id=batch.id)
        queue: asyncio.Queue[Planned | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        workers = [asyncio.create_task(self._work(held, queue)) for _ in range(self.concurrency)]
        try:
            async for planned in self._planned(batch, source):
                if held.stopping():
                    break
                if planned.line in done:
                    continue
                if planned.body is None:
                    error = {"code": planned.code, "message": planned.message}
                    await self._record([_row(batch.id, planned, outcome="errored", error=error)])
                    continue
                await queue.put(planned)
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self, held: _Held, queue: asyncio.Queue[Planned | None]) -> None:
        path = held.batch.endpoint
        while (planned := await queue.get()) is not None:
            if held.stopping() or planned.body is None:
                continue  # left for the pass that closes the batch
            try:
                answer = await self._answered(held, path, planned.body)
            except Exception:  # the route answers its own errors; this is a bug, logged
                log.exception("batch %s line %d failed", held.batch.id, planned.line)
                error = {"code": "server_error", "message": "the request failed inside modelport"}
                await self._record([_row(held.batch.id, planned, outcome="errored", error=error)])
                continue
            if answer is None:
                continue  # stopped while waiting: the line has not run
            succeeded = 200 <= answer.status_code < 300
            row = _row(held.batch.id, planned, outcome="succeeded" if succeeded else "errored")
            row.status_code, row.request_id, row.body = answer.status_code, answer.request_id, answer.body
            await self._record([row])

    async def _answered(self, held: _Held, path: str, body: bytes) -> LineAnswer | None:
        """The line's answer. One refused for now (429: the key's or account's limits;
        503: an engine's queue is full) is sent again after its Retry-After, so a batch
        goes at the pace the limits allow rather than failing. None: the batch stopped
        meanwhile, or the server is shutting down (its 503 is not the line's answer)."""
        for _ in range(MAX_ATTEMPTS):
            principal = held.principal
            if held.stopping() or principal is None:
                return None
            answer = await self._call(principal, path, body)
            if answer.status_code == 503 and held.closing():
                return None
            if answer.status_code not in (429, 503) or answer.retry_after is None:
                return answer
            await self._pause(held, min(answer.retry_after, MAX_RETRY_WAIT_SECONDS))
        return answer

    async def _pause(self, held: _Held, seconds: float) -> None:
        """Wait `seconds`, or less if the batch stops meanwhile."""
        steps = max(1, math.ceil(seconds / self.poll_seconds))
        for _ in range(steps):
            if held.stopping():
                return
            await asyncio.sleep(seconds / steps)

    async def _record(self, rows: list[BatchLine]) -> None:
        try:
            async with self._sessions() as session, session.begin():
                await store.add_lines(session, rows)
        except DBAPIError:  # one written already (a replica that lost its lease), or unstorable
            for row in rows:
                await self._record_one(_copy(row))

    async def _record_one(self, row: BatchLine) -> None:
        try:
            async with self._sessions() as session, session.begin():
                await store.add_lines(session, [row])
        except IntegrityError:
            return  # written already
        except DBAPIError:
            # An answer the database refuses to store fails its line, never the batch
            # (which would otherwise be taken up again, and refused again, for ever).
            log.warning("batch %s line %d: the answer could not be stored", row.batch_id, row.line, exc_info=True)
            error = {"code": "server_error", "message": "the answer to this request could not be stored"}
            async with self._sessions() as session, session.begin():
                await store.add_lines(
                    session,
                    [BatchLine(batch_id=row.batch_id, line=row.line, succeeded=False, outcome="errored", error=error)],
                )

    async def _close_remaining(self, held: _Held, source: BatchFile, outcome: str, error: dict[str, str]) -> None:
        """Write `outcome` for every line that has none (never run)."""
        async with self._sessions() as session:
            done = await store.finished_lines(session, batch_id=held.batch.id)
        pending: list[BatchLine] = []
        async for planned in self._planned(held.batch, source):
            if planned.line not in done:
                pending.append(_row(held.batch.id, planned, outcome=outcome, error=error))
            if len(pending) >= WRITE_GROUP:
                await self._record(pending)
                pending = []
        if pending:
            await self._record(pending)

    async def _finish(self, held: _Held, source: BatchFile) -> None:
        # A cancel that came after the last line started still makes the batch cancelled.
        await self._notice_cancel(held)
        now = utcnow()
        final: dict[str, Any]
        if held.cancel:
            closing = ("canceled", "batch_cancelled", "the batch was cancelled before this request ran")
            final = {"status": "cancelled", "cancelled_at": now}
        elif held.expired:
            closing = ("expired", "batch_expired", "the batch expired before this request ran")
            final = {"status": "expired", "expired_at": now}
        elif held.revoked:
            closing = ("errored", "invalid_api_key", "the batch's API key was revoked or expired, or left the account")
            final = {
                "status": "failed",
                "failed_at": now,
                "errors": [{"code": "invalid_api_key", "message": closing[2]}],
            }
        else:
            closing = ("errored", "not_run", "this request was not run")
            final = {"status": "completed", "completed_at": now}
        await self._close_remaining(held, source, closing[0], {"code": closing[1], "message": closing[2]})
        if final["status"] == "completed":
            await self._set(held, status="finalizing", finalizing_at=now)
        async with self._sessions() as session:
            counts = await store.line_counts(session, batch_id=held.batch.id)
        outputs: dict[str, Any] = {}
        if held.batch.surface == "openai":
            try:
                outputs = {
                    **await outputs_of.write(self._sessions, self._files, held.batch, counts),
                    "usage": await outputs_of.usage(self._sessions, held.batch.id),
                }
            except ModelportError as error:  # the account's files are full
                final = {
                    "status": "failed",
                    "failed_at": utcnow(),
                    "errors": [{"code": "storage", "message": error.detail}],
                }
        await self._set(
            held,
            **final,
            **outputs,
            completed=counts.get("succeeded", 0),
            failed=counts.get("errored", 0),
            finalizing_at=held.batch.finalizing_at or (now if final["status"] == "completed" else None),
            lease_owner=None,
            lease_expires_at=None,
        )
        held.finished = True


def _past(moment: datetime | None) -> bool:
    moment = as_utc(moment)
    return moment is not None and moment <= utcnow()


def _row(batch_id: str, planned: Planned, *, outcome: str, error: dict[str, Any] | None = None) -> BatchLine:
    return BatchLine(
        batch_id=batch_id,
        line=planned.line,
        custom_id=planned.custom_id,
        succeeded=outcome == "succeeded",
        outcome=outcome,
        error=error,
    )


def _copy(row: BatchLine) -> BatchLine:
    return BatchLine(
        batch_id=row.batch_id,
        line=row.line,
        custom_id=row.custom_id,
        succeeded=row.succeeded,
        outcome=row.outcome,
        status_code=row.status_code,
        request_id=row.request_id,
        body=row.body,
        error=row.error,
    )
