"""The SGP SDK's files (`client.beta.files`): `/v4/beta/files` upload, list, retrieve,
content and delete. They are kept by the Files API's store (`batches/files.py`), with a
purpose of their own, so `/v1/files` neither lists nor serves them, nor these routes its.

The SDK sends a file as the multipart form field `file`, typed `str`: the file's text. A
file part (with its own filename and content type) is taken too, as any HTTP client sends
one. A text field is held in memory while the form is parsed, as a JSON body is, so it is
bounded by `MODELPORT_MAX_BODY_BYTES`; a file part is spooled and written a chunk at a time,
bounded by `MODELPORT_FILES_MAX_BYTES` (`api.limits.RequestGuard` counts the body as it
arrives). Errors are in OpenAI's shape, as on every `/v4/beta` route (`api.error_shapes`).
"""

from __future__ import annotations

import mimetypes
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from modelport.api.deps import BatchesDep, CurrentPrincipal
from modelport.batches import views
from modelport.batches.files import SGP_FILES
from modelport.batches.service import owner_of
from modelport.catalogue.access import check_account_filter
from modelport.errors import InvalidRequest, PayloadTooLarge
from modelport.schemas import batches as wire

router = APIRouter(tags=["sgp-files"])

SGP_FILES_PATH = "/v4/beta/files"
_PURPOSES = (SGP_FILES,)
_TEXT = "text/plain"

# The body the SDK sends, for the OpenAPI document (the route parses it itself: the field
# may be text or a file part, which FastAPI's form parameters cannot both take).
_MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "description": "the file's text, or a file part"}},
                }
            }
        },
    }
}


async def _read_form(request: Request, text_limit: int) -> tuple[str, str | None, UploadFile | bytes]:
    """The upload's filename, media type and content (a spooled file part, or a text
    field's bytes)."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidRequest("a file is uploaded as multipart/form-data, in the field 'file'", param="file")
    parser = MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=4, max_part_size=text_limit)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        if "maximum size" in error.message:
            raise PayloadTooLarge(
                f"a file sent as a text field is held to {text_limit} bytes (MODELPORT_MAX_BODY_BYTES): "
                "send a larger one as a file part"
            ) from None
        raise InvalidRequest(f"the multipart body cannot be read: {error.message}", param="file") from None
    found = form.get("file")
    if found is None:
        raise InvalidRequest("the form has no field 'file'", param="file")
    if isinstance(found, str):
        return "file", _TEXT, found.encode()
    filename = found.filename or "file"
    declared = found.content_type if found.content_type not in (None, "application/octet-stream") else None
    return filename, declared or mimetypes.guess_type(filename)[0], found


@router.post(SGP_FILES_PATH, response_model=wire.SgpFile, openapi_extra=_MULTIPART_BODY)
async def upload_sgp_file(request: Request, principal: CurrentPrincipal, batches: BatchesDep) -> Any:
    try:
        filename, mime_type, content = await _read_form(request, request.app.state.settings.max_body_bytes)
    except ClientDisconnect:
        # The guard answered already (413, the body past its bound), or the client left.
        return Response(status_code=499)
    remaining = [content] if isinstance(content, bytes) else []

    async def read(size: int) -> bytes:
        if isinstance(content, UploadFile):
            return await content.read(size)
        return remaining.pop() if remaining else b""

    try:
        stored = await batches.files.save(
            owner_of(principal), purpose=SGP_FILES, filename=filename, read=read, mime_type=mime_type
        )
    finally:
        if isinstance(content, UploadFile):
            await content.close()
    return views.sgp_file(stored)


@router.get(SGP_FILES_PATH, response_model=wire.SgpFilePage)
async def list_sgp_files(
    principal: CurrentPrincipal,
    batches: BatchesDep,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    starting_after: Annotated[str | None, Query(max_length=64)] = None,
    ending_before: Annotated[str | None, Query(max_length=64)] = None,
    filename: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=wire.MAX_SGP_FILES_LIST_LIMIT)] = 100,
    sort_by: wire.SgpFileSortKey = "created_at",
    sort_order: Literal["asc", "desc"] = "desc",
) -> wire.SgpFilePage:
    check_account_filter(principal, account_id)
    if starting_after is not None and ending_before is not None:
        raise InvalidRequest("give starting_after or ending_before, not both", param="ending_before")
    found, more = await batches.files.page(
        principal.account_id,
        purpose=SGP_FILES,
        after=starting_after,
        before=ending_before,
        limit=limit,
        newest_first=sort_order == "desc",
        order_by=sort_by,
        filename_contains=filename,
    )
    return wire.SgpFilePage(items=[views.sgp_file(file) for file in found], has_more=more, limit=limit)


@router.get(SGP_FILES_PATH + "/{file_id}", response_model=wire.SgpFile)
async def retrieve_sgp_file(file_id: str, principal: CurrentPrincipal, batches: BatchesDep) -> wire.SgpFile:
    return views.sgp_file(await batches.files.get(principal.account_id, file_id, purposes=_PURPOSES))


@router.get(SGP_FILES_PATH + "/{file_id}/content", response_class=StreamingResponse)
async def sgp_file_content(file_id: str, principal: CurrentPrincipal, batches: BatchesDep) -> StreamingResponse:
    found = await batches.files.get(principal.account_id, file_id, purposes=_PURPOSES)
    return StreamingResponse(
        batches.files.chunks(found),
        media_type=found.mime_type or "application/octet-stream",
        headers={"content-length": str(found.size)},
    )


@router.delete(SGP_FILES_PATH + "/{file_id}", response_model=wire.SgpFileDeleted)
async def delete_sgp_file(file_id: str, principal: CurrentPrincipal, batches: BatchesDep) -> wire.SgpFileDeleted:
    await batches.files.delete(principal.account_id, file_id, purposes=_PURPOSES)
    return wire.SgpFileDeleted(id=file_id, deleted=True)
