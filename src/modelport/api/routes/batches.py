"""OpenAI's Files and Batches APIs: `/v1/files` (upload, list, retrieve, content, delete)
and `/v1/batches` (create, retrieve, list, cancel). The work is in `modelport.batches`;
errors are in OpenAI's shape (`api.error_shapes`). An upload's body is bounded by
`MODELPORT_FILES_MAX_BYTES` before it is read (`api.limits.RequestGuard`); its
`expires_after` comes as the SDK sends it, two form fields `expires_after[anchor]` and
`expires_after[seconds]`."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from modelport.api.deps import BatchesDep, CurrentPrincipal
from modelport.batches import views
from modelport.batches.files import UPLOAD_PURPOSES
from modelport.batches.service import owner_of
from modelport.errors import InvalidRequest
from modelport.schemas import batches as wire

router = APIRouter(tags=["openai-batches"])

FILES_PATH = "/v1/files"


@router.post(FILES_PATH, response_model=wire.FileObject)
async def upload_file(
    principal: CurrentPrincipal,
    batches: BatchesDep,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[str, Form(max_length=32)],
    expires_anchor: Annotated[str | None, Form(alias="expires_after[anchor]")] = None,
    expires_seconds: Annotated[str | None, Form(alias="expires_after[seconds]")] = None,
    # Not how OpenAI's form names it (left out of the OpenAPI document): refused, never
    # ignored, which would keep the file for ever.
    expires_whole: Annotated[str | None, Form(alias="expires_after", include_in_schema=False)] = None,
) -> wire.FileObject:
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(f"purpose {purpose!r} is not one of {', '.join(UPLOAD_PURPOSES)}", param="purpose")
    expires_after = _expires_after(expires_anchor, expires_seconds, expires_whole)
    try:
        stored = await batches.files.save(
            owner_of(principal),
            purpose=purpose,
            filename=file.filename or "file",
            read=file.read,
            expires_after=expires_after,
        )
    finally:
        await file.close()
    return views.file_object(stored)


def _expires_after(anchor: str | None, seconds: str | None, whole: str | None) -> timedelta | None:
    """An upload's `expires_after` (None: kept until deleted); a 400 naming it unless it
    is anchored at `created_at` with whole seconds in OpenAI's range."""
    expected = (
        f"expires_after needs expires_after[anchor]=created_at and expires_after[seconds] from "
        f"{wire.MIN_EXPIRES_AFTER_SECONDS} to {wire.MAX_EXPIRES_AFTER_SECONDS}"
    )
    if whole is not None:
        raise InvalidRequest(expected, param="expires_after")
    if anchor is None and seconds is None:
        return None
    try:
        parsed = wire.ExpiresAfter(anchor=anchor, seconds=int(seconds or ""))
    except (ValueError, ValidationError):
        raise InvalidRequest(expected, param="expires_after") from None
    return timedelta(seconds=parsed.seconds)


@router.get(FILES_PATH, response_model=wire.FileList)
async def list_files(
    principal: CurrentPrincipal,
    batches: BatchesDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=wire.MAX_FILES_LIST_LIMIT)] = wire.MAX_FILES_LIST_LIMIT,
    order: Literal["asc", "desc"] = "desc",
    purpose: Annotated[str | None, Query(max_length=32)] = None,
) -> wire.FileList:
    found, more = await batches.files.page(
        principal.account_id, purpose=purpose, after=after, limit=limit, newest_first=order == "desc"
    )
    data = [views.file_object(file) for file in found]
    return wire.FileList(
        data=data, has_more=more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )


@router.get(FILES_PATH + "/{file_id}", response_model=wire.FileObject)
async def retrieve_file(file_id: str, principal: CurrentPrincipal, batches: BatchesDep) -> wire.FileObject:
    return views.file_object(await batches.files.get(principal.account_id, file_id))


@router.get(FILES_PATH + "/{file_id}/content", response_class=StreamingResponse)
async def file_content(file_id: str, principal: CurrentPrincipal, batches: BatchesDep) -> StreamingResponse:
    found = await batches.files.get(principal.account_id, file_id)
    return StreamingResponse(
        batches.files.chunks(found),
        media_type="application/octet-stream",
        headers={"content-length": str(found.size)},
    )


@router.delete(FILES_PATH + "/{file_id}", response_model=wire.FileDeleted)
async def delete_file(file_id: str, principal: CurrentPrincipal, batches: BatchesDep) -> wire.FileDeleted:
    await batches.files.delete(principal.account_id, file_id)
    return wire.FileDeleted(id=file_id, deleted=True)


@router.post("/v1/batches", response_model=wire.BatchObject)
async def create_batch(body: wire.BatchCreate, principal: CurrentPrincipal, batches: BatchesDep) -> wire.BatchObject:
    return views.openai_batch(await batches.create_openai(principal, body))


@router.get("/v1/batches", response_model=wire.BatchList)
async def list_batches(
    principal: CurrentPrincipal,
    batches: BatchesDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=wire.MAX_BATCHES_LIST_LIMIT)] = wire.DEFAULT_LIST_LIMIT,
) -> wire.BatchList:
    found, more = await batches.page(principal, "openai", after=after, before=None, limit=limit)
    data = [views.openai_batch(counted) for counted in found]
    return wire.BatchList(
        data=data, has_more=more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )


@router.get("/v1/batches/{batch_id}", response_model=wire.BatchObject)
async def retrieve_batch(batch_id: str, principal: CurrentPrincipal, batches: BatchesDep) -> wire.BatchObject:
    return views.openai_batch(await batches.get(principal, batch_id, "openai"))


@router.post("/v1/batches/{batch_id}/cancel", response_model=wire.BatchObject)
async def cancel_batch(batch_id: str, principal: CurrentPrincipal, batches: BatchesDep) -> wire.BatchObject:
    return views.openai_batch(await batches.cancel(principal, batch_id, "openai"))
