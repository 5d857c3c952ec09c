"""Wire models of the Files and Batches APIs (OpenAI's `/v1/files`, `/v1/batches`) and
of Anthropic's Message Batches (`/v1/messages/batches`). No I/O here.

The answers have the shapes of the `openai` SDK's `FileObject`, `FileDeleted` and
`Batch`, and of the `anthropic` SDK's `MessageBatch` and `DeletedMessageBatch`, which
parse them strictly. Bodies are checked as the vendors check them: an unknown field is
a 400 naming it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from modelport.schemas.json_value import JsonObject
from modelport.schemas.responses import Metadata

# The endpoints a batch's lines may call (the routes of the same names): those of
# OpenAI's that modelport serves.
BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
# Anthropic's batches call this one.
MESSAGES_ENDPOINT = "/v1/messages"
# What a list answers at most per page, and by default (the vendors' own bounds).
DEFAULT_LIST_LIMIT = 20
MAX_FILES_LIST_LIMIT = 10_000
MAX_BATCHES_LIST_LIMIT = 100
MAX_MESSAGE_BATCHES_LIST_LIMIT = 1000
# OpenAI's bounds on a file's `expires_after.seconds` (an hour to 30 days).
MIN_EXPIRES_AFTER_SECONDS = 3600
MAX_EXPIRES_AFTER_SECONDS = 30 * 24 * 3600
# Anthropic's: a custom_id of 1 to 64 letters, digits, `_` and `-`.
CUSTOM_ID_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"

FilePurpose = Literal[
    "assistants", "assistants_output", "batch", "batch_output", "fine-tune", "fine-tune-results", "vision", "user_data"
]
BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class ExpiresAfter(_Strict):
    """OpenAI's expiry of a file: `seconds` after its `created_at` (the only anchor)."""

    anchor: Literal["created_at"]
    # Strict: a JSON string or float is a 400, as OpenAI answers it.
    seconds: int = Field(strict=True, ge=MIN_EXPIRES_AFTER_SECONDS, le=MAX_EXPIRES_AFTER_SECONDS)


class BatchCreate(_Strict):
    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: BatchEndpoint
    completion_window: Literal["24h"]
    metadata: Metadata | None = None
    # Applied to the output and error files, from when each is written.
    output_expires_after: ExpiresAfter | None = None


class BatchRequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchError(BaseModel):
    code: str | None = None
    line: int | None = None
    message: str | None = None
    param: str | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class BatchUsage(BaseModel):
    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None = None
    model: str | None = None
    usage: BatchUsage | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


# --- Anthropic --------------------------------------------------------------------


class MessageBatchRequest(_Strict):
    custom_id: str = Field(pattern=CUSTOM_ID_PATTERN)
    # Checked as /v1/messages checks a body when the line runs: a bad one fails alone.
    params: JsonObject


class MessageBatchCreate(_Strict):
    requests: list[MessageBatchRequest] = Field(min_length=1)


class MessageBatchRequestCounts(BaseModel):
    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int


class MessageBatch(BaseModel):
    id: str
    type: Literal["message_batch"] = "message_batch"
    processing_status: Literal["in_progress", "canceling", "ended"]
    request_counts: MessageBatchRequestCounts
    ended_at: datetime | None = None
    created_at: datetime
    expires_at: datetime
    archived_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    results_url: str | None = None


class MessageBatchList(BaseModel):
    data: list[MessageBatch]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class DeletedMessageBatch(BaseModel):
    id: str
    type: Literal["message_batch_deleted"] = "message_batch_deleted"


# --- the SGP SDK's files (`client.beta.files`, `/v4/beta/files`) ------------------------

# What `sort_by` may name: the columns a page can be ordered by (with the id breaking ties).
SgpFileSortKey = Literal["created_at", "filename", "size"]
MAX_SGP_FILES_LIST_LIMIT = 1000


class SgpCreatedBy(BaseModel):
    id: str
    type: Literal["user", "service_account"]
    object: Literal["identity"] = "identity"


class SgpFile(BaseModel):
    """The SDK's `FileCreateResponse` / `FileRetrieveResponse` / `FileListResponse`."""

    id: str
    object: Literal["file"] = "file"
    created_at: datetime
    created_by: SgpCreatedBy
    filename: str
    md5_checksum: str
    mime_type: str
    size: int


class SgpFilePage(BaseModel):
    """The SDK's `SyncCursorPage`: it reads `items`, and asks for the next page with
    `starting_after` (or `ending_before`) the last (first) item's id until a page is empty."""

    items: list[SgpFile]
    has_more: bool
    limit: int


class SgpFileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool
