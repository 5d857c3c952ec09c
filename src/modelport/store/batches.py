"""Files and batches (`batches/` decides; this is only the SQL): the files of the Files
API and their bytes, batches with the lease of the replica running each, and what each
line of a batch came to.

A file past its `expires_at` is gone for the client: these queries are the one place that
decides it (`get_file` and `list_files` leave it out), until the runner's sweep deletes it
(`expired_files`, `delete_expired_file`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from modelport.principal import Limits, ModelAllowList
from modelport.store.accounts import KeyOwner, as_utc, limits_of, model_allow
from modelport.store.tables import ApiKey, Batch, BatchFile, BatchFileChunk, BatchLine, Identity

# A batch in one of these is not finished: the runner takes it (when its lease is free).
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")


# --- files ------------------------------------------------------------------------


async def add_file(session: AsyncSession, file: BatchFile) -> None:
    session.add(file)
    await session.flush()


async def add_chunk(session: AsyncSession, *, file_id: str, seq: int, data: bytes) -> None:
    # A plain INSERT: an ORM object would stay in the session, and a whole file with it.
    await session.execute(insert(BatchFileChunk).values(file_id=file_id, seq=seq, data=data))


async def chunk(session: AsyncSession, *, file_id: str, seq: int) -> bytes | None:
    found: bytes | None = await session.scalar(
        select(BatchFileChunk.data).where(BatchFileChunk.file_id == file_id, BatchFileChunk.seq == seq)
    )
    return found


def _unexpired(now: datetime | None = None) -> Any:
    """A file the client still sees: no expiry, or one still ahead."""
    return or_(BatchFile.expires_at.is_(None), BatchFile.expires_at > (now or datetime.now(UTC)))


async def get_file(
    session: AsyncSession, *, account_id: str, file_id: str, include_expired: bool = False
) -> BatchFile | None:
    """The account's file; one past its expiry only with `include_expired` (the runner
    reading the input of a batch that began before it expired, a list's cursor)."""
    query = select(BatchFile).where(BatchFile.id == file_id, BatchFile.account_id == account_id)
    if not include_expired:
        query = query.where(_unexpired())
    found: BatchFile | None = await session.scalar(query)
    return found


async def set_file_size(session: AsyncSession, *, file_id: str, size: int, lines: int, md5_checksum: str) -> None:
    await session.execute(
        update(BatchFile).where(BatchFile.id == file_id).values(size=size, lines=lines, md5_checksum=md5_checksum)
    )


# The columns a page of files may be ordered by (the id breaks ties), by wire name.
FILE_ORDERS: dict[str, Any] = {
    "created_at": BatchFile.created_at,
    "filename": BatchFile.filename,
    "size": BatchFile.size,
}


async def list_files(
    session: AsyncSession,
    *,
    account_id: str,
    purposes: Sequence[str],
    after: str | None,
    limit: int,
    newest_first: bool,
    before: str | None = None,
    order_by: str = "created_at",
    filename_contains: str | None = None,
) -> list[BatchFile]:
    """A page of the account's unexpired files of `purposes`, in the order of `order_by`
    (descending when `newest_first`): the `limit` files after the file `after`, or the
    `limit` files just before the file `before` (cursors; one that is not the account's
    file, or no longer, ends the listing: an empty page; one that expired while the
    client paged still marks its place). `filename_contains`: case-insensitive."""
    column = FILE_ORDERS[order_by]
    query = select(BatchFile).where(BatchFile.account_id == account_id, BatchFile.purpose.in_(purposes), _unexpired())
    if filename_contains:
        query = query.where(BatchFile.filename.icontains(filename_contains, autoescape=True))
    # A page before a cursor is read backwards from it, then turned round.
    descending = newest_first if before is None else not newest_first
    cursor = after if before is None else before
    if cursor is not None:
        anchor = await get_file(session, account_id=account_id, file_id=cursor, include_expired=True)
        if anchor is None:
            return []
        anchor_value = getattr(anchor, column.key)
        query = query.where(_beyond(column, BatchFile.id, anchor_value, anchor.id, descending))
    order = (column.desc(), BatchFile.id.desc()) if descending else (column, BatchFile.id)
    found = list((await session.scalars(query.order_by(*order).limit(limit))).all())
    return found if before is None else found[::-1]


def _beyond(column: Any, ident: Any, anchor_value: Any, anchor_id: str, descending: bool) -> Any:
    """Rows after (column, id) = the anchor's, in the page order."""
    if descending:
        return or_(column < anchor_value, and_(column == anchor_value, ident < anchor_id))
    return or_(column > anchor_value, and_(column == anchor_value, ident > anchor_id))


async def delete_file(session: AsyncSession, *, file_id: str) -> None:
    await session.execute(delete(BatchFileChunk).where(BatchFileChunk.file_id == file_id))
    await session.execute(delete(BatchFile).where(BatchFile.id == file_id))


async def is_input_of_unfinished_batch(session: AsyncSession, *, file_id: str) -> bool:
    found = await session.scalar(
        select(Batch.id).where(Batch.input_file_id == file_id, Batch.status.in_(UNFINISHED)).limit(1)
    )
    return found is not None


def _sweepable(now: datetime) -> Any:
    """Past its expiry, and not the input of a batch still running (kept until it ends)."""
    held = select(Batch.id).where(Batch.input_file_id == BatchFile.id, Batch.status.in_(UNFINISHED)).exists()
    return and_(BatchFile.expires_at <= now, ~held)


async def expired_files(session: AsyncSession, *, now: datetime, limit: int) -> list[BatchFile]:
    """At most `limit` files to delete for good, those that expired first first."""
    query = select(BatchFile).where(_sweepable(now)).order_by(BatchFile.expires_at, BatchFile.id).limit(limit)
    return list((await session.scalars(query)).all())


async def delete_expired_file(session: AsyncSession, *, file_id: str, now: datetime) -> bool:
    """Delete the file and its chunks if it is still sweepable (checked again in the
    DELETE itself: a batch may have started on it since it was listed); whether this
    call deleted it (False: not sweepable, or another replica's sweep was first)."""
    result = await session.execute(delete(BatchFile).where(BatchFile.id == file_id, _sweepable(now)))
    if not getattr(result, "rowcount", 0):
        return False
    # The foreign key cascades too; said here so no chunk outlives its file either way.
    await session.execute(delete(BatchFileChunk).where(BatchFileChunk.file_id == file_id))
    return True


async def stored_bytes(session: AsyncSession, *, account_id: str) -> int:
    """The bytes of all the account's files. Those expired but not swept yet count too:
    their bytes are still stored, for seconds (the runner's next pass) or, for the input
    of a batch still running, until the batch ends."""
    return int(await session.scalar(select(func.sum(BatchFile.size)).where(BatchFile.account_id == account_id)) or 0)


# --- batches ----------------------------------------------------------------------


async def add_batch(session: AsyncSession, batch: Batch) -> None:
    session.add(batch)
    await session.flush()


async def get_batch(session: AsyncSession, *, batch_id: str, account_id: str | None = None) -> Batch | None:
    """The batch; only if it is `account_id`'s when that is given."""
    query = select(Batch).where(Batch.id == batch_id)
    if account_id is not None:
        query = query.where(Batch.account_id == account_id)
    found: Batch | None = await session.scalar(query)
    return found


async def list_batches(
    session: AsyncSession,
    *,
    account_id: str,
    surface: str,
    after: str | None,
    before: str | None,
    limit: int,
) -> list[Batch]:
    """A page of the account's batches of `surface`, newest first: those older than the
    batch `after`, or (with `before`) the newest ones newer than it, in the same order.
    A cursor that is not the account's batch, or no longer, ends the listing (empty)."""
    query = select(Batch).where(Batch.account_id == account_id, Batch.surface == surface)
    anchor_id = after or before
    anchor = await get_batch(session, batch_id=anchor_id, account_id=account_id) if anchor_id else None
    if anchor_id and (anchor is None or anchor.surface != surface):
        return []
    if anchor is not None:
        query = query.where(_beyond(Batch.created_at, Batch.id, anchor.created_at, anchor.id, after is not None))
    if before is not None and after is None:
        older_first = query.order_by(Batch.created_at, Batch.id).limit(limit)
        return list(reversed((await session.scalars(older_first)).all()))
    return list((await session.scalars(query.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit))).all())


async def delete_batch(session: AsyncSession, *, batch_id: str) -> None:
    await session.execute(delete(BatchLine).where(BatchLine.batch_id == batch_id))
    await session.execute(delete(Batch).where(Batch.id == batch_id))


async def claimable(session: AsyncSession, *, now: datetime, limit: int) -> list[str]:
    """Unfinished batches whose lease is free or ran out, oldest first."""
    query = (
        select(Batch.id)
        .where(Batch.status.in_(UNFINISHED), or_(Batch.lease_expires_at.is_(None), Batch.lease_expires_at < now))
        .order_by(Batch.created_at)
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def take_lease(session: AsyncSession, *, batch_id: str, owner: str, now: datetime, until: datetime) -> bool:
    """Take the batch's lease if it is free or ran out; whether this replica has it. One
    conditional UPDATE: of two replicas trying at once, exactly one changes the row."""
    result = await session.execute(
        update(Batch)
        .where(
            Batch.id == batch_id,
            Batch.status.in_(UNFINISHED),
            or_(Batch.lease_expires_at.is_(None), Batch.lease_expires_at < now),
        )
        .values(lease_owner=owner, lease_expires_at=until)
    )
    return bool(getattr(result, "rowcount", 0))


async def renew_lease(session: AsyncSession, *, batch_id: str, owner: str, until: datetime) -> bool:
    """Extend the lease this replica holds; False when it lost it."""
    result = await session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.lease_owner == owner).values(lease_expires_at=until)
    )
    return bool(getattr(result, "rowcount", 0))


async def update_held(session: AsyncSession, *, batch_id: str, owner: str, **values: Any) -> bool:
    """Change the batch this replica holds the lease of; False when it lost it."""
    result = await session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.lease_owner == owner).values(**values)
    )
    return bool(getattr(result, "rowcount", 0))


async def ask_cancel(session: AsyncSession, *, batch_id: str, now: datetime) -> bool:
    """Mark an unfinished batch `cancelling`; False if it is finished or already cancelling."""
    result = await session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(("validating", "in_progress", "finalizing")))
        .values(status="cancelling", cancelling_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


# --- lines ------------------------------------------------------------------------


async def finished_lines(session: AsyncSession, *, batch_id: str) -> set[int]:
    return set((await session.scalars(select(BatchLine.line).where(BatchLine.batch_id == batch_id))).all())


async def add_lines(session: AsyncSession, lines: Sequence[BatchLine]) -> None:
    session.add_all(lines)
    await session.flush()


async def line_counts(session: AsyncSession, *, batch_id: str) -> dict[str, int]:
    """How many of the batch's lines came to each outcome."""
    rows = await session.execute(
        select(BatchLine.outcome, func.count()).where(BatchLine.batch_id == batch_id).group_by(BatchLine.outcome)
    )
    return {str(outcome): int(count) for outcome, count in rows.all()}


async def lines_page(session: AsyncSession, *, batch_id: str, after_line: int, limit: int) -> list[BatchLine]:
    query = (
        select(BatchLine)
        .where(BatchLine.batch_id == batch_id, BatchLine.line > after_line)
        .order_by(BatchLine.line)
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


# --- the principal a batch runs as ------------------------------------------------


async def key_owner_by_id(session: AsyncSession, *, key_id: str) -> KeyOwner | None:
    """The owner of the unrevoked, unexpired key `key_id`: whom a batch runs as."""
    row = (
        await session.execute(
            select(ApiKey, Identity.identity_type, Identity.default_account_id, Identity.is_operator)
            .join(Identity, Identity.id == ApiKey.identity_id)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    key: ApiKey = row[0]
    expires = as_utc(key.expires_at)
    limits: Limits | None = limits_of(key)
    allow: ModelAllowList | None = model_allow(key)
    return KeyOwner(
        key_id=key.id,
        identity_id=key.identity_id,
        identity_type=row[1],
        default_account_id=row[2],
        is_operator=bool(row[3]),
        limits=limits,
        model_allow=allow,
        cache_ttl_seconds=key.cache_ttl_seconds,
        expires_at=expires.timestamp() if expires is not None else None,
    )
