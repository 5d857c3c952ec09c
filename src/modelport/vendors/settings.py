"""What each vendor's settings may hold: one typed model per vendor for a deployment's
`model_creation_parameters` (the model's, with the deployment's override applied), and
the two `vendor_configuration` shapes the SDK reads back. Unknown keys are refused and
types are strict, so a typo or a wrong type is found when a deployment is registered
(see `modelport.catalogue.deployment_settings`), and adapters read typed fields, not dict keys."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from modelport.policy import upstream_host
from modelport.schemas.groups import Count, GpuType, Text
from modelport.schemas.json_value import JsonObject

# --- settings values ----------------------------------------------------------------------


def _http_url(value: str) -> str:
    """An upstream address: http(s) with a host, so `localhost:8000/v1` (no scheme) is
    refused rather than read as a path, parsed as it will be sent (an address that
    cannot be, or carries user:password, is refused here, not failed on a request). A
    `{{ binding }}` placeholder may fill the path, never the scheme, host or port."""
    try:
        upstream_host(value)
    except ValueError as exc:
        raise PydanticCustomError("http_url", "{reason}", {"reason": str(exc)}) from None
    return value


BaseUrl = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_http_url)]
ModelName = Annotated[str, Field(min_length=1, max_length=500)]
Cost = Annotated[float, Field(ge=0)]


class _Settings(BaseModel):
    # Strict: "100" is not a number of tokens; a wrong type is refused, never coerced.
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=(), allow_inf_nan=False)


class CommonSettings(_Settings):
    """Keys every vendor understands."""

    # The vendor's own name for the model.
    model: ModelName | None = None
    base_url: BaseUrl | None = None
    # A credential: the name of an account secret (PUT /v4/secrets/{name}), or of a
    # server environment variable the operator allows.
    api_key_secret: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    api_key_env: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    headers: dict[str, str] | None = None
    extra_body: JsonObject | None = None
    drop_unsupported_params: bool | None = None
    input_cost_per_token: Cost | None = None
    output_cost_per_token: Cost | None = None
    # Input tokens read from / written to the vendor's prompt cache; unset: the input price.
    cache_read_input_cost_per_token: Cost | None = None
    cache_creation_input_cost_per_token: Cost | None = None
    # A deployment's own limits, protecting its upstream (SPEC 7; inference/admission.py).
    rpm_limit: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    tpm_limit: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    # The response cache (SPEC 10, inference/response_cache.py): seconds this model's
    # cacheable answers are kept (1 s to 30 days; a key's own setting wins), and what a
    # hit costs, US dollars (default free).
    cache_ttl_seconds: Annotated[int, Field(ge=1, le=30 * 86400)] | None = None
    cache_hit_cost: Cost | None = None
    # Names of other models of the same account, tried in order when this one fails.
    fallback_models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None

    # The keys this vendor cannot work without (checked on the merged settings).
    required: ClassVar[tuple[str, ...]] = ()

    def missing(self) -> list[str]:
        return [name for name in self.required if getattr(self, name) in (None, "")]


class OpenAISettings(CommonSettings):
    # Reasoning models (o1, o3, gpt-5...) take max_completion_tokens and no temperature;
    # known by name, or said here for a name modelport does not know.
    reasoning_model: bool | None = None
    required: ClassVar[tuple[str, ...]] = ("model",)


class OpenAICompatibleSettings(CommonSettings):
    """FIREWORKS_AI and OTHER: any server that speaks OpenAI's API, at its base_url."""

    # The server shortens embedding vectors on request: `dimensions` is passed on (else 400).
    embedding_dimensions: bool | None = None
    # The server serves OpenAI's Responses API itself: /v1/responses is passed through to
    # it rather than translated onto its chat completions.
    serves_responses: bool | None = None

    required: ClassVar[tuple[str, ...]] = ("model", "base_url")


class AnthropicSettings(CommonSettings):
    # The model's own output limit: the default max_tokens (10,000) is capped at it.
    max_output_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    required: ClassVar[tuple[str, ...]] = ("model",)


class GoogleSettings(CommonSettings):
    required: ClassVar[tuple[str, ...]] = ("model",)


# AWS and Google Cloud region names (`us-east-1`, `europe-west4`): a region is written
# into the upstream's host name, so nothing but letters, digits and dashes may reach it.
Region = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z]{2,}(-[a-z0-9]+)+$|^global$")]
GcpProject = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9.:-]*[a-z0-9]$")]


class _CloudSettings(CommonSettings):
    """A cloud vendor reached with the account's own cloud credential: a deployment
    without one (an account secret, or a server variable) is refused when registered."""

    def missing(self) -> list[str]:
        found = super().missing()
        if not self.api_key_secret and not self.api_key_env:
            found.append("api_key_secret")
        return found


class BedrockSettings(_CloudSettings):
    """AWS Bedrock's Converse API. `model` is a model id, an inference profile or an ARN;
    the credential is an account secret holding `{"aws_access_key_id": ..,
    "aws_secret_access_key": .., "aws_session_token": ..}` (the last optional), or
    `api_key_env` naming the server's secret key variable (`AWS_SECRET_ACCESS_KEY`, with
    `AWS_ACCESS_KEY_ID` and `AWS_SESSION_TOKEN` beside it). `base_url` replaces
    `https://bedrock-runtime.{region}.amazonaws.com` (a VPC endpoint, a test fake)."""

    region: Region | None = None
    required: ClassVar[tuple[str, ...]] = ("model", "region")


class VertexSettings(_CloudSettings):
    """Google Vertex AI: Gemini (`publisher: google`) or Claude (`publisher: anthropic`)
    in a project's region. The credential is a service-account key (its JSON) in an
    account secret; `token_url` replaces the key's own `token_uri` and `base_url`
    replaces `https://{region}-aiplatform.googleapis.com/v1` (tests, private endpoints)."""

    project: GcpProject | None = None
    region: Region | None = None
    publisher: Literal["google", "anthropic"] = "google"
    token_url: BaseUrl | None = None
    # As AnthropicSettings': Claude's own output limit caps the default max_tokens.
    max_output_tokens: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    required: ClassVar[tuple[str, ...]] = ("model", "project", "region")


class CohereSettings(CommonSettings):
    base_url: BaseUrl | None = "https://api.cohere.com"
    # What /v2/embed is told the texts are for (Cohere's embed models need it).
    input_type: Literal["search_document", "search_query", "classification", "clustering"] | None = None
    required: ClassVar[tuple[str, ...]] = ("model",)


class LLMEngineSettings(CommonSettings):
    """An LLM Engine / vLLM server at base_url, or (with a checkpoint_path in the
    deployment's vendor_configuration) the engine embedded in modelport."""

    protocol: Literal["openai", "llmengine-v1"] = "openai"
    chat_template: Annotated[str, Field(max_length=100_000)] | None = None
    bos_token: Annotated[str, Field(max_length=100)] | None = None
    eos_token: Annotated[str, Field(max_length=100)] | None = None
    # As OpenAICompatibleSettings': the server (vLLM) shortens embedding vectors on
    # request, and serves /v1/responses itself (vLLM does).
    embedding_dimensions: bool | None = None
    serves_responses: bool | None = None
    required: ClassVar[tuple[str, ...]] = ("model", "base_url")


SETTINGS_BY_VENDOR: dict[str, type[CommonSettings]] = {
    "OPENAI": OpenAISettings,
    "FIREWORKS_AI": OpenAICompatibleSettings,
    "OTHER": OpenAICompatibleSettings,
    "ANTHROPIC": AnthropicSettings,
    "GOOGLE": GoogleSettings,
    "COHERE": CohereSettings,
    "LLMENGINE": LLMEngineSettings,
    # Scale Launch is LLM Engine's older name: the same servers, the same settings.
    "LAUNCH": LLMEngineSettings,
    "BEDROCK": BedrockSettings,
    "VERTEX_AI": VertexSettings,
}


# --- vendor_configuration ------------------------------------------------------------------

# GPU types, worker counts and free text are spelled as the SDK spells them, once, in
# schemas/groups.py (a model group's endpoint settings take the same values).


class LaunchConfiguration(_Settings):
    """The SDK's `LaunchDeploymentVendorConfiguration` (worker scaling; descriptive here)."""

    vendor: Literal["LAUNCH"]
    max_workers: Count | None = None
    min_workers: Count | None = None
    per_worker: Count | None = None


class LLMEngineConfiguration(_Settings):
    """The SDK's `LlmEngineDeploymentVendorConfiguration`. modelport acts on
    `checkpoint_path` (a GGUF file served by the embedded engine); the rest describe
    the deployment as LLM Engine would run it."""

    vendor: Literal["LLMENGINE"] = "LLMENGINE"
    checkpoint_path: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    base_model_name: Text | None = None
    model_name: Text | None = None
    cpus: Count | None = None
    gpu_type: GpuType | None = None
    gpus: Count | None = None
    high_priority: bool | None = None
    inference_framework_image_tag: Text | None = None
    max_workers: Count | None = None
    min_workers: Count | None = None
    memory: Text | None = None
    num_shards: Count | None = None
    per_worker: Count | None = None
    storage: Text | None = None
