"""The Files API's files (`/v1/files`): kept in the database in chunks, or in a directory
(`MODELPORT_FILES_DIR`), per account. Knows no HTTP.

Three bounds (config.py, "Bounds"): a file's bytes (`FILES_MAX_BYTES`; the route also
refuses a larger body before reading it), the bytes of all of an account's files
together (`FILES_MAX_BYTES_PER_ACCOUNT`), and the lines of a `batch` file
(`BATCH_MAX_LINES`). A file is read and written a chunk at a time: no upload, download
or batch ever holds a whole file in memory.

A file may expire (OpenAI's `expires_after`, a batch's `output_expires_after`): past its
`expires_at` the store's queries no longer find it (404, left out of lists, no batch made
from it), and `sweep_expired`, called by the batch runner on each of its polls, deletes
it for good (rows, chunks, the directory's file) unless a batch still running reads it.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from modelport.errors import InvalidRequest, NotFound, PayloadTooLarge
from modelport.store import batches as store
from modelport.store.tables import BatchFile

CHUNK_BYTES = 1024 * 1024
# Purposes a client may upload with; the others are modelport's own (outputs, and the
# requests of an Anthropic batch, which /v1/files never lists).
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data")
LISTED_PURPOSES = (*UPLOAD_PURPOSES, "batch_output")
ANTHROPIC_REQUESTS = "anthropic_batch"
# The files of the SGP SDK's `beta.files` (`/v4/beta/files`): an API of their own, which
# /v1/files neither lists nor serves.
SGP_FILES = "sgp"
# Expired files one sweep deletes at most: each poll's work stays small, the rest wait
# for the next poll.
SWEEP_FILES = 100


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class FileBounds:
    max_bytes: int = 100 * 1024 * 1024
    max_bytes_per_account: int = 10 * 1024 * 1024 * 1024
    max_lines: int = 50_000


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose a file is: the account, and the identity (and its kind) and key that made it."""

    account_id: str
    identity_id: str
    key_id: str | None
    identity_type: str = "service_account"


class LineCounter:
    """Counts the non-blank lines of bytes fed a chunk at a time."""

    def __init__(self) -> None:
        self.lines = 0
        self._partial = b""

    def feed(self, data: bytes) -> None:
        pieces = (self._partial + data).split(b"\n")
        self._partial = pieces.pop()
        self.lines += sum(1 for piece in pieces if piece.strip())

    def close(self) -> int:
        if self._partial.strip():
            self.lines += 1
        self._partial = b""
        return self.lines


async def split_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The lines of a file read a chunk at a time, blank ones included (each line's
    number in the file is its place in this sequence)."""
    partial = b""
    async for data in chunks:
        pieces = (partial + data).split(b"\n")
        partial = pieces.pop()
        for piece in pieces:
            yield piece
    if partial:
        yield partial


class FileStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bounds: FileBounds | None = None,
        directory: str | Path | None = None,
    ) -> None:
        """`directory`: where files are kept (made if missing); None: in the database."""
        self._sessions = sessions
        self.bounds = bounds or FileBounds()
        self._directory = Path(directory).expanduser() if directory else None
        if self._directory is not None:
            self._directory.mkdir(parents=True, exist_ok=True)

    async def save(
        self,
        owner: Owner,
        *,
        purpose: str,
        filename: str,
        read: Callable[[int], Awaitable[bytes]],
        mime_type: str | None = None,
        expires_at: datetime | None = None,
        expires_after: timedelta | None = None,
    ) -> BatchFile:
        """A new file of what `read(n)` gives until it gives b"" (an upload, an output)."""

        async def chunks() -> AsyncIterator[bytes]:
            while data := await read(CHUNK_BYTES):
                yield data

        return await self.write(
            owner,
            purpose=purpose,
            filename=filename,
            chunks=chunks(),
            mime_type=mime_type,
            expires_at=expires_at,
            expires_after=expires_after,
        )

    async def write(
        self,
        owner: Owner,
        *,
        purpose: str,
        filename: str,
        chunks: AsyncIterator[bytes],
        capped: bool = True,
        mime_type: str | None = None,
        expires_at: datetime | None = None,
        expires_after: timedelta | None = None,
    ) -> BatchFile:
        """A new file of `chunks`. `capped`: held to `FILES_MAX_BYTES` (an upload; a
        batch's output is held only to the account's bound). `expires_at`: when it is
        deleted by itself (None: never); `expires_after`: the same, counted from the
        file's `created_at` (OpenAI's anchor), which wins over `expires_at`."""
        created_at = datetime.now(UTC)
        if expires_after is not None:
            expires_at = created_at + expires_after
        async with self._sessions() as session:
            used = await store.stored_bytes(session, account_id=owner.account_id)
        room = self.bounds.max_bytes_per_account - used
        file = BatchFile(
            id=new_file_id(),
            account_id=owner.account_id,
            identity_id=owner.identity_id,
            key_id=owner.key_id,
            purpose=purpose,
            # PostgreSQL cannot store text holding a NUL.
            filename=filename.replace("\x00", "")[:255] or "file",
            size=0,
            lines=0,
            status="processed",
            mime_type=(mime_type or "application/octet-stream")[:255],
            created_by_identity_type=owner.identity_type,
            created_at=created_at,
            expires_at=expires_at,
        )
        path = self._directory / file.id if self._directory is not None else None
        file.stored_path = file.id if path is not None else None
        counter = LineCounter()
        # A checksum for the client to compare, not a security measure (FIPS builds
        # refuse md5 unless told so).
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            async with self._sessions() as session, session.begin():
                await store.add_file(session, file)
                handle = await asyncio.to_thread(path.open, "wb") if path is not None else None
                try:
                    async for seq, data in _numbered(_rechunked(chunks)):
                        size += len(data)
                        if capped and size > self.bounds.max_bytes:
                            raise PayloadTooLarge(
                                f"the file is larger than the limit of {self.bounds.max_bytes} bytes "
                                "(MODELPORT_FILES_MAX_BYTES)"
                            )
                        if size > room:
                            raise PayloadTooLarge(
                                f"the account's files would hold more than {self.bounds.max_bytes_per_account} bytes "
                                "(MODELPORT_FILES_MAX_BYTES_PER_ACCOUNT): delete some first"
                            )
                        counter.feed(data)
                        digest.update(data)
                        if handle is not None:
                            await asyncio.to_thread(handle.write, data)
                        else:
                            await store.add_chunk(session, file_id=file.id, seq=seq, data=data)
                finally:
                    if handle is not None:
                        await asyncio.to_thread(handle.close)
                file.size, file.lines, file.md5_checksum = size, counter.close(), digest.hexdigest()
                if purpose in ("batch", ANTHROPIC_REQUESTS) and file.lines > self.bounds.max_lines:
                    raise InvalidRequest(
                        f"the file has {file.lines} requests, more than the limit of {self.bounds.max_lines} "
                        "a batch (MODELPORT_BATCH_MAX_LINES)",
                        param="file",
                    )
                await store.set_file_size(
                    session, file_id=file.id, size=size, lines=file.lines, md5_checksum=file.md5_checksum
                )
        except BaseException:
            if path is not None:
                await asyncio.to_thread(path.unlink, True)
            raise
        return file

    async def get(self, account_id: str, file_id: str, *, purposes: tuple[str, ...] = LISTED_PURPOSES) -> BatchFile:
        async with self._sessions() as session:
            found = await store.get_file(session, account_id=account_id, file_id=file_id)
        if found is None or found.purpose not in purposes:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return found

    async def page(
        self,
        account_id: str,
        *,
        purpose: str | None,
        after: str | None,
        limit: int,
        newest_first: bool,
        before: str | None = None,
        order_by: str = "created_at",
        filename_contains: str | None = None,
    ) -> tuple[list[BatchFile], bool]:
        """A page of the account's files, and whether more follow (in the direction read:
        before `before` when it is given). `purpose`: the Files API's, or SGP_FILES."""
        known = (*LISTED_PURPOSES, SGP_FILES)
        purposes = (purpose,) if purpose in known else () if purpose else LISTED_PURPOSES
        async with self._sessions() as session:
            found = await store.list_files(
                session,
                account_id=account_id,
                purposes=purposes,
                after=after,
                before=before,
                limit=limit + 1,
                newest_first=newest_first,
                order_by=order_by,
                filename_contains=filename_contains,
            )
        if before is not None:
            # Read backwards: the extra file, if any, is the first.
            return found[-limit:], len(found) > limit
        return found[:limit], len(found) > limit

    async def delete(self, account_id: str, file_id: str, *, purposes: tuple[str, ...] = LISTED_PURPOSES) -> None:
        file = await self.get(account_id, file_id, purposes=purposes)
        async with self._sessions() as session, session.begin():
            if await store.is_input_of_unfinished_batch(session, file_id=file.id):
                raise InvalidRequest(
                    f"file {file_id} is the input of a batch still running: cancel the batch first", param="file_id"
                )
            await store.delete_file(session, file_id=file.id)
        await self.remove_stored(file)

    async def sweep_expired(self, limit: int = SWEEP_FILES) -> int:
        """Delete for good at most `limit` files past their expiry (not the input of a
        batch still running: it goes at a sweep after the batch ended); how many this
        call deleted. Harmless on several replicas at once: each file's DELETE checks
        again that it is expired and unread, and only the replica whose DELETE removed
        the row removes the directory's file (never one a batch started on meanwhile)."""
        now = datetime.now(UTC)
        async with self._sessions() as session:
            expired = await store.expired_files(session, now=now, limit=limit)
        swept = 0
        for file in expired:
            async with self._sessions() as session, session.begin():
                deleted = await store.delete_expired_file(session, file_id=file.id, now=now)
            if deleted:
                await self.remove_stored(file)
                swept += 1
        return swept

    async def remove_stored(self, file: BatchFile) -> None:
        """The bytes of a file kept in the directory (its row is gone already)."""
        if file.stored_path is not None and self._directory is not None:
            await asyncio.to_thread((self._directory / file.stored_path).unlink, True)

    async def chunks(self, file: BatchFile) -> AsyncIterator[bytes]:
        """The file's bytes, a chunk at a time."""
        if file.stored_path is not None:
            if self._directory is None:
                raise NotFound(f"file {file.id} is kept in a directory this server is not given (MODELPORT_FILES_DIR)")
            handle = await asyncio.to_thread((self._directory / file.stored_path).open, "rb")
            try:
                while data := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                    yield data
            finally:
                await asyncio.to_thread(handle.close)
            return
        seq = 0
        while True:
            async with self._sessions() as session:
                found = await store.chunk(session, file_id=file.id, seq=seq)
            if found is None:
                return
            yield found
            seq += 1


async def _rechunked(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The same bytes in pieces of exactly CHUNK_BYTES (the last one shorter): chunk `n`
    of a stored file then starts at byte n * CHUNK_BYTES."""
    pending = b""
    async for data in chunks:
        pending += data
        while len(pending) >= CHUNK_BYTES:
            yield pending[:CHUNK_BYTES]
            pending = pending[CHUNK_BYTES:]
    if pending:
        yield pending


async def _numbered(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    seq = 0
    async for data in chunks:
        yield seq, data
        seq += 1
