"""Wire models of the catalogue (SPEC.md 2), shaped as the SDK's types expect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from modelport.policy import credential_setting, redacted_url
from modelport.principal import IdentityType, Role
from modelport.schemas.json_value import JsonInt, JsonObject
from modelport.schemas.limits import BudgetStatus, LimitFields

ModelType = Literal["COMPLETION", "CHAT_COMPLETION", "AGENT", "EMBEDDING", "RERANKING", "GENERIC", "BUNDLE"]
ModelVendor = Literal[
    "OPENAI",
    "COHERE",
    "GOOGLE",
    "VERTEX_AI",
    "ANTHROPIC",
    "LAUNCH",
    "LLMENGINE",
    "BEDROCK",
    "FIREWORKS_AI",
    "OTHER",
]
MAX_PAGE_SIZE = 10_000
# The models that take a conversation (`supports_multi_turn`), as shown and as sorted.
MULTI_TURN_MODEL_TYPE = "CHAT_COMPLETION"
# (page - 1) * limit is the SQL OFFSET: at most 10**10 here, far inside a signed 64-bit integer.
MAX_PAGE_NUMBER = 1_000_000

ItemT = TypeVar("ItemT")


class DeploymentStatus(StrEnum):
    """A deployment's life: it starts as `at_creation` says, and only
    `inference.loader.DeploymentLoader` moves it on."""

    PENDING = "PENDING"  # its file is being loaded (or waits for a server to load it)
    READY = "READY"  # it takes requests
    FAILED = "FAILED"  # its file could not be loaded, or its engine keeps crashing (status_reason says why)

    @classmethod
    def at_creation(cls, checkpoint: str | None) -> DeploymentStatus:
        """A deployment with a file to load waits for it; any other takes calls at once."""
        return cls.PENDING if checkpoint else cls.READY


class _Out(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    @field_validator("created_at", mode="after", check_fields=False)
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        # SQLite hands back naive datetimes; every time modelport stores is UTC.
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Page(_Out, Generic[ItemT]):
    items: list[ItemT]
    current_page: int
    items_per_page: int
    total_item_count: int


class OwnedOut(_Out):
    """The fields every row an account owns shows (models, deployments, groups,
    templates): its id, its account, and who created it when."""

    id: str
    account_id: str
    created_at: datetime
    created_by_identity_type: IdentityType
    created_by_user_id: str


class ModelInstanceOut(OwnedOut):
    deployment_count: int
    model_type: str
    name: str
    request_schema: dict[str, Any]
    response_schema: dict[str, Any]
    supports_multi_turn: bool
    base_model_id: str | None = None
    base_model_metadata: dict[str, Any] | None = None
    description: str | None = None
    display_name: str | None = None
    model_card: str | None = None
    model_creation_parameters: dict[str, Any] | None = None
    model_group_id: str | None = None
    model_template_id: str | None = None
    model_vendor: str | None = None
    training_data_card: str | None = None
    deployments: list[DeploymentOut] | None = None
    # With view=ModelGroup: the model's group (SDK `ModelGroup`).
    model_group: dict[str, Any] | None = None


class DeploymentOut(OwnedOut):
    name: str
    status: DeploymentStatus
    deployment_metadata: dict[str, Any] | None = None
    model_creation_parameters: dict[str, Any] | None = None
    model_endpoint_id: str | None = None
    model_instance_id: str | None = None
    vendor_configuration: dict[str, Any] | None = None


def redact(parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Settings as shown to API users: a credential-looking value at any depth is
    replaced. New settings cannot hold one (the policy refuses it), but settings stored
    before that rule may; a reference to a secret (api_key_env, a secret's name) is
    fine to show, the secret itself never is."""
    if parameters is None:
        return None
    shown: dict[str, Any] = _redacted(parameters)
    return shown


def _redacted(value: Any, *, headers: bool = False) -> Any:
    """The same shapes the policy refuses (policy._refuse_credentials): settings named
    like a credential, headers by their shape (`Cookie`, `*-Key`, `*Token*`), and the
    credentials a URL carries (user:password@, `?key=`)."""
    if isinstance(value, dict):
        return {
            name: "<redacted>"
            if inner and credential_setting(str(name), header=headers)
            else _redacted(inner, headers=str(name).lower() == "headers")
            for name, inner in value.items()
        }
    if isinstance(value, list):
        return [_redacted(inner) for inner in value]
    if isinstance(value, str):
        return redacted_url(value) or value
    return value


ModelInstanceOut.model_rebuild()


# --- requests -------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


# The length of the column each string is stored in (store/tables.py): PostgreSQL refuses
# a longer value rather than truncating it.
Name = Annotated[str, Field(min_length=1, max_length=200)]
ShortText = Annotated[str, Field(max_length=200)]


def _not_null(value: Any, info: ValidationInfo) -> Any:
    """For fields that may be left out of an update but not cleared: an explicit null."""
    if value is None:
        raise PydanticCustomError(
            "null_not_allowed",
            "{field} cannot be null: leave it out to keep the current value",
            {"field": info.field_name},
        )
    return value


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # "left out", which JSON Schema has no value for


class RequestParameter(_In):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: Literal["str", "int", "float", "bool"]
    description: str | None = None
    required: bool = False


class RequestSchema(_In):
    """A model's request-parameter schema: what `model_request_parameters.bindings` may set."""

    parameters: list[RequestParameter] = Field(default_factory=list)


class BaseModelDetails(_In):
    alignments: JsonInt | None = None
    languages: JsonInt | None = None
    number_of_parameters: JsonInt | None = None
    # The service computes with it and vendors and engines take it as a C int.
    token_context_window: int | None = Field(default=None, ge=1, le=2**31 - 1)


class BaseModelMetadataIn(_In):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=True)

    delivery_date: str | None = None
    model_developer: str | None = None
    model_license_url: str | None = None
    model_details: BaseModelDetails | None = Field(default=None, alias="modelDetails")
    ui_model_section_type: Literal["PARTNER", "OPENSOURCE", "CUSTOM"] | None = None

    def stored(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class _ModelSettings(_In):
    """What a model says about itself: settable at creation, changeable later."""

    model_vendor: ModelVendor | None = None
    model_creation_parameters: JsonObject | None = None
    base_model_metadata: BaseModelMetadataIn | None = None
    request_schema: RequestSchema | None = None
    display_name: ShortText | None = None
    description: str | None = None
    model_card: str | None = None
    training_data_card: str | None = None
    base_model_id: ShortText | None = None
    model_group_id: ShortText | None = None
    model_template_id: ShortText | None = None


class ModelCreate(_ModelSettings):
    name: Name
    model_type: ModelType
    account_id: str | None = None


class ModelUpdate(_ModelSettings):
    # Optional, not nullable: the columns are NOT NULL (SkipJsonSchema keeps null out of
    # the OpenAPI document, the validator refuses it with a 422 naming the field).
    name: Name | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)
    model_type: ModelType | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)

    _refuse_null = field_validator("name", "model_type")(_not_null)


class DeploymentCreate(_In):
    name: Name
    account_id: str | None = None
    deployment_metadata: JsonObject | None = None
    model_creation_parameters: JsonObject | None = None
    vendor_configuration: JsonObject | None = None
    # Block until an embedded model has loaded (READY or FAILED); the SDK's default.
    wait_for_ready: bool = True


class DeploymentUpdate(_In):
    name: Name | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_no_default)
    deployment_metadata: JsonObject | None = None
    model_creation_parameters: JsonObject | None = None
    vendor_configuration: JsonObject | None = None
    wait_for_ready: bool = True

    _refuse_null = field_validator("name")(_not_null)


class DeleteResponse(_Out):
    count: int
    success: bool


class AccountCreate(_In):
    account_name: Name


class AccountCreated(_Out):
    account_id: str


class UsagePoint(_Out):
    date: datetime
    prompt_tokens: int
    response_tokens: int
    summary_tokens: int


class ModelUsage(_Out):
    data: list[UsagePoint]
    start_date: datetime
    end_date: datetime


class KeyLimitFields(LimitFields):
    """A key's limits (SPEC 7), and its response cache."""

    # The response cache (SPEC 10): seconds this key's cacheable answers are kept, 1 s to
    # 30 days; null: the model's setting, if any. Wins over the model's.
    cache_ttl_seconds: Annotated[int, Field(ge=1, le=30 * 86400)] | None = None


# The most entries one of a key's allow-lists holds.
MAX_ALLOW_LIST_ENTRIES = 1000
_AllowEntry = Annotated[str, Field(min_length=1, max_length=200)]


class KeyAllowFields(_In):
    """The models and deployments a key is limited to (SPEC 10); null or left out: every
    model of its account. Each entry must name one of the account's (422 otherwise)."""

    models: list[_AllowEntry] | None = Field(
        default=None,
        max_length=MAX_ALLOW_LIST_ENTRIES,
        description="model names, or vendor/name with the vendor in lower case (as GET /v1/models shows it); "
        "the key may use every deployment of these models",
    )
    deployments: list[_AllowEntry] | None = Field(
        default=None,
        max_length=MAX_ALLOW_LIST_ENTRIES,
        description="deployment ids the key may use (besides those of its `models`)",
    )


# How far ahead a key's expiry may be set: far enough for any real plan, and near enough
# that converting any offset to UTC stays inside the years a datetime can hold.
MAX_KEY_LIFETIME = timedelta(days=100 * 365)
# The longest an old secret may keep working after a rotation.
MAX_ROTATION_GRACE_SECONDS = 30 * 86400


class KeyExpiryField(_In):
    """When a key stops working (ISO 8601 with a timezone); null or left out: never."""

    expires_at: AwareDatetime | None = Field(
        default=None,
        description="ISO 8601 with a timezone (2027-01-31T00:00:00Z); from then on the key answers 401 "
        '"API key expired". Must be in the future; null: the key never expires.',
    )

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        now = datetime.now(UTC)
        try:
            # Stored as UTC: SQLite keeps a time without its offset.
            moment = value.astimezone(UTC)
        except OverflowError:  # year 1 or 9999 with an offset that leaves the calendar
            moment = None
        if moment is None or moment > now + MAX_KEY_LIFETIME:
            raise PydanticCustomError(
                "expires_at", "expires_at must be within {days} days from now", {"days": MAX_KEY_LIFETIME.days}
            )
        if moment <= now:
            raise PydanticCustomError(
                "expires_at",
                "expires_at {value} is in the past: give a future time, or null for none",
                {"value": value.isoformat()},
            )
        return moment


class KeyCreate(KeyLimitFields, KeyExpiryField, KeyAllowFields):
    role: Literal["admin", "member"] = "member"
    name: str = Field(default="", max_length=200)


class KeyUpdate(KeyLimitFields, KeyExpiryField, KeyAllowFields):
    """PATCH: the fields sent change; null clears a limit, the expiry or an allow-list;
    the others stay."""

    name: str | None = Field(default=None, max_length=200)


class KeyRotate(_In):
    """`POST /v4/api-keys/{key_id}/rotate`: how long the old secret keeps working."""

    grace_seconds: int = Field(
        default=0,
        ge=0,
        le=MAX_ROTATION_GRACE_SECONDS,
        description="seconds the old secret keeps working after the rotation (at most 30 days); 0: it stops at once",
    )


class KeyOut(_Out):
    id: str
    name: str
    display_prefix: str
    role: Role
    identity_id: str
    created_at: datetime
    revoked_at: datetime | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    # US dollars: the sum of the costs of the key's usage records.
    spend: float = 0.0
    expires_at: datetime | None = Field(default=None, description="when the key stops working; null: never")
    models: list[str] | None = Field(default=None, description="the models the key is limited to; null: every one")
    deployments: list[str] | None = Field(
        default=None, description="the deployments the key is limited to; null: every one"
    )
    previous_key_retired_at: datetime | None = Field(
        default=None,
        description="when the secret the key had before its last rotation stopped (or stops) working; "
        "null: never rotated",
    )
    cache_ttl_seconds: int | None = Field(
        default=None, description="seconds the response cache keeps this key's answers; null: the model's setting"
    )

    @field_validator("revoked_at", "expires_at", "previous_key_retired_at")
    @classmethod
    def _times_as_utc(cls, value: datetime | None) -> datetime | None:
        return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


class SpendReport(_Out):
    """An account's spend in US dollars: in all, per API key and per deployment; and the
    state of the account's budget and of each listed key's budget."""

    account_id: str
    spend: float
    by_key: dict[str, float]
    by_deployment: dict[str, float]
    budget: BudgetStatus | None = None  # the account's own budget, shared by its keys
    key_budgets: dict[str, BudgetStatus] = Field(default_factory=dict)  # keys with a budget of their own


class LatencyPercentiles(_Out):
    """Milliseconds from a request's arrival to its answer's end (a stream's last event),
    by the nearest-rank method: each is a latency some request really had."""

    p50: int
    p95: int
    p99: int


class UsageTotals(_Out):
    requests: int
    failures: int = Field(description="requests answered with a status of 400 or more (499: the caller went away)")
    prompt_tokens: int
    response_tokens: int
    spend: float = Field(description="US dollars at the model's prices")
    latency_ms: LatencyPercentiles | None = Field(
        description="of the successful requests; null when none succeeded in the period"
    )


class UsageSummary(_Out):
    """An account's requests in [start_date, end_date), per deployment and per API key."""

    account_id: str
    start_date: datetime
    end_date: datetime
    by_deployment: dict[str, UsageTotals]
    by_key: dict[str, UsageTotals] = Field(
        description='keys the caller may not list are summed under "other keys"; requests recorded '
        'without a key under ""'
    )


class SecretOut(BaseModel):
    """An account secret as listed: its name and times, never its value."""

    name: str
    created_at: datetime
    updated_at: datetime


class KeyCreated(KeyOut):
    # The key itself: in this response only, never again.
    key: str
