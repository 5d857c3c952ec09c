"""Files and batches as the vendors' SDKs read them (`schemas/batches.py`)."""

from __future__ import annotations

from datetime import datetime

from modelport.batches.service import Counted
from modelport.schemas import batches as wire
from modelport.store.accounts import as_utc
from modelport.store.batches import UNFINISHED
from modelport.store.tables import Batch, BatchFile


def _epoch(moment: datetime | None) -> int | None:
    moment = as_utc(moment)
    return int(moment.timestamp()) if moment is not None else None


def file_object(file: BatchFile) -> wire.FileObject:
    return wire.FileObject(
        id=file.id,
        bytes=file.size,
        created_at=_epoch(file.created_at) or 0,
        filename=file.filename,
        purpose=file.purpose,
        status="processed",
        expires_at=_epoch(file.expires_at),
    )


def sgp_file(file: BatchFile) -> wire.SgpFile:
    """A file as the SGP SDK reads it; one stored before revision 0016 has no checksum."""
    kind = "user" if file.created_by_identity_type == "user" else "service_account"
    return wire.SgpFile(
        id=file.id,
        created_at=as_utc(file.created_at) or file.created_at,
        created_by=wire.SgpCreatedBy(id=file.identity_id, type=kind),
        filename=file.filename,
        md5_checksum=file.md5_checksum or "",
        mime_type=file.mime_type or "application/octet-stream",
        size=file.size,
    )


def openai_batch(counted: Counted) -> wire.BatchObject:
    batch, counts = counted.batch, counted.counts
    errors = batch.errors
    return wire.BatchObject(
        id=batch.id,
        endpoint=batch.endpoint,
        errors=wire.BatchErrors(data=[wire.BatchError(**error) for error in errors]) if errors else None,
        input_file_id=batch.input_file_id,
        completion_window=batch.completion_window,
        status=batch.status,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        created_at=_epoch(batch.created_at) or 0,
        in_progress_at=_epoch(batch.in_progress_at),
        expires_at=_epoch(batch.expires_at),
        finalizing_at=_epoch(batch.finalizing_at),
        completed_at=_epoch(batch.completed_at),
        failed_at=_epoch(batch.failed_at),
        expired_at=_epoch(batch.expired_at),
        cancelling_at=_epoch(batch.cancelling_at),
        cancelled_at=_epoch(batch.cancelled_at),
        request_counts=wire.BatchRequestCounts(
            total=batch.total, completed=counts.get("succeeded", 0), failed=counts.get("errored", 0)
        ),
        metadata=batch.batch_metadata,
        model=batch.model,
        usage=wire.BatchUsage.model_validate(batch.usage) if batch.usage else None,
    )


def _processing_status(batch: Batch) -> str:
    if batch.status == "cancelling":
        return "canceling"
    return "in_progress" if batch.status in UNFINISHED else "ended"


def message_batch(counted: Counted, results_base: str) -> wire.MessageBatch:
    """`results_base`: the server's own URL, as the client called it (the SDK fetches
    the results from `results_url`)."""
    batch, counts = counted.batch, counted.counts
    status = _processing_status(batch)
    ended_at = batch.completed_at or batch.cancelled_at or batch.expired_at or batch.failed_at
    return wire.MessageBatch(
        id=batch.id,
        processing_status=status,
        request_counts=wire.MessageBatchRequestCounts(
            processing=max(0, batch.total - sum(counts.values())),
            succeeded=counts.get("succeeded", 0),
            errored=counts.get("errored", 0),
            canceled=counts.get("canceled", 0),
            expired=counts.get("expired", 0),
        ),
        ended_at=as_utc(ended_at) if status == "ended" else None,
        created_at=as_utc(batch.created_at) or batch.created_at,
        expires_at=as_utc(batch.expires_at) or batch.expires_at,
        cancel_initiated_at=as_utc(batch.cancelling_at),
        results_url=f"{results_base.rstrip('/')}/v1/messages/batches/{batch.id}/results" if status == "ended" else None,
    )
