"""Anthropic's Message Batches: `/v1/messages/batches` (create, retrieve, list, cancel,
delete, results), run by the same runner as OpenAI's batches, each request through
`/v1/messages`. Errors are in Anthropic's shape (`api.error_shapes`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from modelport.api.deps import BatchesDep, CurrentPrincipal
from modelport.batches import views
from modelport.schemas import batches as wire

router = APIRouter(tags=["anthropic-batches"])

PATH = "/v1/messages/batches"


def _base(request: Request) -> str:
    return str(request.base_url)


@router.post(PATH, response_model=wire.MessageBatch)
async def create_message_batch(
    body: wire.MessageBatchCreate, request: Request, principal: CurrentPrincipal, batches: BatchesDep
) -> wire.MessageBatch:
    return views.message_batch(await batches.create_anthropic(principal, body), _base(request))


@router.get(PATH, response_model=wire.MessageBatchList)
async def list_message_batches(
    request: Request,
    principal: CurrentPrincipal,
    batches: BatchesDep,
    after_id: Annotated[str | None, Query(max_length=64)] = None,
    before_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=wire.MAX_MESSAGE_BATCHES_LIST_LIMIT)] = wire.DEFAULT_LIST_LIMIT,
) -> wire.MessageBatchList:
    found, more = await batches.page(principal, "anthropic", after=after_id, before=before_id, limit=limit)
    data = [views.message_batch(counted, _base(request)) for counted in found]
    return wire.MessageBatchList(
        data=data, has_more=more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )


@router.get(PATH + "/{message_batch_id}", response_model=wire.MessageBatch)
async def retrieve_message_batch(
    message_batch_id: str, request: Request, principal: CurrentPrincipal, batches: BatchesDep
) -> wire.MessageBatch:
    return views.message_batch(await batches.get(principal, message_batch_id, "anthropic"), _base(request))


@router.post(PATH + "/{message_batch_id}/cancel", response_model=wire.MessageBatch)
async def cancel_message_batch(
    message_batch_id: str, request: Request, principal: CurrentPrincipal, batches: BatchesDep
) -> wire.MessageBatch:
    return views.message_batch(await batches.cancel(principal, message_batch_id, "anthropic"), _base(request))


@router.delete(PATH + "/{message_batch_id}", response_model=wire.DeletedMessageBatch)
async def delete_message_batch(
    message_batch_id: str, principal: CurrentPrincipal, batches: BatchesDep
) -> wire.DeletedMessageBatch:
    await batches.delete(principal, message_batch_id, "anthropic")
    return wire.DeletedMessageBatch(id=message_batch_id)


@router.get(PATH + "/{message_batch_id}/results", response_class=StreamingResponse)
async def message_batch_results(
    message_batch_id: str, principal: CurrentPrincipal, batches: BatchesDep
) -> StreamingResponse:
    lines = await batches.anthropic_results(principal, message_batch_id)
    return StreamingResponse(lines, media_type="application/x-jsonl")
