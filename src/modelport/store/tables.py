"""SQLAlchemy 2 tables. These are storage, not wire shapes (see `schemas/`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false

from modelport.principal import IdentityType, Role
from modelport.schemas.catalogue import DeploymentStatus


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def stored_as_text(values: type[StrEnum]) -> Enum:
    """A StrEnum column stored as its values in a VARCHAR(20), as the plain strings
    were before (no database enum type, no constraint, no migration): rows read back
    are the enum's members."""
    return Enum(
        values,
        native_enum=False,
        create_constraint=False,
        length=20,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}  # noqa: RUF012


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Limits of the account, for all its keys together, set by operators (SPEC 10; the
    # same names and rules as a key's, see modelport/limits/base.py); None: no limit.
    rpm_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    max_parallel_requests: Mapped[int | None] = mapped_column(Integer, default=None)
    max_budget: Mapped[float | None] = mapped_column(Float, default=None)
    budget_duration: Mapped[str | None] = mapped_column(String(20), default=None)
    budget_started_at: Mapped[datetime | None] = mapped_column(default=None)


class Identity(Base):
    """A user or service account; it holds API keys and belongs to accounts."""

    __tablename__ = "identities"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    identity_type: Mapped[IdentityType] = mapped_column(stored_as_text(IdentityType))
    default_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    # Runs the server: creates accounts, manages any key (see modelport/policy.py).
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"

    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[Role] = mapped_column(stored_as_text(Role))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    # SHA-256 of the key; the key itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters, so a person can tell their keys apart in a listing.
    display_prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # Limits (SPEC 7, LiteLLM's names); None: no limit. See modelport/limits/base.py.
    rpm_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, default=None)
    max_parallel_requests: Mapped[int | None] = mapped_column(Integer, default=None)
    max_budget: Mapped[float | None] = mapped_column(Float, default=None)
    budget_duration: Mapped[str | None] = mapped_column(String(20), default=None)
    # Budget windows are counted from here: creation, or the last change of budget_duration.
    budget_started_at: Mapped[datetime | None] = mapped_column(default=None)
    # From this time on the key answers 401 "API key expired"; None: it never expires.
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # The secret the key had before its last rotation (its SHA-256, like key_hash), and
    # when that secret stops working: the grace the rotation gave. Only one is kept, so
    # a second rotation ends the first one's grace at once.
    previous_key_hash: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    previous_key_retired_at: Mapped[datetime | None] = mapped_column(default=None)
    # The models (names or vendor/name) and deployment ids the key is limited to (SPEC 10);
    # None: every model of its account. See principal.ModelAllowList.
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    allowed_deployments: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    # Seconds the response cache keeps this key's cacheable answers (SPEC 10,
    # inference/response_cache.py); None: the model's setting, if any.
    cache_ttl_seconds: Mapped[int | None] = mapped_column(Integer, default=None)


class Model(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    model_type: Mapped[str] = mapped_column(String(40))
    model_vendor: Mapped[str | None] = mapped_column(String(40))
    model_creation_parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    base_model_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    request_schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    display_name: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    model_card: Mapped[str | None] = mapped_column(Text)
    training_data_card: Mapped[str | None] = mapped_column(Text)
    base_model_id: Mapped[str | None] = mapped_column(String(200))
    model_group_id: Mapped[str | None] = mapped_column(String(200))
    model_template_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_user_id: Mapped[str] = mapped_column(String(36))
    created_by_identity_type: Mapped[IdentityType] = mapped_column(stored_as_text(IdentityType))


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[DeploymentStatus] = mapped_column(stored_as_text(DeploymentStatus))
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    vendor_configuration: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    model_creation_parameters: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    deployment_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    model_endpoint_id: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_user_id: Mapped[str] = mapped_column(String(36))
    created_by_identity_type: Mapped[IdentityType] = mapped_column(stored_as_text(IdentityType))


class ModelGroup(Base):
    """Models gathered under one name (a model's `model_group_id`), with usage per group."""

    __tablename__ = "model_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_user_id: Mapped[str] = mapped_column(String(36))
    created_by_identity_type: Mapped[IdentityType] = mapped_column(stored_as_text(IdentityType))


class ModelTemplate(Base):
    """The shape models made from it share: type, endpoint, and the creation- and
    request-parameter schemas they are checked against."""

    __tablename__ = "model_templates"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    model_type: Mapped[str] = mapped_column(String(40))
    endpoint_type: Mapped[str] = mapped_column(String(20))
    endpoint_protocol: Mapped[str | None] = mapped_column(String(20), default=None)
    vendor_configuration: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_creation_parameters_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    model_request_parameters_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_user_id: Mapped[str] = mapped_column(String(36))
    created_by_identity_type: Mapped[IdentityType] = mapped_column(stored_as_text(IdentityType))


class AccountSecret(Base):
    __tablename__ = "account_secrets"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_account_secret_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CatalogueGeneration(Base):
    """One row whose counter goes up in every transaction that changes keys, roles,
    models, deployments or secrets. Processes poll it to drop their caches."""

    __tablename__ = "registry_generation"  # its name from before the catalogue was called so

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class UsageRecord(Base):
    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_deployment_time", "deployment_id", "created_at"),
        Index("ix_usage_key_time", "key_id", "created_at"),
        Index("ix_usage_account_time", "account_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(36))
    deployment_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    response_tokens: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[int] = mapped_column(Integer)  # the HTTP status the caller got
    latency_ms: Mapped[int] = mapped_column(Integer)
    # The vendor reported no counts; these are modelport's estimate (token_estimate.py).
    estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # US dollars at the model's prices; 0 for an unpriced model.
    cost: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    key_id: Mapped[str | None] = mapped_column(String(36), default=None)
    # One per request: a flush retried after an unclear failure cannot count twice.
    request_id: Mapped[str | None] = mapped_column(String(36), unique=True, default=None)
    # Of prompt_tokens: read from the vendor's prompt cache (the embedded engine's reused
    # prefix), and written to it; each priced at its own rate (limits/pricing.py).
    cached_prompt_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cache_creation_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class StoredResponse(Base):
    """A response of the Responses API kept for `previous_response_id`, retrieval and
    its input items (`store/responses.py`); rows older than the retention are swept."""

    __tablename__ = "stored_responses"
    __table_args__ = (Index("ix_stored_responses_created", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The response object as it was answered, the items of its own request, and the
    # whole conversation it answered (earlier turns included): what a next turn continues.
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_items: Mapped[list[Any]] = mapped_column(JSON)
    conversation: Mapped[list[Any]] = mapped_column(JSON)


class BatchFile(Base):
    """A file of the Files API (`/v1/files`): a batch's input, output or error JSONL.
    Its bytes are in `batch_file_chunks`, or in a file of `MODELPORT_FILES_DIR` named
    by `stored_path` (`store/batches.py`)."""

    __tablename__ = "batch_files"
    __table_args__ = (
        Index("ix_batch_files_account_created", "account_id", "created_at"),
        Index("ix_batch_files_expires", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    identity_id: Mapped[str] = mapped_column(String(36))
    key_id: Mapped[str | None] = mapped_column(String(36), default=None)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column("bytes", BigInteger)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default="processed")
    stored_path: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Shown by the SGP SDK's files (`/v4/beta/files`); None on files stored before 0016.
    md5_checksum: Mapped[str | None] = mapped_column(String(32), default=None)
    mime_type: Mapped[str | None] = mapped_column(String(255), default=None)
    created_by_identity_type: Mapped[str | None] = mapped_column(String(20), default=None)
    # Past it the file is gone (OpenAI's `expires_after`, a batch's `output_expires_after`);
    # None: kept until deleted.
    expires_at: Mapped[datetime | None] = mapped_column(default=None)


class BatchFileChunk(Base):
    """One piece (at most `store.batches.CHUNK_BYTES`) of a file kept in the database:
    no row, and no read, ever holds a whole large file."""

    __tablename__ = "batch_file_chunks"

    file_id: Mapped[str] = mapped_column(ForeignKey("batch_files.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Batch(Base):
    """A batch of requests run in the background (`/v1/batches`, `/v1/messages/batches`),
    with OpenAI's lifecycle in `status` and the lease of the replica running it."""

    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_account_created", "account_id", "created_at"),
        Index("ix_batches_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    identity_id: Mapped[str] = mapped_column(String(36))
    key_id: Mapped[str | None] = mapped_column(String(36), default=None)
    surface: Mapped[str] = mapped_column(String(16))  # "openai" or "anthropic"
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64))
    output_file_id: Mapped[str | None] = mapped_column(String(64), default=None)
    error_file_id: Mapped[str | None] = mapped_column(String(64), default=None)
    completion_window: Mapped[str] = mapped_column(String(16), default="24h")
    status: Mapped[str] = mapped_column(String(20))
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    batch_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    errors: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    # The tokens of the lines that succeeded, summed when the batch ends (OpenAI's `usage`).
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    in_progress_at: Mapped[datetime | None] = mapped_column(default=None)
    finalizing_at: Mapped[datetime | None] = mapped_column(default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    failed_at: Mapped[datetime | None] = mapped_column(default=None)
    expired_at: Mapped[datetime | None] = mapped_column(default=None)
    cancelling_at: Mapped[datetime | None] = mapped_column(default=None)
    cancelled_at: Mapped[datetime | None] = mapped_column(default=None)
    # Which replica runs it, until when: another takes it over only after the lease ran out.
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # The model its lines call (OpenAI's `Batch.model`): the first request's `body.model`,
    # read when the runner validates the input (None until then, and on batches of 0015).
    model: Mapped[str | None] = mapped_column(String(255), default=None)
    # OpenAI's `output_expires_after.seconds`: its output and error files expire this long
    # after each is written (None: kept until deleted).
    output_expires_after_seconds: Mapped[int | None] = mapped_column(Integer, default=None)


class BatchLine(Base):
    """What one line of a batch came to: written as each line finishes, so a batch
    taken over after a restart runs only the lines that have none."""

    __tablename__ = "batch_lines"

    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    custom_id: Mapped[str | None] = mapped_column(Text, default=None)
    succeeded: Mapped[bool] = mapped_column(Boolean)
    # "succeeded", "errored", "canceled", "expired" (Anthropic's result types).
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    body: Mapped[Any] = mapped_column(JSON, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


__all__ = [
    "Account",
    "AccountSecret",
    "ApiKey",
    "Base",
    "Batch",
    "BatchFile",
    "BatchFileChunk",
    "BatchLine",
    "CatalogueGeneration",
    "Deployment",
    "Identity",
    "Membership",
    "Model",
    "ModelGroup",
    "ModelTemplate",
    "StoredResponse",
    "UsageRecord",
]


class AuditEvent(Base):
    """One change to the catalogue (who, when, what, before and after), written by
    `store/audit.py` in the transaction that made it. Never updated; deleted only past
    the retention (`MODELPORT_AUDIT_RETENTION_DAYS`)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_account_at", "account_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # "key" (an API request: its key, identity and role), "cli" (a command at the
    # server's terminal) or "server" (modelport itself: first-start setup).
    actor_kind: Mapped[str] = mapped_column(String(10))
    actor_key_id: Mapped[str | None] = mapped_column(String(36), default=None)
    actor_identity_id: Mapped[str | None] = mapped_column(String(36), default=None)
    actor_role: Mapped[str | None] = mapped_column(String(20), default=None)
    actor_name: Mapped[str | None] = mapped_column(String(200), default=None)  # the CLI's user
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    account_id: Mapped[str | None] = mapped_column(String(36), default=None)  # the object's account
    action: Mapped[str] = mapped_column(String(10))  # create, update, delete
    object_type: Mapped[str] = mapped_column(String(30))
    object_id: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
